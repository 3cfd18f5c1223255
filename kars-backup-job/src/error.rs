//! The job layer's errors: its own usage errors, and the lower crates' errors wrapped.

use kars_backup_core::ErrorCategory;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while building or running a job.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job cannot run as asked: conflicting settings, an unknown job name, a missing scratch
    /// server, tier rules that send a backup nowhere. The message says what to change.
    #[error("{0}")]
    Usage(String),
    /// A library error (source, storage, verification, encryption, …).
    #[error(transparent)]
    Core(#[from] kars_backup_core::Error),
    /// The configuration file does not load: every problem as `file:line:col: message`.
    #[error(transparent)]
    Config(#[from] kars_backup_config::ConfigErrors),
    /// The scheduler refused (a bad schedule, a job that is already running, its state
    /// directory).
    #[error(transparent)]
    Schedule(#[from] kars_backup_schedule::Error),
    /// Notifications or metrics could not be set up.
    #[error(transparent)]
    Notify(#[from] kars_backup_notify::Error),
    /// Every attempt of a restore failed (or one failed in a way that stops it): each attempt
    /// and the last error.
    #[error(transparent)]
    Attempts(#[from] kars_backup_core::recovery::AttemptsFailed),
    /// A second shutdown signal aborted the backup before it was committed.
    #[error(
        "aborted by a second shutdown signal before the backup was committed; nothing was listed (leftovers are removed by a later prune)"
    )]
    Aborted,
    /// An error with what was being done when it happened.
    #[error("{context}")]
    Context {
        /// What was being done (`job nightly: [job.encryption]`).
        context: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// What kind of failure this is, for exit codes and reports; `None` for failures of no
    /// category (notification setup, a job that is already running: internal errors).
    pub fn category(&self) -> Option<ErrorCategory> {
        match self {
            Error::Usage(_) | Error::Config(_) => Some(ErrorCategory::Usage),
            Error::Core(e) => Some(e.category()),
            Error::Attempts(failed) => Some(failed.error.category()),
            Error::Schedule(kars_backup_schedule::Error::InvalidCron { .. })
            | Error::Schedule(kars_backup_schedule::Error::InvalidTimeZone { .. })
            | Error::Schedule(kars_backup_schedule::Error::InvalidJobName { .. })
            | Error::Schedule(kars_backup_schedule::Error::DuplicateJob { .. }) => {
                Some(ErrorCategory::Usage)
            }
            Error::Schedule(_) | Error::Notify(_) | Error::Aborted => None,
            Error::Context { source, .. } => source.category(),
        }
    }

    /// This error with what was being done.
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }
}

/// A job-layer error as a library error (for the core's traits): the library error itself when
/// it is one, else an invalid-input error with the message.
pub(crate) fn into_core(err: Error) -> kars_backup_core::Error {
    match err {
        Error::Core(e) => e,
        other => kars_backup_core::Error::InvalidInput(other.to_string()),
    }
}

/// An error and its causes on one line, leaving out causes already quoted by their parent.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut cause = Some(err);
    while let Some(e) = cause {
        let message = e.to_string();
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
        cause = e.source();
    }
    text
}
