//! Storage destinations of kars-backup, behind one URL entry point.
//!
//! - [`LocalSink`]: a local directory (`file:///var/backups/kars` or a plain path), private and
//!   written atomically.
//! - [`sink_from_url`]: turns a destination URL into a [`kars_backup_core::DynBackupSink`].
//!
//! Object stores (S3, GCS, Azure) and Git LFS come behind cargo features.
//!
//! ```
//! # fn main() -> kars_backup_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let sink = kars_backup_storage::sink_from_url(&format!("file://{}", dir.path().display()))?;
//! assert!(sink.describe().starts_with("file://"));
//! # Ok(()) }
//! ```

pub mod local;
mod url;

pub use local::LocalSink;
pub use url::{Destination, redact, sink_from_url};
