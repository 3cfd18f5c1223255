//! Exit codes, documented in `--help` and docs/operators/exit-codes.md, and the error → code mapping.

use kars_backup::core::ErrorCategory;

/// Success.
pub(crate) const OK: u8 = 0;
/// An internal or unclassified error.
pub(crate) const INTERNAL: u8 = 1;
/// Bad flags or input, or a restore that was not confirmed.
pub(crate) const USAGE: u8 = 2;
/// The database (or a hook around it) failed.
pub(crate) const SOURCE: u8 = 3;
/// A storage destination failed (also a backup that failed at some destinations).
pub(crate) const STORAGE: u8 = 4;
/// Verification failed: checksum, integrity, row counts, test queries (also `status` when a
/// destination's last drill failed).
pub(crate) const VERIFICATION: u8 = 5;
/// `status`: a destination's newest backup is older than the RPO target (or missing);
/// `drill`: the RTO or RPO target was missed.
pub(crate) const RPO_MISSED: u8 = 6;
/// `pg fetch-wal`: the WAL file asked for is not in the archive (PostgreSQL's restore_command
/// then ends recovery or tries another timeline; any code up to 125 is "not available").
pub(crate) const WAL_MISSING: u8 = 7;
/// `pg fetch-wal`: any failure other than a missing file (storage, checksum, key, usage).
/// PostgreSQL takes a `restore_command` exit code up to 125 for "file not there" and ends the
/// recovery early (a promotion short of the archive's end); above 125 it stops the recovery.
pub(crate) const WAL_FETCH_FAILED: u8 = 126;
/// Interrupted (SIGINT; a restore stopped by SIGTERM exits with 143), after the rollback.
pub(crate) const INTERRUPTED: u8 = 130;

/// A usage error found by the CLI itself (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// The error and its causes on one line, leaving out causes already quoted by their parent.
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    kars_backup::job::error_text(err.as_ref())
}

/// Maps an error to its exit code through the library error's category.
pub(crate) fn code_of(err: &anyhow::Error) -> u8 {
    let code = |category: Option<ErrorCategory>| match category {
        Some(ErrorCategory::Usage) => USAGE,
        Some(ErrorCategory::Source) => SOURCE,
        Some(ErrorCategory::Storage) => STORAGE,
        Some(ErrorCategory::Verification) => VERIFICATION,
        Some(ErrorCategory::Interrupted) => INTERRUPTED,
        _ => INTERNAL,
    };
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<kars_backup::job::Error>() {
            return code(e.category());
        }
        if let Some(e) = cause.downcast_ref::<kars_backup::core::Error>() {
            return code(Some(e.category()));
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return USAGE;
        }
    }
    INTERNAL
}
