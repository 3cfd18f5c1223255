//! Rebuilding a database from a chain: the newest snapshot at or before the instant, then the
//! segments' commits observed at or before it, every checksum verified.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use kars_backup_core::DynDecryptor;
use kars_backup_core::sink::{DynBackupSink, GetOptions};
use serde::Serialize;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::catalog::{self, Generation};
use super::format::{self, DbChecksum, SegmentReader, SnapshotReader};
use super::keys::ChainKeys;
use crate::SqliteSource;
use crate::error::{Error, Result};
use kars_backup_core::{ErrorCategory, TaskError};

/// Which state of a replicated database to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePoint {
    /// The newest state stored.
    Latest,
    /// The state at an instant: every commit observed at or before it, none after.
    Time(DateTime<Utc>),
}

/// What a rebuild used and reached.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    /// The destination.
    pub destination: String,
    /// The generation.
    pub generation: String,
    /// The snapshot it started from.
    pub snapshot: String,
    /// Segments read.
    pub segments: usize,
    /// The last transaction applied (the snapshot's when none).
    pub txid: u64,
    /// The observed time of the last commit applied (the snapshot's time when none).
    pub state_time: DateTime<Utc>,
    /// The database size in pages.
    pub pages: u32,
    /// The database checksum of the result, verified against the chain.
    pub checksum: String,
}

/// Rebuilds the replicated database `database` (its file name) stored at `sink` into the new
/// file `out`, at `point`.
///
/// # Errors
/// [`Error::Chain`] naming the key when no generation covers the point, a snapshot or segment
/// is missing or damaged, or a checksum does not follow; storage and decryption errors.
pub async fn rebuild(
    sink: &DynBackupSink,
    database: &str,
    point: RestorePoint,
    decryptor: Option<DynDecryptor>,
    out: &Path,
) -> Result<RebuildReport> {
    let started = std::time::Instant::now();
    let keys = ChainKeys::new(database);
    let destination = sink.describe();
    let chain_err = |key: &str, reason: String| Error::Chain {
        destination: destination.clone(),
        key: key.to_string(),
        reason,
    };
    let generations = catalog::generations(sink, &keys).await?;
    let generation = pick_generation(&generations, point).ok_or_else(|| {
        chain_err(
            keys.prefix(),
            match (point, generations.first().and_then(Generation::start)) {
                (_, None) => format!("no replicated state of {database} here"),
                (RestorePoint::Time(t), Some(first)) => format!(
                    "nothing replicated at or before {}: the window starts at {}",
                    t.to_rfc3339(),
                    first.to_rfc3339()
                ),
                (RestorePoint::Latest, Some(_)) => "no complete snapshot".into(),
            },
        )
    })?;
    let snapshot = match point {
        RestorePoint::Latest => generation.snapshots.last(),
        RestorePoint::Time(t) => generation.snapshots.iter().rfind(|s| s.time <= t),
    }
    .ok_or_else(|| chain_err(keys.prefix(), "no snapshot at or before the instant".into()))?
    .clone();

    // The snapshot, streamed into the new file.
    let stream = sink
        .get(
            &snapshot.key,
            GetOptions::default().with_size_hint(snapshot.size),
        )
        .await?;
    let reader = SyncIoBridge::new(StreamReader::new(stream.map_err(std::io::Error::other)));
    let out_path = out.to_path_buf();
    let key = snapshot.key.clone();
    let dec = decryptor.clone();
    let (mut file, mut checksum, page_size, mut db_size, snap_time) =
        tokio::task::spawn_blocking(move || write_snapshot(&key, Box::new(reader), dec, &out_path))
            .await
            .map_err(|e| Error::Task(TaskError::new("the snapshot's restore", e.to_string())))?
            .map_err(|fail| fail.into_error(chain_err, &snapshot.key))?;
    tracing::debug!(key = %snapshot.key, seconds = started.elapsed().as_secs_f64(), "snapshot written");
    let mut state_time = snap_time;
    let mut txid = snapshot.txid;
    let mut used = 0;
    let start_txid = txid;
    // A compacted segment before the ones it replaces (an interrupted compaction leaves both):
    // the covered ones are then skipped without being read.
    let mut segments: Vec<&catalog::SegmentEntry> = generation
        .segments
        .iter()
        .filter(|s| s.last > start_txid)
        .collect();
    segments.sort_by_key(|s| (s.first, std::cmp::Reverse(s.last)));
    for seg in segments {
        if seg.last <= txid {
            continue;
        }
        if seg.first > txid + 1 {
            return Err(chain_err(
                &seg.key,
                format!(
                    "transactions {}..={} are missing before it (a segment was lost); restore to an instant before {} instead",
                    txid + 1,
                    seg.first - 1,
                    state_time.to_rfc3339()
                ),
            ));
        }
        // One observed time never spans two segments: past the instant, nothing later counts.
        if let RestorePoint::Time(t) = point
            && txid > start_txid
            && state_time >= t
        {
            break;
        }
        let stream = sink
            .get(&seg.key, GetOptions::default().with_size_hint(seg.size))
            .await?;
        let input = SyncIoBridge::new(StreamReader::new(stream.map_err(std::io::Error::other)));
        let key = seg.key.clone();
        let dec = decryptor.clone();
        let at = Built {
            file,
            checksum,
            txid,
            state_time,
            db_size,
            page_size,
        };
        let (built, past_point) = tokio::task::spawn_blocking(move || {
            apply_segment(at, &key, Box::new(input), dec.as_ref(), point)
        })
        .await
        .map_err(|e| Error::Task(TaskError::new("a segment's replay", e.to_string())))?
        .map_err(|fail| fail.into_error(chain_err, &seg.key))?;
        used += 1;
        Built {
            file,
            checksum,
            txid,
            state_time,
            db_size,
            ..
        } = built;
        if past_point {
            break;
        }
    }
    file.set_len(u64::from(db_size) * u64::from(page_size))
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", out, e))?;
    tracing::info!(
        txid,
        segments = used,
        seconds = started.elapsed().as_secs_f64(),
        "replica rebuilt"
    );
    Ok(RebuildReport {
        destination,
        generation: generation.id.clone(),
        snapshot: snapshot.key,
        segments: used,
        txid,
        state_time,
        pages: db_size,
        checksum: format!("{:016x}", checksum.value()),
    })
}

/// Page images a restore holds before writing them (bounds its memory per segment).
const MAX_PENDING_WRITES: usize = 8 << 20;

/// The database being rebuilt, and the state it is at.
struct Built {
    file: File,
    checksum: DbChecksum,
    txid: u64,
    state_time: DateTime<Utc>,
    db_size: u32,
    page_size: u32,
}

/// Applies the commits of one segment (streamed, never held whole) that follow `at.txid` and
/// were observed at or before `point`, each checked against its checksum after; the segment's
/// CRC is checked to its end. True when a commit past the point was found.
fn apply_segment(
    at: Built,
    key: &str,
    input: Box<dyn Read + Send>,
    decryptor: Option<&DynDecryptor>,
    point: RestorePoint,
) -> std::result::Result<(Built, bool), Opened> {
    let plain = format::opening_reader(key, input, decryptor).map_err(Opened::Core)?;
    Ok(replay_segment(at, plain, point)?)
}

/// Applies the commits of an opened segment to `at`, up to `point`; true when it stopped at a
/// commit past the point.
fn replay_segment(
    mut at: Built,
    plain: Box<dyn Read + Send>,
    point: RestorePoint,
) -> std::result::Result<(Built, bool), String> {
    let read_err = |e: std::io::Error| format!("cannot be read: {e}");
    let mut reader = SegmentReader::new(plain).map_err(read_err)?;
    let header = reader.header;
    if header.page_size != at.page_size {
        return Err(format!(
            "its page size {} is not the snapshot's {}",
            header.page_size, at.page_size
        ));
    }
    let limit = match point {
        RestorePoint::Latest => i64::MAX,
        RestorePoint::Time(t) => t.timestamp_micros(),
    };
    let ps = u64::from(at.page_size);
    let mut page = vec![0u8; at.page_size as usize];
    let mut past_point = false;
    // The last image of each page, written in page order once per segment (or every
    // `MAX_PENDING_WRITES` bytes): most commits rewrite the same few pages.
    let mut pending: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let write = |file: &File, pending: &mut BTreeMap<u32, Vec<u8>>| {
        for (pgno, image) in std::mem::take(pending) {
            file.write_all_at(&image, u64::from(pgno - 1) * ps)
                .map_err(|e| format!("cannot write the rebuilt database: {e}"))?;
        }
        Ok::<(), String>(())
    };
    while let Some(commit) = reader.next_commit().map_err(read_err)? {
        if commit.txid <= at.txid {
            continue;
        }
        if commit.txid != at.txid + 1 {
            return Err(format!("transaction {} follows {}", commit.txid, at.txid));
        }
        if commit.txid == header.first && header.checksum_before != at.checksum.value() {
            return Err(
                "its checksum before does not match the database built so far (the chain is broken)"
                    .into(),
            );
        }
        if commit.observed_us > limit {
            past_point = true;
            break;
        }
        while let Some(pgno) = reader.next_page(&mut page).map_err(read_err)? {
            if pgno == 0 {
                return Err("a page numbered 0".into());
            }
            at.checksum.set_page(pgno, &page);
            pending.insert(pgno, page.clone());
        }
        if pending.len() * page.len() >= MAX_PENDING_WRITES {
            write(&at.file, &mut pending)?;
        }
        at.checksum.set_size(commit.db_size);
        if at.checksum.value() != commit.checksum_after {
            return Err(format!(
                "the database checksum after transaction {} does not match",
                commit.txid
            ));
        }
        at.txid = commit.txid;
        at.db_size = commit.db_size;
        at.state_time =
            DateTime::from_timestamp_micros(commit.observed_us).unwrap_or(at.state_time);
    }
    write(&at.file, &mut pending)?;
    // The rest is read too: a damaged segment is refused even when the point is inside it.
    reader.finish().map_err(read_err)?;
    Ok((at, past_point))
}

fn pick_generation(generations: &[Generation], point: RestorePoint) -> Option<&Generation> {
    match point {
        RestorePoint::Latest => generations.last(),
        RestorePoint::Time(t) => generations
            .iter()
            .rfind(|g| g.start().is_some_and(|s| s <= t)),
    }
}

type Written = (File, DbChecksum, u32, u32, DateTime<Utc>);

/// Why a stored object could not be read: the library's error when opening it failed (a
/// missing or wrong key is the operator's to fix, not a broken chain), else what is wrong
/// with its content.
enum Opened {
    Core(kars_backup_core::Error),
    Damaged(String),
}

impl From<String> for Opened {
    fn from(reason: String) -> Self {
        Opened::Damaged(reason)
    }
}

impl Opened {
    fn into_error(self, chain_err: impl Fn(&str, String) -> Error, key: &str) -> Error {
        match self {
            Opened::Core(e) if e.category() == ErrorCategory::Usage => Error::Core(e),
            Opened::Core(e) => chain_err(key, e.to_string()),
            Opened::Damaged(reason) => chain_err(key, reason),
        }
    }
}

fn write_snapshot(
    key: &str,
    input: Box<dyn Read + Send>,
    decryptor: Option<DynDecryptor>,
    out: &PathBuf,
) -> std::result::Result<Written, Opened> {
    let plain = format::opening_reader(key, input, decryptor.as_ref()).map_err(Opened::Core)?;
    let mut reader = SnapshotReader::new(plain).map_err(|e| format!("cannot be read: {e}"))?;
    let header = reader.header;
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    let mut page = vec![0u8; header.page_size as usize];
    while reader
        .next_page(&mut page)
        .map_err(|e| format!("cannot be read: {e}"))?
    {
        w.write_all(&page)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    w.flush()
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    drop(w);
    let time = DateTime::from_timestamp_micros(header.time_us).unwrap_or_default();
    Ok((
        file,
        reader.into_checksum(),
        header.page_size,
        header.page_count,
        time,
    ))
}

/// What [`restore_replica`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaRestoreReport {
    /// The rebuild: generation, snapshot, segments, the state reached.
    pub rebuild: RebuildReport,
    /// The target.
    pub target: String,
    /// The verification of the staged copy.
    pub verification: kars_backup_core::VerifyReport,
    /// Where the previous database was kept.
    pub previous_kept_at: Option<String>,
    /// The steps taken.
    pub steps: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Restores the replicated database `database` stored at `sink` into `target` at `point`,
/// through the staged, verified restore ([`kars_backup_core::restore_staged`]): the rebuild
/// is written into a staging directory beside the target, verified with `options.plan`, then
/// swapped in between the hooks, and rolled back on any failure.
///
/// # Errors
/// The rebuild's errors ([`Error::Chain`] naming a missing or damaged object) as
/// [`kars_backup_core::Error::InvalidArchive`], and those of
/// [`kars_backup_core::restore_staged`].
pub async fn restore_replica(
    target: &SqliteSource,
    sink: &DynBackupSink,
    database: &str,
    point: RestorePoint,
    decryptor: Option<DynDecryptor>,
    options: &kars_backup_core::RestoreOptions,
) -> kars_backup_core::Result<ReplicaRestoreReport> {
    let started = std::time::Instant::now();
    let what = match point {
        RestorePoint::Latest => format!("the latest replicated state of {database}"),
        RestorePoint::Time(t) => format!("{database} as of {}", t.to_rfc3339()),
    };
    let mut rebuilt = None;
    let done = kars_backup_core::restore_staged(&what, target, options, |_cancel| {
        let rebuilt = &mut rebuilt;
        let what = what.clone();
        async move {
            let staged = target
                .stage_built(options.in_use, |path| async move {
                    *rebuilt = Some(rebuild(sink, database, point, decryptor, &path).await?);
                    Ok(())
                })
                .await?;
            let context = kars_backup_core::StageContext {
                archive_name: what,
                manifest: None,
                in_use: options.in_use,
            };
            Ok((staged, context))
        }
    })
    .await?;
    let rebuild = rebuilt
        .ok_or_else(|| kars_backup_core::Error::generic("restore", "the rebuild did not report"))?;
    let mut steps = vec![format!(
        "rebuilt from {} ({} segments, transaction {} of generation {}, state of {})",
        rebuild.snapshot,
        rebuild.segments,
        rebuild.txid,
        rebuild.generation,
        rebuild.state_time.to_rfc3339()
    )];
    steps.extend(done.steps);
    Ok(ReplicaRestoreReport {
        rebuild,
        target: kars_backup_core::DatabaseSource::describe(target),
        verification: done.verification,
        previous_kept_at: done.previous_kept_at,
        steps,
        seconds: started.elapsed().as_secs_f64(),
    })
}
