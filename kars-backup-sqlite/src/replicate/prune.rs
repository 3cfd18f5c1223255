//! The point-in-time window (`--pitr-window`): what of a chain a restore to any instant of the
//! window needs, and deleting the rest.
//!
//! A restore to an instant `T` uses the newest generation that started at or before `T`, its
//! newest snapshot at or before `T` and the segments after that snapshot. So every instant of
//! `[now - window, now]` is served by: the **base** (the newest snapshot at or before
//! `now - window`) and the segments of its generation after it, plus every later generation
//! whole. Everything older goes: earlier generations, the base generation's earlier snapshots
//! and the segments they alone needed, and segments left without a snapshot by an interrupted
//! prune. When no snapshot is that old, nothing is deleted. The lease, other databases and keys
//! this version does not know are never touched; the newest generation is always kept.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kars_backup_core::sink::DynBackupSink;
use serde::Serialize;

use super::catalog::{self, Generation};
use super::keys::ChainKeys;
use crate::error::Result;

/// One key kept, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptKey {
    /// The key.
    pub key: String,
    /// Why it is kept.
    pub reason: KeepReason,
}

/// Why a key of a chain is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepReason {
    /// The newest snapshot at or before the window's start: restores to the window's first
    /// instants begin there.
    WindowBase,
    /// A snapshot or segment after the base, needed for instants in the window.
    InWindow,
    /// No snapshot is as old as the window: everything stored is inside it.
    WindowNotFull,
    /// A generation without a complete snapshot newer than every complete one (a replicator
    /// may be writing its first snapshot).
    Starting,
}

/// What [`prune`] keeps and deletes, in the order it deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunePlan {
    /// The window's first instant (`now - window`).
    pub window_start: DateTime<Utc>,
    /// The base snapshot's key, when a snapshot is as old as the window.
    pub base: Option<String>,
    /// Keys kept, with the reason.
    pub keep: Vec<KeptKey>,
    /// Keys to delete, in order: an earlier generation's snapshots before its segments (it
    /// stops being restorable first), the base generation's older segments before its older
    /// snapshots.
    pub delete: Vec<String>,
}

/// Plans the window `window` at `now` for a chain's generations (as listed, oldest first, also
/// those without a snapshot). Pure. Kept: the base (the newest snapshot at or before
/// `now - window`), the later snapshots and segments of its generation, and every later
/// generation; when no snapshot is that old, everything. Deleted: the rest, and segments left
/// without a snapshot older than the newest complete generation.
pub fn plan_prune(generations: &[Generation], window: Duration, now: DateTime<Utc>) -> PrunePlan {
    let window_start =
        now - chrono::Duration::from_std(window).unwrap_or_else(|_| chrono::Duration::days(36_500));
    let newest_complete = generations.iter().rposition(|g| !g.snapshots.is_empty());
    // The base: the newest complete generation started at or before the window's start, and
    // its newest snapshot at or before it.
    let base_generation = generations
        .iter()
        .rposition(|g| g.start().is_some_and(|s| s <= window_start));
    let base = base_generation.and_then(|i| {
        generations[i]
            .snapshots
            .iter()
            .rfind(|s| s.time <= window_start)
            .map(|s| (i, s.clone()))
    });
    let mut plan = PrunePlan {
        window_start,
        base: base.as_ref().map(|(_, s)| s.key.clone()),
        keep: Vec::new(),
        delete: Vec::new(),
    };
    let keep = |plan: &mut PrunePlan, key: &str, reason: KeepReason| {
        plan.keep.push(KeptKey {
            key: key.to_string(),
            reason,
        });
    };
    for (i, g) in generations.iter().enumerate() {
        let complete = !g.snapshots.is_empty();
        if !complete {
            // Segments without a snapshot: left by an interrupted prune when older than a
            // complete generation, else a generation whose snapshot is still being written.
            if newest_complete.is_some_and(|n| i < n) {
                plan.delete.extend(g.segments.iter().map(|s| s.key.clone()));
            } else {
                for s in &g.segments {
                    keep(&mut plan, &s.key, KeepReason::Starting);
                }
            }
            continue;
        }
        match &base {
            None => {
                for key in g
                    .snapshots
                    .iter()
                    .map(|s| &s.key)
                    .chain(g.segments.iter().map(|s| &s.key))
                {
                    keep(&mut plan, key, KeepReason::WindowNotFull);
                }
            }
            Some((b, _)) if i < *b => {
                plan.delete
                    .extend(g.snapshots.iter().map(|s| s.key.clone()));
                plan.delete.extend(g.segments.iter().map(|s| s.key.clone()));
            }
            Some((b, snap)) if i == *b => {
                plan.delete.extend(
                    g.segments
                        .iter()
                        .filter(|s| s.last <= snap.txid)
                        .map(|s| s.key.clone()),
                );
                for s in &g.snapshots {
                    if s.txid < snap.txid {
                        plan.delete.push(s.key.clone());
                    } else if s.key == snap.key {
                        keep(&mut plan, &s.key, KeepReason::WindowBase);
                    } else {
                        keep(&mut plan, &s.key, KeepReason::InWindow);
                    }
                }
                for s in g.segments.iter().filter(|s| s.last > snap.txid) {
                    keep(&mut plan, &s.key, KeepReason::InWindow);
                }
            }
            Some(_) => {
                for key in g
                    .snapshots
                    .iter()
                    .map(|s| &s.key)
                    .chain(g.segments.iter().map(|s| &s.key))
                {
                    keep(&mut plan, key, KeepReason::InWindow);
                }
            }
        }
    }
    plan
}

/// What [`prune`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// The destination.
    pub destination: String,
    /// The database (its file name).
    pub database: String,
    /// Nothing was deleted: the plan only.
    pub dry_run: bool,
    /// The plan carried out.
    pub plan: PrunePlan,
    /// Stored bytes deleted (or that would be).
    pub deleted_bytes: u64,
    /// Stored bytes kept.
    pub kept_bytes: u64,
}

/// Keeps what a restore to any instant of the last `window` before `now` needs of the chain of
/// `database` (its file name) at `sink`, and deletes the rest (see [`plan_prune`] for what is kept); with
/// `dry_run`, only reports it.
///
/// # Errors
/// Storage errors (what was deleted before stays deleted; a new run finishes the work).
pub async fn prune(
    sink: &DynBackupSink,
    database: &str,
    window: Duration,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<PruneReport> {
    let keys = ChainKeys::new(database);
    let generations = catalog::all_generations(sink, &keys).await?;
    let plan = plan_prune(&generations, window, now);
    let size_of = |key: &str| {
        generations
            .iter()
            .flat_map(|g| {
                g.snapshots
                    .iter()
                    .map(|s| (&s.key, s.size))
                    .chain(g.segments.iter().map(|s| (&s.key, s.size)))
            })
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, size)| size)
    };
    let deleted_bytes = plan.delete.iter().map(|k| size_of(k)).sum();
    let kept_bytes = plan.keep.iter().map(|k| size_of(&k.key)).sum();
    if !dry_run {
        for key in &plan.delete {
            sink.delete(key).await?;
        }
    }
    if !plan.delete.is_empty() {
        tracing::info!(
            destination = %sink.describe(),
            database,
            deleted = plan.delete.len(),
            kept = plan.keep.len(),
            dry_run,
            "replica window pruned"
        );
    }
    Ok(PruneReport {
        destination: sink.describe(),
        database: database.to_string(),
        dry_run,
        plan,
        deleted_bytes,
        kept_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicate::catalog::{SegmentEntry, SnapshotEntry};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn snap(g: &str, txid: u64, time: &str) -> SnapshotEntry {
        SnapshotEntry {
            key: format!("{g}/snap-{txid}"),
            txid,
            time: t(time),
            size: 100,
        }
    }

    fn seg(g: &str, first: u64, last: u64, time: &str) -> SegmentEntry {
        SegmentEntry {
            key: format!("{g}/seg-{first}-{last}"),
            first,
            last,
            time: t(time),
            size: 10,
        }
    }

    fn chain() -> Vec<Generation> {
        vec![
            Generation {
                id: "a".into(),
                snapshots: vec![snap("a", 0, "2026-12-01T00:00:00Z")],
                segments: vec![seg("a", 1, 5, "2026-12-01T12:00:00Z")],
            },
            // Left without its snapshot by an interrupted prune.
            Generation {
                id: "b".into(),
                snapshots: vec![],
                segments: vec![seg("b", 1, 2, "2026-12-02T01:00:00Z")],
            },
            Generation {
                id: "c".into(),
                snapshots: vec![
                    snap("c", 0, "2026-12-02T00:00:00Z"),
                    snap("c", 9, "2026-12-03T00:00:00Z"),
                    snap("c", 20, "2026-12-04T00:00:00Z"),
                ],
                segments: vec![
                    seg("c", 1, 5, "2026-12-02T10:00:00Z"),
                    seg("c", 6, 9, "2026-12-02T23:00:00Z"),
                    seg("c", 10, 15, "2026-12-03T10:00:00Z"),
                    seg("c", 16, 25, "2026-12-04T10:00:00Z"),
                ],
            },
            Generation {
                id: "d".into(),
                snapshots: vec![snap("d", 0, "2026-12-05T00:00:00Z")],
                segments: vec![seg("d", 1, 3, "2026-12-05T01:00:00Z")],
            },
            Generation {
                id: "e".into(),
                snapshots: vec![],
                segments: vec![seg("e", 1, 1, "2026-12-05T02:00:00Z")],
            },
        ]
    }

    #[test]
    fn the_window_keeps_its_base_and_everything_after() {
        let now = t("2026-12-05T12:00:00Z");
        // Window start 2026-12-03T06:00: base is c's snapshot at txid 9.
        let p = plan_prune(&chain(), Duration::from_secs(2 * 86_400 + 6 * 3600), now);
        assert_eq!(p.base.as_deref(), Some("c/snap-9"));
        assert_eq!(
            p.delete,
            vec![
                "a/snap-0",
                "a/seg-1-5",
                "b/seg-1-2",
                "c/seg-1-5",
                "c/seg-6-9",
                "c/snap-0"
            ]
        );
        let kept: Vec<(&str, KeepReason)> =
            p.keep.iter().map(|k| (k.key.as_str(), k.reason)).collect();
        assert_eq!(
            kept,
            vec![
                ("c/snap-9", KeepReason::WindowBase),
                ("c/snap-20", KeepReason::InWindow),
                ("c/seg-10-15", KeepReason::InWindow),
                ("c/seg-16-25", KeepReason::InWindow),
                ("d/snap-0", KeepReason::InWindow),
                ("d/seg-1-3", KeepReason::InWindow),
                ("e/seg-1-1", KeepReason::Starting),
            ]
        );
    }

    #[test]
    fn a_window_older_than_every_snapshot_deletes_only_orphans_and_zero_keeps_the_newest() {
        let now = t("2026-12-05T12:00:00Z");
        let p = plan_prune(&chain(), Duration::from_secs(30 * 86_400), now);
        assert_eq!(p.base, None);
        assert_eq!(p.delete, vec!["b/seg-1-2"]);
        // A window of zero: the newest snapshot is the base, nothing after it goes.
        let p = plan_prune(&chain(), Duration::ZERO, now);
        assert_eq!(p.base.as_deref(), Some("d/snap-0"));
        assert!(p.keep.iter().any(|k| k.key == "d/seg-1-3"));
        assert!(p.keep.iter().any(|k| k.key == "e/seg-1-1"));
        assert!(
            !p.delete
                .iter()
                .any(|k| k.starts_with("d/") || k.starts_with("e/"))
        );
    }
}
