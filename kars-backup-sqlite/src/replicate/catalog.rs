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
#[derive(Debug, Clone, Serialize)]
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

/// Lists the generations of `keys`' chain at `sink`, oldest first.
///
/// # Errors
/// Storage errors.
pub async fn generations(sink: &DynBackupSink, keys: &ChainKeys) -> Result<Vec<Generation>> {
    let mut by_id: BTreeMap<String, Generation> = BTreeMap::new();
    for meta in sink.list(Some(&keys.generations())).await? {
        match keys.parse(&meta.key) {
            Some(ChainKey::Snapshot {
                generation,
                txid,
                time,
            }) => by_id
                .entry(generation.clone())
                .or_insert_with(|| Generation {
                    id: generation,
                    ..Default::default()
                })
                .snapshots
                .push(SnapshotEntry {
                    key: meta.key,
                    txid,
                    time,
                    size: meta.size,
                }),
            Some(ChainKey::Segment {
                generation,
                first,
                last,
                time,
            }) => by_id
                .entry(generation.clone())
                .or_insert_with(|| Generation {
                    id: generation,
                    ..Default::default()
                })
                .segments
                .push(SegmentEntry {
                    key: meta.key,
                    first,
                    last,
                    time,
                    size: meta.size,
                }),
            _ => {}
        }
    }
    let mut out: Vec<Generation> = by_id.into_values().collect();
    for g in &mut out {
        g.snapshots.sort_by_key(|s| s.txid);
        g.segments.sort_by_key(|s| (s.first, s.last));
    }
    // A generation whose snapshot never completed cannot be restored from.
    out.retain(|g| !g.snapshots.is_empty());
    Ok(out)
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
