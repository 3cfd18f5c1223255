//! The error type of the SQLite source, and its conversion into [`kars_backup_core::Error`].

use std::path::{Path, PathBuf};

use kars_backup_core::{Error as CoreError, IoError, TaskError};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while snapshotting, archiving or restoring an SQLite database.
///
/// Each variant names the path, archive or entry involved. At the
/// [`DatabaseSource`](kars_backup_core::DatabaseSource) boundary it becomes a
/// [`kars_backup_core::Error`]: archive problems become `InvalidArchive`, bad input
/// `InvalidInput`, the rest (file-system problems included: they are the database's side)
/// `Source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing exists at the database path.
    #[error("no SQLite database at {}: the file does not exist; check the path (or the volume mount)", path.display())]
    NotFound {
        /// The path looked at.
        path: PathBuf,
    },
    /// The file exists but does not start with the SQLite header.
    #[error("{} is not an SQLite database: it does not start with the header \"SQLite format 3\"", path.display())]
    NotSqlite {
        /// The file.
        path: PathBuf,
    },
    /// SQLite itself failed.
    #[error("{action} {}: {source}", path.display())]
    Sqlite {
        /// What was being done (`snapshot`, `count rows of`, …).
        action: &'static str,
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database stayed locked by other connections for longer than the lock timeout.
    #[error("{} stayed locked by other connections for {seconds} s; retry when the writers are idle, or raise the lock timeout", path.display())]
    Busy {
        /// The database file.
        path: PathBuf,
        /// How long the snapshot waited.
        seconds: u64,
    },
    /// A file-system operation failed (`read directory`, `rename`, …).
    #[error(transparent)]
    Io(IoError),
    /// An archive entry that restoring would be unsafe to write (absolute path, `..`, link, device).
    #[error("entry {entry:?} is refused: {reason}")]
    UnsafeEntry {
        /// The archive's name.
        archive: String,
        /// The entry's path as stored.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// The archive cannot be read as a tar archive (corrupt, truncated, not a tar).
    #[error("{reason}")]
    CorruptArchive {
        /// The archive's name.
        archive: String,
        /// What went wrong.
        reason: String,
    },
    /// The archive holds no database to restore into a database file.
    #[error("{reason}")]
    NoDatabase {
        /// The archive's name.
        archive: String,
        /// What was found instead.
        reason: String,
    },
    /// The archive holds several databases and none is clearly the target's.
    #[error(
        "archive {archive} holds several databases ({}) and none is named like the target {}; restore into a path whose file name is one of them, or restore the whole volume into a directory",
        candidates.join(", "),
        target.display()
    )]
    AmbiguousDatabase {
        /// The archive's name.
        archive: String,
        /// The restore target.
        target: PathBuf,
        /// The databases found.
        candidates: Vec<String>,
    },
    /// A `sqlite://` URL or path that cannot be used.
    #[error("invalid SQLite location {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another restore of the same target is running (its staging directory is locked).
    #[error("another restore into {} is running (pid {pid}); wait for it to end", target.display())]
    RestoreRunning {
        /// The restore target.
        target: PathBuf,
        /// The other restore's process.
        pid: u64,
    },
    /// A restore was killed in the middle of its swap and the target is in use, so the next
    /// run cannot roll it back.
    #[error("an interrupted restore left {} half swapped, and it is in use by {holders}; stop the application and run the restore again: it rolls the interrupted one back first", target.display())]
    HalfSwapped {
        /// The restore target.
        target: PathBuf,
        /// Who has it open.
        holders: String,
    },
    /// Continuous replication needs WAL mode and the database is in another journal mode.
    #[error("{} is in {mode} journal mode; continuous replication needs WAL mode: run replicate with --enable-wal to switch it once (persistent, safe while the application runs)", path.display())]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// Its journal mode (`delete`, `truncate`, `persist`, …).
        mode: String,
    },
    /// A replication chain cannot be used: an object is missing, damaged, or does not follow
    /// the one before it.
    #[error("replication chain at {destination}: {key}: {reason}")]
    Chain {
        /// The destination.
        destination: String,
        /// The key involved (or the range of keys missing).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Another replicator holds the lease of a destination.
    #[error(
        "another replicator writes to {destination}: {holder}; stop it first (its lease expires {expires} if it died)"
    )]
    LeaseHeld {
        /// The destination.
        destination: String,
        /// Who holds the lease.
        holder: String,
        /// When the lease expires unless renewed.
        expires: String,
    },
    /// Storage or another core operation failed.
    #[error(transparent)]
    Core(#[from] kars_backup_core::Error),
    /// A background task or child process died (panicked, was cancelled, lost its pipes).
    #[error(transparent)]
    Task(TaskError),
}

impl Error {
    /// An [`Error::Io`] with its action and path.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        Error::Io(IoError::new(action, path, e))
    }

    /// An [`Error::Sqlite`] with its action and path.
    pub(crate) fn sqlite(action: &'static str, path: &Path, source: rusqlite::Error) -> Self {
        Error::Sqlite {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// An [`Error::CorruptArchive`].
    pub(crate) fn corrupt(archive: &str, reason: impl Into<String>) -> Self {
        Error::CorruptArchive {
            archive: archive.to_string(),
            reason: reason.into(),
        }
    }

    /// The path this error is about, if it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::NotFound { path }
            | Error::NotSqlite { path }
            | Error::Sqlite { path, .. }
            | Error::Busy { path, .. }
            | Error::Io(IoError { path, .. })
            | Error::AmbiguousDatabase { target: path, .. }
            | Error::RestoreRunning { target: path, .. }
            | Error::HalfSwapped { target: path, .. }
            | Error::NotWal { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Converts into the core error; `source_name` is the source's description.
    pub fn into_core(self, source_name: &str) -> CoreError {
        match self {
            // The database side failed (reading the database, writing the staging copy): a
            // source error, so callers and exit codes tell it from a storage failure.
            e @ Error::Io(_) => CoreError::source(source_name, e),
            Error::UnsafeEntry { ref archive, .. }
            | Error::CorruptArchive { ref archive, .. }
            | Error::NoDatabase { ref archive, .. } => CoreError::InvalidArchive {
                name: archive.clone(),
                reason: self.to_string(),
            },
            Error::Core(e) => e,
            Error::Chain { key, reason, .. } => CoreError::InvalidArchive { name: key, reason },
            Error::LeaseHeld {
                destination,
                holder,
                expires,
            } => CoreError::InUse {
                target: destination,
                holders: holder,
                hint: format!("stop the other replicator first (its lease expires {expires} if it died)"),
            },
            e @ (Error::AmbiguousDatabase { .. } | Error::InvalidUrl { .. } | Error::NotWal { .. }) => {
                CoreError::InvalidInput(e.to_string())
            }
            Error::RestoreRunning { target, pid } => CoreError::InUse {
                target: target.display().to_string(),
                holders: format!("another kars-backup restore (pid {pid})"),
                hint: "wait for it to end".into(),
            },
            Error::HalfSwapped { target, holders } => CoreError::InUse {
                target: target.display().to_string(),
                holders,
                hint: "an interrupted restore left it half swapped: stop the application and run the restore again, it rolls the interrupted one back first".into(),
            },
            e => CoreError::source(source_name, e),
        }
    }
}

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        e.into_core("sqlite")
    }
}
