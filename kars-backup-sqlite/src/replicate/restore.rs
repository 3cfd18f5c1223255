//! Rebuilding a database from a chain: the newest snapshot at or before the instant, then the
//! segments' commits observed at or before it, every checksum verified.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use kars_backup_core::DynDecryptor;
use kars_backup_core::sink::{DynBackupSink, GetOptions, SinkExt};
use serde::Serialize;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::catalog::{self, Generation};
use super::format::{self, DbChecksum, Segment, SnapshotReader};
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
    let (file, mut checksum, page_size, mut db_size, snap_time) =
        tokio::task::spawn_blocking(move || write_snapshot(&key, Box::new(reader), dec, &out_path))
            .await
            .map_err(|e| Error::Task(TaskError::new("the snapshot's restore", e.to_string())))?
            .map_err(|fail| fail.into_error(chain_err, &snapshot.key))?;
    tracing::debug!(key = %snapshot.key, seconds = started.elapsed().as_secs_f64(), "snapshot written");
    let mut state_time = snap_time;
    let mut txid = snapshot.txid;
    let mut used = 0;
    let start_txid = txid;
    for seg in generation.segments.iter().filter(|s| s.last > start_txid) {
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
        let bytes = sink.get_bytes(&seg.key).await?;
        let key = seg.key.clone();
        let dec = decryptor.clone();
        let segment = tokio::task::spawn_blocking(move || {
            let mut plain = Vec::new();
            format::opening_reader(&key, Box::new(std::io::Cursor::new(bytes)), dec.as_ref())
                .map_err(Opened::Core)?
                .read_to_end(&mut plain)
                .map_err(|e| format!("cannot be read: {e}"))?;
            Ok::<_, Opened>(Segment::decode(&plain)?)
        })
        .await
        .map_err(|e| Error::Task(TaskError::new("a segment's decoding", e.to_string())))?
        .map_err(|fail| fail.into_error(chain_err, &seg.key))?;
        if segment.page_size != page_size {
            return Err(chain_err(
                &seg.key,
                format!(
                    "its page size {} is not the snapshot's {page_size}",
                    segment.page_size
                ),
            ));
        }
        used += 1;
        // The commits to apply from this segment, in order; each page is written once, in its
        // last image (the checksum after the last commit applied covers them all).
        let mut last: Option<&format::Commit> = None;
        let mut images: std::collections::BTreeMap<u32, &[u8]> = std::collections::BTreeMap::new();
        let mut past_point = false;
        for commit in &segment.commits {
            if commit.txid <= txid {
                continue;
            }
            let expected = last.map_or(txid, |c| c.txid) + 1;
            if commit.txid != expected {
                return Err(chain_err(
                    &seg.key,
                    format!("transaction {} follows {}", commit.txid, expected - 1),
                ));
            }
            if commit.txid == segment.first() && segment.checksum_before != checksum.value() {
                return Err(chain_err(
                    &seg.key,
                    "its checksum before does not match the database built so far (the chain is broken)".into(),
                ));
            }
            if let RestorePoint::Time(t) = point
                && commit.observed_us > t.timestamp_micros()
            {
                past_point = true;
                break;
            }
            for (pgno, page) in &commit.pages {
                images.insert(*pgno, page);
            }
            last = Some(commit);
        }
        if let Some(commit) = last {
            for (pgno, page) in &images {
                file.write_all_at(page, u64::from(pgno - 1) * u64::from(page_size))
                    .map_err(|e| Error::io("write", out, e))?;
                checksum.set_page(*pgno, page);
            }
            checksum.set_size(commit.db_size);
            db_size = commit.db_size;
            if checksum.value() != commit.checksum_after {
                return Err(chain_err(
                    &seg.key,
                    format!(
                        "the database checksum after transaction {} does not match",
                        commit.txid
                    ),
                ));
            }
            txid = commit.txid;
            state_time = DateTime::from_timestamp_micros(commit.observed_us).unwrap_or(state_time);
        }
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
