//! Jobs under the scheduler: [`JobRunner`] (one job's backup as the scheduler's runner), the
//! [`scheduler_for`] a configuration (state directory, notifications, metrics and their
//! textfiles), the [`scheduled_jobs`] of the daemon and [`run_once`] for one-shot runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kars_backup_config::{Config, JobConfig};
use kars_backup_notify::{Alerts, Metrics, Notifier, NotifyOptions};
use kars_backup_schedule::{
    CancellationToken, RunContext, RunObserver, RunOutcome, RunReport, RunStatus, ScheduledJob,
    Scheduler, SystemClock,
};

use crate::backup::BackupRun;
use crate::config::state_dir;
use crate::error::{Error, Result, error_text};
use crate::job::{Job, repository};

/// One writer of a job's textfile at a time within a process (the scheduler's observer after a
/// run, the replication services while they run).
pub(crate) static TEXTFILE_LOCK: Mutex<()> = Mutex::new(());

/// How the last run of a [`JobRunner`] went.
pub type LastRun = Arc<Mutex<Option<Result<BackupRun>>>>;

/// Runs one job's backup for the scheduler: the same code path as a one-shot backup.
#[derive(Debug)]
pub struct JobRunner {
    job: Job,
    /// Fired by a second shutdown signal: abort the in-flight backup (nothing is listed).
    abort: CancellationToken,
    last: LastRun,
}

impl JobRunner {
    /// A runner of `job`; `abort` aborts a run in flight (a first shutdown lets it finish).
    pub fn new(job: Job, abort: CancellationToken) -> Self {
        JobRunner {
            job,
            abort,
            last: Arc::default(),
        }
    }

    /// Where the last run's result goes (taken by whoever reports it).
    pub fn last(&self) -> LastRun {
        self.last.clone()
    }
}

#[async_trait]
impl kars_backup_schedule::JobRunner for JobRunner {
    async fn run(&self, ctx: RunContext) -> RunOutcome {
        // A first shutdown signal lets the backup finish (ctx.cancel); a second aborts it.
        let result = self
            .job
            .backup(&ctx.run_id, kars_backup_core::progress::no_progress());
        let result = tokio::select! {
            r = result => r,
            _ = self.abort.cancelled() => Err(Error::Aborted),
        };
        let outcome = match &result {
            Ok(run) => outcome_of(run),
            Err(e) => RunOutcome::failure(error_text(e)),
        };
        if let Ok(mut slot) = self.last.lock() {
            *slot = Some(result);
        }
        outcome
    }
}

/// The scheduler's view of a run: per destination, and a failed prune as a failure.
pub fn outcome_of(run: &BackupRun) -> RunOutcome {
    let mut outcome = RunOutcome::from_backup_report(&run.report);
    if let Some(problem) = run.prune_failure() {
        outcome.status = RunStatus::Failure;
        outcome.error.get_or_insert(problem);
    }
    outcome
}

/// The scheduler of a configuration: its state directory (locks, catch-up state), the
/// notifications of every job, the metrics (recorded into `metrics`, and rewritten into
/// `[daemon] metrics-textfile` after every run).
///
/// # Errors
/// A state directory that cannot be created; notifications that cannot be set up.
pub fn scheduler_for(config: &Config, metrics: &Metrics) -> Result<Scheduler> {
    let default = config.notify.as_ref().map(|n| n.options());
    let jobs = config
        .jobs
        .iter()
        .filter_map(|j| j.notify.as_ref().map(|n| (j.name.clone(), n.options())));
    scheduler(
        state_dir(config),
        default,
        jobs,
        metrics,
        config.daemon.metrics_textfile.clone(),
    )
}

/// The scheduler of jobs built from code, what [`scheduler_for`] is for a configuration: state
/// and locks in `state_dir`, each job's own notifications ([`Job::notify`]), metrics recorded
/// into `metrics` and, with `textfile`, rewritten into each job's textfile ([`textfile_for`])
/// after every run. Counters go on from the textfiles that exist already.
///
/// # Errors
/// A state directory that cannot be created; notifications that cannot be set up.
pub fn scheduler_of(
    state_dir: impl Into<PathBuf>,
    jobs: &[Job],
    metrics: &Metrics,
    textfile: Option<&Path>,
) -> Result<Scheduler> {
    if let Some(template) = textfile {
        for job in jobs {
            load_textfile(metrics, template, job.name());
        }
    }
    let notified = jobs
        .iter()
        .filter_map(|j| j.notify().map(|n| (j.name().to_string(), n.clone())));
    scheduler(
        state_dir.into(),
        None,
        notified,
        metrics,
        textfile.map(Path::to_path_buf),
    )
}

fn scheduler(
    dir: PathBuf,
    default: Option<NotifyOptions>,
    jobs: impl Iterator<Item = (String, NotifyOptions)>,
    metrics: &Metrics,
    textfile: Option<PathBuf>,
) -> Result<Scheduler> {
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::usage(format!(
            "cannot create the state directory {} ({e}); set [daemon] state-dir in the config to a writable directory",
            dir.display()
        ))
    })?;
    let mut alerts = Alerts::new().with_metrics(metrics.clone());
    if let Some(n) = default {
        alerts = alerts.with_default(Notifier::new(n)?);
    }
    for (job, n) in jobs {
        alerts = alerts.with_job(&job, Notifier::new(n)?);
    }
    let mut scheduler = Scheduler::new(dir).with_observer(Arc::new(alerts));
    if let Some(template) = textfile {
        scheduler = scheduler.with_observer(Arc::new(Textfile { template }));
    }
    Ok(scheduler)
}

impl Job {
    /// The job under the scheduler: its keys checked now (a job that cannot encrypt never runs
    /// unencrypted), its metric series registered before its first run, a [`JobRunner`] that
    /// `abort` aborts mid-run (a first shutdown signal lets a run finish), its schedule and
    /// catch-up.
    ///
    /// # Errors
    /// Bad keys; a job without schedule.
    pub fn scheduled(&self, abort: &CancellationToken, metrics: &Metrics) -> Result<ScheduledJob> {
        self.register(metrics)?;
        let Some(s) = self.schedule().cloned() else {
            return Err(Error::usage(format!(
                "job {} has no schedule; the scheduler runs scheduled jobs only",
                self.name()
            )));
        };
        let runner = Arc::new(JobRunner::new(self.clone(), abort.clone()));
        Ok(ScheduledJob::new(self.name(), s.schedule, runner).with_catch_up(s.catch_up))
    }

    /// Checks the keys and registers the job's metric series (one per destination).
    fn register(&self, metrics: &Metrics) -> Result<()> {
        self.encryptor()?;
        let destinations: Vec<String> = self
            .destinations()
            .iter()
            .filter_map(|d| repository(&d.written).ok())
            .map(|r| r.describe())
            .collect();
        metrics.register(self.name(), destinations);
        Ok(())
    }
}

/// The daemon's jobs: each selected job with a schedule, its keys checked now (a job that
/// cannot encrypt never runs unencrypted) and its metric series registered before its first
/// run. Jobs without a schedule are left out, unless `named` (then it is an error, unless the
/// job replicates: [`replication_services`](crate::replication_service::replication_services)
/// run those).
///
/// # Errors
/// Bad keys; a named job without schedule nor replication; no scheduled or replicating job at
/// all.
pub fn scheduled_jobs(
    selected: &[&JobConfig],
    named: bool,
    abort: &CancellationToken,
    metrics: &Metrics,
) -> Result<Vec<ScheduledJob>> {
    let mut jobs = Vec::new();
    for config in selected {
        let job = Job::from_config(config)?;
        if job.schedule().is_none() {
            job.register(metrics)?;
            if named && config.replication().is_none() {
                return Err(Error::usage(format!(
                    "job {} has no [job.schedule]; the daemon runs scheduled jobs only",
                    config.name
                )));
            }
            continue;
        }
        jobs.push(job.scheduled(abort, metrics)?);
    }
    if jobs.is_empty() && !selected.iter().any(|c| c.replication().is_some()) {
        return Err(Error::usage(
            "no job of the config has a [job.schedule] or a [job.replicate]; add one (cron = \"0 2 * * *\") or run `kars-backup backup --config`",
        ));
    }
    Ok(jobs)
}

/// Loads the selected jobs' textfiles into `metrics`, so that `/metrics` counters go on from
/// them (with `[daemon] metrics-textfile`).
pub fn load_textfiles(config: &Config, selected: &[&JobConfig], metrics: &Metrics) {
    let Some(template) = &config.daemon.metrics_textfile else {
        return;
    };
    for job in selected {
        load_textfile(metrics, template, &job.name);
    }
}

fn load_textfile(metrics: &Metrics, template: &Path, job: &str) {
    if let Err(e) = metrics.load_textfile(&textfile_for(template, job)) {
        tracing::warn!(job = %job, error = %e, "cannot read the previous metrics textfile; counting from zero");
    }
}

/// How a one-shot run of a job went.
#[derive(Debug)]
pub struct OneShot {
    /// The scheduler's report (with the run id), or why it did not run (the job's lock is
    /// held, its state directory is unusable).
    pub report: std::result::Result<RunReport, kars_backup_schedule::Error>,
    /// The backup's own result, when it ran.
    pub run: Option<Result<BackupRun>>,
}

/// Runs a job once, now, under `scheduler` (its lock, state, notifications, metrics).
pub async fn run_once(scheduler: &Scheduler, job: Job) -> OneShot {
    let name = job.name().to_string();
    let runner = Arc::new(JobRunner::new(job, CancellationToken::new()));
    let last = runner.last();
    let report = scheduler
        .run_now(&name, runner, &SystemClock, CancellationToken::new())
        .await;
    let run = last.lock().ok().and_then(|mut s| s.take());
    OneShot { report, run }
}

/// The textfile of one job: `{job}` in the configured path replaced by the job's name, else
/// `.<job>` put before the extension (`kars-backup.prom` → `kars-backup.nightly.prom`). One
/// file per job, so that runs of different jobs in different processes (systemd timers, a
/// one-shot beside the daemon) never overwrite each other's numbers.
pub fn textfile_for(template: &Path, job: &str) -> PathBuf {
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

/// Rewrites the job's textfile-collector file after every run: load, record, write (the job's
/// lock keeps two runs of one job, and so two writers of its file, apart).
#[derive(Debug)]
struct Textfile {
    template: PathBuf,
}

#[async_trait]
impl RunObserver for Textfile {
    async fn run_finished(&self, report: &RunReport) {
        let path = textfile_for(&self.template, &report.job);
        let _guard = TEXTFILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
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
