//! The error type of the PostgreSQL source, and its conversion into [`kars_backup_core::Error`].

use std::path::PathBuf;

use kars_backup_core::{Error as CoreError, IoError, TaskError};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while dumping, restoring or verifying a PostgreSQL database.
///
/// Messages never hold a password: URLs are redacted before they are put in an error. At the
/// [`DatabaseSource`](kars_backup_core::DatabaseSource) boundary it becomes a
/// [`kars_backup_core::Error`]: bad input becomes `InvalidInput`, version problems
/// `UnsupportedVersion`, archive problems `InvalidArchive`, the rest `Source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `postgres://` URL or connection string that cannot be used.
    #[error("invalid PostgreSQL URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached or refused the login.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// The redacted URL.
        target: String,
        /// What happened and what to do.
        reason: String,
    },
    /// The database to back up does not exist.
    #[error("database {database:?} does not exist on {server}; check the database name in the URL")]
    NoSuchDatabase {
        /// The database's name.
        database: String,
        /// The server (host:port).
        server: String,
    },
    /// A query failed.
    #[error("{action} on {target}: {reason}")]
    Query {
        /// What was being done.
        action: String,
        /// The redacted URL or database.
        target: String,
        /// The server's message.
        reason: String,
    },
    /// A failure core already names, passed on as it is (another restore holds the target:
    /// [`CoreError::InUse`]).
    #[error(transparent)]
    Core(CoreError),
    /// A PostgreSQL client program (`pg_dump`, `pg_restore`, `psql`) was not found.
    #[error(
        "{tool} not found ({looked}); install the PostgreSQL client programs (Debian: apt-get install postgresql-client-{major}) or point --pg-bin-dir at their directory"
    )]
    ToolMissing {
        /// The program.
        tool: String,
        /// Where it was looked for.
        looked: String,
        /// The server's major version (the client version to install).
        major: String,
    },
    /// `pg_dump` is older than the server, so it would refuse to dump or dump wrongly.
    #[error(
        "{tool} {tool_version} ({path}) is older than the PostgreSQL server {server_version}: {tool} can only dump servers of its own major version or older. Install the PostgreSQL {server_major} client programs (Debian: apt-get install postgresql-client-{server_major}) or point --pg-bin-dir at a {server_major} (or newer) bin directory"
    )]
    VersionMismatch {
        /// The program (`pg_dump`).
        tool: String,
        /// Its version.
        tool_version: String,
        /// Its path.
        path: String,
        /// The server's version.
        server_version: String,
        /// The server's major version.
        server_major: u32,
    },
    /// A client program failed (non-zero exit or a signal).
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        /// The program.
        tool: String,
        /// How it ended (`exit status 1`, `killed by signal 9`).
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// The payload is not something this source can restore.
    #[error("{reason}")]
    InvalidArchive {
        /// The archive's name.
        archive: String,
        /// What is wrong.
        reason: String,
    },
    /// A restore option that cannot be honoured for this backup or target.
    #[error("{0}")]
    Unsupported(String),
    /// Writing the payload into the backup pipeline failed.
    #[error("writing the payload: {0}")]
    Pipeline(std::io::Error),
    /// A file-system operation failed.
    #[error(transparent)]
    Io(IoError),
    /// A server setting (or role attribute) that a physical backup needs is missing; the
    /// message says what to change.
    #[error("{0}")]
    Settings(String),
    /// A WAL segment that replay needs before the target is not in the archive.
    #[error(
        "WAL segment {segment} is missing from the archive: recovery {detail}; the restore stops before this gap (restore to an earlier instant, or put the segment back into the archive)"
    )]
    WalGap {
        /// The segment's file name.
        segment: String,
        /// How far recovery got.
        detail: String,
    },
    /// The restored cluster did not recover, open or stop as it should.
    #[error("recovery of {pgdata} failed: {reason}")]
    Recovery {
        /// The restored data directory.
        pgdata: String,
        /// What happened (with the end of the server's log).
        reason: String,
    },
    /// A background task or child process died (panicked, was cancelled, lost its pipes).
    #[error(transparent)]
    Task(TaskError),
}

impl Error {
    /// An [`Error::Io`].
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        Error::Io(IoError::new(action, path, e))
    }

    /// An [`Error::Query`] from a tokio-postgres error.
    pub(crate) fn query(
        action: impl Into<String>,
        target: impl Into<String>,
        e: &tokio_postgres::Error,
    ) -> Self {
        Error::Query {
            action: action.into(),
            target: target.into(),
            reason: db_message(e),
        }
    }

    /// Converts into the core error; `source_name` is the source's redacted description.
    pub fn into_core(self, source_name: &str) -> CoreError {
        match self {
            e @ (Error::InvalidUrl { .. } | Error::Unsupported(_) | Error::Settings(_)) => {
                CoreError::InvalidInput(e.to_string())
            }
            e @ Error::VersionMismatch { .. } => CoreError::UnsupportedVersion {
                what: e.to_string(),
            },
            Error::Core(e) => e,
            Error::InvalidArchive {
                ref archive,
                ref reason,
            } => CoreError::InvalidArchive {
                name: archive.clone(),
                reason: reason.clone(),
            },
            e => CoreError::source(source_name, e),
        }
    }
}

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        e.into_core("postgres")
    }
}

/// The server's message of a tokio-postgres error (with its detail and hint), or the error itself.
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut cur = std::error::Error::source(e);
            while let Some(c) = cur {
                let m = c.to_string();
                if !s.contains(&m) {
                    s.push_str(": ");
                    s.push_str(&m);
                }
                cur = c.source();
            }
            s
        }
    }
}
