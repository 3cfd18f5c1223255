//! `kars-backup daemon --config FILE`: the config's jobs on their cron schedules until
//! SIGTERM/SIGINT.

use std::sync::Arc;

use kars_backup_config::Config;
use kars_backup_schedule::{Schedule, ScheduledJob, Scheduler, ShutdownSignals, SystemClock};

use super::jobs::{ConfigJobRunner, load_config, select_jobs, state_dir};
use crate::args::DaemonArgs;
use crate::commands::UsageError;
use crate::exit;

/// The scheduler of a config: its state directory (locks, catch-up state).
pub(crate) fn scheduler_for(config: &Config, _daemon: Option<()>) -> anyhow::Result<Scheduler> {
    let dir = state_dir(config);
    std::fs::create_dir_all(&dir).map_err(|e| {
        UsageError(format!(
            "cannot create the state directory {} ({e}); set [daemon] state-dir in the config to a writable directory",
            dir.display()
        ))
    })?;
    Ok(Scheduler::new(dir))
}

pub(crate) async fn run(a: DaemonArgs) -> anyhow::Result<u8> {
    let config = load_config(&a.config)?;
    let selected = select_jobs(&config, &a.job)?;
    let signals = ShutdownSignals::install()?;
    let scheduler = scheduler_for(&config, None)?;
    let mut jobs = Vec::new();
    for job in &selected {
        let Some(s) = &job.schedule else {
            if !a.job.is_empty() {
                return Err(UsageError(format!(
                    "job {} has no [job.schedule]; the daemon runs scheduled jobs only",
                    job.name
                ))
                .into());
            }
            continue;
        };
        let schedule = Schedule::new(&s.cron, s.timezone)
            .map_err(|e| UsageError(format!("job {}: {e}", job.name)))?;
        let runner = Arc::new(ConfigJobRunner::new((*job).clone(), signals.forced()));
        jobs.push(ScheduledJob::new(&job.name, schedule, runner).with_catch_up(s.catch_up));
    }
    if jobs.is_empty() {
        return Err(UsageError(
            "no job of the config has a [job.schedule]; add one (cron = \"0 2 * * *\") or run `kars-backup backup --config`".into(),
        )
        .into());
    }
    for job in &jobs {
        tracing::info!(
            job = %job.name,
            schedule = %job.schedule.describe(),
            catch_up = job.catch_up,
            "scheduled"
        );
    }
    let shutdown = signals.graceful();
    if a.run_now {
        let runs = jobs.iter().map(|job| {
            scheduler.run_now(
                &job.name,
                job.runner.clone(),
                &SystemClock,
                shutdown.clone(),
            )
        });
        for (job, result) in jobs.iter().zip(futures::future::join_all(runs).await) {
            if let Err(e) = result {
                tracing::error!(job = %job.name, error = %e, "run-now did not run");
            }
        }
    }
    scheduler
        .run(jobs, Arc::new(SystemClock), shutdown)
        .await?;
    tracing::info!("daemon stopped");
    Ok(exit::OK)
}
