//! The reader: the dump is read once, as a stream, and each entry routed as it comes: the
//! pre-data to its `psql`, table data to the loading connections, index and constraint entries
//! to the queue, everything else deferred to the post-data file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::dump_text::{copy_target, entry_of, entry_table, header_settings, tracked_set};
use super::psql::PrePsql;
use super::queue::{CopyJob, IndexJob, Shared};
use super::setup::ParallelLoad;
use super::spill::{Piece, Spiller};
use super::worker::{Worker, work};
use crate::amcheck::{amcheck_setup, check_sql};
use crate::error::{Error, Result};
use crate::loaded::EarlyChecks;
use kars_backup_core::TaskError;

/// The largest post-data entry built on the parallel connections (larger ones stay in order).
const MAX_DIVERTED_ENTRY: usize = 1 << 20;
/// The most post-data text kept for the parallel connections.
const MAX_DIVERTED_TOTAL: usize = 64 << 20;
/// The longest dump header kept to set up the loading connections.
const MAX_HEADER: usize = 1 << 20;

/// Where the lines of the current entry go.
pub(crate) enum Route {
    /// To the pre-data `psql`.
    Pre,
    /// To the deferred post-data file (loaded in order at the end).
    Deferred,
    /// A data entry whose first statement was not seen yet: its comment lines.
    DataPending {
        held: Vec<u8>,
        own_table: Option<String>,
    },
    /// A post-data entry for the parallel connections.
    Divert { text: Vec<u8>, sets: String },
}

/// The reader's state.
pub(crate) struct Reader<'a> {
    pub(crate) load: &'a ParallelLoad<'a>,
    pub(crate) header: Vec<u8>,
    pub(crate) in_header: bool,
    pub(crate) header_too_long: bool,
    pub(crate) pre: Option<PrePsql>,
    pub(crate) route: Route,
    /// `SET default_tablespace`, `SET default_table_access_method`, … as last seen.
    pub(crate) sets: BTreeMap<String, String>,
    pub(crate) deferred: tokio::io::BufWriter<tokio::fs::File>,
    pub(crate) deferred_path: PathBuf,
    pub(crate) diverted_bytes: usize,
    /// Reading the data of a `COPY`.
    pub(crate) in_copy: bool,
    /// Where that data goes (`None` once its connection failed).
    pub(crate) copy: Option<mpsc::UnboundedSender<Piece>>,
    /// That `COPY`'s target and the bytes of data sent to it so far.
    pub(crate) copy_table: String,
    pub(crate) copy_bytes: u64,
    pub(crate) spiller: Spiller,
    pub(crate) started: Option<Started>,
    pub(crate) early: Option<EarlyChecks>,
}

/// The loading connections, once the pre-data is in.
pub(crate) struct Started {
    pub(crate) shared: Arc<Shared>,
    pub(crate) workers: Vec<tokio::task::JoinHandle<Result<Worker>>>,
}

impl<'a> Reader<'a> {
    async fn write_route(&mut self, line: &[u8]) -> Result<()> {
        match &mut self.route {
            Route::Pre => {
                if let Some(p) = &mut self.pre {
                    p.write(line).await;
                }
            }
            Route::Deferred => self
                .deferred
                .write_all(line)
                .await
                .map_err(|e| Error::io("write", &self.deferred_path, e))?,
            Route::DataPending { held, .. } => held.extend_from_slice(line),
            Route::Divert { .. } if line.starts_with(b"\\unrestrict ") => {
                // The dump's last line (pg_dump 17.6, 16.10, 15.14, … and later): the entry
                // before it is complete.
                self.close_route().await?;
                self.deferred
                    .write_all(line)
                    .await
                    .map_err(|e| Error::io("write", &self.deferred_path, e))?;
            }
            Route::Divert { text, .. } => {
                if line.starts_with(b"\\") || text.len() + line.len() > MAX_DIVERTED_ENTRY {
                    // Not a plain SQL entry: it stays in order.
                    let text = std::mem::take(text);
                    self.route = Route::Deferred;
                    self.deferred
                        .write_all(&text)
                        .await
                        .map_err(|e| Error::io("write", &self.deferred_path, e))?;
                    self.deferred
                        .write_all(line)
                        .await
                        .map_err(|e| Error::io("write", &self.deferred_path, e))?;
                } else {
                    text.extend_from_slice(line);
                }
            }
        }
        Ok(())
    }

    /// Ends the current entry.
    pub(crate) async fn close_route(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.route, Route::Deferred) {
            Route::DataPending { held, .. } => self
                .deferred
                .write_all(&held)
                .await
                .map_err(|e| Error::io("write", &self.deferred_path, e))?,
            Route::Divert { text, sets } => {
                if self.diverted_bytes + text.len() > MAX_DIVERTED_TOTAL {
                    self.deferred
                        .write_all(&text)
                        .await
                        .map_err(|e| Error::io("write", &self.deferred_path, e))?;
                } else {
                    self.diverted_bytes += text.len();
                    let body = String::from_utf8_lossy(&text).into_owned();
                    let job = IndexJob {
                        table: entry_table(&body),
                        sql: format!("{sets}{body}"),
                    };
                    if let Some(s) = &self.started {
                        s.shared.update(|q| {
                            match &job.table {
                                Some(t) => *q.indexing.entry(t.clone()).or_default() += 1,
                                None => q.indexing_unknown += 1,
                            }
                            q.indexes.push_back(job);
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The pre-data is complete: wait for it, then connect the loading sessions.
    async fn start_data(&mut self) -> Result<()> {
        if self.header_too_long {
            return Err(Error::Unsupported(format!(
                "{}: the dump's header is over {MAX_HEADER} bytes; restore it with --jobs 1",
                self.load.archive
            )));
        }
        if let Some(pre) = self.pre.take() {
            pre.finish().await?;
        }
        let settings = format!("{}{}", header_settings(&self.header), self.load.session_sql);
        let shared = Arc::new(Shared::default());
        shared.update(|q| q.index_workers = self.load.index_workers);
        // Set first, so that the connections already started are stopped and joined on an error.
        self.started = Some(Started {
            shared: shared.clone(),
            workers: Vec::new(),
        });
        let connects = (0..self.load.jobs).map(|_| self.load.conn.connect());
        let clients = futures::future::join_all(connects).await;
        for (n, client) in clients.into_iter().enumerate() {
            let client = client?;
            if n == 0
                && let Some(heap) = self.load.early_checks
            {
                // Unavailable: left to the verification, which says why.
                if let Ok(Some((schema, created))) = amcheck_setup(&client).await {
                    let sql = check_sql(&schema, heap);
                    shared.update(|q| q.check_sql = Some(sql));
                    self.early = Some(EarlyChecks {
                        created,
                        heap,
                        ..EarlyChecks::default()
                    });
                }
            }
            let target = self.load.conn.redacted();
            client
                .batch_execute(&settings)
                .await
                .map_err(|e| Error::query("set up a loading session", &target, &e))?;
            let w = Worker {
                client,
                counts: Vec::new(),
                built: 0,
                checked: Vec::new(),
                check_errors: Vec::new(),
            };
            let handle = tokio::spawn(work(w, shared.clone(), target));
            if let Some(s) = &mut self.started {
                s.workers.push(handle);
            }
        }
        Ok(())
    }

    pub(crate) async fn line(&mut self, line: &[u8]) -> Result<()> {
        let entry = entry_of(line);
        if self.in_header {
            if entry.is_none() {
                if self.header.len() + line.len() <= MAX_HEADER {
                    self.header.extend_from_slice(line);
                } else {
                    self.header_too_long = true;
                }
                return self.write_route(line).await;
            }
            self.in_header = false;
        }
        if let Some((kind, table)) = entry {
            self.close_route().await?;
            if kind == "TABLE DATA" {
                if self.started.is_none() {
                    self.start_data().await?;
                }
                self.route = Route::DataPending {
                    held: Vec::new(),
                    own_table: table,
                };
            } else if self.started.is_none() {
                self.route = Route::Pre;
            } else if kind == "INDEX" || kind == "CONSTRAINT" {
                self.route = Route::Divert {
                    text: Vec::new(),
                    sets: self.sets.values().map(|s| format!("{s}\n")).collect(),
                };
            } else {
                self.route = Route::Deferred;
            }
            return self.write_route(line).await;
        }
        if let Some(set) = tracked_set(line) {
            self.sets.insert(set.0, set.1);
        }
        if let Route::DataPending { held, own_table } = &mut self.route
            && !line.starts_with(b"--")
            && line != b"\n"
        {
            let text = String::from_utf8_lossy(line);
            let statement = text.trim_end_matches('\n');
            if let Some(copy) = statement.strip_suffix(" FROM stdin;")
                && let Some(target) = copy_target(statement)
                && let Some(started) = &self.started
            {
                let own_table = own_table.take().filter(|t| t == target);
                let statement = format!("{copy} FROM stdin");
                let (tx, rx) = mpsc::unbounded_channel();
                drop(std::mem::take(held));
                self.route = Route::Deferred;
                let mut failed = false;
                let target = target.to_string();
                self.copy_table = target.clone();
                self.copy_bytes = 0;
                started.shared.update(|q| {
                    failed = q.failed;
                    q.copied.insert(target.clone());
                    *q.loading.entry(target).or_default() += 1;
                    q.copies.push_back(CopyJob {
                        statement,
                        own_table,
                        data: rx,
                    });
                });
                if failed {
                    return Err(Error::Task(TaskError::new(
                        "the parallel load",
                        "a loading connection stopped",
                    )));
                }
                self.copy = Some(tx);
                self.in_copy = true;
                return Ok(());
            }
            // Not one COPY (e.g. a dump made with --inserts): it stays in order.
            let held = std::mem::take(held);
            self.route = Route::Deferred;
            self.deferred
                .write_all(&held)
                .await
                .map_err(|e| Error::io("write", &self.deferred_path, e))?;
        }
        self.write_route(line).await
    }

    /// The current `COPY`'s data is all read.
    pub(crate) fn end_copy(&mut self) {
        self.copy = None;
        self.in_copy = false;
        let (table, bytes) = (std::mem::take(&mut self.copy_table), self.copy_bytes);
        if let Some(s) = &self.started {
            s.shared
                .update(|q| *q.sizes.entry(table).or_default() += bytes);
        }
    }

    /// Sends table data to the current `COPY`.
    pub(crate) async fn data(&mut self, bytes: Bytes) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.copy_bytes += bytes.len() as u64;
        let piece = self.spiller.piece(bytes).await?;
        match &self.copy {
            Some(tx) if tx.send(piece).is_ok() => Ok(()),
            // The connection failed: its error is reported when the workers are joined.
            _ => Err(Error::Task(TaskError::new(
                "the parallel load",
                "a loading connection stopped",
            ))),
        }
    }
}
