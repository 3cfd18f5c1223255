//! [`Replicator`]: ships every committed transaction of a database to its destinations.
//!
//! A capture thread (blocking: SQLite and file reads) notices commits with an inotify watch on
//! the `-wal` (a `stat()` every [`ReplicateOptions::poll_interval`] where there is none), reads
//! them at most once per poll interval, stamps each with the time it was first seen, and every
//! [`ReplicateOptions::sync_interval`] seals the commits seen into one segment. Each destination has its own queue and task: uploads are retried with
//! backoff, so a failing destination never holds the others back. A destination whose queue
//! passes [`ReplicateOptions::max_queue_bytes`] stops receiving segments and, once it works
//! again, asks for a new generation.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use kars_backup_core::sink::{DynBackupSink, GetOptions};
use kars_backup_core::{CancellationToken, DynEncryptor};
use serde::Serialize;
use tempfile::TempPath;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::capture::{
    Capture, CapturedCommit, MAX_HELD_TRANSACTION, Scan, StateSink, ensure_wal, wal_path,
};
use super::catalog;
use super::compact::{CompactOptions, compact};
use super::format::{
    self, CommitHeader, DbChecksum, SegmentReader, SegmentSpool, SnapshotHeader, SnapshotWriter,
};
use super::keys::{self, ChainKeys};
use super::lease::Lease;
use super::prune::prune;
use super::resume::{ResumeRecord, Tip};
use super::upload::upload_file;
use super::wal::WalPosition;
use super::watch::WalWatch;
use crate::error::{Error, Result};
use kars_backup_core::TaskError;

/// Options of a [`Replicator`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicateOptions {
    /// How often the commits seen are sealed into a segment and uploaded (default 1 s).
    pub sync_interval: Duration,
    /// How often a new snapshot is taken in the same generation (default 24 h).
    pub snapshot_interval: Duration,
    /// The shortest time between two reads of the `-wal` (default 10 ms): commits are noticed
    /// by an inotify watch, or by a `stat()` this often where the file cannot be watched.
    pub poll_interval: Duration,
    /// The replicator's own PASSIVE checkpoint runs when the WAL holds this many frames…
    pub checkpoint_pages: u32,
    /// …or this long after the last one when it holds any (default 60 s).
    pub checkpoint_interval: Duration,
    /// Switch a rollback-journal database to WAL mode (persistent) instead of refusing it.
    pub enable_wal: bool,
    /// Encrypts every snapshot and segment.
    pub encryptor: Option<DynEncryptor>,
    /// Where snapshots are written before upload (default: the system's temporary directory).
    pub spool_dir: Option<PathBuf>,
    /// How long a lease lasts without renewal (default 30 s).
    pub lease_ttl: Duration,
    /// A segment is sealed early when its pages pass this many bytes (default 16 MiB).
    pub max_segment_bytes: usize,
    /// A destination's queue of sealed segments not yet uploaded (spool files in
    /// [`ReplicateOptions::spool_dir`], not memory) is capped at this many bytes (default
    /// 512 MiB; an empty queue takes any segment); past it, the destination gets a new
    /// generation once it works again.
    pub max_queue_bytes: usize,
    /// How long a stopping replicator keeps trying to upload what it has (default 10 s).
    pub shutdown_grace: Duration,
    /// Compacts each destination's segments at start and then every
    /// [`CompactOptions::span`] (default: hourly, into segments of up to 16 MiB); `None`:
    /// never. Not done when [`ReplicateOptions::encryptor`] is set (the replicator does not
    /// hold the keys to read its segments back): run [`compact`](super::compact()) with them.
    pub compaction: Option<CompactOptions>,
    /// Keeps each destination's chain to this point-in-time window with
    /// [`prune`](super::prune()) at start and then hourly (or every compaction span), after
    /// compacting; `None` (the default): everything is kept.
    pub pitr_window: Option<Duration>,
}

impl Default for ReplicateOptions {
    fn default() -> Self {
        ReplicateOptions {
            sync_interval: Duration::from_secs(1),
            snapshot_interval: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_millis(10),
            checkpoint_pages: 1000,
            checkpoint_interval: Duration::from_secs(60),
            enable_wal: false,
            encryptor: None,
            spool_dir: None,
            lease_ttl: Duration::from_secs(30),
            max_segment_bytes: 16 << 20,
            max_queue_bytes: 512 << 20,
            shutdown_grace: Duration::from_secs(10),
            compaction: Some(CompactOptions::default()),
            pitr_window: None,
        }
    }
}

/// Where one destination stands.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DestinationStatus {
    /// The destination (redacted).
    pub destination: String,
    /// The generation of its last upload.
    pub generation: Option<String>,
    /// The last transaction stored there.
    pub shipped_txid: u64,
    /// When the last upload completed.
    pub last_upload: Option<DateTime<Utc>>,
    /// Observed time of the oldest commit captured but not stored there yet.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// The last upload error, cleared by the next success.
    pub last_error: Option<String>,
    /// Bytes waiting in its queue.
    pub queued_bytes: u64,
}

impl DestinationStatus {
    /// The replication lag at `now`: how long the oldest commit not stored there has waited.
    pub fn lag(&self, now: DateTime<Utc>) -> Duration {
        self.oldest_pending
            .map(|t| (now - t).to_std().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// Where a replicator stands, for status and metrics.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReplicationStatus {
    /// The current generation.
    pub generation: Option<String>,
    /// The last transaction captured.
    pub captured_txid: u64,
    /// Observed time of the last commit captured.
    pub last_commit: Option<DateTime<Utc>>,
    /// Generations started by this run (1 at start unless it resumed).
    pub generations_started: u64,
    /// Where the stored chain this run continues ended when it started (`None`: it started a
    /// new generation).
    pub resumed: Option<ChainEnd>,
    /// WAL resets that forced a new generation (another process checkpointed with
    /// RESTART/TRUNCATE while the replicator could not hold the WAL).
    pub resets: u64,
    /// Checkpoints run by the replicator.
    pub checkpoints: u64,
    /// Per destination.
    pub destinations: Vec<DestinationStatus>,
}

/// A transaction of a generation.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct ChainEnd {
    /// The generation.
    pub generation: String,
    /// The transaction (0: the generation's first snapshot).
    pub txid: u64,
}

/// A handle on a running replicator's status.
pub type StatusHandle = Arc<Mutex<ReplicationStatus>>;

/// Continuous replication of one SQLite database to several destinations.
///
/// Run it in a service's own tokio runtime: `run` returns when `shutdown` is cancelled (after
/// uploading what was captured, within [`ReplicateOptions::shutdown_grace`]) or on a fatal
/// error (the database cannot be read, a lease is held by another replicator).
#[derive(Debug)]
pub struct Replicator {
    db: PathBuf,
    name: String,
    options: ReplicateOptions,
    destinations: Vec<DynBackupSink>,
    status: StatusHandle,
}

/// Something to upload.
#[derive(Debug)]
enum Job {
    Snapshot {
        key: String,
        file: Arc<TempPath>,
        generation: String,
        txid: u64,
    },
    Segment {
        key: String,
        file: Arc<TempPath>,
        size: usize,
        generation: String,
        last: u64,
        first_observed: DateTime<Utc>,
    },
}

impl Job {
    fn size(&self) -> usize {
        match self {
            Job::Snapshot { .. } => 0,
            Job::Segment { size, .. } => *size,
        }
    }

    fn key(&self) -> &str {
        match self {
            Job::Snapshot { key, .. } | Job::Segment { key, .. } => key,
        }
    }
}

/// The capture thread's view of one destination.
#[derive(Debug)]
struct Outlet {
    tx: mpsc::UnboundedSender<Arc<Job>>,
    queued: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
}

impl Replicator {
    /// A replicator of the database at `db` to `destinations`.
    pub fn new(
        db: impl Into<PathBuf>,
        options: ReplicateOptions,
        destinations: Vec<DynBackupSink>,
    ) -> Self {
        let db = db.into();
        let name = db
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "database".into());
        let status = ReplicationStatus {
            destinations: destinations
                .iter()
                .map(|d| DestinationStatus {
                    destination: d.describe(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        Replicator {
            db,
            name,
            options,
            destinations,
            status: Arc::new(Mutex::new(status)),
        }
    }

    /// The chain's keys at every destination.
    pub fn keys(&self) -> ChainKeys {
        ChainKeys::new(&self.name)
    }

    /// The live status (lag, position), updated while it runs.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Replicates until `shutdown` is cancelled.
    ///
    /// # Errors
    /// [`Error::NotWal`], [`Error::LeaseHeld`], SQLite and file errors of the database. Storage
    /// errors are retried (and reported in the status), never fatal.
    pub async fn run(self, shutdown: CancellationToken) -> Result<ReplicationStatus> {
        let db = self.db.clone();
        let enable = self.options.enable_wal;
        blocking(move || ensure_wal(&db, enable)).await??;
        let keys = self.keys();
        let run_id = kars_backup_core::new_run_id();
        let db_label = self.db.display().to_string();
        let mut leases = Vec::new();
        for sink in &self.destinations {
            match Lease::acquire(
                sink.clone(),
                keys.lease(),
                &db_label,
                &run_id,
                self.options.lease_ttl,
            )
            .await
            {
                Ok(l) => leases.push(Some(l)),
                Err(e @ Error::LeaseHeld { .. }) => {
                    for l in leases.into_iter().flatten() {
                        l.release().await;
                    }
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(destination = %sink.describe(), error = %e, "could not take the replication lease yet; retrying in the background");
                    leases.push(None);
                }
            }
        }
        // An encrypted chain's end is known from what this replicator sealed (see
        // `resume.rs`); an unencrypted one's is read from its last segment.
        let record = match &self.options.encryptor {
            Some(_) => {
                let described: Vec<String> =
                    self.destinations.iter().map(|d| d.describe()).collect();
                let path = ResumeRecord::path_for(&self.db, &described);
                let chain = keys.clone();
                // (a failed task: no record, a new generation; the leases are held already)
                blocking(move || ResumeRecord::load(path, &chain))
                    .await
                    .ok()
            }
            None => None,
        };
        let tip = self.common_tip(&keys, record.as_ref()).await;
        let want_generation = Arc::new(AtomicBool::new(false));
        let mut outlets = Vec::new();
        let mut workers = Vec::new();
        let drain = CancellationToken::new();
        for (i, (sink, lease)) in self.destinations.iter().zip(leases).enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let overflowed = Arc::new(AtomicBool::new(false));
            outlets.push(Outlet {
                tx,
                queued: queued.clone(),
                overflowed: overflowed.clone(),
            });
            let worker = Worker {
                index: i,
                sink: sink.clone(),
                keys: keys.clone(),
                db_label: db_label.clone(),
                run_id: run_id.clone(),
                lease,
                ttl: self.options.lease_ttl,
                queued,
                overflowed,
                want_generation: want_generation.clone(),
                status: self.status.clone(),
                drain: drain.clone(),
            };
            workers.push(tokio::spawn(worker.run(rx)));
        }
        let capture = CaptureLoop {
            db: self.db.clone(),
            keys,
            options: self.options.clone(),
            outlets,
            want_generation,
            status: self.status.clone(),
            shutdown: shutdown.clone(),
            record: RefCell::new(record),
        };
        let compaction = self
            .options
            .compaction
            .clone()
            .filter(|_| self.options.encryptor.is_none());
        let compactor = (compaction.is_some() || self.options.pitr_window.is_some()).then(|| {
            tokio::spawn(maintain(
                self.destinations.clone(),
                self.name.clone(),
                compaction,
                self.options.pitr_window,
                shutdown.clone(),
            ))
        });
        let captured = blocking(move || capture.run(tip)).await;
        if let Some(compactor) = compactor {
            let _ = compactor.await;
        }
        // The capture thread is done (its senders dropped): the workers drain their queues.
        let grace = self.options.shutdown_grace;
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        let all = futures::future::join_all(workers);
        tokio::pin!(all);
        tokio::select! {
            _ = &mut all => {}
            () = &mut deadline => {
                drain.cancel();
                all.await;
            }
        }
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        captured??;
        Ok(status)
    }

    /// The newest generation's tip when every destination has the same one.
    async fn common_tip(&self, keys: &ChainKeys, record: Option<&ResumeRecord>) -> Option<Tip> {
        let mut common: Option<Tip> = None;
        for sink in &self.destinations {
            let tip = match tip_of(sink, keys, record).await {
                Ok(Some(t)) => t,
                Ok(None) => return None,
                Err(e) => {
                    tracing::info!(destination = %sink.describe(), error = %e, "cannot read the chain's tip; starting a new generation");
                    return None;
                }
            };
            match &common {
                None => common = Some(tip),
                Some(c) if *c == tip => {}
                Some(_) => return None,
            }
        }
        common
    }
}

/// Compacts and prunes every destination at start and then every compaction span (hourly
/// without compaction), until `shutdown` (either cut short leaves a state a restore reads the
/// same; the next run finishes it).
async fn maintain(
    destinations: Vec<DynBackupSink>,
    name: String,
    compaction: Option<CompactOptions>,
    window: Option<Duration>,
    shutdown: CancellationToken,
) {
    let every = compaction
        .as_ref()
        .map_or(Duration::from_secs(3600), |c| c.span)
        .max(Duration::from_secs(60));
    loop {
        for sink in &destinations {
            let run = async {
                if let Some(options) = &compaction
                    && let Err(e) = compact(sink, &name, options, Utc::now()).await
                {
                    tracing::warn!(destination = %sink.describe(), error = %e, "compaction failed; retrying at the next interval");
                }
                if let Some(window) = window
                    && let Err(e) = prune(sink, &name, window, Utc::now(), false).await
                {
                    tracing::warn!(destination = %sink.describe(), error = %e, "keeping the point-in-time window failed; retrying at the next interval");
                }
            };
            tokio::select! {
                () = run => {}
                () = shutdown.cancelled() => return,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The last segment of the newest generation at `sink`: as recorded in `record` when it is
/// one this replicator sealed (an encrypted chain), else as read from it.
async fn tip_of(
    sink: &DynBackupSink,
    keys: &ChainKeys,
    record: Option<&ResumeRecord>,
) -> Result<Option<Tip>> {
    let generations = catalog::generations(sink, keys).await?;
    let Some(g) = generations.last() else {
        return Ok(None);
    };
    let Some(seg) = g.segments.last() else {
        return Ok(None);
    };
    if let Some(tip) = record.and_then(|r| r.find(&seg.key, seg.size)) {
        return Ok(Some(tip));
    }
    let stream = sink
        .get(&seg.key, GetOptions::default().with_size_hint(seg.size))
        .await?;
    let input = SyncIoBridge::new(StreamReader::new(stream.map_err(std::io::Error::other)));
    let key = seg.key.clone();
    // Streamed: the last segment may be large (one big transaction).
    let end = blocking(move || -> std::result::Result<_, String> {
        // Encrypted and not in the record: not readable without the private key, so a new
        // generation.
        let plain = match format::open_sealed(&key, Box::new(input), None) {
            Ok((plain, _)) => plain,
            Err(kars_backup_core::Error::KeyMissing { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut reader = SegmentReader::new(plain).map_err(|e| e.to_string())?;
        let header = reader.header;
        let mut after = header.checksum_before;
        while let Some(c) = reader.next_commit().map_err(|e| e.to_string())? {
            after = c.checksum_after;
        }
        reader.finish().map_err(|e| e.to_string())?;
        Ok(Some((header, after)))
    })
    .await?
    .map_err(|reason| Error::Chain {
        destination: sink.describe(),
        key: seg.key.clone(),
        reason,
    })?;
    Ok(end.and_then(|(header, checksum)| {
        header
            .wal_after
            .map(|wal| Tip::new(g.id.clone(), header.last, checksum, wal))
    }))
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(TaskError::new("the replicator's capture", e.to_string())))
}

/// The longest the capture thread waits for the WAL to change before it looks at its other
/// duties (stopping, a destination asking for a new generation).
const MAX_WAIT: Duration = Duration::from_millis(200);

/// The capture thread.
struct CaptureLoop {
    db: PathBuf,
    keys: ChainKeys,
    options: ReplicateOptions,
    outlets: Vec<Outlet>,
    want_generation: Arc<AtomicBool>,
    status: StatusHandle,
    shutdown: CancellationToken,
    /// The ends of the segments sealed lately (an encrypted chain only).
    record: RefCell<Option<ResumeRecord>>,
}

/// The chain being written.
struct Chain {
    generation: String,
    next_txid: u64,
    position: Option<WalPosition>,
    checksum: DbChecksum,
    page_size: u32,
    /// The commits captured and not sealed yet, in a spool file.
    pending: Option<SegmentSpool>,
    /// The observed times of the first and last pending commits (UTC µs).
    pending_observed: (i64, i64),
    /// The page images of the last scan's commits (kept from scan to scan: no allocation
    /// per page).
    images: Vec<u8>,
}

impl CaptureLoop {
    fn run(self, tip: Option<Tip>) -> Result<()> {
        let mut capture = Capture::open(&self.db)?;
        let mut chain = match tip {
            Some(t) => match self.resume(&capture, &t)? {
                Some(c) => c,
                None => {
                    self.new_generation(&capture, "the WAL no longer continues the stored chain")?
                }
            },
            None => self.new_generation(&capture, "no chain to continue")?,
        };
        let opts = &self.options;
        let mut watch = WalWatch::new(capture.wal_path(), opts.poll_interval);
        tracing::debug!(db = %self.db.display(), inotify = watch.is_inotify(), "watching the WAL");
        let mut changed = true;
        let mut last_scan = Instant::now();
        let mut last_flush = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut last_snapshot = Instant::now();
        let mut checkpointed = None;
        loop {
            let stopping = self.shutdown.is_cancelled();
            let due = last_scan.elapsed() >= opts.sync_interval;
            // Whether this round's read found commits (the next read follows without a watch).
            let mut busy = false;
            if changed || due || stopping {
                if due && capture.check_wal() {
                    watch = WalWatch::new(capture.wal_path(), opts.poll_interval);
                }
                last_scan = Instant::now();
                let before = chain.position;
                let intact = self.scan(&capture, &mut chain)?;
                busy = chain.position != before;
                if !intact {
                    chain = self.new_generation(&capture, "the WAL was reset")?;
                    continue;
                }
            }
            if let Some(pending) = &chain.pending
                && (last_flush.elapsed() >= opts.sync_interval
                    || pending.len() >= opts.max_segment_bytes as u64
                    || stopping)
            {
                self.flush(&mut chain)?;
                capture.advance_pin()?;
                last_flush = Instant::now();
            }
            if stopping {
                return Ok(());
            }
            let frames = chain.position.map_or(0, |p| p.frames);
            let cycle = chain.position.map(|p| (p.header.salt1, p.header.salt2));
            // After a checkpoint the WAL restarts at the application's next write: until then
            // (same cycle) there is nothing more to checkpoint.
            let fresh = cycle != checkpointed;
            if (fresh && frames >= opts.checkpoint_pages)
                || (frames > 0 && last_checkpoint.elapsed() >= opts.checkpoint_interval)
            {
                let mut reset = false;
                // Only reading happens under the write lock: the commits read are held in
                // memory and sealed after the application may write again.
                let done = capture.checkpoint(&mut |c| {
                    reset = !self.scan(c, &mut chain)?;
                    Ok(())
                })?;
                if reset {
                    chain = self.new_generation(&capture, "the WAL was reset")?;
                    continue;
                }
                if done {
                    checkpointed = cycle;
                    last_checkpoint = Instant::now();
                    self.with_status(|s| s.checkpoints += 1);
                }
            }
            if self.want_generation.swap(false, Ordering::SeqCst) {
                self.flush(&mut chain)?;
                chain = self.new_generation(&capture, "a destination fell behind")?;
                last_snapshot = Instant::now();
            } else if last_snapshot.elapsed() >= opts.snapshot_interval {
                self.periodic_snapshot(&mut capture, &mut chain)?;
                last_snapshot = Instant::now();
            }
            // At most one read of the WAL per poll interval (the commits of that time are read
            // together), then until the WAL changes or the next flush or forced scan is due.
            if let Some(rest) = opts.poll_interval.checked_sub(last_scan.elapsed()) {
                std::thread::sleep(rest);
            }
            let mut next = opts.sync_interval.saturating_sub(last_scan.elapsed());
            if chain.pending.is_some() {
                next = next.min(opts.sync_interval.saturating_sub(last_flush.elapsed()));
            }
            changed = watch.wait(busy, next.min(MAX_WAIT));
        }
    }

    fn with_status(&self, f: impl FnOnce(&mut ReplicationStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Reads the new commits into the chain; false when the WAL was reset (the pending commits
    /// are flushed first: they are valid).
    fn scan(&self, capture: &Capture, chain: &mut Chain) -> Result<bool> {
        let mut images = std::mem::take(&mut chain.images);
        let result = self.scan_into(capture, chain, &mut images);
        chain.images = images;
        result
    }

    fn scan_into(
        &self,
        capture: &Capture,
        chain: &mut Chain,
        images: &mut Vec<u8>,
    ) -> Result<bool> {
        let mut page = Vec::new();
        loop {
            match capture.read_commits(chain.position, MAX_HELD_TRANSACTION, images)? {
                Scan::Reset { reason } => {
                    tracing::warn!(db = %self.db.display(), %reason, "starting a new generation");
                    self.flush(chain)?;
                    self.with_status(|s| s.resets += 1);
                    return Ok(false);
                }
                Scan::Commits { commits, end, wal } => {
                    chain.position = end;
                    let Some(wal) = wal.filter(|_| !commits.is_empty()) else {
                        return Ok(true);
                    };
                    // Seen now: never before any of them committed.
                    let observed = Utc::now();
                    let observed_us = observed.timestamp_micros();
                    for c in commits {
                        self.spool_commit(chain, &c, wal, images, observed_us, &mut page)?;
                    }
                    let last = chain.next_txid - 1;
                    self.with_status(|s| {
                        s.captured_txid = last;
                        s.last_commit = Some(observed);
                    });
                    if chain
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.len() >= self.options.max_segment_bytes as u64)
                    {
                        self.flush(chain)?;
                    }
                }
            }
        }
    }

    fn spool_dir(&self) -> PathBuf {
        self.options
            .spool_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// Writes one captured commit into the pending segment's spool, its pages taken from
    /// `images` (held) or read from the WAL one at a time into `page`, and updates the chain's
    /// checksum.
    fn spool_commit(
        &self,
        chain: &mut Chain,
        commit: &CapturedCommit,
        wal: &std::fs::File,
        images: &[u8],
        observed_us: i64,
        page: &mut Vec<u8>,
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let spool_err = |e| Error::io("write a segment in", self.spool_dir(), e);
        if chain.pending.is_none() {
            chain.pending = Some(
                SegmentSpool::new(&self.spool_dir(), chain.page_size, chain.checksum.value())
                    .map_err(spool_err)?,
            );
            chain.pending_observed.0 = observed_us;
        }
        let spool = chain.pending.as_mut().expect("just set");
        let mut header = CommitHeader {
            txid: chain.next_txid,
            observed_us,
            db_size: commit.db_size,
            pages: commit.pages.len() as u32,
            checksum_after: 0,
        };
        let ps = chain.page_size as usize;
        if let Some(held_at) = &commit.images {
            // Held: the checksum after is known before the pages are written.
            let image = |at: usize| &images[at..at + ps];
            for (&(pgno, _), &at) in commit.pages.iter().zip(held_at) {
                chain.checksum.set_page(pgno, image(at));
            }
            chain.checksum.set_size(commit.db_size);
            header.checksum_after = chain.checksum.value();
            spool.begin_commit(&header).map_err(spool_err)?;
            for (&(pgno, _), &at) in commit.pages.iter().zip(held_at) {
                spool.page(pgno, image(at)).map_err(spool_err)?;
            }
        } else {
            // Large: each page read from the WAL once, its checksum set in the header after.
            page.resize(ps, 0);
            spool.begin_commit(&header).map_err(spool_err)?;
            for &(pgno, offset) in &commit.pages {
                wal.read_exact_at(page, offset)
                    .map_err(|e| Error::io("read a captured page from", wal_path(&self.db), e))?;
                chain.checksum.set_page(pgno, page);
                spool.page(pgno, page).map_err(spool_err)?;
            }
            chain.checksum.set_size(commit.db_size);
        }
        spool
            .end_commit(chain.checksum.value())
            .map_err(spool_err)?;
        chain.pending_observed.1 = observed_us;
        chain.next_txid += 1;
        Ok(())
    }

    /// Seals the pending commits into a segment and queues it at every destination.
    fn flush(&self, chain: &mut Chain) -> Result<()> {
        let Some(mut spool) = chain.pending.take() else {
            return Ok(());
        };
        let (first_us, last_us) = chain.pending_observed;
        spool.set_wal_after(chain.position);
        let sealed = spool
            .seal(self.options.encryptor.as_ref())
            .map_err(|e| Error::io("seal a segment of", &self.db, e))?;
        let h = sealed.header;
        let key = self.keys.segment(
            &chain.generation,
            h.first,
            h.last,
            DateTime::from_timestamp_micros(last_us).unwrap_or_default(),
        );
        // Recorded before any upload: the key names exactly this content.
        if let (Some(record), Some(wal)) = (self.record.borrow_mut().as_mut(), chain.position) {
            let tip = Tip::new(
                chain.generation.clone(),
                h.last,
                chain.checksum.value(),
                wal,
            );
            record.sealed(&key, sealed.size, &tip);
        }
        let job = Arc::new(Job::Segment {
            key,
            size: sealed.size as usize,
            file: Arc::new(sealed.path),
            generation: chain.generation.clone(),
            last: h.last,
            first_observed: DateTime::from_timestamp_micros(first_us).unwrap_or_default(),
        });
        self.dispatch(job, false);
        Ok(())
    }

    fn dispatch(&self, job: Arc<Job>, snapshot: bool) {
        for o in &self.outlets {
            if snapshot {
                o.overflowed.store(false, Ordering::SeqCst);
            } else if o.overflowed.load(Ordering::SeqCst) {
                continue;
            } else if o.queued.load(Ordering::SeqCst) > 0
                && o.queued.load(Ordering::SeqCst) + job.size() > self.options.max_queue_bytes
            {
                // An empty queue takes any segment: one large transaction is not a destination
                // falling behind.
                tracing::warn!(key = %job.key(), "a destination's queue is full; it gets a new generation once it catches up");
                o.overflowed.store(true, Ordering::SeqCst);
                continue;
            }
            o.queued.fetch_add(job.size(), Ordering::SeqCst);
            let _ = o.tx.send(job.clone());
        }
    }

    /// Starts a new generation from a snapshot of the state at the WAL's last commit.
    fn new_generation(&self, capture: &Capture, why: &str) -> Result<Chain> {
        let generation = keys::new_generation(Utc::now());
        tracing::info!(db = %self.db.display(), %generation, why, "new generation");
        if let Some(record) = self.record.borrow_mut().as_mut() {
            record.clear();
        }
        let (position, checksum, page_size) = self.snapshot(capture, &generation, 0, None)?;
        self.with_status(|s| {
            s.generation = Some(generation.clone());
            s.generations_started += 1;
            s.captured_txid = 0;
        });
        Ok(Chain {
            generation,
            next_txid: 1,
            position,
            checksum,
            page_size,
            pending: None,
            pending_observed: (0, 0),
            images: Vec::new(),
        })
    }

    /// A new snapshot in the current generation: pin, read the WAL to its end, then the state
    /// exactly there (the pin is older than that position, so it cannot move under the read).
    fn periodic_snapshot(&self, capture: &mut Capture, chain: &mut Chain) -> Result<()> {
        capture.advance_pin()?;
        if !self.scan(capture, chain)? {
            *chain = self.new_generation(capture, "the WAL was reset")?;
            return Ok(());
        }
        self.flush(chain)?;
        let Some(position) = chain.position else {
            // No WAL at all: the snapshot is the database file, as a new generation's.
            *chain = self.new_generation(capture, "periodic snapshot")?;
            return Ok(());
        };
        let txid = chain.next_txid - 1;
        match self.snapshot(capture, &chain.generation.clone(), txid, Some(position)) {
            Ok((_, checksum, _)) if checksum.value() == chain.checksum.value() => Ok(()),
            Ok(_) => {
                *chain = self.new_generation(capture, "a snapshot did not match the chain")?;
                Ok(())
            }
            Err(Error::Chain { .. }) => {
                *chain = self.new_generation(capture, "the WAL moved during a snapshot")?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Writes a snapshot into the spool and queues it; returns its position and checksum.
    fn snapshot(
        &self,
        capture: &Capture,
        generation: &str,
        txid: u64,
        at: Option<WalPosition>,
    ) -> Result<(Option<WalPosition>, DbChecksum, u32)> {
        let spool = self
            .options
            .spool_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let temp = tempfile::Builder::new()
            .prefix(".kars-replica-snapshot-")
            .tempfile_in(&spool)
            .map_err(|e| Error::io("create a snapshot spool file in", &spool, e))?
            .into_temp_path();
        let mut sink = SpoolSink {
            path: temp.to_path_buf(),
            encryptor: self.options.encryptor.clone(),
            txid,
            writer: None,
            time: Utc::now(),
            page_size: 0,
        };
        let read = capture.read_state(at, &mut sink)?;
        let Some((position, _count)) = read else {
            return Err(Error::Chain {
                destination: "local".into(),
                key: self.db.display().to_string(),
                reason: "the WAL changed under the snapshot".into(),
            });
        };
        let writer = sink.writer.take().ok_or_else(|| {
            Error::io(
                "write",
                &sink.path,
                std::io::Error::other("no snapshot written"),
            )
        })?;
        let (out, checksum) = writer
            .finish()
            .map_err(|e| Error::io("write", &sink.path, e))?;
        out.finish()
            .map_err(|e| Error::io("write", &sink.path, e))?;
        let key = self.keys.snapshot(generation, txid, sink.time);
        tracing::debug!(%key, pages = checksum.pages(), "snapshot spooled");
        self.dispatch(
            Arc::new(Job::Snapshot {
                key,
                file: Arc::new(temp),
                generation: generation.to_string(),
                txid,
            }),
            true,
        );
        Ok((position, checksum, sink.page_size))
    }

    /// Continues the stored chain when the WAL still holds it exactly.
    fn resume(&self, capture: &Capture, tip: &Tip) -> Result<Option<Chain>> {
        let mut sum = ChecksumSink::default();
        let Some((position, _)) = capture.read_state(Some(tip.wal), &mut sum)? else {
            return Ok(None);
        };
        if sum.checksum.value() != tip.checksum {
            tracing::info!(db = %self.db.display(), "the database no longer matches the stored chain's end");
            return Ok(None);
        }
        tracing::info!(db = %self.db.display(), generation = %tip.generation, txid = tip.last_txid, "resuming the stored chain");
        self.with_status(|s| {
            s.generation = Some(tip.generation.clone());
            s.captured_txid = tip.last_txid;
            s.resumed = Some(ChainEnd {
                generation: tip.generation.clone(),
                txid: tip.last_txid,
            });
            // Every destination holds the chain to its tip.
            for d in &mut s.destinations {
                d.generation = Some(tip.generation.clone());
                d.shipped_txid = tip.last_txid;
            }
        });
        Ok(Some(Chain {
            generation: tip.generation.clone(),
            next_txid: tip.last_txid + 1,
            position,
            checksum: sum.checksum,
            page_size: sum.page_size,
            pending: None,
            pending_observed: (0, 0),
            images: Vec::new(),
        }))
    }
}

type SealedSnapshot = SnapshotWriter<Box<dyn kars_backup_core::compress::FinishWrite>>;

struct SpoolSink {
    path: PathBuf,
    encryptor: Option<DynEncryptor>,
    txid: u64,
    writer: Option<SealedSnapshot>,
    time: DateTime<Utc>,
    page_size: u32,
}

impl StateSink for SpoolSink {
    fn begin(
        &mut self,
        position: Option<WalPosition>,
        pages: u32,
        page_size: u32,
    ) -> std::io::Result<()> {
        self.writer = None;
        // Every commit in the state was in the WAL before now.
        self.time = Utc::now();
        self.page_size = page_size;
        let file = std::fs::File::create(&self.path)?;
        let out = format::sealing_writer(
            Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
            self.encryptor.as_ref(),
        )?;
        let header = SnapshotHeader {
            page_size,
            page_count: pages,
            txid: self.txid,
            time_us: self.time.timestamp_micros(),
            wal: position,
        };
        self.writer = Some(SnapshotWriter::new(out, header)?);
        Ok(())
    }

    fn page(&mut self, _pgno: u32, page: &[u8]) -> std::io::Result<()> {
        match &mut self.writer {
            Some(w) => w.page(page),
            None => Err(std::io::Error::other("page before begin")),
        }
    }
}

#[derive(Default)]
struct ChecksumSink {
    checksum: DbChecksum,
    page_size: u32,
}

impl StateSink for ChecksumSink {
    fn begin(&mut self, _: Option<WalPosition>, _: u32, page_size: u32) -> std::io::Result<()> {
        self.checksum = DbChecksum::default();
        self.page_size = page_size;
        Ok(())
    }

    fn page(&mut self, pgno: u32, page: &[u8]) -> std::io::Result<()> {
        self.checksum.set_page(pgno, page);
        Ok(())
    }
}

/// One destination's uploader.
struct Worker {
    index: usize,
    sink: DynBackupSink,
    keys: ChainKeys,
    db_label: String,
    run_id: String,
    lease: Option<Lease>,
    ttl: Duration,
    queued: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
    want_generation: Arc<AtomicBool>,
    status: StatusHandle,
    drain: CancellationToken,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Arc<Job>>) {
        let mut queue: VecDeque<Arc<Job>> = VecDeque::new();
        let mut backoff = Duration::from_secs(1);
        let mut renew_at = Instant::now() + self.ttl / 3;
        let mut closed = false;
        loop {
            // Take everything queued so far without waiting.
            loop {
                match rx.try_recv() {
                    Ok(j) => queue.push_back(j),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.update_pending(&queue);
            if self.drain.is_cancelled() || (closed && queue.is_empty()) {
                break;
            }
            if Instant::now() >= renew_at || self.lease.is_none() {
                match self.keep_lease().await {
                    Ok(()) => renew_at = Instant::now() + self.ttl / 3,
                    Err(e @ Error::LeaseHeld { .. }) => {
                        tracing::error!(destination = %self.sink.describe(), error = %e, "lost the replication lease; this destination stops");
                        self.set_error(e.to_string());
                        return;
                    }
                    Err(e) => {
                        self.set_error(e.to_string());
                        self.pause(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
            let Some(job) = queue.front().cloned() else {
                if self.overflowed.load(Ordering::SeqCst) {
                    self.want_generation.store(true, Ordering::SeqCst);
                }
                let wait = renew_at.saturating_duration_since(Instant::now());
                tokio::select! {
                    j = rx.recv() => match j {
                        Some(j) => queue.push_back(j),
                        None => closed = true,
                    },
                    () = tokio::time::sleep(wait) => {}
                    () = self.drain.cancelled() => {}
                }
                continue;
            };
            match self.upload(&job).await {
                Ok(()) => {
                    queue.pop_front();
                    self.queued.fetch_sub(job.size(), Ordering::SeqCst);
                    backoff = Duration::from_secs(1);
                    self.uploaded(&job);
                }
                Err(e) => {
                    tracing::warn!(destination = %self.sink.describe(), key = %job.key(), error = %e, retry_in = ?backoff, "upload failed; retrying");
                    self.set_error(format!("{}: {e}", job.key()));
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        self.update_pending(&queue);
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.drain.cancelled() => {}
        }
    }

    async fn keep_lease(&mut self) -> Result<()> {
        match &mut self.lease {
            Some(l) => l.renew().await,
            None => {
                self.lease = Some(
                    Lease::acquire(
                        self.sink.clone(),
                        self.keys.lease(),
                        &self.db_label,
                        &self.run_id,
                        self.ttl,
                    )
                    .await?,
                );
                Ok(())
            }
        }
    }

    async fn upload(&self, job: &Job) -> Result<()> {
        match job {
            Job::Segment { key, file, .. } | Job::Snapshot { key, file, .. } => {
                upload_file(&self.sink, key, file).await?;
            }
        }
        Ok(())
    }

    fn uploaded(&self, job: &Job) {
        let now = Utc::now();
        if let Ok(mut s) = self.status.lock()
            && let Some(d) = s.destinations.get_mut(self.index)
        {
            d.last_upload = Some(now);
            d.last_error = None;
            match job {
                Job::Segment {
                    generation, last, ..
                } => {
                    d.generation = Some(generation.clone());
                    d.shipped_txid = *last;
                }
                Job::Snapshot {
                    generation, txid, ..
                } => {
                    d.generation = Some(generation.clone());
                    d.shipped_txid = *txid;
                }
            }
        }
    }

    fn update_pending(&self, queue: &VecDeque<Arc<Job>>) {
        let oldest = queue.iter().find_map(|j| match &**j {
            Job::Segment { first_observed, .. } => Some(*first_observed),
            Job::Snapshot { .. } => None,
        });
        let bytes = self.queued.load(Ordering::SeqCst) as u64;
        if let Ok(mut s) = self.status.lock()
            && let Some(d) = s.destinations.get_mut(self.index)
        {
            d.oldest_pending = oldest;
            d.queued_bytes = bytes;
        }
    }

    fn set_error(&self, e: String) {
        if let Ok(mut s) = self.status.lock()
            && let Some(d) = s.destinations.get_mut(self.index)
        {
            d.last_error = Some(e);
        }
    }
}

/// Parses an interval such as `250ms`, `1s`, `90m`, `24h` or `7d`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad interval {s:?}: use a number and a unit, e.g. 250ms, 1s, 24h"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("bad interval unit in {s:?}: use ms, s, m, h or d")),
    };
    let d = Duration::from_millis(n.saturating_mul(ms));
    if d.is_zero() {
        return Err(format!("interval {s:?} must be more than zero"));
    }
    Ok(d)
}
