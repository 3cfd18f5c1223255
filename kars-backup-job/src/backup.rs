//! [`Job::backup`]: storage-tier routing, the backup itself, and the prune of every
//! destination that committed it.

use kars_backup_core::{
    BackupJob, BackupReport, DynProgress, Placement, PruneOptions, Repository, Tier,
};

use crate::error::{Error, Result};
use crate::job::{Destination, Job};
use crate::wal::{PruneRun, prune};

/// What one backup run of a job did.
#[derive(Debug)]
pub struct BackupRun {
    /// The backup.
    pub report: BackupReport,
    /// Destinations the tier rules left out of this run (redacted).
    pub skipped: Vec<String>,
    /// Each pruned destination and how its prune went (its backups, then the WAL the oldest
    /// kept base backup does not need).
    pub prunes: Vec<(String, std::result::Result<PruneRun, String>)>,
    /// The archive was stored unencrypted at local destinations by default (not on purpose):
    /// worth a one-line notice.
    pub plaintext_notice: bool,
}

impl BackupRun {
    /// Whether every destination took the backup and every prune went through.
    pub fn all_succeeded(&self) -> bool {
        self.report.all_succeeded()
            && self
                .prunes
                .iter()
                .all(|(_, r)| r.as_ref().is_ok_and(|r| r.report.errors.is_empty()))
    }

    /// The run as one JSON document (what `kars-backup backup --json` prints): `ok`, `run_id`,
    /// `backup`, `duration_secs`, `destinations`, `skipped_by_tier_rules`, `prune`, `manifest`.
    pub fn to_json(&self) -> serde_json::Value {
        let report = &self.report;
        serde_json::json!({
            "ok": self.all_succeeded(),
            "run_id": report.run_id,
            "backup": report.manifest.name,
            "duration_secs": report.duration.as_secs_f64(),
            "destinations": report.destinations,
            "skipped_by_tier_rules": self.skipped,
            "prune": self.prunes.iter().map(|(d, r)| match r {
                Ok(r) => serde_json::json!({ "destination": d, "report": r }),
                Err(e) => serde_json::json!({ "destination": d, "error": e }),
            }).collect::<Vec<_>>(),
            "manifest": report.manifest,
        })
    }

    /// The first failed prune, as `prune of DEST failed: …`.
    pub fn prune_failure(&self) -> Option<String> {
        self.prunes.iter().find_map(|(dest, result)| {
            let problem = match result {
                Err(e) => Some(e.clone()),
                Ok(r) if !r.report.errors.is_empty() => Some(r.report.errors.join("; ")),
                Ok(_) => None,
            };
            problem.map(|p| format!("prune of {dest} failed: {p}"))
        })
    }
}

impl Job {
    /// Backs the job up now: the tier rules choose the destinations that take this run (by
    /// the tiers of today's date), the archive goes to all of them (encrypted as configured;
    /// unencrypted off-site copies are refused unless the job says so), then each destination
    /// that committed it is pruned with its retention policy. Notifications and metrics are
    /// the scheduler's: see [`crate::JobRunner`], [`Job::scheduled`] and [`crate::run_once`].
    ///
    /// # Errors
    /// Tier rules that send the backup nowhere, bad keys, an off-site destination that would
    /// get plaintext, a source or destination that fails the whole backup. A backup that
    /// fails at some destinations, or a failed prune, is a successful call whose
    /// [`BackupRun::all_succeeded`] is false.
    pub async fn backup(&self, run_id: &str, progress: DynProgress) -> Result<BackupRun> {
        // Keys first: a bad recipient fails before the database is read.
        let encryptor = self.encryptor()?;
        let source = self.source()?;
        // Storage tiers decide which destinations take this run.
        let routed =
            self.tier_rules.is_some() || self.destinations.iter().any(|d| d.tiers.is_some());
        let tags = if routed {
            Tier::of(chrono::Utc::now())
        } else {
            Vec::new()
        };
        let takes: Vec<bool> = self
            .destinations
            .iter()
            .map(|d| match (&d.tiers, &self.tier_rules) {
                (Some(tiers), _) => tiers.iter().any(|t| tags.contains(t)),
                (None, Some(rules)) => rules.takes(d.placement, &tags),
                (None, None) => true,
            })
            .collect();
        if !takes.contains(&true) {
            return Err(Error::usage(format!(
                "the tier rules keep a {} backup at none of the destinations; add a destination that keeps it (daily backups stay local) or turn tiering off",
                tags.iter().map(|t| t.name()).collect::<Vec<_>>().join("+")
            )));
        }
        let chosen: Vec<&Destination> = self
            .destinations
            .iter()
            .zip(&takes)
            .filter_map(|(d, &t)| t.then_some(d))
            .collect();
        let skipped: Vec<String> = self
            .destinations
            .iter()
            .zip(&takes)
            .filter(|(_, t)| !**t)
            .map(|(d, _)| d.redacted())
            .collect();
        // Encrypted off-site copies unless told otherwise: refused before any destination is
        // opened (BackupJob::run checks again). Every destination of the job counts, also one
        // the tiers leave out of this run: a job that would store plaintext off-site next
        // Sunday is refused today.
        let placed: Vec<(String, Placement)> = self
            .destinations
            .iter()
            .map(|d| (d.redacted(), d.placement))
            .collect();
        self.options.plaintext.check_placements(
            &format!("the backup of {}", source.describe()),
            encryptor.is_some(),
            &placed,
        )?;
        let repos = chosen
            .iter()
            .map(|d| d.repository())
            .collect::<Result<Vec<_>>>()?;
        let mut options = self.options.clone();
        options.tiers = tags.iter().map(|t| t.name().to_string()).collect();
        let plaintext_notice = options
            .plaintext
            .stores_plaintext_locally(encryptor.is_some(), &repos.iter().collect::<Vec<_>>());
        let mut job = BackupJob::new(source, repos.clone(), options)
            .with_run_id(run_id)
            .with_progress(progress);
        if let Some(e) = encryptor {
            job = job.with_encryptor(e);
        }
        let report = job.run().await?;
        // Prune each destination that committed this backup.
        let mut prunes = Vec::new();
        for ((repo, dest), outcome) in repos.iter().zip(&chosen).zip(&report.destinations) {
            let Some(policy) = &dest.retention else {
                continue;
            };
            if outcome.error.is_some() {
                continue;
            }
            let result = prune_one(repo, policy).await;
            prunes.push((repo.describe(), result));
        }
        Ok(BackupRun {
            report,
            skipped,
            prunes,
            plaintext_notice,
        })
    }
}

async fn prune_one(
    repo: &Repository,
    policy: &kars_backup_core::KeepRules,
) -> std::result::Result<PruneRun, String> {
    prune(repo, policy, &PruneOptions::default())
        .await
        .map_err(|e| e.to_string())
}
