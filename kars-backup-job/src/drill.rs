//! Restore drills of a job's backups: targets with the one merge rule, [`drill`], and
//! [`drill_replica`] for a replicated SQLite database at an instant.

use kars_backup_core::DynProgress;
use kars_backup_core::checks::Checks;
use kars_backup_core::drill::{DrillOptions, DrillReport, run_drill};
use kars_backup_core::recovery::{AttemptOptions, Origin, Pick};

use kars_backup_core::drill::DrillOutcome;
use kars_backup_core::drill::Objective;
use kars_backup_sqlite::replicate::RestorePoint;

use crate::error::{Result, into_core};
use crate::job::Job;
use crate::replicate::Replica;
use crate::restore::Reading;
use crate::scratch::Scratch;
use crate::status::ReplicaStatus;
use crate::verify::{ReplicaVerifyReport, verify_replica};

/// The default RTO target of a drill: one hour.
pub fn default_rto() -> chrono::Duration {
    chrono::Duration::hours(1)
}

/// The default RPO target: 24 hours.
pub fn default_rpo() -> chrono::Duration {
    chrono::Duration::hours(kars_backup_config::DEFAULT_RPO_HOURS)
}

/// A drill's options: the targets given (`--rto`, `--rpo`) win over the job's `[job.verify]
/// rto`/`rpo`, which win over the defaults (1 h, 24 h); drills never fall back to an older
/// backup.
pub fn drill_options(
    job: Option<&Job>,
    rto: Option<chrono::Duration>,
    rpo: Option<chrono::Duration>,
    attempts: AttemptOptions,
    store: bool,
) -> DrillOptions {
    DrillOptions {
        rto: rto
            .or_else(|| job.and_then(|j| j.rto))
            .unwrap_or_else(default_rto),
        rpo: rpo
            .or_else(|| job.and_then(|j| j.rpo))
            .unwrap_or_else(default_rpo),
        attempts: AttemptOptions {
            fallback: false,
            ..attempts
        },
        store,
    }
}

/// Runs a drill: finds the backup across `origins`, verifies it in a scratch target, measures
/// RTO and RPO, stores the report at the destinations (see core's `run_drill`). Never fails:
/// every failure is in the report.
pub async fn drill(
    origins: &[Origin],
    pick: &Pick,
    scratch: &Scratch,
    checks: &Checks,
    options: &DrillOptions,
    progress: DynProgress,
) -> DrillReport {
    run_drill(origins, pick, scratch, checks, options, progress).await
}

/// What a drill that restores by its own means (a physical restore to an instant, a replica's
/// rebuild) restored and verified.
pub(crate) struct Restored {
    /// What was restored (a backup's name, `app.db as of …`).
    pub(crate) backup: String,
    /// The time of the state restored.
    pub(crate) time: chrono::DateTime<chrono::Utc>,
    /// The destination read.
    pub(crate) from: String,
    /// The scratch target.
    pub(crate) scratch: String,
    /// Its verification.
    pub(crate) verification: kars_backup_core::VerifyReport,
}

impl Restored {
    /// Records what `result` restored in `report` (`restored` says what that was), with the
    /// RTO measured by `clock` against `rto` and the outcome; a failure is recorded as the
    /// drill's failure. The restore's own report, when it succeeded.
    pub(crate) fn record<R>(
        result: Result<R>,
        restored: impl FnOnce(&R) -> Restored,
        report: &mut DrillReport,
        rto: chrono::Duration,
        clock: std::time::Instant,
    ) -> Option<R> {
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                report.fail(&into_core(e));
                return None;
            }
        };
        let this = restored(&r);
        report.backup = Some(this.backup);
        report.backup_time = Some(this.time);
        report.restored_from = Some(this.from);
        report.scratch_target = Some(this.scratch);
        report.verification = Some(this.verification);
        report.rto = Objective::of(rto, Some(clock.elapsed().as_secs_f64()));
        report.outcome = if report.rto.met && report.rpo.met {
            DrillOutcome::Passed
        } else {
            DrillOutcome::TargetMissed
        };
        Some(r)
    }
}

/// Drills a replicated SQLite database: at `replica`'s point, or with `random` at an instant
/// drawn at random in its window, rebuilds it in a scratch file and verifies it (see
/// [`verify_replica`]), measures the RTO (the whole drill, download included) and the RPO
/// (the replica's lag, as `status` measures it: against the database file when the lease was
/// taken on this host, else the age of the newest shipped commit) and stores the report at
/// the destination like every drill's. Never fails: every failure is in the report.
pub async fn drill_replica(
    replica: Replica,
    reading: &Reading,
    scratch: &Scratch,
    checks: &Checks,
    options: &DrillOptions,
    random: bool,
) -> (DrillReport, Option<ReplicaVerifyReport>) {
    let clock = std::time::Instant::now();
    let repo = replica.repository().clone();
    let label = repo.describe();
    let mut report = DrillReport::begin(vec![label.clone()], options);
    report.engine = Some(kars_backup_sqlite::ENGINE.to_string());
    let mut replica = replica;
    match replica.window().await {
        Ok(window) => {
            let lag =
                ReplicaStatus::check(&repo, window.clone(), &[], report.started_at, options.rpo)
                    .await
                    .lag_secs;
            report.rpo = Objective::of(options.rpo, lag);
            if let (true, Some(from), Some(to)) = (random, window.from, window.to) {
                let span = (to - from).num_microseconds().unwrap_or(0);
                let t = if span > 0 {
                    from + chrono::Duration::microseconds(rand::Rng::gen_range(
                        &mut rand::thread_rng(),
                        0..=span,
                    ))
                } else {
                    to
                };
                replica = replica.at(RestorePoint::Time(t));
            }
        }
        Err(e) => {
            report.fail(&into_core(e));
            report.conclude();
            return (report, None);
        }
    }
    if let RestorePoint::Time(t) = replica.point() {
        report.restored_to = Some(t);
    }
    let verified = Restored::record(
        verify_replica(&replica, reading, scratch, checks).await,
        |r| Restored {
            backup: replica.describe(),
            time: r.rebuild.state_time,
            from: r.destination.clone(),
            scratch: r.scratch.clone(),
            verification: r.verification.clone(),
        },
        &mut report,
        options.rto,
        clock,
    );
    report.conclude();
    if options.store {
        report.store_at([(label.as_str(), &repo)]).await;
    }
    (report, verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(verify: &str) -> Job {
        crate::job::test_support::job("/tmp/a.db", verify)
    }

    #[test]
    fn drill_targets_flag_over_file_over_default() {
        let j = job("[job.verify]\nrto = \"2h\"\nrpo = \"48h\"\n");
        let h = chrono::Duration::hours;
        let o = drill_options(Some(&j), Some(h(3)), None, AttemptOptions::default(), true);
        assert_eq!((o.rto, o.rpo), (h(3), h(48)));
        let o = drill_options(Some(&j), None, Some(h(5)), AttemptOptions::default(), true);
        assert_eq!((o.rto, o.rpo), (h(2), h(5)));
        let o = drill_options(None, None, None, AttemptOptions::default(), true);
        assert_eq!((o.rto, o.rpo), (h(1), h(24)));
        let plain = job("[job.verify]\nintegrity = \"full\"\n");
        let o = drill_options(Some(&plain), None, None, AttemptOptions::default(), false);
        assert_eq!((o.rto, o.rpo), (h(1), h(24)));
        assert!(!o.attempts.fallback);
    }
}
