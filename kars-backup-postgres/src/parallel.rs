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
//!    result is that table's row count. Blocks wait in memory up to [`MEMORY_BUDGET`], beyond it in
//!    temporary files of [`SEGMENT`] bytes (each removed once loaded); the reader waits when more
//!    than [`DISK_BUDGET`] bytes are waiting, so neither memory nor disk grow with the database;
//! 3. **post-data**: each `INDEX` and `CONSTRAINT` entry (primary keys, unique and check
//!    constraints; not foreign keys) is built on the same connections side by side, then every
//!    other entry (sequence values, foreign keys, triggers, grants, …) goes to one `psql` in the
//!    dump's order.
//!
//! The staging database is dropped when anything fails, so the load does not need one
//! transaction. Anything that does not have the expected shape (a data entry that is not one
//! `COPY`, a post-data entry holding a `psql` command, a very large entry) stays in the
//! sequential part, in order.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_postgres::Client;

use crate::conn::ConnInfo;
use crate::error::{Error, Result, db_message};
use crate::restore::Payload;
use crate::tools;

/// Table data held in memory, over all tables waiting to be loaded.
pub(crate) const MEMORY_BUDGET: usize = 32 << 20;
/// Table data waiting in temporary files before the reader waits for the loading connections.
pub(crate) const DISK_BUDGET: usize = 1 << 30;
/// The size of one temporary file.
pub(crate) const SEGMENT: u64 = 64 << 20;
/// The largest post-data entry built on the parallel connections (larger ones stay in order).
const MAX_DIVERTED_ENTRY: usize = 1 << 20;
/// The most post-data text kept for the parallel connections.
const MAX_DIVERTED_TOTAL: usize = 64 << 20;
/// The longest dump header kept to set up the loading connections.
const MAX_HEADER: usize = 1 << 20;

/// Where the plain SQL comes from: a plain dump, or `pg_restore --file=-` writing an archive
/// as one.
pub(crate) enum Source {
    Payload(Payload),
    Program(tokio::process::ChildStdout),
}

impl Source {
    async fn next_chunk(&mut self, archive: &str) -> Result<Option<Bytes>> {
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

/// What the load found: row counts reported by the server for tables loaded by exactly one
/// `COPY` into the table itself, keyed `schema.table` as `quote_ident` writes it, and the
/// amcheck checks already run.
#[derive(Debug, Default, Clone)]
pub(crate) struct LoadedCounts {
    pub(crate) rows: HashMap<String, u64>,
    pub(crate) early: Option<EarlyChecks>,
}

/// amcheck checks run during the load, on each loaded table's B-tree indexes once built.
#[derive(Debug, Default, Clone)]
pub(crate) struct EarlyChecks {
    /// The load created the extension (the verification drops it again).
    pub(crate) created: bool,
    /// With `heapallindexed`.
    pub(crate) heap: bool,
    /// The indexes checked, by OID.
    pub(crate) checked: HashSet<u32>,
    /// What the failed checks said.
    pub(crate) errors: Vec<String>,
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

/// One piece of a table's data on its way to a loading connection.
enum Piece {
    Memory(Bytes, OwnedSemaphorePermit),
    File {
        segment: Arc<Segment>,
        offset: u64,
        len: usize,
        _permit: OwnedSemaphorePermit,
    },
}

/// A temporary file of spilled table data, removed when the last piece in it is loaded.
struct Segment {
    path: PathBuf,
    file: std::fs::File,
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One table's `COPY` on its way to a loading connection.
struct CopyJob {
    /// The `COPY … FROM stdin` statement, without its `;`.
    statement: String,
    /// The table when the block loads exactly the table named in its entry (`TRUNCATE` + `FREEZE`
    /// possible, and its `COPY n` is the table's row count).
    own_table: Option<String>,
    data: mpsc::UnboundedReceiver<Piece>,
}

/// An index or constraint to build, with the table it is on when that could be read.
struct IndexJob {
    table: Option<String>,
    sql: String,
}

/// What the loading connections share: the work to do and what is still loading.
#[derive(Default)]
struct Queue {
    copies: VecDeque<CopyJob>,
    indexes: VecDeque<IndexJob>,
    /// `COPY` targets queued or loading, with how many blocks.
    loading: HashMap<String, usize>,
    /// Bytes of table data read per `COPY` target, to build the largest tables' indexes first.
    sizes: HashMap<String, u64>,
    /// Parallel workers per index build.
    index_workers: Option<IndexWorkers>,
    /// Tables that got a `COPY`.
    copied: HashSet<String>,
    /// Index jobs queued or running, per table, and for tables that could not be read.
    indexing: HashMap<String, usize>,
    indexing_unknown: usize,
    /// `bt_index_check(…)` when indexes are checked during the load.
    check_sql: Option<String>,
    /// Tables whose indexes were listed for checks.
    checked: HashSet<String>,
    /// Indexes (OIDs) to check, and how many tables' indexes are being listed.
    index_checks: VecDeque<u32>,
    listing: usize,
    /// The reader is done: no more work comes.
    closed: bool,
    /// Something failed: stop.
    failed: bool,
}

/// A job for a loading connection.
enum Task {
    Copy(CopyJob),
    Index(IndexJob),
    /// List the B-tree indexes of this table for checks.
    ListChecks(String),
    /// amcheck this index.
    Check(u32),
}

impl Queue {
    /// The next job: table data first, then an index whose table is loaded, the largest table's
    /// first (an index whose table could not be read waits for all data).
    fn next(&mut self) -> Option<Task> {
        if let Some(c) = self.copies.pop_front() {
            return Some(Task::Copy(c));
        }
        let loading = &self.loading;
        let size = |ix: &IndexJob| ix.table.as_ref().and_then(|t| self.sizes.get(t)).copied();
        let ready = self
            .indexes
            .iter()
            .enumerate()
            .filter(|(_, ix)| match &ix.table {
                Some(t) => !loading.contains_key(t),
                None => loading.is_empty(),
            })
            .max_by_key(|(i, ix)| (size(ix).unwrap_or(0), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        if let Some(i) = ready {
            let mut ix = self.indexes.remove(i)?;
            if let Some(w) = self.index_workers {
                // The last build: the other connections are about to be idle, so it may use them.
                let last = self.closed && self.indexes.is_empty() && self.loading.is_empty();
                let workers = if last { w.last } else { w.busy };
                ix.sql = format!(
                    "SET max_parallel_maintenance_workers = {workers};\n{}",
                    ix.sql
                );
            }
            return Some(Task::Index(ix));
        }
        if let Some(oid) = self.index_checks.pop_front() {
            return Some(Task::Check(oid));
        }
        // A table whose data and indexes are all in (no more can come once the reader is done).
        if self.check_sql.is_none() || !self.closed || self.indexing_unknown > 0 {
            return None;
        }
        let t = self
            .copied
            .iter()
            .find(|t| {
                !self.loading.contains_key(*t)
                    && !self.indexing.contains_key(*t)
                    && !self.checked.contains(*t)
            })?
            .clone();
        self.checked.insert(t.clone());
        self.listing += 1;
        Some(Task::ListChecks(t))
    }

    fn finished(&self) -> bool {
        self.closed
            && self.copies.is_empty()
            && self.indexes.is_empty()
            && (self.check_sql.is_none()
                || (self.index_checks.is_empty()
                    && self.listing == 0
                    && self.copied.iter().all(|t| self.checked.contains(t))))
    }

    fn index_done(&mut self, table: &Option<String>) {
        match table {
            Some(t) => {
                if let Some(n) = self.indexing.get_mut(t) {
                    *n -= 1;
                    if *n == 0 {
                        self.indexing.remove(t);
                    }
                }
            }
            None => self.indexing_unknown = self.indexing_unknown.saturating_sub(1),
        }
    }
}

/// The queue and a wake-up for the connections waiting on it.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    changed: tokio::sync::Notify,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Queue)) {
        f(&mut self.queue.lock().expect("load queue"));
        self.changed.notify_waiters();
    }
}

/// The table an `INDEX` or `CONSTRAINT` entry's statement is on (`ALTER TABLE ONLY t …`,
/// `CREATE [UNIQUE] INDEX i ON [ONLY] t …`), as the dump writes it.
fn entry_table(body: &str) -> Option<String> {
    let statement = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("--") && !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let token = |rest: &str| rest.split_whitespace().next().map(str::to_string);
    if let Some(rest) = statement
        .strip_prefix("ALTER TABLE ONLY ")
        .or_else(|| statement.strip_prefix("ALTER TABLE "))
    {
        return token(rest);
    }
    if statement.starts_with("CREATE INDEX ") || statement.starts_with("CREATE UNIQUE INDEX ") {
        let at = statement.find(" ON ")?;
        let rest = &statement[at + 4..];
        return token(rest.strip_prefix("ONLY ").unwrap_or(rest));
    }
    None
}

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
async fn work(mut w: Worker, shared: Arc<Shared>, target: String) -> Result<Worker> {
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

/// Where the lines of the current entry go.
enum Route {
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

/// Spills table data into segments within the memory and disk budgets.
struct Spiller {
    memory: Arc<Semaphore>,
    disk: Arc<Semaphore>,
    dir: PathBuf,
    current: Option<(Arc<Segment>, u64)>,
    next_id: u64,
}

/// Budgets are counted in KiB.
fn kib(n: usize) -> u32 {
    n.div_ceil(1024).min(u32::MAX as usize) as u32
}

impl Spiller {
    async fn piece(&mut self, data: Bytes) -> Result<Piece> {
        if let Ok(p) = self.memory.clone().try_acquire_many_owned(kib(data.len())) {
            return Ok(Piece::Memory(data, p));
        }
        let need = kib(data.len()).min(kib(DISK_BUDGET));
        let permit = self
            .disk
            .clone()
            .acquire_many_owned(need)
            .await
            .map_err(|e| Error::Task {
                what: "spilling table data",
                reason: e.to_string(),
            })?;
        if self.current.as_ref().is_none_or(|(_, len)| *len >= SEGMENT) {
            let path = self.dir.join(format!("table-data-{}.spill", self.next_id));
            self.next_id += 1;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Error::io("create", &path, e))?;
            self.current = Some((Arc::new(Segment { path, file }), 0));
        }
        let (segment, len) = self.current.as_mut().expect("a segment");
        let offset = *len;
        {
            use std::os::unix::fs::FileExt;
            segment
                .file
                .write_all_at(&data, offset)
                .map_err(|e| Error::io("write", &segment.path, e))?;
        }
        *len += data.len() as u64;
        Ok(Piece::File {
            segment: segment.clone(),
            offset,
            len: data.len(),
            _permit: permit,
        })
    }
}

/// `SET` and `set_config` lines of the dump's header, for the loading connections.
fn header_settings(header: &[u8]) -> String {
    String::from_utf8_lossy(header)
        .lines()
        .filter(|l| l.starts_with("SET ") || l.starts_with("SELECT pg_catalog.set_config("))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The type and the `schema.table` (plain names only) of an entry comment line.
fn entry_of(line: &[u8]) -> Option<(String, Option<String>)> {
    let rest = line
        .strip_prefix(b"-- Name: ")
        .or_else(|| line.strip_prefix(b"-- Data for Name: "))?;
    let rest = std::str::from_utf8(rest).ok()?.trim_end();
    let mut parts = rest.split("; ");
    let name = parts.next()?;
    let kind = parts.next()?.strip_prefix("Type: ")?.to_string();
    let schema = parts.next().and_then(|s| s.strip_prefix("Schema: "));
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !s.as_bytes()[0].is_ascii_digit()
    };
    let qualified = match schema {
        Some(schema) if plain(name) && plain(schema) => Some(format!("{schema}.{name}")),
        _ => None,
    };
    Some((kind, qualified))
}

/// The target of `COPY target (cols) FROM stdin;`.
fn copy_target(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("COPY ")?;
    let end = rest.find([' ', '(']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// A loading connection's state between jobs.
struct Worker {
    client: Client,
    counts: Vec<(String, u64)>,
    built: u64,
    checked: Vec<u32>,
    check_errors: Vec<String>,
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

/// Runs `psql` on `input` (header first, then the file's contents when given).
async fn run_psql(
    load: &ParallelLoad<'_>,
    header: &[u8],
    file: Option<&Path>,
    what: &'static str,
) -> Result<()> {
    let mut cmd = (load.psql)()?;
    let mut child = tools::spawn("psql", &mut cmd)?;
    let stderr = tools::collect_stderr(child.stderr.take());
    let mut stdin = child.stdin.take().ok_or_else(|| Error::Task {
        what,
        reason: "no standard input".into(),
    })?;
    let fed = async {
        stdin.write_all(header).await?;
        if let Some(f) = file {
            let mut f = tokio::fs::File::open(f).await?;
            tokio::io::copy(&mut f, &mut stdin).await?;
        }
        stdin.shutdown().await
    }
    .await;
    drop(stdin);
    let waited = tools::wait_checked("psql", child, stderr).await;
    waited?;
    fed.map_err(|e| Error::io("write to psql", what, e))?;
    Ok(())
}

/// A `psql` that receives the pre-data as it is read.
struct PrePsql {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    broken: bool,
}

impl PrePsql {
    fn start(load: &ParallelLoad<'_>) -> Result<Self> {
        let mut cmd = (load.psql)()?;
        let mut child = tools::spawn("psql", &mut cmd)?;
        let stderr = tools::collect_stderr(child.stderr.take());
        let stdin = child.stdin.take();
        Ok(PrePsql {
            child,
            stdin,
            stderr,
            broken: false,
        })
    }

    async fn write(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        if let Some(s) = &mut self.stdin
            && s.write_all(bytes).await.is_err()
        {
            // psql stopped: its exit status tells why.
            self.broken = true;
        }
    }

    async fn finish(mut self) -> Result<()> {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.shutdown().await;
        }
        tools::wait_checked("psql", self.child, self.stderr).await?;
        Ok(())
    }
}

/// The reader's state.
struct Reader<'a> {
    load: &'a ParallelLoad<'a>,
    header: Vec<u8>,
    in_header: bool,
    header_too_long: bool,
    pre: Option<PrePsql>,
    route: Route,
    /// `SET default_tablespace`, `SET default_table_access_method`, … as last seen.
    sets: BTreeMap<String, String>,
    deferred: tokio::io::BufWriter<tokio::fs::File>,
    deferred_path: PathBuf,
    diverted_bytes: usize,
    /// Reading the data of a `COPY`.
    in_copy: bool,
    /// Where that data goes (`None` once its connection failed).
    copy: Option<mpsc::UnboundedSender<Piece>>,
    /// That `COPY`'s target and the bytes of data sent to it so far.
    copy_table: String,
    copy_bytes: u64,
    spiller: Spiller,
    started: Option<Started>,
    early: Option<EarlyChecks>,
}

/// The loading connections, once the pre-data is in.
struct Started {
    shared: Arc<Shared>,
    workers: Vec<tokio::task::JoinHandle<Result<Worker>>>,
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
    async fn close_route(&mut self) -> Result<()> {
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
                if let Ok(Some((schema, created))) = crate::verify::amcheck_setup(&client).await {
                    let sql = format!(
                        "SELECT {}.bt_index_check($1::pg_catalog.oid::pg_catalog.regclass, {heap})::text",
                        crate::conn::quote_ident(&schema)
                    );
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

    async fn line(&mut self, line: &[u8]) -> Result<()> {
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
                    return Err(Error::Task {
                        what: "the parallel load",
                        reason: "a loading connection stopped".into(),
                    });
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
    fn end_copy(&mut self) {
        self.copy = None;
        self.in_copy = false;
        let (table, bytes) = (std::mem::take(&mut self.copy_table), self.copy_bytes);
        if let Some(s) = &self.started {
            s.shared
                .update(|q| *q.sizes.entry(table).or_default() += bytes);
        }
    }

    /// Sends table data to the current `COPY`.
    async fn data(&mut self, bytes: Bytes) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.copy_bytes += bytes.len() as u64;
        let piece = self.spiller.piece(bytes).await?;
        match &self.copy {
            Some(tx) if tx.send(piece).is_ok() => Ok(()),
            // The connection failed: its error is reported when the workers are joined.
            _ => Err(Error::Task {
                what: "the parallel load",
                reason: "a loading connection stopped".into(),
            }),
        }
    }
}

/// `SET default_tablespace = '';` → (`default_tablespace`, the line).
fn tracked_set(line: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let rest = text.strip_prefix("SET ")?;
    let name = rest.split(" = ").next()?;
    matches!(
        name,
        "default_tablespace" | "default_table_access_method" | "default_with_oids"
    )
    .then(|| (name.to_string(), text.to_string()))
}

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
                    first_error.get_or_insert(Error::Task {
                        what: "the parallel load",
                        reason: e.to_string(),
                    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_recognised() {
        assert_eq!(
            entry_of(b"-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o\n"),
            Some(("TABLE DATA".into(), Some("public.t".into())))
        );
        assert_eq!(
            entry_of(b"-- Name: t_pkey; Type: CONSTRAINT; Schema: s1; Owner: o\n"),
            Some(("CONSTRAINT".into(), Some("s1.t_pkey".into())))
        );
        assert_eq!(
            entry_of(b"-- Name: Q; Type: TABLE DATA; Schema: public; Owner: o\n"),
            Some(("TABLE DATA".into(), None))
        );
        assert_eq!(entry_of(b"-- PostgreSQL database dump\n"), None);
        assert_eq!(
            copy_target("COPY public.t (a, b) FROM stdin;"),
            Some("public.t")
        );
        assert_eq!(copy_target("COPY s.e FROM stdin;"), Some("s.e"));
        assert_eq!(
            tracked_set(b"SET default_tablespace = '';\n"),
            Some((
                "default_tablespace".into(),
                "SET default_tablespace = '';".into()
            ))
        );
        assert_eq!(tracked_set(b"SET search_path = x;\n"), None);
    }

    #[test]
    fn index_entries_name_their_table() {
        assert_eq!(
            entry_table(
                "--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n"
            ),
            Some("public.t".into())
        );
        assert_eq!(
            entry_table("CREATE UNIQUE INDEX i ON ONLY public.p USING btree (a);\n"),
            Some("public.p".into())
        );
        assert_eq!(
            entry_table("CREATE INDEX i ON \"Sales\".\"Orders\" USING btree (a);\n"),
            Some("\"Sales\".\"Orders\"".into())
        );
        assert_eq!(entry_table("COMMENT ON INDEX i IS 'x';\n"), None);
    }

    /// Beyond the memory budget, data goes to segment files, reads back the same, and the files
    /// are removed once their pieces are gone.
    #[tokio::test]
    async fn data_beyond_the_memory_budget_spills_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spiller {
            memory: Arc::new(Semaphore::new(1)),
            disk: Arc::new(Semaphore::new(kib(DISK_BUDGET) as usize)),
            dir: dir.path().to_path_buf(),
            current: None,
            next_id: 0,
        };
        let a = s.piece(Bytes::from_static(b"in memory\n")).await.unwrap();
        let b = s.piece(Bytes::from(vec![b'x'; 5000])).await.unwrap();
        let c = s
            .piece(Bytes::from_static(b"also spilled\n"))
            .await
            .unwrap();
        assert!(matches!(a, Piece::Memory(..)));
        let read = |p: &Piece| match p {
            Piece::File {
                segment,
                offset,
                len,
                ..
            } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; *len];
                segment.file.read_exact_at(&mut buf, *offset).unwrap();
                buf
            }
            Piece::Memory(..) => panic!("expected a spilled piece"),
        };
        assert_eq!(read(&b), vec![b'x'; 5000]);
        assert_eq!(read(&c), b"also spilled\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop((a, b, c));
        s.current = None;
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn header_settings_keep_only_settings() {
        let h = b"--\n-- PostgreSQL database dump\n--\n\\restrict abc\nSET a = 1;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n";
        assert_eq!(
            header_settings(h),
            "SET a = 1;\nSELECT pg_catalog.set_config('search_path', '', false);\n"
        );
    }
}
