//! Storing one WAL file at every destination now ([`store`], the one-pass upload behind
//! [`archive_wal`](super::archive_wal())), and the options of `archive-wal`.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::join_all;
use kars_backup_core::compress::FinishWrite;
use kars_backup_core::sink::PutOptions;
use kars_backup_core::{DynBackupSink, DynEncryptor, Error, PlaintextPolicy, Result, Upload};
use sha2::{Digest, Sha256};
use tempfile::{SpooledData, SpooledTempFile};
use tokio::sync::mpsc;

use super::header::{LONG_HEADER_LEN, SegmentHeader, pg_control_system_identifier, segment_header};
use super::io::{CHANNEL_CAPACITY, CHUNK, ChannelWriter};
use super::keys::{
    DEFAULT_SEGMENT_SIZE, StoredWal, WalKind, WalName, segment_size_key, timeline_prefix,
};

/// The zstd level of stored WAL (zstd's default: WAL compresses well and fast at it).
pub const DEFAULT_WAL_ZSTD_LEVEL: i32 = 3;

/// The default bound of the queue: 1 GiB (64 segments of 16 MiB).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

/// How [`archive_wal`](super::archive_wal()) queues files instead of uploading them at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOptions {
    /// The spool directory (local, on the server's disk; created when missing).
    pub dir: PathBuf,
    /// The bound of the queue in bytes: at or over it, files are uploaded before
    /// `archive-wal` returns.
    pub max_bytes: u64,
    /// The program and arguments that drain this spool ([`push_spool`](super::push_spool): `kars-backup pg
    /// push-wal --spool-dir DIR --to URL…`), started in the background when no pusher runs;
    /// empty when something else runs one.
    pub pusher: Vec<OsString>,
}

impl SpoolOptions {
    /// A spool in `dir` with the default bound and no pusher command.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolOptions {
            dir: dir.into(),
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            pusher: Vec::new(),
        }
    }
}

/// How [`archive_wal`] stores a file.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// Encrypt the stored bytes (after compression); `None` stores them compressed only.
    pub encryptor: Option<DynEncryptor>,
    /// The cluster's system identifier, when known (a streaming receiver asks the server);
    /// otherwise it is read from the segment's first page or from `pg_control`.
    pub system_identifier: Option<u64>,
    /// The data directory whose `global/pg_control` names the cluster, for history and backup
    /// label files (default: the current directory, where `archive_command` runs).
    pub pgdata: Option<PathBuf>,
    /// zstd level, 1 to 19.
    pub zstd_level: i32,
    /// Where unencrypted WAL may be stored: by default only at local destinations.
    pub plaintext: PlaintextPolicy,
    /// Queue the file in a local spool and return at once, uploading in the background
    /// (`archive-wal --spool-dir`); `None` uploads before returning.
    pub spool: Option<SpoolOptions>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            encryptor: None,
            system_identifier: None,
            pgdata: None,
            zstd_level: DEFAULT_WAL_ZSTD_LEVEL,
            plaintext: PlaintextPolicy::default(),
            spool: None,
        }
    }
}

/// What happened at one destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum ArchiveOutcome {
    /// Stored now; the stored (compressed, encrypted) size.
    Stored {
        /// Bytes stored.
        stored_size: u64,
    },
    /// The same file (same checksum) was stored already.
    AlreadyStored,
    /// Queued durably in the local spool; the pusher uploads it ([`SpoolOptions`]).
    Spooled,
}

/// One destination's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchivedTo {
    /// The destination, redacted.
    pub destination: String,
    /// The key it is stored under.
    pub key: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: ArchiveOutcome,
}

/// What [`archive_wal`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchiveReport {
    /// The WAL file.
    pub wal: WalName,
    /// Its cluster.
    pub system_identifier: u64,
    /// SHA-256 of the file (not computed for `.partial`).
    pub sha256: Option<String>,
    /// Its size.
    pub size: u64,
    /// Per destination, in the order given.
    pub destinations: Vec<ArchivedTo>,
}

/// The first bytes of the file: a segment's long page header, when it is one.
pub(crate) async fn read_head(path: &Path) -> Result<Option<SegmentHeader>> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("open", path, e))?;
    let mut head = Vec::with_capacity(LONG_HEADER_LEN);
    (&mut file)
        .take(LONG_HEADER_LEN as u64)
        .read_to_end(&mut head)
        .await
        .map_err(|e| Error::io("read", path, e))?;
    Ok(segment_header(&head))
}

/// The file, read once: hashed, compressed and encrypted into a spool (memory up to
/// [`SPOOL_IN_MEMORY`], a temporary file beyond).
struct Prepared {
    sha256: Option<String>,
    size: u64,
    stored: SpooledTempFile,
}

/// Compressed WAL kept in memory before it goes to a temporary file.
const SPOOL_IN_MEMORY: usize = 8 * 1024 * 1024;

/// A writer into a shared spool (the encryptor owns its inner writer until it is finished).
#[derive(Clone)]
struct SpoolWriter(Arc<Mutex<SpooledTempFile>>);

impl Write for SpoolWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| poisoned())?.write(data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().map_err(|_| poisoned())?.flush()
    }
}

impl FinishWrite for SpoolWriter {
    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.flush()
    }
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("the spool's lock is poisoned")
}

/// Reads the file once: SHA-256 (when `hash`), size, and the stored bytes (zstd, then the
/// encryptor), on a blocking thread.
fn prepare(
    path: &Path,
    hash: bool,
    encryptor: Option<DynEncryptor>,
    level: i32,
) -> Result<Prepared> {
    let err = |e: std::io::Error| Error::io("compress", path, e);
    let spool = SpoolWriter(Arc::new(Mutex::new(tempfile::spooled_tempfile(
        SPOOL_IN_MEMORY,
    ))));
    let out: Box<dyn FinishWrite> = match &encryptor {
        Some(enc) => enc.encrypt(Box::new(spool.clone())).map_err(err)?,
        None => Box::new(spool.clone()),
    };
    let mut encoder = zstd::stream::write::Encoder::new(out, level).map_err(err)?;
    encoder.include_checksum(true).map_err(err)?;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        if hash {
            hasher.update(&buf[..n]);
        }
        size += n as u64;
        encoder.write_all(&buf[..n]).map_err(err)?;
    }
    encoder.finish().map_err(err)?.finish().map_err(err)?;
    let stored = Arc::try_unwrap(spool.0)
        .map_err(|_| Error::generic("archive-wal", "the spool is still in use"))?
        .into_inner()
        .map_err(|_| Error::generic("archive-wal", "the spool's lock is poisoned"))?;
    Ok(Prepared {
        sha256: hash.then(|| hex::encode(hasher.finalize())),
        size,
        stored,
    })
}

/// The cluster a file belongs to: given, else from the segment's header, else `pg_control`.
pub(crate) fn system_identifier(
    wal: &WalName,
    header: Option<SegmentHeader>,
    options: &ArchiveOptions,
) -> Result<u64> {
    match (
        options.system_identifier,
        header.map(|h| h.system_identifier),
    ) {
        (Some(given), Some(found)) if given != found => Err(Error::InvalidInput(format!(
            "{} belongs to the cluster with system identifier {found}, not {given}",
            wal.name
        ))),
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => {
            if matches!(wal.kind, WalKind::Segment) {
                return Err(Error::InvalidInput(format!(
                    "{} does not start with a WAL page header: it is not a WAL segment",
                    wal.name
                )));
            }
            let pgdata = options.pgdata.clone().unwrap_or_else(|| PathBuf::from("."));
            pg_control_system_identifier(&pgdata)
        }
    }
}

/// What a destination holds under a WAL file's name: the stored versions (with a checksum in
/// their key) and, for a segment, the keys of its `.partial`.
#[derive(Default)]
struct AtDestination {
    versions: Vec<(StoredWal, String)>,
    partials: Vec<String>,
}

/// One listing of the keys that start with the file's name.
async fn at_destination(
    sink: &DynBackupSink,
    system_identifier: u64,
    wal: &WalName,
) -> Result<AtDestination> {
    let mut found = AtDestination::default();
    if !wal.has_checksum() {
        return Ok(found);
    }
    let prefix = format!(
        "{}{}",
        timeline_prefix(system_identifier, wal.timeline),
        wal.name
    );
    let partial_name = format!("{}.partial", wal.name);
    for meta in sink.list(Some(&prefix)).await? {
        let Some(stored) = StoredWal::parse(&meta.key) else {
            continue;
        };
        if stored.wal.name == wal.name {
            found.versions.push((stored, meta.key));
        } else if wal.kind == WalKind::Segment && stored.wal.name == partial_name {
            found.partials.push(meta.key);
        }
    }
    Ok(found)
}

/// Whether a destination holds the file already: `Ok(true)` when the same content is stored,
/// `Ok(false)` when nothing is.
///
/// # Errors
/// [`Error::VerificationFailed`] when a file of that name with other content is stored.
fn already_stored(
    sink: &DynBackupSink,
    versions: &[(StoredWal, String)],
    target: &StoredWal,
) -> Result<bool> {
    let mut same = false;
    for (stored, key) in versions {
        if stored.sha256 == target.sha256 {
            same = true;
        } else {
            return Err(Error::VerificationFailed(format!(
                "{} at {} is already archived with other content (sha256 {}, this file has {}): two clusters with the same system identifier, or a data directory restored without a new timeline, are archiving into one place. Nothing was overwritten; find out which file is right before removing {key}",
                target.wal.name,
                sink.describe(),
                stored.sha256.as_deref().unwrap_or("?"),
                target.sha256.as_deref().unwrap_or("?"),
            )));
        }
    }
    Ok(same)
}

/// The WAL file name of `path`.
pub(crate) fn wal_file_name(path: &Path) -> Result<WalName> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    WalName::parse(&file_name).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{} is not a WAL file name (a segment, .partial, .history or .backup file); archive_command passes %p",
            path.display()
        ))
    })
}

/// Stores the file at every destination now ([`archive_wal`] without a spool).
pub(crate) async fn store(
    sinks: &[DynBackupSink],
    path: &Path,
    wal: WalName,
    options: &ArchiveOptions,
) -> Result<ArchiveReport> {
    let header = read_head(path).await?;
    let system_identifier = system_identifier(&wal, header, options)?;
    let hash = wal.has_checksum();
    let prepare = {
        let path = path.to_path_buf();
        let encryptor = options.encryptor.clone();
        let level = options.zstd_level.clamp(1, 19);
        tokio::task::spawn_blocking(move || prepare(&path, hash, encryptor, level))
    };
    let listings = join_all(
        sinks
            .iter()
            .map(|s| at_destination(s, system_identifier, &wal)),
    );
    let (prepared, listings) = tokio::join!(prepare, listings);
    let prepared = prepared.map_err(|e| Error::generic("archive-wal", e))??;
    let encryption = options.encryptor.as_ref().map(|e| e.info().scheme);
    let target = StoredWal::new(
        system_identifier,
        wal.clone(),
        prepared.sha256.clone(),
        encryption,
    );

    let mut destinations = Vec::new();
    let mut to_store = Vec::new();
    let mut partials = Vec::new();
    for (sink, listing) in sinks.iter().zip(listings) {
        let listing = listing?;
        partials.extend(listing.partials.into_iter().map(|k| (sink, k)));
        if already_stored(sink, &listing.versions, &target)? {
            destinations.push(ArchivedTo {
                destination: sink.describe(),
                key: target.key.clone(),
                outcome: ArchiveOutcome::AlreadyStored,
            });
        } else {
            to_store.push(sink.clone());
        }
    }
    if let Some(h) = header {
        record_segment_size(&to_store, system_identifier, u64::from(h.segment_size)).await?;
    }
    if !to_store.is_empty() {
        let stored = upload(&to_store, prepared.stored, &target).await?;
        destinations.extend(stored);
    }
    // Once the complete segment is stored, the `.partial` of it that a receiver shipped is of
    // no more use (a fetch prefers the complete one anyway). Failures are only logged.
    for (sink, key) in partials {
        if let Err(e) = sink.delete(&key).await {
            tracing::warn!(%key, error = %e, "cannot remove a superseded .partial");
        }
    }
    Ok(ArchiveReport {
        wal,
        system_identifier,
        sha256: prepared.sha256,
        size: prepared.size,
        destinations,
    })
}

/// Records a segment size other than the default at the destinations (once: an existing
/// marker is left alone), so that listings number the segments right.
async fn record_segment_size(
    sinks: &[DynBackupSink],
    system_identifier: u64,
    segment_size: u64,
) -> Result<()> {
    if segment_size == DEFAULT_SEGMENT_SIZE {
        return Ok(());
    }
    let key = segment_size_key(system_identifier, segment_size);
    for sink in sinks {
        if !sink.list(Some(&key)).await?.is_empty() {
            continue;
        }
        let mut put = PutOptions::default();
        put.if_not_exists = true;
        match sink.put(&key, put).await?.complete().await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Uploads the spool to every sink and completes them all, or aborts them all.
async fn upload(
    sinks: &[DynBackupSink],
    stored: SpooledTempFile,
    target: &StoredWal,
) -> Result<Vec<ArchivedTo>> {
    let mut put = PutOptions::default();
    // A key with a checksum is the same file wherever it comes from: a concurrent push of it is
    // as good as ours. A `.partial` replaces the previous one.
    put.if_not_exists = target.wal.has_checksum();
    let mut uploads: Vec<Box<dyn Upload>> = Vec::new();
    for sink in sinks {
        match sink.put(&target.key, put.clone()).await {
            Ok(u) => uploads.push(u),
            Err(e) => {
                abort_all(uploads).await;
                return Err(e);
            }
        }
    }

    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CAPACITY);
    let producer = match stored.into_inner() {
        // In memory (the usual case): sent as it is, in pieces.
        SpooledData::InMemory(cursor) => {
            let all = Bytes::from(cursor.into_inner());
            tokio::spawn(async move {
                let mut at = 0;
                while at < all.len() {
                    let end = (at + CHUNK).min(all.len());
                    if tx.send(all.slice(at..end)).await.is_err() {
                        break;
                    }
                    at = end;
                }
                Ok(())
            })
        }
        SpooledData::OnDisk(mut file) => tokio::task::spawn_blocking(move || {
            let mut out = ChannelWriter::new(tx);
            file.seek(SeekFrom::Start(0))
                .and_then(|_| std::io::copy(&mut file, &mut out))
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("read", std::env::temp_dir(), e))
        }),
    };
    let mut stored_size = 0u64;
    let mut failure: Option<Error> = None;
    while let Some(chunk) = rx.recv().await {
        stored_size += chunk.len() as u64;
        let results = join_all(uploads.iter_mut().map(|u| u.put_part(chunk.clone()))).await;
        if let Some(e) = results.into_iter().find_map(|r| r.err()) {
            failure = Some(e);
            break;
        }
    }
    drop(rx);
    let produced = producer
        .await
        .map_err(|e| Error::generic("archive-wal", e))
        .and_then(|r| r);
    if let Some(e) = failure.or(produced.err()) {
        abort_all(uploads).await;
        return Err(e);
    }
    let completed = join_all(uploads.into_iter().map(|u| u.complete())).await;
    let mut out = Vec::new();
    let mut first_error = None;
    for (sink, result) in sinks.iter().zip(completed) {
        match result {
            Ok(meta) => out.push(ArchivedTo {
                destination: sink.describe(),
                key: target.key.clone(),
                outcome: ArchiveOutcome::Stored {
                    stored_size: if meta.size > 0 {
                        meta.size
                    } else {
                        stored_size
                    },
                },
            }),
            // Someone stored the same checksum meanwhile: the same file.
            Err(Error::AlreadyExists { .. }) if target.wal.has_checksum() => out.push(ArchivedTo {
                destination: sink.describe(),
                key: target.key.clone(),
                outcome: ArchiveOutcome::AlreadyStored,
            }),
            Err(e) => {
                tracing::warn!(destination = %sink.describe(), error = %e, "storing WAL failed");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

async fn abort_all(uploads: Vec<Box<dyn Upload>>) {
    join_all(uploads.into_iter().map(|u| u.abort())).await;
}
