//! Compaction: a generation's small segments merged into larger ones, every commit kept whole
//! with its own observed time (a restore to an instant stays exact to the commit).
//!
//! Segments are grouped by the interval their last commit falls in ([`CompactOptions::span`],
//! aligned to the epoch: hourly by default), consecutive in txids and up to
//! [`CompactOptions::max_bytes`] stored. Only intervals that ended
//! [`CompactOptions::min_age`] ago are touched, so the live tail is left alone, and an interval
//! already compacted is not read again. Crash-safe: the compacted segment is written (visible
//! only once complete) **before** the segments it replaces are deleted, and a restore reads a
//! segment covered by a larger one as redundant; a later run deletes what an interrupted run
//! left covered. The sources' CRCs, txids and checksums before/after are checked while merging,
//! and each commit's checksum after is kept, so a restore verifies the chain as before.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use kars_backup_core::sink::{DynBackupSink, GetOptions};
use kars_backup_core::{DynDecryptor, DynEncryptor, TaskError};
use serde::Serialize;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::catalog::{self, Generation, SegmentEntry};
use super::format::{self, SegmentReader, SegmentSpool};
use super::keys::ChainKeys;
use super::upload::upload_file;
use crate::error::{Error, Result};

/// How [`compact`] groups segments.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CompactOptions {
    /// Segments whose last commits fall in one interval of this length (aligned to the epoch,
    /// UTC) are merged (default 1 h).
    pub span: Duration,
    /// A compacted segment takes sources while their stored sizes add up to at most this
    /// (default 16 MiB), which also bounds what a restore holds in memory per segment.
    pub max_bytes: u64,
    /// Only intervals that ended at least this long ago are compacted (default 1 min).
    pub min_age: Duration,
    /// Encrypts the compacted segments (required when the sources are encrypted).
    pub encryptor: Option<DynEncryptor>,
    /// Decrypts encrypted sources.
    pub decryptor: Option<DynDecryptor>,
    /// Where a compacted segment is assembled before upload (default: the temporary directory).
    pub spool_dir: Option<PathBuf>,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            span: Duration::from_secs(3600),
            max_bytes: 16 << 20,
            min_age: Duration::from_secs(60),
            encryptor: None,
            decryptor: None,
            spool_dir: None,
        }
    }
}

/// One compacted segment written.
#[derive(Debug, Clone, Serialize)]
pub struct Compacted {
    /// Its key.
    pub key: String,
    /// The keys of the segments it replaces (deleted after it was written).
    pub replaces: Vec<String>,
    /// Commits it holds.
    pub commits: u64,
    /// Its stored size.
    pub size: u64,
}

/// What [`compact`] did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CompactReport {
    /// The destination.
    pub destination: String,
    /// Segments before.
    pub segments_before: usize,
    /// Segments after.
    pub segments_after: usize,
    /// The compacted segments written.
    pub written: Vec<Compacted>,
    /// Segments deleted because a larger one covers them (left by an interrupted run).
    pub covered_deleted: Vec<String>,
}

/// What to do with one generation: covered segments to delete, runs of segments to merge.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactPlan {
    /// Segments whose transactions a larger segment holds.
    pub covered: Vec<String>,
    /// Runs of consecutive segments, each to become one segment (two or more each).
    pub runs: Vec<Vec<SegmentEntry>>,
}

/// Plans the compaction of one generation at `now` (pure: from the listing only).
pub fn plan_compaction(
    generation: &Generation,
    options: &CompactOptions,
    now: DateTime<Utc>,
) -> CompactPlan {
    let segs = &generation.segments;
    let covers = |t: &SegmentEntry, s: &SegmentEntry| {
        t.first <= s.first && s.last <= t.last && (t.first, t.last) != (s.first, s.last)
    };
    let mut covered = Vec::new();
    let mut live: Vec<&SegmentEntry> = Vec::new();
    for s in segs {
        if segs.iter().any(|t| covers(t, s)) {
            covered.push(s.key.clone());
        } else {
            live.push(s);
        }
    }
    let span_us = options.span.as_micros().max(1) as i64;
    let horizon = now.timestamp_micros() - options.min_age.as_micros() as i64;
    let bucket = |s: &SegmentEntry| s.time.timestamp_micros().div_euclid(span_us);
    let ended = |b: i64| (b + 1).saturating_mul(span_us) <= horizon;
    let mut runs = Vec::new();
    let mut run: Vec<SegmentEntry> = Vec::new();
    let mut run_bytes = 0u64;
    for s in live {
        let joins = run.last().is_some_and(|p: &SegmentEntry| {
            s.first == p.last + 1
                && bucket(s) == bucket(p)
                && run_bytes.saturating_add(s.size) <= options.max_bytes
        });
        if !joins {
            if run.len() >= 2 {
                runs.push(std::mem::take(&mut run));
            }
            run.clear();
            run_bytes = 0;
        }
        if ended(bucket(s)) {
            run_bytes += s.size;
            run.push(s.clone());
        }
    }
    if run.len() >= 2 {
        runs.push(run);
    }
    CompactPlan { covered, runs }
}

/// Compacts the chain of `database` (its file name) at `sink`: every generation's ended
/// intervals, as [`CompactOptions`] says.
///
/// # Errors
/// [`Error::Chain`] naming the key when a source is damaged or does not follow the one before
/// (nothing of that run is deleted), or when the sources are encrypted and no
/// [`CompactOptions::encryptor`] was given (the compacted segment would be stored in the
/// clear); [`kars_backup_core::Error::KeyMissing`] without a decryptor; storage errors.
pub async fn compact(
    sink: &DynBackupSink,
    database: &str,
    options: &CompactOptions,
    now: DateTime<Utc>,
) -> Result<CompactReport> {
    let keys = ChainKeys::new(database);
    let generations = catalog::generations(sink, &keys).await?;
    let mut report = CompactReport {
        destination: sink.describe(),
        segments_before: generations.iter().map(|g| g.segments.len()).sum(),
        ..Default::default()
    };
    let mut removed = 0;
    for g in &generations {
        let plan = plan_compaction(g, options, now);
        for key in &plan.covered {
            sink.delete(key).await?;
            removed += 1;
        }
        report.covered_deleted.extend(plan.covered);
        for run in &plan.runs {
            let done = merge(sink, &keys, &g.id, run, options).await?;
            removed += done.replaces.len() - 1;
            report.written.push(done);
        }
    }
    report.segments_after = report.segments_before - removed;
    if !report.written.is_empty() || !report.covered_deleted.is_empty() {
        tracing::info!(
            destination = %report.destination,
            written = report.written.len(),
            before = report.segments_before,
            after = report.segments_after,
            "replica compacted"
        );
    }
    Ok(report)
}

/// What a merge has checked so far.
#[derive(Debug, Default)]
struct Merged {
    spool: Option<SegmentSpool>,
    encrypted: bool,
    checksum_after: u64,
    last_time_us: i64,
}

/// Merges `run` into one segment: written first, then the sources deleted.
async fn merge(
    sink: &DynBackupSink,
    keys: &ChainKeys,
    generation: &str,
    run: &[SegmentEntry],
    options: &CompactOptions,
) -> Result<Compacted> {
    let destination = sink.describe();
    let dir = options.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut merged = Merged::default();
    for entry in run {
        let stream = sink
            .get(&entry.key, GetOptions::default().with_size_hint(entry.size))
            .await?;
        let input = SyncIoBridge::new(StreamReader::new(stream.map_err(std::io::Error::other)));
        let entry = entry.clone();
        let decryptor = options.decryptor.clone();
        let destination = destination.clone();
        let dir = dir.clone();
        merged = blocking(move || {
            append(
                merged,
                &entry,
                Box::new(input),
                decryptor.as_ref(),
                &dir,
                &destination,
            )
        })
        .await??;
    }
    if merged.encrypted && options.encryptor.is_none() {
        return Err(Error::Chain {
            destination,
            key: run[0].key.clone(),
            reason: "the segments are encrypted: compacting them needs the encryption recipients too (--encrypt-to or --passphrase-file), or the compacted segment would be stored in the clear".into(),
        });
    }
    let spool = merged.spool.ok_or_else(|| Error::Chain {
        destination: destination.clone(),
        key: run[0].key.clone(),
        reason: "nothing to compact".into(),
    })?;
    let encryptor = options.encryptor.clone();
    let spool_path = dir.clone();
    let sealed = blocking(move || spool.seal(encryptor.as_ref()))
        .await?
        .map_err(|e| Error::io("write a compacted segment in", spool_path, e))?;
    let key = keys.segment(
        generation,
        sealed.header.first,
        sealed.header.last,
        DateTime::from_timestamp_micros(merged.last_time_us).unwrap_or_default(),
    );
    upload_file(sink, &key, &sealed.path).await?;
    // The compacted segment is stored: only now may the sources go.
    for entry in run {
        sink.delete(&entry.key).await?;
    }
    let commits = u64::from(sealed.header.commits);
    tracing::debug!(%key, sources = run.len(), commits, "segments compacted");
    Ok(Compacted {
        key,
        replaces: run.iter().map(|s| s.key.clone()).collect(),
        commits,
        size: sealed.size,
    })
}

/// Checks one source against what was merged so far and appends its commits, streaming.
fn append(
    mut merged: Merged,
    entry: &SegmentEntry,
    input: Box<dyn Read + Send>,
    decryptor: Option<&DynDecryptor>,
    dir: &Path,
    destination: &str,
) -> Result<Merged> {
    let chain_err = |reason: String| Error::Chain {
        destination: destination.to_string(),
        key: entry.key.clone(),
        reason,
    };
    let read_err = |e: std::io::Error| chain_err(format!("cannot be read: {e}"));
    let spool_err = |e| Error::io("write a compacted segment in", dir, e);
    let (plain, encrypted) = format::open_sealed(&entry.key, input, decryptor)?;
    merged.encrypted |= encrypted;
    let mut reader = SegmentReader::new(plain).map_err(read_err)?;
    let h = reader.header;
    if h.first != entry.first || h.last != entry.last {
        return Err(chain_err(format!(
            "it holds transactions {}..={}, not those its key names",
            h.first, h.last
        )));
    }
    let spool = match &mut merged.spool {
        None => merged
            .spool
            .insert(SegmentSpool::new(dir, h.page_size, h.checksum_before).map_err(spool_err)?),
        Some(spool) => {
            let so_far = *spool.header();
            if h.page_size != so_far.page_size {
                return Err(chain_err(format!(
                    "its page size {} is not the previous segment's {}",
                    h.page_size, so_far.page_size
                )));
            }
            if h.first != so_far.last + 1 {
                return Err(chain_err(format!(
                    "it starts at transaction {}, not {}",
                    h.first,
                    so_far.last + 1
                )));
            }
            if h.checksum_before != merged.checksum_after {
                return Err(chain_err(
                    "its checksum before does not match the previous segment's checksum after (the chain is broken)".into(),
                ));
            }
            spool
        }
    };
    let mut page = vec![0u8; h.page_size as usize];
    let mut expected = h.first;
    while let Some(c) = reader.next_commit().map_err(read_err)? {
        if c.txid != expected {
            return Err(chain_err(format!(
                "transaction {} follows {}",
                c.txid,
                expected - 1
            )));
        }
        expected += 1;
        spool.begin_commit(&c).map_err(spool_err)?;
        while let Some(pgno) = reader.next_page(&mut page).map_err(read_err)? {
            spool.page(pgno, &page).map_err(spool_err)?;
        }
        spool.end_commit(c.checksum_after).map_err(spool_err)?;
        merged.checksum_after = c.checksum_after;
        merged.last_time_us = c.observed_us;
    }
    reader.finish().map_err(read_err)?;
    if expected != h.last + 1 {
        return Err(chain_err(format!(
            "its header says transactions {}..={} but it ends at {}",
            h.first,
            h.last,
            expected - 1
        )));
    }
    spool.set_wal_after(h.wal_after);
    Ok(merged)
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(TaskError::new("a compaction", e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(first: u64, last: u64, time: &str, size: u64) -> SegmentEntry {
        SegmentEntry {
            key: format!("{first}-{last}"),
            first,
            last,
            time: DateTime::parse_from_rfc3339(time).unwrap().to_utc(),
            size,
        }
    }

    fn keys(plan: &CompactPlan) -> Vec<Vec<String>> {
        plan.runs
            .iter()
            .map(|r| r.iter().map(|s| s.key.clone()).collect())
            .collect()
    }

    #[test]
    fn runs_are_consecutive_within_ended_intervals_and_bounded_in_size() {
        let g = Generation {
            id: "g".into(),
            snapshots: vec![],
            segments: vec![
                seg(1, 5, "2026-12-05T09:10:00Z", 10),
                seg(6, 9, "2026-12-05T09:40:00Z", 10),
                seg(10, 12, "2026-12-05T09:59:59Z", 10),
                seg(13, 20, "2026-12-05T10:00:01Z", 10),
                seg(21, 22, "2026-12-05T10:30:00Z", 10),
                // A gap: 23..=29 are missing.
                seg(30, 31, "2026-12-05T10:40:00Z", 10),
                seg(32, 40, "2026-12-05T10:50:00Z", 10),
                seg(41, 41, "2026-12-05T10:51:00Z", 25),
                // The current hour is not compacted.
                seg(42, 50, "2026-12-05T11:00:30Z", 10),
                seg(51, 52, "2026-12-05T11:00:31Z", 10),
            ],
        };
        let now = DateTime::parse_from_rfc3339("2026-12-05T11:01:00Z")
            .unwrap()
            .to_utc();
        let options = CompactOptions {
            max_bytes: 30,
            ..Default::default()
        };
        let p = plan_compaction(&g, &options, now);
        assert!(p.covered.is_empty());
        assert_eq!(
            keys(&p),
            vec![
                vec!["1-5", "6-9", "10-12"],
                vec!["13-20", "21-22"],
                vec!["30-31", "32-40"],
            ]
        );
        // An interval just ended is left alone until `min_age` has passed.
        let early = DateTime::parse_from_rfc3339("2026-12-05T11:00:30Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            keys(&plan_compaction(&g, &options, early)),
            vec![vec!["1-5", "6-9", "10-12"]]
        );
    }

    #[test]
    fn compacted_intervals_are_stable_and_covered_segments_are_found() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T00:00:00Z")
            .unwrap()
            .to_utc();
        let g = Generation {
            id: "g".into(),
            snapshots: vec![],
            segments: vec![
                seg(1, 12, "2026-12-05T09:59:59Z", 30),
                seg(1, 5, "2026-12-05T09:10:00Z", 10),
                seg(6, 9, "2026-12-05T09:40:00Z", 10),
                seg(13, 20, "2026-12-05T10:30:00Z", 10),
            ],
        };
        let p = plan_compaction(&g, &CompactOptions::default(), now);
        assert_eq!(p.covered, vec!["1-5".to_string(), "6-9".to_string()]);
        assert!(p.runs.is_empty(), "{p:?}");
    }
}
