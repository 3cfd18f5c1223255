//! The crate's error type.

use std::path::PathBuf;

use kars_backup_core::IoError;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while scheduling.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cron expression does not parse or never matches.
    #[error(
        "invalid cron expression {expression:?}: {reason}; use 5 fields \
         (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\", \
         or @hourly, @daily, @weekly, @monthly, @yearly"
    )]
    InvalidCron {
        /// The expression as given.
        expression: String,
        /// Why it was refused.
        reason: String,
    },
    /// The time zone is not a known IANA name.
    #[error("unknown time zone {name:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\"")]
    InvalidTimeZone {
        /// The name as given.
        name: String,
    },
    /// A job name that cannot name its lock and state files.
    #[error(
        "invalid job name {name:?}: use 1 to 100 letters, digits, '.', '_' or '-' \
         (not starting with '.'); it names the job's lock and state files"
    )]
    InvalidJobName {
        /// The name as given.
        name: String,
    },
    /// Two jobs with one name were given to the scheduler.
    #[error("job {name:?} is defined twice; job names must be unique")]
    DuplicateJob {
        /// The repeated name.
        name: String,
    },
    /// Another process (or another handle in this one) holds the job's run lock.
    #[error("job {job:?} is already running ({holder}); lock file {}: wait for that run to finish", path.display())]
    Locked {
        /// The job.
        job: String,
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as written in the lock file (pid, run id, start time), or "unknown holder".
        holder: String,
    },
    /// A file operation on the state directory failed ("create state directory", "write state
    /// file", …).
    #[error("cannot {0}")]
    Io(#[source] IoError),
    /// The job's state file is not what this crate wrote.
    #[error(
        "state file {} is not valid ({source}); delete it to reset the job's catch-up state",
        path.display()
    )]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Signal handlers could not be installed (no tokio runtime with signals enabled?).
    #[error("cannot install SIGTERM/SIGINT handlers: {0}")]
    Signal(#[source] std::io::Error),
}

impl Error {
    /// True when trying again later may succeed (a held lock, a transient I/O error).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Locked { .. } | Error::Io(_))
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        Error::Io(IoError::new(action, path, e))
    }
}
