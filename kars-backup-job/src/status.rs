//! Status of a job's destinations: freshness against the RPO (widened by the tier period where
//! a destination takes no daily backups), the last drill, whether the keys open the newest
//! backup; and the previous copies restores kept.

use kars_backup_core::status::{DestinationStatus, check_keys};
use kars_backup_core::{PreviousCopy, Tier};
use kars_backup_encrypt::DecryptOptions;

use crate::config::select_jobs;
use crate::error::Result;
use crate::job::{Job, repository};
use crate::source::source_from_url;
use crate::wal::{BaseWal, check_wal};

/// One destination `status` checks.
#[derive(Debug, Clone)]
pub struct StatusTarget {
    /// The destination URL.
    pub url: String,
    /// Its freshness target.
    pub rpo: chrono::Duration,
    /// The job it belongs to.
    pub job: Option<String>,
    /// The keys that must open its newest backup.
    pub keys: DecryptOptions,
}

impl StatusTarget {
    /// A destination checked against `rpo` with `keys`, of no job.
    pub fn new(url: impl Into<String>, rpo: chrono::Duration, keys: DecryptOptions) -> Self {
        StatusTarget {
            url: url.into(),
            rpo,
            job: None,
            keys,
        }
    }
}

impl Job {
    /// Every destination of the job with its freshness target — the job's RPO (else
    /// `default_rpo`), plus the tier's period where the destination takes no daily backups (a
    /// weekly-only cloud copy is up to a week old by design) — and the job's keys after
    /// `keys`.
    pub fn status_targets(
        &self,
        default_rpo: chrono::Duration,
        keys: &DecryptOptions,
    ) -> Vec<StatusTarget> {
        let rpo = self.rpo.unwrap_or(default_rpo);
        self.destinations
            .iter()
            .map(|d| {
                let tiers: Option<Vec<Tier>> = d.tiers.clone().or_else(|| {
                    self.tier_rules
                        .as_ref()
                        .map(|r| r.accepted(d.placement).to_vec())
                });
                StatusTarget {
                    url: d.written.clone(),
                    rpo: rpo + chrono::Duration::days(tier_period_days(tiers.as_deref())),
                    job: Some(self.name.clone()),
                    keys: self.decrypt_options(keys),
                }
            })
            .collect()
    }
}

/// How old a destination's newest backup may be beyond the RPO by design: 0 when it takes
/// daily backups (or every backup), else a week, a month or a year.
pub fn tier_period_days(tiers: Option<&[Tier]>) -> i64 {
    match tiers {
        Some(t) if !t.contains(&Tier::Daily) => {
            if t.contains(&Tier::Weekly) {
                7
            } else if t.contains(&Tier::Monthly) {
                31
            } else {
                366
            }
        }
        _ => 0,
    }
}

/// Checks one destination at `now`: its backups against the RPO, its last drill, and (with
/// keys) whether they open its newest backup.
///
/// # Errors
/// A destination that cannot be opened or listed; unreadable keys.
pub async fn check(
    target: &StatusTarget,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<DestinationStatus> {
    let mut repo = repository(&target.url)?;
    // Only with keys given: do they open the newest backup?
    let given = target.keys.any();
    if given {
        repo = repo.with_decryptor(target.keys.decryptor()?);
    }
    let listing = repo.list().await?;
    let keys = match (given, listing.latest()) {
        (true, Some(newest)) => Some(check_keys(&repo, newest).await?),
        _ => None,
    };
    let drill = match kars_backup_core::drill::latest_report(&repo).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(destination = %repo.describe(), error = %e, "cannot read the last drill report");
            None
        }
    };
    Ok(
        DestinationStatus::of(&repo.describe(), &listing, now, target.rpo)
            .with_last_drill(drill.as_ref())
            .with_keys(keys),
    )
}

/// The previous copies that restores kept of the database at `url`, with its description.
///
/// # Errors
/// A URL that names no database; copies that cannot be listed.
pub async fn previous_copies(url: &str) -> Result<(String, Vec<PreviousCopy>)> {
    let source = source_from_url(url)?;
    Ok((source.describe(), source.previous_copies().await?))
}

/// What `status` checks of a configuration: every destination of the selected jobs (see
/// [`Job::status_targets`]) and each job's source (for its previous copies).
///
/// # Errors
/// An unknown job name; a job that does not build.
pub fn config_targets(
    config: &kars_backup_config::Config,
    names: &[String],
    default_rpo: chrono::Duration,
    keys: &DecryptOptions,
) -> Result<(Vec<StatusTarget>, Vec<String>)> {
    let mut targets = Vec::new();
    let mut sources = Vec::new();
    for job in select_jobs(config, names)? {
        let job = Job::from_config(job)?;
        targets.extend(job.status_targets(default_rpo, keys));
        sources.extend(job.source_url().map(str::to_string));
    }
    Ok((targets, sources))
}

/// The PostgreSQL WAL archived at a destination: its age against the RPO, and what breaks
/// its chain (see [`crate::wal::check_wal`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalStatus {
    /// The destination (redacted).
    pub destination: String,
    /// The job it belongs to.
    pub job: Option<String>,
    /// When the newest WAL file was stored.
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
    /// Its age: the archive's lag (the data a restore right now would lose, at most).
    pub lag_secs: Option<i64>,
    /// The freshness target.
    pub rpo_secs: i64,
    /// Whether the newest WAL is younger than the RPO (true when the destination gives no
    /// times).
    pub within_rpo: bool,
    /// Gaps on the way from a retained base backup (the first missing segment named), paths
    /// that cannot be followed, missing history files.
    pub problems: Vec<String>,
    /// The retained base backups and the WAL each replays.
    pub bases: Vec<BaseWal>,
}

/// The WAL archived at one destination at `now`, checked against its RPO and its base backups
/// (`None`: no WAL there).
///
/// # Errors
/// A destination that cannot be opened or listed; unreadable keys.
pub async fn wal_status(
    target: &StatusTarget,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<WalStatus>> {
    let repo = repository(&target.url)?;
    let decryptor = if target.keys.any() {
        Some(target.keys.decryptor()?)
    } else {
        None
    };
    let check = check_wal(&repo, decryptor).await?;
    if check.is_empty() {
        return Ok(None);
    }
    let lag = check.lag(now);
    Ok(Some(WalStatus {
        destination: check.destination.clone(),
        job: target.job.clone(),
        newest: check.newest,
        lag_secs: lag.map(|l| l.num_seconds()),
        rpo_secs: target.rpo.num_seconds(),
        within_rpo: lag.is_none_or(|l| l <= target.rpo),
        problems: check.problems(),
        bases: check.bases,
    }))
}

/// The status of some destinations and databases.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Each destination with the job it belongs to.
    pub destinations: Vec<(Option<String>, DestinationStatus)>,
    /// The destinations that hold PostgreSQL WAL: its age and its gaps.
    pub wal: Vec<WalStatus>,
    /// Each database (described) with the previous copies restores kept of it.
    pub previous: Vec<(String, Vec<PreviousCopy>)>,
}

impl StatusReport {
    /// Checks every target and lists the previous copies of every database, at `now`.
    ///
    /// # Errors
    /// As [`check`] and [`previous_copies`].
    pub async fn check(
        targets: &[StatusTarget],
        databases: &[String],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<StatusReport> {
        let mut destinations = Vec::new();
        let mut wal = Vec::new();
        for target in targets {
            destinations.push((target.job.clone(), check(target, now).await?));
            wal.extend(wal_status(target, now).await?);
        }
        let mut previous = Vec::new();
        for db in databases {
            previous.push(previous_copies(db).await?);
        }
        Ok(StatusReport {
            destinations,
            wal,
            previous,
        })
    }

    /// Every destination's newest backup, and its newest archived WAL, is within its RPO.
    pub fn all_fresh(&self) -> bool {
        self.destinations.iter().all(|(_, s)| s.within_rpo) && self.wal.iter().all(|w| w.within_rpo)
    }

    /// Some destination's WAL chain is broken: a restore from a retained base backup would
    /// stop at a missing segment.
    pub fn wal_broken(&self) -> bool {
        self.wal.iter().any(|w| !w.problems.is_empty())
    }

    /// Losing the key loses the backups: some destination's newest backup does not open with
    /// the keys given.
    pub fn keys_fail(&self) -> bool {
        self.destinations.iter().any(|(_, s)| s.keys_fail())
    }

    /// A destination whose last drill failed may hold backups that do not restore.
    pub fn drill_failed(&self) -> bool {
        self.destinations.iter().any(|(_, s)| {
            s.last_drill
                .as_ref()
                .is_some_and(|d| d.outcome == kars_backup_core::drill::DrillOutcome::Failed)
        })
    }

    /// The newest drill across the destinations.
    pub fn last_drill(&self) -> Option<&kars_backup_core::drill::DrillSummary> {
        self.destinations
            .iter()
            .filter_map(|(_, s)| s.last_drill.as_ref())
            .max_by_key(|d| d.at)
    }
}
