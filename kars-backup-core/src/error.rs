//! The error type of the core crate.

use std::path::PathBuf;

/// A boxed error from a backend or a source, for [`Error::Generic`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a backup or a restore.
///
/// Each variant names the thing involved (a key, a path, a backup) and its message says what to do.
/// Sources and sinks outside this crate report their own failures through [`Error::Generic`], so a
/// downstream backend needs nothing internal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object or backup does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for (a key, a backup name, a path).
        what: String,
    },
    /// Something already exists where a new one was to be created.
    #[error("already exists: {what}")]
    AlreadyExists {
        /// What exists already.
        what: String,
    },
    /// The stored bytes do not match the manifest: the archive is corrupt or was tampered with.
    #[error(
        "checksum mismatch for {name}: the manifest says sha256 {expected} ({expected_size} bytes) but the stored archive has sha256 {actual} ({actual_size} bytes); the archive is corrupt or was modified, restore another backup or another copy"
    )]
    ChecksumMismatch {
        /// The backup's archive name.
        name: String,
        /// SHA-256 in the manifest, hex.
        expected: String,
        /// SHA-256 of the bytes read, hex.
        actual: String,
        /// Size in the manifest.
        expected_size: u64,
        /// Size of the bytes read.
        actual_size: u64,
    },
    /// A manifest or archive written by a newer or unknown format version.
    #[error("unsupported version: {what}")]
    UnsupportedVersion {
        /// What is unsupported and how to fix it.
        what: String,
    },
    /// An archive or manifest that cannot be read as one (wrong file type, truncated, unsafe entries).
    #[error("invalid archive {name}: {reason}")]
    InvalidArchive {
        /// The archive's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Bad input from the caller: a wrong URL, option or name.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A restored or backed-up database failed verification.
    #[error("verification failed: {0}")]
    VerificationFailed(String),
    /// A hook command (stop/start application, health check) failed.
    #[error("hook `{hook}` failed: {reason}")]
    HookFailed {
        /// Which hook (`stop`, `start`, `health-check`).
        hook: String,
        /// Exit status and output.
        reason: String,
    },
    /// Other processes (or database sessions) have the restore target open: replacing it under
    /// them would leave them on the old data or broken.
    #[error("{target} is in use by {holders}; {hint}")]
    InUse {
        /// The target's description.
        target: String,
        /// Who has it open (`pid 12 (node server.js)`, …).
        holders: String,
        /// What to do.
        hint: String,
    },
    /// The operation was interrupted (SIGINT/SIGTERM, or its cancellation token).
    #[error("interrupted during {during}")]
    Interrupted {
        /// The phase it was in.
        during: String,
    },
    /// A restore was refused because it was not confirmed.
    #[error("restore not confirmed: {0}")]
    NotConfirmed(String),
    /// The database source failed.
    #[error("database source {source_name}: {source}")]
    Source {
        /// The source's redacted description.
        source_name: String,
        /// What failed.
        source: BoxError,
    },
    /// A local file-system operation failed.
    #[error(transparent)]
    Io(IoError),
    /// A storage backend failed.
    #[error("storage backend {backend}: {source}")]
    Generic {
        /// The backend's name or redacted URL.
        backend: String,
        /// What failed.
        source: BoxError,
    },
    /// The archive is encrypted and no key of its scheme was given (usage: give one).
    #[error("cannot decrypt {name}: {reason}")]
    KeyMissing {
        /// The archive's name.
        name: String,
        /// What is missing and how to give it.
        reason: String,
    },
    /// The keys given do not open the archive, or its ciphertext failed authentication.
    #[error("decryption of {name} failed: {reason}")]
    DecryptionFailed {
        /// The archive's name.
        name: String,
        /// Why (wrong key, tampered or truncated data) and what to do.
        reason: String,
    },
    /// An unencrypted archive was to be stored off-site without the caller opting out (see
    /// [`PlaintextPolicy`](crate::PlaintextPolicy)); nothing was read or written.
    #[error(
        "refusing to store {what} unencrypted at {destinations}: a KARS backup holds password hashes, MFA secrets and API tokens, so off-site copies are encrypted by default. Encrypt it: create a key with `kars-backup key init` and back up with `--encrypt-to <the age1… recipient it prints>` (config: [job.encryption] identity-file = \"<the key file>\"); keep a copy of the key offline. Or store it unencrypted on purpose with `--no-encrypt` (config: encryption = \"none\")"
    )]
    PlaintextRefused {
        /// The backup (or copy) concerned.
        what: String,
        /// The off-site destinations, redacted, comma-separated.
        destinations: String,
    },
    /// A restore failed after it had changed something, and was rolled back.
    #[error("{cause}; rolled back: {rollback}")]
    RolledBack {
        /// Why the restore failed.
        cause: Box<Error>,
        /// What the rollback did (or why it failed).
        rollback: String,
    },
}

impl Error {
    /// Whether trying the same operation again may succeed (a transient storage or network failure).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Generic { source, .. } => io_is_transient(source.as_ref()),
            Error::Io(e) => matches!(
                e.source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }

    /// Whether the failure may go away on its own: [`Error::is_retryable`] storage failures, and a
    /// database source whose connection failed (refused, reset, timed out). Restores and drills
    /// retry such failures of the same backup with backoff; a verification failure never is one.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Source { source, .. } => io_is_transient(source.as_ref()),
            e => e.is_retryable(),
        }
    }

    /// Which part of the system failed, to map errors to exit codes and alerts.
    pub fn category(&self) -> ErrorCategory {
        match self {
            // A newer manifest or an older pg_dump: the fix is on the caller's side (upgrade).
            Error::InvalidInput(_)
            | Error::NotConfirmed(_)
            | Error::UnsupportedVersion { .. }
            | Error::PlaintextRefused { .. }
            | Error::KeyMissing { .. } => ErrorCategory::Usage,
            Error::Source { .. } | Error::HookFailed { .. } | Error::InUse { .. } => {
                ErrorCategory::Source
            }
            Error::Interrupted { .. } => ErrorCategory::Interrupted,
            Error::VerificationFailed(_)
            | Error::ChecksumMismatch { .. }
            | Error::InvalidArchive { .. }
            | Error::DecryptionFailed { .. } => ErrorCategory::Verification,
            Error::RolledBack { cause, .. } => cause.category(),
            Error::NotFound { .. }
            | Error::AlreadyExists { .. }
            | Error::Io(_)
            | Error::Generic { .. } => ErrorCategory::Storage,
        }
    }

    /// Wraps a source failure.
    pub fn source(source_name: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Source {
            source_name: source_name.into(),
            source: source.into(),
        }
    }

    /// Wraps a backend failure.
    pub fn generic(backend: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Generic {
            backend: backend.into(),
            source: source.into(),
        }
    }

    /// Wraps a file-system failure with the path and action.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io(IoError::new(action, path, source))
    }
}

/// A file-system operation that failed: what was being done, on which path, and why. Every
/// crate's error type carries it for its `Io` variant.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct IoError {
    /// What was being done ("create directory", "write", …).
    pub action: &'static str,
    /// The path involved.
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

impl IoError {
    /// The failure of `action` on `path`.
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IoError {
            action,
            path: path.into(),
            source,
        }
    }
}

/// A background task or child process that died or could not be driven (a panicked thread, a
/// cancelled task, a child without its pipes): what it did and why it stopped. Every crate's
/// error type carries it for its `Task` variant.
#[derive(Debug, thiserror::Error)]
#[error("{what} stopped unexpectedly: {reason}")]
pub struct TaskError {
    /// What the task did.
    pub what: &'static str,
    /// Why it stopped (the join error, "it panicked", …).
    pub reason: String,
}

impl TaskError {
    /// The task doing `what` stopped because of `reason`.
    pub fn new(what: &'static str, reason: impl Into<String>) -> Self {
        TaskError {
            what,
            reason: reason.into(),
        }
    }
}

fn io_is_transient(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        cur = e.source();
    }
    false
}

/// The broad class of an error: what failed, for exit codes and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCategory {
    /// The caller's input was wrong.
    Usage,
    /// The database (or a hook around it) failed.
    Source,
    /// A storage destination failed.
    Storage,
    /// Data failed a check: checksum, integrity, counts.
    Verification,
    /// The operation was interrupted by a signal or its caller.
    Interrupted,
}

impl ErrorCategory {
    /// A lower-case name for reports (`usage`, `source`, `storage`, `verification`, `interrupted`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Usage => "usage",
            ErrorCategory::Source => "source",
            ErrorCategory::Storage => "storage",
            ErrorCategory::Verification => "verification",
            ErrorCategory::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
