//! What a run is given ([`RunContext`]), what it returns ([`RunOutcome`]), and the report the
//! scheduler makes of it ([`RunReport`]); the [`JobRunner`] and [`RunObserver`] traits.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How a run ended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Everything the run had to do was done.
    Success,
    /// The run (or at least one destination) failed, or it was aborted.
    Failure,
}

impl RunStatus {
    /// `"success"` or `"failure"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Failure => "failure",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run started.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Its cron slot came.
    Scheduled,
    /// A slot was missed while no scheduler ran, and catch-up is on.
    CatchUp,
    /// Someone asked for it (a one-shot `backup --config`, a "run now").
    Manual,
}

impl Trigger {
    /// `"scheduled"`, `"catch-up"` or `"manual"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::CatchUp => "catch-up",
            Trigger::Manual => "manual",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one destination of a run fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationResult {
    /// The destination's name or redacted URL (it becomes a metrics label: keep it stable).
    pub name: String,
    /// Whether the backup was committed there.
    pub status: RunStatus,
    /// Bytes stored there, when known.
    pub bytes: Option<u64>,
    /// The error, when it failed.
    pub error: Option<String>,
}

impl DestinationResult {
    /// A destination that committed `bytes`.
    pub fn success(name: impl Into<String>, bytes: Option<u64>) -> Self {
        DestinationResult {
            name: name.into(),
            status: RunStatus::Success,
            bytes,
            error: None,
        }
    }

    /// A destination that failed with `error`.
    pub fn failure(name: impl Into<String>, error: impl fmt::Display) -> Self {
        DestinationResult {
            name: name.into(),
            status: RunStatus::Failure,
            bytes: None,
            error: Some(error.to_string()),
        }
    }
}

/// What a [`JobRunner`] returns: the result of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// Success or failure of the whole run.
    pub status: RunStatus,
    /// The error, for a failed run (no secrets: it goes to logs, webhooks and state files).
    pub error: Option<String>,
    /// The size of the backup archive, when one was made.
    pub bytes: Option<u64>,
    /// Per destination results, in the job's order (empty when the run failed before any).
    pub destinations: Vec<DestinationResult>,
}

impl RunOutcome {
    /// A successful run.
    pub fn success() -> Self {
        RunOutcome {
            status: RunStatus::Success,
            error: None,
            bytes: None,
            destinations: Vec::new(),
        }
    }

    /// A failed run.
    pub fn failure(error: impl fmt::Display) -> Self {
        RunOutcome {
            status: RunStatus::Failure,
            error: Some(error.to_string()),
            bytes: None,
            destinations: Vec::new(),
        }
    }

    /// Sets the archive size.
    pub fn with_bytes(mut self, bytes: u64) -> Self {
        self.bytes = Some(bytes);
        self
    }

    /// Adds a destination's result; a failed destination makes the run a failure (keeping an
    /// existing error text, else naming the destination).
    pub fn with_destination(mut self, destination: DestinationResult) -> Self {
        if destination.status == RunStatus::Failure {
            self.status = RunStatus::Failure;
            if self.error.is_none() {
                self.error = Some(format!(
                    "destination {} failed: {}",
                    destination.name,
                    destination.error.as_deref().unwrap_or("unknown error")
                ));
            }
        }
        self.destinations.push(destination);
        self
    }

    /// True for [`RunStatus::Success`].
    pub fn is_success(&self) -> bool {
        self.status == RunStatus::Success
    }

    /// The outcome of a core backup run: success when every destination committed, the
    /// archive size from the manifest, one [`DestinationResult`] per destination.
    pub fn from_backup_report(report: &kars_backup_core::BackupReport) -> Self {
        let bytes = report.manifest.archive.size_bytes;
        let mut outcome = RunOutcome::success().with_bytes(bytes);
        for d in &report.destinations {
            outcome = outcome.with_destination(match &d.error {
                None => DestinationResult::success(&d.destination, Some(bytes)),
                Some(e) => DestinationResult::failure(&d.destination, e),
            });
        }
        outcome
    }
}

/// What a run is given.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The job's name.
    pub job: String,
    /// This run's id; pass it on (`BackupJob::with_run_id`) so logs, manifest and
    /// notifications share it.
    pub run_id: String,
    /// Why it runs.
    pub trigger: Trigger,
    /// The slot it runs for (for catch-up and manual runs: when it was started).
    pub scheduled_at: DateTime<Utc>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Cancelled when the scheduler shuts down. The runner decides: finish the current upload
    /// quickly, or abort it (leaving nothing listed) and return a failure.
    pub cancel: CancellationToken,
}

impl RunContext {
    /// A context for a run started by hand now (one-shot CLI runs), with a new run id.
    pub fn manual(job: impl Into<String>, now: DateTime<Utc>, cancel: CancellationToken) -> Self {
        RunContext {
            job: job.into(),
            run_id: kars_backup_core::new_run_id(),
            trigger: Trigger::Manual,
            scheduled_at: now,
            started_at: now,
            cancel,
        }
    }
}

/// The record of one finished run, for observers (notifications, metrics) and the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The job's name.
    pub job: String,
    /// The run id.
    pub run_id: String,
    /// Why it ran.
    pub trigger: Trigger,
    /// The slot it ran for.
    pub scheduled_at: DateTime<Utc>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// What the runner returned.
    pub outcome: RunOutcome,
}

impl RunReport {
    /// The report of the run described by `ctx`, finished at `finished_at`.
    pub fn new(ctx: &RunContext, finished_at: DateTime<Utc>, outcome: RunOutcome) -> Self {
        RunReport {
            job: ctx.job.clone(),
            run_id: ctx.run_id.clone(),
            trigger: ctx.trigger,
            scheduled_at: ctx.scheduled_at,
            started_at: ctx.started_at,
            finished_at,
            outcome,
        }
    }

    /// Wall time from start to finish (zero if the clock went backwards).
    pub fn duration(&self) -> Duration {
        (self.finished_at - self.started_at)
            .to_std()
            .unwrap_or_default()
    }

    /// How it ended.
    pub fn status(&self) -> RunStatus {
        self.outcome.status
    }
}

/// Runs one job once; the daemon plugs the real backup in here.
///
/// # Contract
/// - Called at most once at a time per job by the scheduler (ticks that come while a run is in
///   flight are skipped), with the job's run lock held.
/// - Must not panic; a panic is reported as a failed run.
/// - Should watch `ctx.cancel` and return soon after it fires (finished or aborted).
#[async_trait]
pub trait JobRunner: Send + Sync + fmt::Debug + 'static {
    /// Runs the job.
    async fn run(&self, ctx: RunContext) -> RunOutcome;
}

/// A shared runner.
pub type DynJobRunner = Arc<dyn JobRunner>;

#[async_trait]
impl<T: JobRunner + ?Sized> JobRunner for Arc<T> {
    async fn run(&self, ctx: RunContext) -> RunOutcome {
        (**self).run(ctx).await
    }
}

#[async_trait]
impl<T: JobRunner + ?Sized> JobRunner for Box<T> {
    async fn run(&self, ctx: RunContext) -> RunOutcome {
        (**self).run(ctx).await
    }
}

/// A [`JobRunner`] made from an async closure; see [`runner_fn`].
pub struct FnRunner<F>(F);

impl<F> fmt::Debug for FnRunner<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnRunner")
    }
}

/// Wraps `f(ctx) -> impl Future<Output = RunOutcome>` as a shared [`JobRunner`].
///
/// ```
/// use kars_backup_schedule::{RunOutcome, runner_fn};
/// let runner = runner_fn(|ctx| async move {
///     tracing::info!(run_id = %ctx.run_id, "backing up");
///     RunOutcome::success().with_bytes(42)
/// });
/// # let _ = runner;
/// ```
pub fn runner_fn<F, Fut>(f: F) -> DynJobRunner
where
    F: Fn(RunContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RunOutcome> + Send + 'static,
{
    Arc::new(FnRunner(f))
}

#[async_trait]
impl<F, Fut> JobRunner for FnRunner<F>
where
    F: Fn(RunContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RunOutcome> + Send + 'static,
{
    async fn run(&self, ctx: RunContext) -> RunOutcome {
        (self.0)(ctx).await
    }
}

/// Hears about runs as they start and finish (notifications, metrics, logs).
///
/// # Contract
/// Awaited in the run's task, before the runner starts and after it finishes, so keep it short
/// and bounded (timeouts); it cannot fail the run. Both methods default to doing nothing.
#[async_trait]
pub trait RunObserver: Send + Sync + fmt::Debug + 'static {
    /// A run is about to start.
    async fn run_started(&self, _ctx: &RunContext) {}

    /// A run finished.
    async fn run_finished(&self, _report: &RunReport) {}
}

/// A shared observer.
pub type DynRunObserver = Arc<dyn RunObserver>;

#[async_trait]
impl<T: RunObserver + ?Sized> RunObserver for Arc<T> {
    async fn run_started(&self, ctx: &RunContext) {
        (**self).run_started(ctx).await
    }
    async fn run_finished(&self, report: &RunReport) {
        (**self).run_finished(report).await
    }
}
