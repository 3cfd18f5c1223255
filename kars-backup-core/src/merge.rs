//! One merge rule for every option type: a value given on the command line wins over the
//! configuration file's, which wins over the default.
//!
//! Option types whose values may be "not given" hold `Option` fields; [`Merge::merge`] fills
//! what `self` (the higher layer: flags) left unset from `lower` (the file), and the type's own
//! resolving method supplies the defaults last.
//!
//! ```
//! use kars_backup_core::merge::{Merge, merge};
//!
//! #[derive(Debug, Default, PartialEq)]
//! struct Opts { jobs: Option<usize>, dir: Option<String> }
//! impl Merge for Opts {
//!     fn merge(self, lower: Self) -> Self {
//!         Opts { jobs: self.jobs.or(lower.jobs), dir: self.dir.or(lower.dir) }
//!     }
//! }
//! let flags = Opts { jobs: Some(4), dir: None };
//! let file = Opts { jobs: Some(2), dir: Some("/usr/lib/postgresql/17/bin".into()) };
//! assert_eq!(merge(flags, Some(file)), Opts { jobs: Some(4), dir: Some("/usr/lib/postgresql/17/bin".into()) });
//! ```

/// Layers of one option type: `self` (the higher layer) wins where it says something.
pub trait Merge: Sized {
    /// `self` over `lower`: every value `self` gives, else `lower`'s.
    fn merge(self, lower: Self) -> Self;
}

/// `flags` over `file` (when there is a file): the one merge rule.
pub fn merge<T: Merge>(flags: T, file: Option<T>) -> T {
    match file {
        Some(file) => flags.merge(file),
        None => flags,
    }
}

impl<T> Merge for Option<T> {
    fn merge(self, lower: Self) -> Self {
        self.or(lower)
    }
}
