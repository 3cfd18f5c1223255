//! The WAL chain at a destination: per cluster and timeline, the window of archived segments
//! (first to last), the gaps in it, and the timeline history files.

use std::collections::BTreeMap;

use kars_backup_core::layout::CHAIN_PREFIX;
use kars_backup_core::{DynBackupSink, ObjectMeta, Result};
use serde::Serialize;

use super::keys::{StoredWal, WalKind, WalName, parse_segment_size_key, segment_size_prefix};

/// Segments missing from a timeline's window, from `first` to `last` (inclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalGap {
    /// The first missing segment.
    pub first: String,
    /// The last missing segment.
    pub last: String,
    /// How many are missing.
    pub count: u64,
}

/// One timeline's archived WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineWindow {
    /// The timeline.
    pub timeline: u32,
    /// The first complete segment archived.
    pub first: Option<String>,
    /// The last complete segment archived.
    pub last: Option<String>,
    /// Complete segments archived.
    pub segments: u64,
    /// The segment after `last` as far as a receiver has shipped it (`.partial`), if any.
    pub partial: Option<String>,
    /// Segments missing between `first` and `last` (and before a `.partial`).
    pub gaps: Vec<WalGap>,
    /// Whether this timeline's history file is archived (timeline 1 has none).
    pub history: bool,
    /// Backup label files (`….backup`) archived on this timeline.
    pub backup_labels: Vec<String>,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// When the newest file of the timeline was stored, if the destination says.
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
}

/// One cluster's archived WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalChain {
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// Its timelines, in order.
    pub timelines: Vec<TimelineWindow>,
}

impl WalChain {
    /// Every gap of every timeline, with its timeline.
    pub fn gaps(&self) -> impl Iterator<Item = (u32, &WalGap)> {
        self.timelines
            .iter()
            .flat_map(|t| t.gaps.iter().map(move |g| (t.timeline, g)))
    }

    /// Timelines (other than 1) whose history file is missing: a restore onto them cannot
    /// follow the switch.
    pub fn missing_history(&self) -> Vec<u32> {
        self.timelines
            .iter()
            .filter(|t| t.timeline > 1 && !t.history)
            .map(|t| t.timeline)
            .collect()
    }
}

/// The system identifiers of the clusters archived at a destination.
///
/// # Errors
/// Listing failures.
pub async fn system_identifiers(sink: &DynBackupSink) -> Result<Vec<u64>> {
    let prefix = format!("{CHAIN_PREFIX}postgres/");
    let mut ids: Vec<u64> = sink
        .list(Some(&prefix))
        .await?
        .iter()
        .filter_map(|m| StoredWal::parse(&m.key).map(|s| s.system_identifier))
        .collect();
    ids.dedup();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The WAL segment size of cluster `system_identifier` at a destination: the one its archive
/// records (`archive_wal` records sizes other than 16 MiB), else `default`.
///
/// # Errors
/// Listing failures.
pub async fn archived_segment_size(
    sink: &DynBackupSink,
    system_identifier: u64,
    default: u64,
) -> Result<u64> {
    Ok(sink
        .list(Some(&segment_size_prefix(system_identifier)))
        .await?
        .iter()
        .find_map(|m| parse_segment_size_key(&m.key).map(|(_, size)| size))
        .unwrap_or(default))
}

/// The WAL chains of every cluster archived at a destination (one listing). `segment_size` is
/// the WAL segment size of clusters whose archive records none (16 MiB ones).
///
/// # Errors
/// Listing failures.
pub async fn list_chains(sink: &DynBackupSink, segment_size: u64) -> Result<Vec<WalChain>> {
    let prefix = format!("{CHAIN_PREFIX}postgres/");
    Ok(chains_from_listing(
        &sink.list(Some(&prefix)).await?,
        segment_size,
    ))
}

/// The chains described by a listing of the archive (pure: for tests and for callers that
/// listed already). A cluster's segments are numbered with the segment size its archive records
/// in the listing, else with `segment_size`.
pub fn chains_from_listing(objects: &[ObjectMeta], segment_size: u64) -> Vec<WalChain> {
    let sizes: BTreeMap<u64, u64> = objects
        .iter()
        .filter_map(|m| parse_segment_size_key(&m.key))
        .collect();
    let mut by_timeline: BTreeMap<(u64, u32), Vec<(StoredWal, &ObjectMeta)>> = BTreeMap::new();
    for meta in objects {
        if let Some(stored) = StoredWal::parse(&meta.key) {
            by_timeline
                .entry((stored.system_identifier, stored.wal.timeline))
                .or_default()
                .push((stored, meta));
        }
    }
    let mut chains: BTreeMap<u64, WalChain> = BTreeMap::new();
    for ((sysid, timeline), files) in by_timeline {
        let size = sizes.get(&sysid).copied().unwrap_or(segment_size);
        let window = timeline_window(timeline, &files, size);
        chains
            .entry(sysid)
            .or_insert_with(|| WalChain {
                system_identifier: sysid,
                timelines: Vec::new(),
            })
            .timelines
            .push(window);
    }
    chains.into_values().collect()
}

fn timeline_window(
    timeline: u32,
    files: &[(StoredWal, &ObjectMeta)],
    segment_size: u64,
) -> TimelineWindow {
    let mut segnos: Vec<u64> = Vec::new();
    let mut partials: Vec<u64> = Vec::new();
    let mut window = TimelineWindow {
        timeline,
        first: None,
        last: None,
        segments: 0,
        partial: None,
        gaps: Vec::new(),
        history: false,
        backup_labels: Vec::new(),
        stored_bytes: 0,
        newest: None,
    };
    for (stored, meta) in files {
        window.stored_bytes += meta.size;
        window.newest = window.newest.max(meta.last_modified);
        match stored.wal.kind {
            WalKind::Segment => segnos.push(stored.wal.segno(segment_size)),
            WalKind::Partial => partials.push(stored.wal.segno(segment_size)),
            WalKind::History => window.history = true,
            WalKind::Backup => window.backup_labels.push(stored.wal.name.clone()),
        }
    }
    segnos.sort_unstable();
    segnos.dedup();
    let name = |segno: u64| WalName::segment(timeline, segno, segment_size).name;
    window.segments = segnos.len() as u64;
    window.first = segnos.first().map(|s| name(*s));
    window.last = segnos.last().map(|s| name(*s));
    // A .partial counts only past the last complete segment (older ones are superseded).
    let partial = partials
        .into_iter()
        .filter(|p| segnos.last().is_none_or(|last| p > last))
        .max();
    window.partial = partial.map(|p| format!("{}.partial", name(p)));
    let mut expected: Vec<u64> = segnos.clone();
    if let (Some(p), Some(_)) = (partial, segnos.last()) {
        expected.push(p);
    }
    for pair in expected.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b > a + 1 {
            window.gaps.push(WalGap {
                first: name(a + 1),
                last: name(b - 1),
                count: b - a - 1,
            });
        }
    }
    window
}

/// One line of a timeline history file: the parent timeline and where the child branched off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The parent timeline.
    pub parent: u32,
    /// The switch point (`0/3000148`).
    pub switch_lsn: String,
    /// The reason PostgreSQL wrote (`no recovery target specified`, …).
    pub reason: String,
}

/// Parses a timeline history file (`<parent TLI>\t<switch LSN>\t<reason>` per line; comments
/// and blank lines skipped).
pub fn parse_history(text: &str) -> Vec<HistoryEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let parent = f.next()?.trim().parse().ok()?;
            let switch_lsn = f.next()?.trim().to_string();
            let reason = f.next().unwrap_or("").trim().to_string();
            Some(HistoryEntry {
                parent,
                switch_lsn,
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::keys::DEFAULT_SEGMENT_SIZE;

    fn meta(key: String) -> ObjectMeta {
        ObjectMeta {
            key,
            size: 10,
            last_modified: None,
        }
    }

    #[test]
    fn windows_and_gaps() {
        let sha = "ab".repeat(32);
        let mut objects = Vec::new();
        for seg in [1u64, 2, 3, 6, 7, 0x100, 0x101] {
            let wal = WalName::segment(1, seg, DEFAULT_SEGMENT_SIZE);
            objects.push(meta(StoredWal::new(9, wal, Some(sha.clone()), None).key));
        }
        objects.push(meta(
            StoredWal::new(
                9,
                WalName::parse("000000010000000100000003.partial").unwrap(),
                None,
                None,
            )
            .key,
        ));
        objects.push(meta(
            StoredWal::new(
                9,
                WalName::parse("00000002.history").unwrap(),
                Some(sha.clone()),
                None,
            )
            .key,
        ));
        objects.push(meta("asset-data-20241218-020000.tar.gz".into()));
        let chains = chains_from_listing(&objects, DEFAULT_SEGMENT_SIZE);
        assert_eq!(chains.len(), 1);
        let t1 = &chains[0].timelines[0];
        assert_eq!(t1.first.as_deref(), Some("000000010000000000000001"));
        assert_eq!(t1.last.as_deref(), Some("000000010000000100000001"));
        assert_eq!(t1.segments, 7);
        assert_eq!(
            t1.partial.as_deref(),
            Some("000000010000000100000003.partial")
        );
        let gaps: Vec<(&str, &str, u64)> = t1
            .gaps
            .iter()
            .map(|g| (g.first.as_str(), g.last.as_str(), g.count))
            .collect();
        assert_eq!(
            gaps,
            vec![
                ("000000010000000000000004", "000000010000000000000005", 2),
                ("000000010000000000000008", "0000000100000000000000FF", 248),
                ("000000010000000100000002", "000000010000000100000002", 1),
            ]
        );
        let t2 = &chains[0].timelines[1];
        assert!(t2.history && t2.segments == 0);
        assert!(chains[0].missing_history().is_empty());
    }

    #[test]
    fn history_files_parse() {
        let h = parse_history(
            "1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n",
        );
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].parent, 2);
        assert_eq!(h[0].switch_lsn, "0/3000148");
    }
}
