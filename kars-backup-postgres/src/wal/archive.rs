//! [`archive_wal`]: stores one WAL file (PostgreSQL's `archive_command`).

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::future::join_all;
use kars_backup_core::compress::FinishWrite;
use kars_backup_core::sink::PutOptions;
use kars_backup_core::{DynBackupSink, DynEncryptor, Error, PlaintextPolicy, Result, Upload};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::header::{LONG_HEADER_LEN, pg_control_system_identifier, segment_header};
use super::io::{CHANNEL_CAPACITY, ChannelWriter};
use super::keys::{StoredWal, WalKind, WalName, timeline_prefix};

/// The zstd level of stored WAL (zstd's default: WAL compresses well and fast at it).
pub const DEFAULT_WAL_ZSTD_LEVEL: i32 = 3;

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
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            encryptor: None,
            system_identifier: None,
            pgdata: None,
            zstd_level: DEFAULT_WAL_ZSTD_LEVEL,
            plaintext: PlaintextPolicy::default(),
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

/// What one pass over the file tells before anything is uploaded.
struct Scanned {
    sha256: Option<String>,
    size: u64,
    header_sysid: Option<u64>,
}

fn scan(path: &Path, hash: bool) -> Result<Scanned> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    let mut first = Vec::with_capacity(LONG_HEADER_LEN);
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        if first.len() < LONG_HEADER_LEN {
            let take = (LONG_HEADER_LEN - first.len()).min(n);
            first.extend_from_slice(&buf[..take]);
        }
        if !hash {
            size = file
                .metadata()
                .map_err(|e| Error::io("inspect", path, e))?
                .len();
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Scanned {
        sha256: hash.then(|| hex::encode(hasher.finalize())),
        size,
        header_sysid: segment_header(&first).map(|h| h.system_identifier),
    })
}

/// The cluster a file belongs to: given, else from the segment's header, else `pg_control`.
fn system_identifier(wal: &WalName, scanned: &Scanned, options: &ArchiveOptions) -> Result<u64> {
    match (options.system_identifier, scanned.header_sysid) {
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

/// What a destination already holds under a WAL file's name: `Ok(true)` when the same file is
/// stored, `Ok(false)` when nothing is.
///
/// # Errors
/// [`Error::VerificationFailed`] when a file of that name with other content is stored.
async fn already_stored(sink: &DynBackupSink, target: &StoredWal) -> Result<bool> {
    if !target.wal.has_checksum() {
        return Ok(false);
    }
    let prefix = format!(
        "{}{}-",
        timeline_prefix(target.system_identifier, target.wal.timeline),
        target.wal.name
    );
    let mut same = false;
    for meta in sink.list(Some(&prefix)).await? {
        let Some(stored) = StoredWal::parse(&meta.key) else {
            continue;
        };
        if stored.wal.name != target.wal.name {
            continue;
        }
        if stored.sha256 == target.sha256 {
            same = true;
        } else {
            return Err(Error::VerificationFailed(format!(
                "{} at {} is already archived with other content (sha256 {}, this file has {}): two clusters with the same system identifier, or a data directory restored without a new timeline, are archiving into one place. Nothing was overwritten; find out which file is right before removing {}",
                target.wal.name,
                sink.describe(),
                stored.sha256.as_deref().unwrap_or("?"),
                target.sha256.as_deref().unwrap_or("?"),
                meta.key
            )));
        }
    }
    Ok(same)
}

/// Stores one WAL file at every destination: a segment, `.partial`, `.history` or `.backup`
/// file, named as PostgreSQL names it (`path`'s file name).
///
/// The file is read twice: once for its checksum (which is part of its key), then streamed
/// through zstd and the encryptor into one upload per destination (about 4 MiB of memory in
/// flight, whatever the file's size). It returns once every destination has completed its
/// upload (durable: the local sink fsyncs, object stores acknowledge). A destination that holds
/// the same file already is left alone.
///
/// # Errors
/// [`Error::PlaintextRefused`] without an encryptor when a destination is off-site and
/// [`ArchiveOptions::plaintext`] does not allow it (before anything is read);
/// [`Error::InvalidInput`] for a file that is not a WAL file or whose cluster cannot be told;
/// [`Error::VerificationFailed`] when a destination holds the same name with other content;
/// storage errors of any destination (the uploads are then aborted: nothing is left under the
/// key).
pub async fn archive_wal(
    sinks: &[DynBackupSink],
    path: &Path,
    options: &ArchiveOptions,
) -> Result<ArchiveReport> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let wal = WalName::parse(&file_name).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{} is not a WAL file name (a segment, .partial, .history or .backup file); archive_command passes %p",
            path.display()
        ))
    })?;
    if sinks.is_empty() {
        return Err(Error::InvalidInput("no destination given".into()));
    }
    let placements: Vec<_> = sinks
        .iter()
        .map(|s| (s.describe(), s.placement()))
        .collect();
    options
        .plaintext
        .check_placements(&wal.name, options.encryptor.is_some(), &placements)?;
    let hash = wal.has_checksum();
    let scanned = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || scan(&path, hash))
            .await
            .map_err(|e| Error::generic("archive-wal", e))??
    };
    let system_identifier = system_identifier(&wal, &scanned, options)?;
    let encryption = options.encryptor.as_ref().map(|e| e.info().scheme);
    let target = StoredWal::new(
        system_identifier,
        wal.clone(),
        scanned.sha256.clone(),
        encryption,
    );

    let checks = join_all(sinks.iter().map(|s| already_stored(s, &target))).await;
    let mut destinations = Vec::new();
    let mut to_store = Vec::new();
    for (sink, check) in sinks.iter().zip(checks) {
        if check? {
            destinations.push(ArchivedTo {
                destination: sink.describe(),
                key: target.key.clone(),
                outcome: ArchiveOutcome::AlreadyStored,
            });
        } else {
            to_store.push(sink.clone());
        }
    }
    if !to_store.is_empty() {
        let stored = upload(&to_store, path, &target, options).await?;
        destinations.extend(stored);
    }
    if wal.kind == WalKind::Segment {
        remove_stale_partials(sinks, &target).await;
    }
    Ok(ArchiveReport {
        wal,
        system_identifier,
        sha256: scanned.sha256,
        size: scanned.size,
        destinations,
    })
}

/// Streams the file into one upload per sink and completes them all, or aborts them all.
async fn upload(
    sinks: &[DynBackupSink],
    path: &Path,
    target: &StoredWal,
    options: &ArchiveOptions,
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
    let producer = {
        let path = path.to_path_buf();
        let encryptor = options.encryptor.clone();
        let level = options.zstd_level.clamp(1, 19);
        tokio::task::spawn_blocking(move || compress_file(&path, tx, encryptor, level))
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
    if let Some(e) = failure {
        abort_all(uploads).await;
        return Err(e);
    }
    if let Err(e) = produced {
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

/// Reads the file through zstd (and the encryptor) into the channel, on a blocking thread.
fn compress_file(
    path: &Path,
    tx: mpsc::Sender<Bytes>,
    encryptor: Option<DynEncryptor>,
    level: i32,
) -> Result<()> {
    let sink_err = |e: std::io::Error| Error::io("compress", path, e);
    let out: Box<dyn FinishWrite> = match &encryptor {
        Some(enc) => enc
            .encrypt(Box::new(ChannelWriter::new(tx)))
            .map_err(sink_err)?,
        None => Box::new(ChannelWriter::new(tx)),
    };
    let mut encoder = zstd::stream::write::Encoder::new(out, level).map_err(sink_err)?;
    encoder.include_checksum(true).map_err(sink_err)?;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    std::io::copy(&mut file, &mut encoder).map_err(sink_err)?;
    let out = encoder.finish().map_err(sink_err)?;
    out.finish().map_err(sink_err)
}

/// Once a complete segment is stored, the `.partial` of it that a receiver shipped is of no
/// more use (a fetch prefers the complete one anyway). Failures are only logged.
async fn remove_stale_partials(sinks: &[DynBackupSink], target: &StoredWal) {
    let partial_name = format!("{}.partial", target.wal.name);
    let prefix = format!(
        "{}{partial_name}",
        timeline_prefix(target.system_identifier, target.wal.timeline)
    );
    for sink in sinks {
        let Ok(found) = sink.list(Some(&prefix)).await else {
            continue;
        };
        for meta in found {
            if StoredWal::parse(&meta.key).is_some_and(|s| s.wal.name == partial_name) {
                if let Err(e) = sink.delete(&meta.key).await {
                    tracing::warn!(key = %meta.key, error = %e, "cannot remove a superseded .partial");
                }
            }
        }
    }
}
