//! Status of a job's destinations: freshness against the RPO (widened by the tier period where
//! a destination takes no daily backups), the last drill, whether the keys open the newest
//! backup, the lag of replicated SQLite databases ([`ReplicaStatus`]); and the previous copies
//! restores kept.

use std::path::{Path, PathBuf};

use kars_backup_core::Repository;
use kars_backup_core::status::{DestinationStatus, check_keys};
use kars_backup_core::{PreviousCopy, Tier};
use kars_backup_encrypt::DecryptOptions;
use kars_backup_sqlite::replicate::LeaseInfo;
use kars_backup_sqlite::replicate::keys::ChainKeys;

use crate::config::select_jobs;
use crate::error::Result;
use crate::job::{Job, repository};
use crate::replicate::{ReplicaWindow, windows};
use crate::source::{source_from_url, sqlite_path};
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

/// A replicated SQLite database at a destination: its window, who replicates it and its lag
/// against the RPO.
///
/// The lag is the data a restore right now would lose. Where the database file is on this
/// host (a `databases` entry of [`StatusReport::check`] with the replica's file name, else the
/// path in the replicator's lease when the lease was taken on this host), it is how far the
/// newest shipped commit is behind the database's latest change: the modification time of its
/// `-wal` file (of the database file when there is no `-wal`), so an idle application is not
/// lagging; 0 when the newest commit is shipped. Elsewhere it is the time since the newest
/// shipped commit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaStatus {
    /// The job it belongs to.
    pub job: Option<String>,
    /// Its window (destination, database, from, to, generations, segments, size).
    #[serde(flatten)]
    pub window: ReplicaWindow,
    /// The database file the lag is measured against, when it is on this host.
    pub local_db: Option<String>,
    /// Its latest change (the `-wal` file's modification time, else the database file's).
    pub last_change: Option<chrono::DateTime<chrono::Utc>>,
    /// The lag in seconds (see the type's doc); `None` without any shipped state.
    pub lag_secs: Option<f64>,
    /// The freshness target.
    pub rpo_secs: i64,
    /// Whether the lag is within the RPO (false without any shipped state).
    pub within_rpo: bool,
    /// The replicator holding the destination's lease, when one does.
    pub replicator: Option<LeaseInfo>,
}

impl ReplicaStatus {
    /// The status of `window` at `now` against `rpo`, measured against the database file
    /// `local` when it is on this host.
    pub fn of(
        window: ReplicaWindow,
        local: Option<&Path>,
        replicator: Option<LeaseInfo>,
        now: chrono::DateTime<chrono::Utc>,
        rpo: chrono::Duration,
    ) -> ReplicaStatus {
        let last_change = local.and_then(last_change);
        let lag = window.to.map(|newest| match last_change {
            Some(changed) => (changed - newest).max(chrono::Duration::zero()),
            None => (now - newest).max(chrono::Duration::zero()),
        });
        ReplicaStatus {
            job: None,
            local_db: local
                .filter(|_| last_change.is_some())
                .map(|p| p.display().to_string()),
            last_change,
            lag_secs: lag.map(|l| l.num_milliseconds() as f64 / 1000.0),
            rpo_secs: rpo.num_seconds(),
            within_rpo: lag.is_some_and(|l| l <= rpo),
            replicator,
            window,
        }
    }
}

/// The latest change of the SQLite database at `db`: its `-wal` file's modification time when
/// it has a non-empty one (commits append there; checkpoints only read it), else the database
/// file's; `None` when neither can be read.
pub fn last_change(db: &Path) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut wal = db.as_os_str().to_os_string();
    wal.push("-wal");
    let modified = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .filter(|m| m.len() > 0)
            .and_then(|m| m.modified().ok())
    };
    modified(Path::new(&wal))
        .or_else(|| modified(db))
        .map(chrono::DateTime::<chrono::Utc>::from)
}

/// The replicated databases at one destination at `now`, each against the target's RPO, with
/// its lag measured against the file of `databases` named like it (see [`ReplicaStatus`]).
///
/// # Errors
/// A destination that cannot be opened or listed.
pub async fn replica_status(
    target: &StatusTarget,
    databases: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<ReplicaStatus>> {
    let repo = repository(&target.url)?;
    let mut out = Vec::new();
    for window in windows(&repo).await? {
        let mut status = ReplicaStatus::check(&repo, window, databases, now, target.rpo).await;
        status.job = target.job.clone();
        out.push(status);
    }
    Ok(out)
}

impl ReplicaStatus {
    /// The status of `window` at `repo` (its lease read), its lag measured against the file
    /// of `databases` named like it, else the lease's when it was taken on this host.
    pub async fn check(
        repo: &Repository,
        window: ReplicaWindow,
        databases: &[String],
        now: chrono::DateTime<chrono::Utc>,
        rpo: chrono::Duration,
    ) -> ReplicaStatus {
        let lease = read_lease(repo, &window.database).await;
        let named = databases
            .iter()
            .filter_map(|d| sqlite_path(d).ok())
            .find(|p| p.file_name().is_some_and(|n| *n == *window.database));
        let here = kars_backup_core::host_label();
        let leased = lease
            .as_ref()
            .filter(|l| l.host == here)
            .map(|l| PathBuf::from(&l.database));
        let local = named.or(leased).filter(|p| p.exists());
        ReplicaStatus::of(window, local.as_deref(), lease, now, rpo)
    }
}

/// The lease of `database`'s chain at `repo`: the replicator running now (`None` when none
/// holds it, or it cannot be read: status then says no replicator holds it).
async fn read_lease(repo: &Repository, database: &str) -> Option<LeaseInfo> {
    let key = ChainKeys::new(database).lease();
    let bytes = kars_backup_core::sink::SinkExt::get_bytes(repo.sink(), &key)
        .await
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The status of some destinations and databases.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Each destination with the job it belongs to.
    pub destinations: Vec<(Option<String>, DestinationStatus)>,
    /// The destinations that hold PostgreSQL WAL: its age and its gaps.
    pub wal: Vec<WalStatus>,
    /// The replicated SQLite databases at the destinations: window and lag.
    pub replicas: Vec<ReplicaStatus>,
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
        let mut replicas = Vec::new();
        for target in targets {
            destinations.push((target.job.clone(), check(target, now).await?));
            wal.extend(wal_status(target, now).await?);
            replicas.extend(replica_status(target, databases, now).await?);
        }
        let mut previous = Vec::new();
        for db in databases {
            previous.push(previous_copies(db).await?);
        }
        Ok(StatusReport {
            destinations,
            wal,
            replicas,
            previous,
        })
    }

    /// Every destination's newest backup (but at a destination that holds only replicas), its
    /// newest archived WAL and every replica's lag are within the RPO.
    pub fn all_fresh(&self) -> bool {
        self.destinations
            .iter()
            .all(|(_, s)| s.within_rpo || self.replicas_only(s))
            && self.wal.iter().all(|w| w.within_rpo)
            && self.replicas.iter().all(|r| r.within_rpo)
    }

    /// `destination` holds no backup at all (committed or incomplete) but replicas: its
    /// freshness is theirs.
    pub fn replicas_only(&self, destination: &DestinationStatus) -> bool {
        destination.committed == 0
            && destination.incomplete == 0
            && self
                .replicas
                .iter()
                .any(|r| r.window.destination == destination.destination)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn window(to: Option<chrono::DateTime<chrono::Utc>>) -> ReplicaWindow {
        ReplicaWindow {
            destination: "dest".into(),
            database: "app.db".into(),
            from: to,
            to,
            newest_txid: None,
            generations: 1,
            snapshots: 1,
            segments: 0,
            size_bytes: 0,
            gaps: Vec::new(),
        }
    }

    #[test]
    fn lag_is_behind_the_local_database_else_since_the_newest_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"x").unwrap();
        let changed = last_change(&db).unwrap();
        let now = changed + chrono::Duration::hours(1);
        let rpo = chrono::Duration::seconds(10);
        // Idle since the newest shipped commit: no lag, however long ago.
        let s = ReplicaStatus::of(window(Some(changed)), Some(&db), None, now, rpo);
        assert_eq!((s.lag_secs, s.within_rpo), (Some(0.0), true));
        assert_eq!(s.local_db, Some(db.display().to_string()));
        // Written 30 s after the newest shipped commit: 30 s behind.
        let behind = changed - chrono::Duration::seconds(30);
        let s = ReplicaStatus::of(window(Some(behind)), Some(&db), None, now, rpo);
        assert_eq!((s.lag_secs, s.within_rpo), (Some(30.0), false));
        // A non-empty -wal is the latest change.
        let mut wal = db.as_os_str().to_os_string();
        wal.push("-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let later = changed + chrono::Duration::minutes(5);
        std::fs::File::options()
            .write(true)
            .open(&wal)
            .unwrap()
            .set_modified(later.into())
            .unwrap();
        assert_eq!(last_change(&db), Some(later));
        // No local file: the time since the newest shipped commit.
        let s = ReplicaStatus::of(window(Some(changed)), None, None, now, rpo);
        assert_eq!((s.lag_secs, s.within_rpo), (Some(3600.0), false));
        let s = ReplicaStatus::of(window(None), Some(&db), None, now, rpo);
        assert_eq!((s.lag_secs, s.within_rpo), (None, false));
    }
}
