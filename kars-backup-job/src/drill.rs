//! Restore drills of a job's backups: targets with the one merge rule, and [`drill`].

use kars_backup_core::DynProgress;
use kars_backup_core::checks::Checks;
use kars_backup_core::drill::{DrillOptions, DrillReport, run_drill};
use kars_backup_core::recovery::{AttemptOptions, Origin, Pick};

use crate::job::Job;
use crate::scratch::Scratch;

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
