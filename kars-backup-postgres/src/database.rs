//! The database a source works on: how to connect to it, the client programs (`pg_dump`,
//! `pg_restore`, `psql`) for its server, and where temporary files go. The backup and the
//! restore get this, not the whole [`PostgresSource`](crate::PostgresSource).

use std::path::PathBuf;

use tempfile::TempDir;

use crate::conn::ConnInfo;
use crate::error::{Error, Result};
use crate::tools::Tools;

/// A database, its client programs and its work directory.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    /// Where and how to connect.
    pub(crate) conn: ConnInfo,
    /// `pg_dump`, `pg_restore`, `psql`.
    pub(crate) tools: Tools,
    /// Where temporary files go (directory dumps, spooled archives); the system's temporary
    /// directory when unset.
    pub(crate) work_dir: Option<PathBuf>,
}

impl Database {
    /// A new private temporary directory in the work directory.
    pub(crate) fn work_dir_tempdir(&self, prefix: &str) -> Result<TempDir> {
        let dir = self.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&dir)
            .map_err(|e| Error::io("create a temporary directory in", &dir, e))
    }
}
