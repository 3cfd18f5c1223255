//! [`Progress`]: how long-running work reports how far it got. The library never prints.

use std::fmt::Debug;
use std::sync::Arc;

/// Receives progress of a backup or restore; the CLI draws bars from it, services may log it.
///
/// All methods have no-op defaults, and implementations must be cheap: `advance` is called for
/// every chunk of data.
pub trait Progress: Send + Sync + Debug {
    /// A phase begins (`"snapshot"`, `"upload"`, `"download"`, …), with its total in bytes if known.
    fn start(&self, _phase: &str, _total_bytes: Option<u64>) {}
    /// `bytes` more bytes of the current phase are done.
    fn advance(&self, _bytes: u64) {}
    /// The current phase ended.
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A shared progress receiver.
pub type DynProgress = Arc<dyn Progress>;

/// A [`DynProgress`] that ignores everything.
pub fn no_progress() -> DynProgress {
    Arc::new(NoProgress)
}
