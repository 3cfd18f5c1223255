//! One loading connection: it takes jobs from the [`queue`](super::queue) until none are left:
//! a table's `COPY` (with `FREEZE` into a table it emptied in the same transaction), an index or
//! constraint build, an amcheck of a built index.

use std::sync::Arc;

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::Client;

use super::dump_text::copy_target;
use super::queue::{CopyJob, Shared, Task};
use super::spill::Piece;
use crate::error::{Error, Result, db_message};

/// The B-tree indexes of a table that amcheck can check (none when they cannot be listed: the
/// verification checks them).
async fn btree_indexes_of(w: &Worker, table: &str) -> Vec<u32> {
    let indexes = w
        .client
        .query(
            "SELECT c.oid FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             JOIN pg_catalog.pg_am a ON a.oid = c.relam
             WHERE i.indrelid = $1::text::pg_catalog.regclass AND a.amname = 'btree'
               AND c.relkind = 'i' AND i.indisvalid AND i.indisready",
            &[&table],
        )
        .await;
    match indexes {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => {
            tracing::debug!(table, error = %db_message(&e), "indexes not checked during the load");
            Vec::new()
        }
    }
}

/// Runs jobs from the queue on one connection until there are none left.
pub(crate) async fn work(mut w: Worker, shared: Arc<Shared>, target: String) -> Result<Worker> {
    loop {
        let notified = shared.changed.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let task = {
            let mut q = shared.queue.lock().expect("load queue");
            if q.failed || q.finished() {
                return Ok(w);
            }
            q.next()
        };
        let Some(task) = task else {
            notified.await;
            continue;
        };
        let result = match task {
            Task::Copy(job) => {
                let table = copy_target(&job.statement).unwrap_or_default().to_string();
                tracing::debug!(table, "parallel load: COPY starts");
                let r = run_copy(&mut w, job, &target).await;
                shared.update(|q| {
                    if let Some(n) = q.loading.get_mut(&table) {
                        *n -= 1;
                        if *n == 0 {
                            q.loading.remove(&table);
                        }
                    }
                });
                r
            }
            Task::Index(ix) => {
                let r = w
                    .client
                    .batch_execute(&ix.sql)
                    .await
                    .map_err(|e| Error::query("build an index or constraint", &target, &e));
                if r.is_ok() {
                    w.built += 1;
                }
                shared.update(|q| q.index_done(&ix.table));
                r
            }
            Task::ListChecks(table) => {
                let oids = btree_indexes_of(&w, &table).await;
                shared.update(|q| {
                    q.index_checks.extend(oids);
                    q.listing -= 1;
                });
                Ok(())
            }
            Task::Check(oid) => {
                let sql = shared
                    .queue
                    .lock()
                    .expect("load queue")
                    .check_sql
                    .clone()
                    .unwrap_or_default();
                // A failed check is kept for the verification's report.
                match w.client.query_one(&sql, &[&oid]).await {
                    Ok(_) => w.checked.push(oid),
                    Err(e) => w.check_errors.push(db_message(&e)),
                }
                shared.update(|_| {});
                Ok(())
            }
        };
        if let Err(e) = result {
            shared.update(|q| q.failed = true);
            return Err(e);
        }
    }
}

/// A loading connection's state between jobs.
pub(crate) struct Worker {
    pub(crate) client: Client,
    pub(crate) counts: Vec<(String, u64)>,
    pub(crate) built: u64,
    pub(crate) checked: Vec<u32>,
    pub(crate) check_errors: Vec<String>,
}

async fn run_copy(w: &mut Worker, mut job: CopyJob, target: &str) -> Result<()> {
    let mut freeze = false;
    if let Some(t) = &job.own_table {
        match w
            .client
            .batch_execute(&format!("BEGIN; TRUNCATE ONLY {t}"))
            .await
        {
            Ok(()) => freeze = true,
            Err(e) => {
                tracing::debug!(table = %t, error = %db_message(&e), "COPY without FREEZE");
                let _ = w.client.batch_execute("ROLLBACK").await;
            }
        }
    }
    let statement = if freeze {
        format!("{} WITH (FREEZE)", job.statement)
    } else {
        job.statement.clone()
    };
    let what = || {
        format!(
            "load {}",
            copy_target(&job.statement).unwrap_or("a table's data")
        )
    };
    let sink = w
        .client
        .copy_in::<_, Bytes>(statement.as_str())
        .await
        .map_err(|e| Error::query(what(), target, &e))?;
    let mut sink = std::pin::pin!(sink);
    while let Some(piece) = job.data.recv().await {
        let bytes = match piece {
            Piece::Memory(b, _permit) => b,
            Piece::File {
                segment,
                offset,
                len,
                _permit,
            } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len];
                segment
                    .file
                    .read_exact_at(&mut buf, offset)
                    .map_err(|e| Error::io("read", &segment.path, e))?;
                Bytes::from(buf)
            }
        };
        sink.send(bytes)
            .await
            .map_err(|e| Error::query(what(), target, &e))?;
    }
    let rows = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| Error::query(what(), target, &e))?;
    if freeze {
        w.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| Error::query(what(), target, &e))?;
    }
    if let Some(t) = job.own_table {
        w.counts.push((t, rows));
    }
    Ok(())
}
