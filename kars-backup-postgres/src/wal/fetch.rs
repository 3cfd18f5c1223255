//! [`fetch_wal`]: restores one WAL file from the archive (PostgreSQL's `restore_command`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use futures::future::join_all;
use kars_backup_core::sink::GetOptions;
use kars_backup_core::{DynBackupSink, DynDecryptor, Error, Result, Sealed};
use tokio::sync::mpsc;

use super::chain::{archived_segment_size, system_identifiers};
use super::header::pg_control_system_identifier;
use kars_backup_core::pipeline::ChannelReader;

use super::io::{CHANNEL_CAPACITY, HashingWriter};
use super::keys::{DEFAULT_SEGMENT_SIZE, StoredWal, WalKind, WalName, timeline_prefix};

/// The spool directory of read-ahead segments, beside the file PostgreSQL asked for.
pub const SPOOL_DIR: &str = ".kars-wal-spool";

/// How [`fetch_wal`] finds and opens a file.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Keys for encrypted WAL.
    pub decryptor: Option<DynDecryptor>,
    /// The cluster; otherwise read from `global/pg_control` of [`pgdata`](Self::pgdata), else
    /// the only cluster archived at the first destination.
    pub system_identifier: Option<u64>,
    /// The data directory (default: the current one, where `restore_command` runs).
    pub pgdata: Option<PathBuf>,
    /// Segments fetched ahead into [`SPOOL_DIR`] beside the destination while one is fetched
    /// (0: none).
    pub read_ahead: usize,
    /// The WAL segment size for the names of the next segments, when the archive records none
    /// (it records sizes other than 16 MiB).
    pub segment_size: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            decryptor: None,
            system_identifier: None,
            pgdata: None,
            read_ahead: 0,
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// What [`fetch_wal`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum FetchOutcome {
    /// The file is at the destination path.
    Fetched(FetchedWal),
    /// No destination has it (every destination answered; none failed).
    NotFound,
}

/// A fetched file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FetchedWal {
    /// Where it came from (redacted), or the spool directory.
    pub from: String,
    /// Its key.
    pub key: String,
    /// Served from a `.partial` (a segment not complete yet).
    pub partial: bool,
    /// Bytes written.
    pub size: u64,
}

/// The cluster whose WAL is fetched.
async fn resolve_system_identifier(sinks: &[DynBackupSink], options: &FetchOptions) -> Result<u64> {
    if let Some(id) = options.system_identifier {
        return Ok(id);
    }
    let pgdata = options.pgdata.clone().unwrap_or_else(|| PathBuf::from("."));
    if options.pgdata.is_some() || pgdata.join("global").join("pg_control").is_file() {
        return pg_control_system_identifier(&pgdata);
    }
    let sink = sinks
        .first()
        .ok_or_else(|| Error::InvalidInput("no destination given".into()))?;
    let ids = system_identifiers(sink).await?;
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => Err(Error::NotFound {
            what: format!("a PostgreSQL WAL archive at {}", sink.describe()),
        }),
        _ => Err(Error::InvalidInput(format!(
            "{} holds the WAL of several clusters ({}): give --system-id, or run in the data directory",
            sink.describe(),
            ids.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The stored file to restore for `wal` at one destination: a complete file, else (for a
/// segment) its `.partial`.
///
/// # Errors
/// Listing failures; [`Error::VerificationFailed`] when two complete files of the name differ.
pub async fn find_stored(
    sink: &DynBackupSink,
    system_identifier: u64,
    wal: &WalName,
) -> Result<Option<StoredWal>> {
    let prefix = format!(
        "{}{}",
        timeline_prefix(system_identifier, wal.timeline),
        wal.name
    );
    let partial_name = format!("{}.partial", wal.name);
    let mut complete: Option<StoredWal> = None;
    let mut partial = None;
    for meta in sink.list(Some(&prefix)).await? {
        let Some(stored) = StoredWal::parse(&meta.key) else {
            continue;
        };
        if stored.wal.name == wal.name {
            if let Some(other) = &complete {
                if other.sha256 != stored.sha256 {
                    return Err(Error::VerificationFailed(format!(
                        "{} is stored twice with different content at {} ({} and {}): remove the wrong one",
                        wal.name,
                        sink.describe(),
                        other.key,
                        stored.key
                    )));
                }
            }
            complete = Some(stored);
        } else if wal.kind == WalKind::Segment && stored.wal.name == partial_name {
            partial = Some(stored);
        }
    }
    Ok(complete.or(partial))
}

/// Fetches the WAL file `name` (as PostgreSQL asks for it: `%f`) into `dest` (`%p`).
///
/// Destinations are tried in order. The file is streamed, decrypted, decompressed and written
/// to a temporary file beside `dest`, checked against the checksum in its key, then renamed to
/// `dest`: `dest` never holds a partial or unchecked file. A segment whose complete file is not
/// stored is served from its `.partial` (a streaming receiver's newest WAL).
///
/// With [`FetchOptions::read_ahead`], the next segments are fetched at the same time into
/// [`SPOOL_DIR`] beside `dest` (checked the same way), and a later call takes its segment from
/// there.
///
/// # Errors
/// [`Error::InvalidInput`] for a name that is not a WAL file name; storage errors when no
/// destination could answer (a failing destination is never taken for a missing file: that
/// would end a recovery early); [`Error::ChecksumMismatch`], decryption and decompression
/// failures.
pub async fn fetch_wal(
    sinks: &[DynBackupSink],
    name: &str,
    dest: &Path,
    options: &FetchOptions,
) -> Result<FetchOutcome> {
    let wal = WalName::parse(name).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{name:?} is not a WAL file name (a segment, .history or .backup file)"
        ))
    })?;
    let spool = dest
        .parent()
        .map(|p| p.join(SPOOL_DIR))
        .unwrap_or_else(|| PathBuf::from(SPOOL_DIR));
    if wal.kind == WalKind::Segment {
        let spooled = spool.join(&wal.name);
        if let Ok(meta) = tokio::fs::metadata(&spooled).await {
            if tokio::fs::rename(&spooled, dest).await.is_ok() {
                return Ok(FetchOutcome::Fetched(FetchedWal {
                    from: spool.display().to_string(),
                    key: wal.name.clone(),
                    partial: false,
                    size: meta.len(),
                }));
            }
        }
    }
    let system_identifier = resolve_system_identifier(sinks, options).await?;
    let main = fetch_one(sinks, system_identifier, &wal, dest, options, true);
    if wal.kind != WalKind::Segment || options.read_ahead == 0 {
        return main.await;
    }
    let ahead = read_ahead(sinks, system_identifier, &wal, &spool, options);
    let (result, ()) = futures::join!(main, ahead);
    result
}

/// Fetches the segments after `wal` into the spool directory (failures only logged: the
/// segment is fetched again when PostgreSQL asks for it). The segment size is the one the
/// archive records, else [`FetchOptions::segment_size`].
async fn read_ahead(
    sinks: &[DynBackupSink],
    system_identifier: u64,
    wal: &WalName,
    spool: &Path,
    options: &FetchOptions,
) {
    let Some(first) = sinks.first() else { return };
    let segment_size =
        match archived_segment_size(first, system_identifier, options.segment_size).await {
            Ok(size) => size,
            Err(e) => {
                tracing::debug!(error = %e, "no read-ahead: the segment size is unknown");
                return;
            }
        };
    let segno = wal.segno(segment_size);
    let ahead: Vec<WalName> = (1..=options.read_ahead as u64)
        .map(|i| WalName::segment(wal.timeline, segno + i, segment_size))
        .filter(|n| !spool.join(&n.name).exists())
        .collect();
    if ahead.is_empty() {
        return;
    }
    if let Err(e) = tokio::fs::create_dir_all(&spool).await {
        tracing::debug!(error = %e, "no read-ahead: cannot create the spool directory");
        return;
    }
    join_all(ahead.iter().map(|n| {
        let path = spool.join(&n.name);
        async move { fetch_one(sinks, system_identifier, n, &path, options, false).await }
    }))
    .await;
}

/// Fetches one file from the first destination that has it.
async fn fetch_one(
    sinks: &[DynBackupSink],
    system_identifier: u64,
    wal: &WalName,
    dest: &Path,
    options: &FetchOptions,
    allow_partial: bool,
) -> Result<FetchOutcome> {
    let mut first_error = None;
    for sink in sinks {
        let found = match find_stored(sink, system_identifier, wal).await {
            Ok(Some(s)) if allow_partial || s.wal.kind != WalKind::Partial => s,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(destination = %sink.describe(), error = %e, "cannot look up WAL");
                first_error.get_or_insert(e);
                continue;
            }
        };
        match download(sink, &found, dest, options.decryptor.clone()).await {
            Ok(size) => {
                return Ok(FetchOutcome::Fetched(FetchedWal {
                    from: sink.describe(),
                    key: found.key,
                    partial: found.wal.kind == WalKind::Partial,
                    size,
                }));
            }
            Err(e) => {
                tracing::warn!(destination = %sink.describe(), key = %found.key, error = %e, "cannot fetch WAL");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(FetchOutcome::NotFound),
    }
}

fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".kars-tmp-{name}-{}", std::process::id()))
}

/// Streams `stored` from `sink` into `dest`, checked; returns the size written.
async fn download(
    sink: &DynBackupSink,
    stored: &StoredWal,
    dest: &Path,
    decryptor: Option<DynDecryptor>,
) -> Result<u64> {
    let mut stream = sink.get(&stored.key, GetOptions::default()).await?;
    let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(CHANNEL_CAPACITY);
    let temp = temp_beside(dest);
    let writer = {
        let stored = stored.clone();
        let temp = temp.clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let result = restore_file(ChannelReader::new(rx), &stored, &temp, &dest, decryptor);
            if result.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            result
        })
    };
    let mut read_error = None;
    while let Some(chunk) = stream.next().await {
        let item = chunk.map_err(|e| std::io::Error::other(e.to_string()));
        let failed = item.is_err();
        if let Err(e) = &item {
            read_error = Some(e.to_string());
        }
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| Error::generic("fetch-wal", e))?;
    match (written, read_error) {
        (Ok(n), None) => Ok(n),
        (_, Some(e)) => Err(Error::generic(sink.describe(), e)),
        (Err(e), None) => Err(e),
    }
}

/// On a blocking thread: decrypt, decompress, write to `temp` while hashing, check, rename.
fn restore_file(
    input: ChannelReader,
    stored: &StoredWal,
    temp: &Path,
    dest: &Path,
    decryptor: Option<DynDecryptor>,
) -> Result<u64> {
    let input: Box<dyn Read + Send> = match stored.encryption {
        None => Box::new(input),
        Some(scheme) => {
            let keys = decryptor.ok_or_else(|| Error::KeyMissing {
                name: stored.key.clone(),
                reason: format!(
                    "it is encrypted ({scheme}): give the identity file (--identity) or the passphrase file"
                ),
            })?;
            keys.decrypt(
                Sealed {
                    name: &stored.key,
                    scheme,
                    info: None,
                },
                Box::new(input),
            )?
        }
    };
    let bad = |reason: String| Error::InvalidArchive {
        name: stored.key.clone(),
        reason,
    };
    let mut decoder =
        zstd::stream::read::Decoder::new(input).map_err(|e| bad(format!("zstd: {e}")))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(temp)
        .map_err(|e| Error::io("create", temp, e))?;
    let mut out = HashingWriter::new(std::io::BufWriter::with_capacity(256 * 1024, file));
    std::io::copy(&mut decoder, &mut out).map_err(|e| bad(format!("cannot decompress: {e}")))?;
    out.flush().map_err(|e| Error::io("write", temp, e))?;
    let (sha256, size, _) = out.digest();
    if let Some(expected) = &stored.sha256 {
        if *expected != sha256 {
            return Err(Error::ChecksumMismatch {
                name: stored.key.clone(),
                expected: expected.clone(),
                actual: sha256,
                expected_size: size,
                actual_size: size,
            });
        }
    }
    std::fs::rename(temp, dest).map_err(|e| Error::io("rename into place", dest, e))?;
    Ok(size)
}
