//! What a parallel load is given: where the plain SQL comes from ([`Source`]), how to connect
//! and run `psql` ([`ParallelLoad`]), and how many workers an index build may use
//! ([`IndexWorkers`]).

use std::path::Path;

use bytes::{Bytes, BytesMut};

use crate::conn::ConnInfo;
use crate::error::{Error, Result};
use crate::restore::payload::Payload;

/// Where the plain SQL comes from: a plain dump, or `pg_restore --file=-` writing an archive
/// as one.
pub(crate) enum Source {
    /// A plain dump.
    Payload(Payload),
    /// The standard output of `pg_restore --file=-`.
    Program(tokio::process::ChildStdout),
}

impl Source {
    pub(crate) async fn next_chunk(&mut self, archive: &str) -> Result<Option<Bytes>> {
        match self {
            Source::Payload(p) => p.next_chunk(archive).await,
            Source::Program(out) => {
                use tokio::io::AsyncReadExt;
                let mut buf = BytesMut::with_capacity(256 << 10);
                let n = out
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| Error::io("read the output of", "pg_restore", e))?;
                Ok((n > 0).then(|| buf.freeze()))
            }
        }
    }
}

/// How the parallel load connects and runs its programs.
pub(crate) struct ParallelLoad<'a> {
    pub(crate) conn: &'a ConnInfo,
    pub(crate) jobs: usize,
    /// `SET` statements for the loading sessions (memory for index builds, …).
    pub(crate) session_sql: String,
    /// Parallel workers per index build (`None`: the server's setting).
    pub(crate) index_workers: Option<IndexWorkers>,
    /// amcheck each loaded table's indexes once built: `Some(heapallindexed)`.
    pub(crate) early_checks: Option<bool>,
    /// Builds a `psql` for the sequential parts (with the session options).
    pub(crate) psql: &'a (dyn Fn() -> Result<tokio::process::Command> + Send + Sync),
    pub(crate) work: &'a Path,
    pub(crate) archive: &'a str,
}

/// Parallel workers per index build (`max_parallel_maintenance_workers`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexWorkers {
    /// While other work is left for the connections.
    pub(crate) busy: usize,
    /// For the last builds, when the other connections have nothing left to do.
    pub(crate) last: usize,
}
