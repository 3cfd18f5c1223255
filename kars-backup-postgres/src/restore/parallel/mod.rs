//! Parallel load of a plain SQL dump into a new staging database, like `pg_restore --jobs` does
//! for an archive.
//!
//! The decompressed dump is read once, as a stream, and cut at pg_dump's entry comments
//! (`-- Name: …; Type: …`, `-- Data for Name: …; Type: TABLE DATA`):
//!
//! 1. **pre-data** (everything before the first table's data: schemas, tables, functions, …)
//!    goes to one `psql` as it is read, in one transaction;
//! 2. each table's `COPY … FROM stdin` block goes to one of `jobs` connections, which load tables
//!    side by side, each in its own transaction that empties the new table first
//!    (`TRUNCATE ONLY`) so the rows are written with `COPY … FREEZE`. The server's `COPY n`
//!    result is that table's row count. Blocks wait in memory up to [`MEMORY_BUDGET`](spill::MEMORY_BUDGET),
//!    beyond it in temporary files (each removed once loaded); the reader waits when more than
//!    [`DISK_BUDGET`](spill::DISK_BUDGET) bytes are waiting, so neither memory nor disk grow with the database;
//! 3. **post-data**: each `INDEX` and `CONSTRAINT` entry (primary keys, unique and check
//!    constraints; not foreign keys) is built on the same connections side by side, then every
//!    other entry (sequence values, foreign keys, triggers, grants, …) goes to one `psql` in the
//!    dump's order.
//!
//! The staging database is dropped when anything fails, so the load does not need one
//! transaction. Anything that does not have the expected shape (a data entry that is not one
//! `COPY`, a post-data entry holding a `psql` command, a very large entry) stays in the
//! sequential part, in order.
//!
//! - [`setup`]: what the load is given; [`reader`]: the dump read once and routed, with
//!   [`dump_text`] for pg_dump's text; [`spill`]: table data within the budgets;
//!   [`queue`] and [`worker`]: the loading connections; [`psql`]: the sequential parts.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::loaded::LoadedCounts;
use kars_backup_core::TaskError;

mod dump_text;
mod psql;
mod queue;
mod reader;
mod setup;
mod spill;
mod worker;

use psql::{PrePsql, run_psql};
use reader::{Reader, Route};
pub(crate) use setup::{IndexWorkers, ParallelLoad, Source};
use spill::{DISK_BUDGET, MEMORY_BUDGET, Spiller, kib};

/// Loads a plain dump given as a stream of chunks with `load.jobs` connections; returns the row
/// counts the server reported.
pub(crate) async fn load_plain(
    load: &ParallelLoad<'_>,
    mut source: Source,
) -> Result<LoadedCounts> {
    let deferred_path = load.work.join("post-data.sql");
    let deferred = tokio::fs::File::create(&deferred_path)
        .await
        .map_err(|e| Error::io("create", &deferred_path, e))?;
    let mut r = Reader {
        load,
        header: Vec::new(),
        in_header: true,
        header_too_long: false,
        pre: Some(PrePsql::start(load)?),
        route: Route::Pre,
        sets: BTreeMap::new(),
        deferred: tokio::io::BufWriter::with_capacity(1 << 16, deferred),
        deferred_path: deferred_path.clone(),
        diverted_bytes: 0,
        in_copy: false,
        copy: None,
        copy_table: String::new(),
        copy_bytes: 0,
        spiller: Spiller {
            memory: Arc::new(Semaphore::new(kib(MEMORY_BUDGET) as usize)),
            disk: Arc::new(Semaphore::new(kib(DISK_BUDGET) as usize)),
            dir: load.work.to_path_buf(),
            current: None,
            next_id: 0,
        },
        started: None,
        early: None,
    };
    let read = read_all(&mut r, &mut source).await;
    drop(source);
    // Whatever happened, no more jobs: the workers finish theirs and stop (at once on an error).
    r.copy = None;
    let started = r.started.take();
    let pre = r.pre.take();
    let mut workers = Vec::new();
    let mut first_error = None;
    if let Some(pre) = pre {
        // No table data at all: the pre-data psql had the whole dump.
        first_error = pre.finish().await.err();
    }
    if let Some(s) = started {
        let failed = read.is_err();
        s.shared.update(|q| {
            q.closed = true;
            q.failed |= failed;
        });
        for h in s.workers {
            match h.await {
                Ok(Ok(w)) => workers.push(w),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::Task(TaskError::new(
                        "the parallel load",
                        e.to_string(),
                    )));
                }
            }
        }
    }
    // A loading connection's own error explains a stopped read best.
    if let Some(e) = first_error.or(read.err()) {
        return Err(e);
    }
    r.deferred
        .flush()
        .await
        .map_err(|e| Error::io("write", &deferred_path, e))?;
    let mut counts = LoadedCounts {
        early: r.early.take(),
        ..LoadedCounts::default()
    };
    let mut built = 0;
    for w in &mut workers {
        counts.rows.extend(w.counts.drain(..));
        built += w.built;
        if let Some(e) = &mut counts.early {
            e.checked.extend(w.checked.drain(..));
            e.errors.append(&mut w.check_errors);
        }
    }
    if workers.is_empty() {
        return Ok(counts);
    }
    drop(workers);
    tracing::debug!(
        built,
        tables = counts.rows.len(),
        "parallel load: data, indexes and constraints in"
    );
    run_psql(load, &r.header, Some(&deferred_path), "the post-data").await?;
    Ok(counts)
}

async fn read_all(r: &mut Reader<'_>, source: &mut Source) -> Result<()> {
    let mut buf = BytesMut::new();
    loop {
        let chunk = source.next_chunk(r.load.archive).await?;
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        loop {
            if r.in_copy {
                // Table data: up to the `\.` line.
                let end = if buf.starts_with(b"\\.\n") {
                    Some(0)
                } else {
                    memchr::memmem::find(&buf, b"\n\\.\n").map(|i| i + 1)
                };
                match end {
                    Some(end) => {
                        let data = buf.split_to(end).freeze();
                        r.data(data).await?;
                        let _ = buf.split_to(3);
                        r.end_copy();
                    }
                    None => {
                        if let Some(i) = memchr::memrchr(b'\n', &buf) {
                            let data = buf.split_to(i + 1).freeze();
                            r.data(data).await?;
                        }
                        break;
                    }
                }
            } else {
                match memchr::memchr(b'\n', &buf) {
                    Some(i) => {
                        let line = buf.split_to(i + 1);
                        r.line(&line).await?;
                    }
                    None => break,
                }
            }
        }
    }
    if r.in_copy {
        return Err(Error::InvalidArchive {
            archive: r.load.archive.to_string(),
            reason: "the dump ends inside a table's data (the archive is cut short)".into(),
        });
    }
    if !buf.is_empty() {
        let last = buf.split();
        r.line(&last).await?;
    }
    r.close_route().await?;
    tracing::debug!("parallel load: the whole dump is read");
    Ok(())
}
