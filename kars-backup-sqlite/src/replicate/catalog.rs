//! What a destination holds of a database's chain: generations, their snapshots and segments.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kars_backup_core::sink::DynBackupSink;
use serde::Serialize;

use super::keys::{ChainKey, ChainKeys};
use crate::error::Result;

/// A stored snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotEntry {
    /// Its key.
    pub key: String,
    /// The last transaction it contains.
    pub txid: u64,
    /// When its state was read.
    pub time: DateTime<Utc>,
    /// Its stored size.
    pub size: u64,
}

/// A stored segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentEntry {
    /// Its key.
    pub key: String,
    /// Its first transaction.
    pub first: u64,
    /// Its last transaction.
    pub last: u64,
    /// The observed time of its last commit.
    pub time: DateTime<Utc>,
    /// Its stored size.
    pub size: u64,
}

/// One generation: an unbroken chain from its first snapshot.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Generation {
    /// Its id (sorts by start).
    pub id: String,
    /// Its snapshots, by txid.
    pub snapshots: Vec<SnapshotEntry>,
    /// Its segments, by first txid.
    pub segments: Vec<SegmentEntry>,
}

impl Generation {
    /// The time of its first snapshot: it covers instants from then on.
    pub fn start(&self) -> Option<DateTime<Utc>> {
        self.snapshots.first().map(|s| s.time)
    }

    /// The time of its newest state (its last segment, else its newest snapshot).
    pub fn end(&self) -> Option<DateTime<Utc>> {
        let seg = self.segments.last().map(|s| s.time);
        let snap = self.snapshots.last().map(|s| s.time);
        seg.max(snap)
    }

    /// Stored bytes.
    pub fn size(&self) -> u64 {
        self.snapshots.iter().map(|s| s.size).sum::<u64>()
            + self.segments.iter().map(|s| s.size).sum::<u64>()
    }
}

/// Lists the generations of `keys`' chain at `sink`, oldest first (only those with a complete
/// snapshot: the others cannot be restored from).
///
/// # Errors
/// Storage errors.
pub async fn generations(sink: &DynBackupSink, keys: &ChainKeys) -> Result<Vec<Generation>> {
    let mut out = all_generations(sink, keys).await?;
    // A generation whose snapshot never completed cannot be restored from.
    out.retain(|g| !g.snapshots.is_empty());
    Ok(out)
}

/// Every generation of `keys`' chain at `sink`, oldest first, also those without a snapshot
/// (an interrupted prune leaves segments behind; a starting generation has none yet).
pub(crate) async fn all_generations(
    sink: &DynBackupSink,
    keys: &ChainKeys,
) -> Result<Vec<Generation>> {
    let mut by_id: BTreeMap<String, Generation> = BTreeMap::new();
    for meta in sink.list(Some(&keys.generations())).await? {
        let Some(key) = keys.parse(&meta.key) else {
            continue;
        };
        let (ChainKey::Snapshot { generation, .. } | ChainKey::Segment { generation, .. }) = &key
        else {
            continue;
        };
        let entry = by_id
            .entry(generation.clone())
            .or_insert_with(|| Generation {
                id: generation.clone(),
                ..Default::default()
            });
        match key {
            ChainKey::Snapshot { txid, time, .. } => entry.snapshots.push(SnapshotEntry {
                key: meta.key,
                txid,
                time,
                size: meta.size,
            }),
            ChainKey::Segment {
                first, last, time, ..
            } => entry.segments.push(SegmentEntry {
                key: meta.key,
                first,
                last,
                time,
                size: meta.size,
            }),
            ChainKey::Lease => {}
        }
    }
    let mut out: Vec<Generation> = by_id.into_values().collect();
    for g in &mut out {
        g.snapshots.sort_by_key(|s| s.txid);
        g.segments.sort_by_key(|s| (s.first, s.last));
    }
    Ok(out)
}

/// What a destination holds of one replicated database, from its listing alone (no segment is
/// read): the instants a restore can reach, and what is stored.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The destination (redacted).
    pub destination: String,
    /// The replicated database's name (its file name).
    pub database: String,
    /// Restorable from: the time of the oldest generation's first snapshot.
    pub from: Option<DateTime<Utc>>,
    /// Restorable to: the observed time of the newest shipped commit (the time in the newest
    /// segment's key; the newest snapshot's when it is newer).
    pub to: Option<DateTime<Utc>>,
    /// The newest shipped transaction (the replicator's own numbering within a generation).
    pub newest_txid: Option<u64>,
    /// Generations (unbroken chains, each from a snapshot).
    pub generations: usize,
    /// Snapshots stored.
    pub snapshots: usize,
    /// Segments stored.
    pub segments: usize,
    /// Stored bytes (snapshots and segments).
    pub size_bytes: u64,
    /// Segments that follow a gap in the transaction numbers (a lost segment): restores to
    /// instants past them stop before the gap.
    pub gaps: Vec<String>,
}

impl Window {
    /// The window of `generations` (oldest first) of `database` at `destination`.
    pub fn of(destination: &str, database: &str, generations: &[Generation]) -> Window {
        let newest = generations.last();
        let mut gaps = Vec::new();
        for g in generations {
            // A later snapshot bridges a gap before it (a restore starts from the newest one).
            let mut covered = 0;
            for seg in &g.segments {
                let base = g
                    .snapshots
                    .iter()
                    .map(|s| s.txid)
                    .filter(|&t| t < seg.first);
                covered = covered.max(base.max().unwrap_or(0));
                if seg.first > covered + 1 {
                    gaps.push(seg.key.clone());
                }
                covered = covered.max(seg.last);
            }
        }
        Window {
            destination: destination.to_string(),
            database: database.to_string(),
            from: generations.first().and_then(Generation::start),
            to: newest.and_then(Generation::end),
            newest_txid: newest.map(|g| {
                let seg = g.segments.last().map_or(0, |s| s.last);
                seg.max(g.snapshots.last().map_or(0, |s| s.txid))
            }),
            generations: generations.len(),
            snapshots: generations.iter().map(|g| g.snapshots.len()).sum(),
            segments: generations.iter().map(|g| g.segments.len()).sum(),
            size_bytes: generations.iter().map(Generation::size).sum(),
            gaps,
        }
    }

    /// Whether `t` is inside the window.
    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        self.from.is_some_and(|f| f <= t) && self.to.is_some_and(|e| t <= e)
    }
}

/// The restorable window of `database` (its file name) at `sink`: one listing, no download.
///
/// # Errors
/// Storage errors.
pub async fn window(sink: &DynBackupSink, database: &str) -> Result<Window> {
    let generations = generations(sink, &ChainKeys::new(database)).await?;
    Ok(Window::of(&sink.describe(), database, &generations))
}

/// The databases that have a chain at `sink` (their names, as in [`ChainKeys::new`]).
///
/// # Errors
/// Storage errors.
pub async fn databases(sink: &DynBackupSink) -> Result<Vec<String>> {
    let root = format!("{}sqlite/", kars_backup_core::layout::CHAIN_PREFIX);
    let mut names: Vec<String> = sink
        .list(Some(&root))
        .await?
        .into_iter()
        .filter_map(|m| {
            let rest = m.key.strip_prefix(&root)?;
            let (name, rest) = rest.split_once('/')?;
            rest.starts_with("generations/").then(|| name.to_string())
        })
        .collect();
    names.dedup();
    Ok(names)
}
