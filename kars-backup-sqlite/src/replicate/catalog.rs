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

/// The restorable window of one replicated database at a destination, from the listing alone
/// (no object is read): what `list` and `status` show.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The database (its file name).
    pub database: String,
    /// The earliest instant a restore can reach (the oldest snapshot's time).
    pub first_restorable: Option<DateTime<Utc>>,
    /// The observed time of the last commit stored (or of the newest snapshot when later).
    pub last_commit: Option<DateTime<Utc>>,
    /// Restorable generations.
    pub generations: usize,
    /// Snapshots.
    pub snapshots: usize,
    /// Segments.
    pub segments: usize,
    /// Stored bytes of snapshots and segments.
    pub bytes: u64,
}

/// The restorable window of `database` (its file name) at `sink`: one listing, no download.
///
/// # Errors
/// Storage errors.
pub async fn window(sink: &DynBackupSink, database: &str) -> Result<Window> {
    let generations = generations(sink, &ChainKeys::new(database)).await?;
    Ok(Window {
        database: database.to_string(),
        first_restorable: generations.first().and_then(Generation::start),
        last_commit: generations.iter().filter_map(Generation::end).max(),
        generations: generations.len(),
        snapshots: generations.iter().map(|g| g.snapshots.len()).sum(),
        segments: generations.iter().map(|g| g.segments.len()).sum(),
        bytes: generations.iter().map(Generation::size).sum(),
    })
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
