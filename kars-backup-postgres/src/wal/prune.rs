//! [`prune_wal`]: removes the WAL that no kept base backup needs.

use kars_backup_core::{DynBackupSink, Error, Result};

use super::keys::{StoredWal, WalKind, WalName, wal_prefix};

/// What [`prune_wal`] removed (or would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalPruneReport {
    /// Keys removed (or, in a dry run, to remove), oldest first.
    pub removed: Vec<String>,
    /// Their stored bytes.
    pub bytes: u64,
    /// Files kept.
    pub kept: u64,
}

/// Removes, on every timeline of cluster `system_identifier`, the segments (and their
/// `.partial` and backup label files) before `oldest_needed`: the first segment of the oldest
/// base backup that retention keeps. History files are always kept (they are small, and a
/// restore follows timelines through them). With `dry_run` nothing is deleted.
///
/// # Errors
/// [`Error::InvalidInput`] when `oldest_needed` is not a segment name; listing and deletion
/// failures (a deletion failure stops the pruning; what was removed before stays removed).
pub async fn prune_wal(
    sink: &DynBackupSink,
    system_identifier: u64,
    oldest_needed: &str,
    segment_size: u64,
    dry_run: bool,
) -> Result<WalPruneReport> {
    let oldest = WalName::parse(oldest_needed)
        .filter(|w| w.kind == WalKind::Segment)
        .ok_or_else(|| {
            Error::InvalidInput(format!("{oldest_needed:?} is not a WAL segment name"))
        })?;
    let limit = oldest.segno(segment_size);
    let mut report = WalPruneReport::default();
    let mut doomed = Vec::new();
    for meta in sink.list(Some(&wal_prefix(system_identifier))).await? {
        let Some(stored) = StoredWal::parse(&meta.key) else {
            continue;
        };
        if stored.wal.kind != WalKind::History && stored.wal.segno(segment_size) < limit {
            doomed.push((stored.wal.segno(segment_size), meta.key, meta.size));
        } else {
            report.kept += 1;
        }
    }
    doomed.sort();
    for (_, key, size) in doomed {
        if !dry_run {
            sink.delete(&key).await?;
        }
        report.bytes += size;
        report.removed.push(key);
    }
    Ok(report)
}
