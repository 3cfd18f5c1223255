//! `kars-backup daemon --config FILE`: the config's jobs on their cron schedules until
//! SIGTERM/SIGINT.

use std::sync::Arc;

use std::path::{Path, PathBuf};

use kars_backup_config::{Config, NotifyConfig};
use kars_backup_notify::{
    Alerts, CommandOptions, Metrics, MetricsServer, Notifier, NotifyOn, NotifyOptions, PingOptions,
    WebhookOptions,
};
use kars_backup_schedule::{RunObserver, RunReport};
use kars_backup_schedule::{Schedule, ScheduledJob, Scheduler, ShutdownSignals, SystemClock};

use super::jobs::{ConfigJobRunner, load_config, select_jobs, state_dir};
use crate::args::DaemonArgs;
use crate::commands::UsageError;
use crate::exit;

/// The scheduler of a config: its state directory (locks, catch-up state), the notifications
/// of every job, the metrics (recorded into `metrics`, and rewritten into `[daemon]
/// metrics-textfile` after every run).
pub(crate) fn scheduler_for(config: &Config, metrics: &Metrics) -> anyhow::Result<Scheduler> {
    let dir = state_dir(config);
    std::fs::create_dir_all(&dir).map_err(|e| {
        UsageError(format!(
            "cannot create the state directory {} ({e}); set [daemon] state-dir in the config to a writable directory",
            dir.display()
        ))
    })?;
    let mut alerts = Alerts::new().with_metrics(metrics.clone());
    if let Some(n) = &config.notify {
        alerts = alerts.with_default(Notifier::new(notify_options(n))?);
    }
    for job in &config.jobs {
        if let Some(n) = &job.notify {
            alerts = alerts.with_job(&job.name, Notifier::new(notify_options(n))?);
        }
    }
    let mut scheduler = Scheduler::new(dir).with_observer(Arc::new(alerts));
    if let Some(path) = &config.daemon.metrics_textfile {
        scheduler = scheduler.with_observer(Arc::new(Textfile {
            template: path.clone(),
        }));
    }
    Ok(scheduler)
}

/// The textfile of one job: `{job}` in the configured path replaced by the job's name, else
/// `.<job>` put before the extension (`kars-backup.prom` → `kars-backup.nightly.prom`). One
/// file per job, so that runs of different jobs in different processes (systemd timers, a
/// one-shot beside the daemon) never overwrite each other's numbers.
pub(crate) fn textfile_for(template: &Path, job: &str) -> PathBuf {
    let text = template.to_string_lossy();
    if text.contains("{job}") {
        return PathBuf::from(text.replace("{job}", job));
    }
    let stem = template
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match template.extension() {
        Some(ext) => format!("{stem}.{job}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{job}"),
    };
    template.with_file_name(name)
}

/// The notifier settings of a `[notify]` table.
pub(crate) fn notify_options(n: &NotifyConfig) -> NotifyOptions {
    let on = if n.on_success {
        NotifyOn::Always
    } else {
        NotifyOn::Failure
    };
    let mut options = NotifyOptions::default();
    if let Some(url) = &n.webhook {
        let mut w = WebhookOptions::new(url.expose());
        w.on = on;
        options.webhooks.push(w);
    }
    if let Some(command) = &n.command {
        let mut c = CommandOptions::new(command.expose());
        c.on = on;
        options.commands.push(c);
    }
    if let Some(p) = &n.ping {
        options.pings.push(PingOptions {
            start: p.start.as_ref().map(|u| u.expose().to_string()),
            success: p.success.as_ref().map(|u| u.expose().to_string()),
            fail: p.fail.as_ref().map(|u| u.expose().to_string()),
            url: None,
            ..PingOptions::hc_ping("")
        });
    }
    options
}

/// Rewrites the job's textfile-collector file after every run: load, record, write (the job's
/// lock keeps two runs of one job, and so two writers of its file, apart).
#[derive(Debug)]
struct Textfile {
    template: PathBuf,
}

#[async_trait::async_trait]
impl RunObserver for Textfile {
    async fn run_finished(&self, report: &RunReport) {
        let path = textfile_for(&self.template, &report.job);
        let metrics = Metrics::new();
        if let Err(e) = metrics.load_textfile(&path) {
            tracing::warn!(error = %e, "cannot read the previous metrics textfile; counting from zero");
        }
        metrics.record(report);
        if let Err(e) = metrics.write_textfile(&path) {
            tracing::error!(error = %e, "cannot write the metrics textfile");
        }
    }
}

pub(crate) async fn run(a: DaemonArgs) -> anyhow::Result<u8> {
    let config = load_config(&a.config)?;
    let selected = select_jobs(&config, &a.job)?;
    let signals = ShutdownSignals::install()?;
    let metrics = Metrics::new();
    if let Some(template) = &config.daemon.metrics_textfile {
        // /metrics counters go on from the jobs' textfiles
        for job in &selected {
            if let Err(e) = metrics.load_textfile(&textfile_for(template, &job.name)) {
                tracing::warn!(job = %job.name, error = %e, "cannot read the previous metrics textfile; counting from zero");
            }
        }
    }
    let scheduler = scheduler_for(&config, &metrics)?;
    let mut jobs = Vec::new();
    for job in &selected {
        // keys are checked at start: a job that cannot encrypt never runs unencrypted
        super::jobs::encryptor_for(job)?;
        // every series exists from the start, before the job's first run
        let destinations: Vec<String> = job
            .destinations
            .iter()
            .filter_map(|d| crate::resolve::repository(d.url.expose()).ok())
            .map(|r| r.describe())
            .collect();
        metrics.register(&job.name, destinations);
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
    let mut server_task = None;
    if let Some(addr) = a.metrics_listen.or(config.daemon.metrics_listen) {
        let server = MetricsServer::bind(addr, metrics.clone()).await?;
        tracing::info!(address = %server.local_addr(), "serving /metrics");
        server_task = Some(tokio::spawn(server.serve(shutdown.clone())));
    }
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
        .run(jobs, Arc::new(SystemClock), shutdown.clone())
        .await?;
    shutdown.cancel();
    if let Some(task) = server_task
        && let Ok(Err(e)) = task.await
    {
        tracing::error!(error = %e, "the metrics server failed");
    }
    tracing::info!("daemon stopped");
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_textfile_per_job() {
        assert_eq!(
            textfile_for(Path::new("/t/kars-backup.prom"), "nightly"),
            PathBuf::from("/t/kars-backup.nightly.prom")
        );
        assert_eq!(
            textfile_for(Path::new("/t/kb-{job}.prom"), "nightly"),
            PathBuf::from("/t/kb-nightly.prom")
        );
        assert_eq!(
            textfile_for(Path::new("/t/metrics"), "a"),
            PathBuf::from("/t/metrics.a")
        );
    }
}
