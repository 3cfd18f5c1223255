//! Prune: apply a retention policy to a repository, safely.
//!
//! - Only committed backups are planned over (runbook archives only when asked); the newest
//!   committed backup is never deleted.
//! - Anything that cannot be parsed (foreign files, manifests of unknown versions) is reported and
//!   left alone.
//! - A backup is deleted manifest first (behind a `.pending` marker), so nothing half-deleted is
//!   ever listed as a backup.
//! - Orphans — archives and markers of runs that died before committing — are removed once
//!   older than a grace period.
//! - A prune holds a lock object in the destination; a backup that starts meanwhile backs off,
//!   and a prune that finds a backup in progress does not start.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lock;
use crate::repository::{BackupEntry, EntryKind, Repository};
use crate::retention::{Kept, RetentionItem, RetentionPolicy};
use crate::run::new_run_id;

/// The prune lock: its key, its content, when it is stale, and who holds it.
pub use crate::layout::PRUNE_LOCK;
pub use crate::lock::{LockInfo, STALE_LOCK_AFTER, live_lock};

/// Options of [`prune`].
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Plan and report only; delete nothing and take no lock.
    pub dry_run: bool,
    /// Orphans younger than this may belong to a backup still running and are left alone.
    pub orphan_grace: Duration,
    /// Also apply the policy to runbook archives (no manifest). Off by default: they are never
    /// deleted unless asked.
    pub include_runbook: bool,
    /// "Now" for the policy (the grace period of orphans is measured on the wall clock).
    pub now: DateTime<Utc>,
    /// The run id recorded in the lock.
    pub run_id: String,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            orphan_grace: Duration::hours(24),
            include_runbook: false,
            now: Utc::now(),
            run_id: new_run_id(),
        }
    }
}

/// Something prune saw and did not touch, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftAlone {
    /// The object or backup name.
    pub name: String,
    /// Why it was left alone.
    pub reason: String,
}

/// What a prune planned and did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// The destination (redacted).
    pub destination: String,
    /// True when nothing was changed.
    pub dry_run: bool,
    /// Kept backups with their reasons, newest first.
    pub keep: Vec<Kept>,
    /// Backups the policy deletes, newest first.
    pub delete: Vec<RetentionItem>,
    /// Backups actually deleted (empty on a dry run).
    pub deleted: Vec<String>,
    /// Orphans of failed runs removed (or, on a dry run, that would be removed).
    pub orphans: Vec<String>,
    /// Runbook archives, unreadable manifests, young orphans and foreign files, untouched.
    pub left_alone: Vec<LeftAlone>,
    /// Deletions that failed; the rest went on.
    pub errors: Vec<String>,
}

/// Applies `policy` to the backups in `repo`.
///
/// # Errors
/// A lock held by another prune, a backup in progress, the sink's listing errors. Individual
/// deletion failures are collected in [`PruneReport::errors`].
pub async fn prune(
    repo: &Repository,
    policy: &dyn RetentionPolicy,
    options: &PruneOptions,
) -> Result<PruneReport> {
    if !options.dry_run {
        lock::take(repo.sink(), &options.run_id).await?;
    }
    let result = prune_locked(repo, policy, options).await;
    if !options.dry_run {
        lock::release(repo.sink()).await;
    }
    result
}

async fn prune_locked(
    repo: &Repository,
    policy: &dyn RetentionPolicy,
    options: &PruneOptions,
) -> Result<PruneReport> {
    let listing = repo.list().await?;
    let mut left_alone: Vec<LeftAlone> = listing
        .foreign
        .iter()
        .map(|o| LeftAlone {
            name: o.key.clone(),
            reason: "not a kars-backup object".into(),
        })
        .collect();

    // Orphans: incomplete entries with a marker (or an archive) older than the grace period.
    let mut orphans = Vec::new();
    for e in listing
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Incomplete)
    {
        let Some(marker) = &e.pending else {
            // No marker: a manifest without archive, or one this version cannot read.
            left_alone.push(LeftAlone {
                name: e.name.to_string(),
                reason: e.note.clone().unwrap_or_else(|| "incomplete".into()),
            });
            continue;
        };
        // Markers carry wall-clock times: their age is measured on the clock, not `options.now`.
        let age = marker.last_modified.map(|t| Utc::now() - t);
        if age.is_some_and(|age| age >= options.orphan_grace) {
            orphans.push(e);
        } else if options.dry_run {
            left_alone.push(LeftAlone {
                name: e.name.to_string(),
                reason: "a backup in progress (younger than the grace period)".into(),
            });
        } else {
            return Err(Error::generic(
                repo.describe(),
                format!(
                    "a backup is in progress here ({}); prune again when it has finished",
                    e.name
                ),
            ));
        }
    }

    let candidates: Vec<&BackupEntry> = listing
        .entries
        .iter()
        .filter(|e| {
            e.kind == EntryKind::Committed
                || (options.include_runbook && e.kind == EntryKind::Runbook)
        })
        .collect();
    for e in listing
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Runbook)
    {
        if !options.include_runbook {
            left_alone.push(LeftAlone {
                name: e.name.to_string(),
                reason: "runbook archive (no manifest); prune with --include-runbook to apply the policy".into(),
            });
        }
    }
    let items: Vec<RetentionItem> = candidates
        .iter()
        .map(|e| RetentionItem {
            name: e.name.to_string(),
            time: e.time(),
            tiers: e
                .manifest
                .as_ref()
                .map(|m| m.tiers.clone())
                .unwrap_or_default(),
            size: e.size(),
        })
        .collect();
    let mut plan = policy.plan(&items, options.now);

    // Whatever the policy says, the newest committed backup stays.
    if let Some(newest) = listing.latest().map(|e| e.name.to_string()) {
        if let Some(pos) = plan.delete.iter().position(|i| i.name == newest) {
            let item = plan.delete.remove(pos);
            plan.keep.insert(
                0,
                Kept {
                    item,
                    reasons: vec!["newest committed backup".into()],
                },
            );
        }
    }

    let mut report = PruneReport {
        destination: repo.describe(),
        dry_run: options.dry_run,
        keep: plan.keep,
        delete: plan.delete,
        deleted: Vec::new(),
        orphans: orphans.iter().map(|e| e.name.to_string()).collect(),
        left_alone,
        errors: Vec::new(),
    };
    if options.dry_run {
        return Ok(report);
    }
    for item in &report.delete {
        let name = item.name.parse()?;
        match repo.delete(&name).await {
            Ok(()) => report.deleted.push(item.name.clone()),
            Err(e) => report.errors.push(format!("{}: {e}", item.name)),
        }
    }
    for e in orphans {
        let removal = async {
            repo.sink().delete(&e.name.to_string()).await?;
            repo.sink().delete(&e.name.pending_name()).await
        };
        if let Err(err) = removal.await {
            report.errors.push(format!("orphan {}: {err}", e.name));
        }
    }
    tracing::info!(
        destination = %report.destination,
        kept = report.keep.len(),
        deleted = report.deleted.len(),
        orphans = report.orphans.len(),
        errors = report.errors.len(),
        "prune finished"
    );
    Ok(report)
}
