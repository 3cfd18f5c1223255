//! The scheduler loop: runs jobs on their cron slots, one run per job at a time.

use std::collections::HashSet;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::{Clock, DynClock};
use crate::cron::Schedule;
use crate::error::{Error, Result};
use crate::outcome::{
    DynJobRunner, DynRunObserver, RunContext, RunOutcome, RunReport, RunStatus, Trigger,
};
use crate::span::run_span;
use crate::state::{JobState, StateStore, validate_job_name};

/// One job as the scheduler runs it.
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    /// The job's name (`[A-Za-z0-9._-]`, unique; it names the lock and state files).
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// Run once at start when a slot was missed since the last run (see [`JobState::missed_slot`](crate::JobState::missed_slot)).
    pub catch_up: bool,
    /// What a run does.
    pub runner: DynJobRunner,
}

impl ScheduledJob {
    /// A job without catch-up.
    pub fn new(name: impl Into<String>, schedule: Schedule, runner: DynJobRunner) -> Self {
        ScheduledJob {
            name: name.into(),
            schedule,
            catch_up: false,
            runner,
        }
    }

    /// Turns catch-up on or off.
    pub fn with_catch_up(mut self, catch_up: bool) -> Self {
        self.catch_up = catch_up;
        self
    }
}

/// What the scheduler does, as it happens (for tests, status pages, extra logging). Every event
/// is also logged through `tracing`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerEvent {
    /// The job's loop waits for its next slot.
    Waiting {
        /// The job.
        job: String,
        /// The slot it waits for.
        next: DateTime<Utc>,
    },
    /// A slot was missed while no scheduler ran; a catch-up run starts.
    CatchUp {
        /// The job.
        job: String,
        /// The first missed slot.
        missed: DateTime<Utc>,
    },
    /// A run started (its lock is held).
    RunStarted {
        /// The job.
        job: String,
        /// The run id.
        run_id: String,
        /// Why it runs.
        trigger: Trigger,
        /// The slot.
        scheduled_at: DateTime<Utc>,
    },
    /// A run finished.
    RunFinished {
        /// Its report.
        report: Box<RunReport>,
    },
    /// A slot came while the job's previous run was still going; it was skipped.
    TickSkipped {
        /// The job.
        job: String,
        /// The skipped slot.
        scheduled_at: DateTime<Utc>,
        /// The run still in flight.
        running_run_id: String,
    },
    /// The job's lock was held by another process (or handle); the slot was skipped.
    LockBusy {
        /// The job.
        job: String,
        /// The skipped slot.
        scheduled_at: DateTime<Utc>,
        /// The lock error (names the holder).
        error: String,
    },
    /// The state file could not be read or written (the run still happens).
    StateError {
        /// The job.
        job: String,
        /// The error.
        error: String,
    },
    /// The job's loop stopped after shutdown (its in-flight run, if any, has ended).
    Stopped {
        /// The job.
        job: String,
    },
}

/// Runs [`ScheduledJob`]s on their slots.
///
/// - never two runs of one job at once: a slot that comes while the previous run is still in
///   flight is skipped ([`SchedulerEvent::TickSkipped`]), and a run holds the job's
///   [`JobLock`](crate::JobLock), so another process (a second daemon, a one-shot CLI run)
///   cannot run it at the same time ([`SchedulerEvent::LockBusy`]);
/// - catch-up: at start, a job with `catch_up` whose slot was missed since its last finished run
///   runs once (not once per missed slot); likewise, when the clock jumps over several slots
///   (suspend), the job runs once;
/// - shutdown: when the token is cancelled, no new run starts; the in-flight runs see their
///   [`RunContext::cancel`] fire and [`run`](Scheduler::run) returns when they have returned.
///
/// ```no_run
/// # async fn demo() -> kars_backup_schedule::Result<()> {
/// use std::sync::Arc;
/// use kars_backup_schedule::*;
///
/// let signals = ShutdownSignals::install()?;
/// let job = ScheduledJob::new(
///     "asset-data",
///     Schedule::parse("0 2 * * *", "Europe/Berlin")?,
///     runner_fn(|_ctx| async { RunOutcome::success() }),
/// )
/// .with_catch_up(true);
/// Scheduler::new("/var/lib/kars-backup/state")
///     .run(vec![job], Arc::new(SystemClock), signals.graceful())
///     .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: StateStore,
    observers: Vec<DynRunObserver>,
    events: Option<mpsc::UnboundedSender<SchedulerEvent>>,
}

impl Scheduler {
    /// A scheduler keeping state and locks in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Scheduler {
            store: StateStore::new(state_dir),
            observers: Vec::new(),
            events: None,
        }
    }

    /// Adds an observer told about every run's start and finish (notifications, metrics).
    pub fn with_observer(mut self, observer: DynRunObserver) -> Self {
        self.observers.push(observer);
        self
    }

    /// Sends every [`SchedulerEvent`] to `events` as well.
    pub fn with_events(mut self, events: mpsc::UnboundedSender<SchedulerEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// The state store (job state and lock files).
    pub fn state_store(&self) -> &StateStore {
        &self.store
    }

    /// Runs `jobs` until `shutdown` is cancelled and every in-flight run has returned.
    ///
    /// # Errors
    /// Only for bad input, before anything runs: [`Error::InvalidJobName`],
    /// [`Error::DuplicateJob`], [`Error::Io`] when the state directory cannot be created.
    /// Failures of single runs are reported through observers, events and logs.
    pub async fn run(
        &self,
        jobs: Vec<ScheduledJob>,
        clock: DynClock,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let mut seen = HashSet::new();
        for job in &jobs {
            validate_job_name(&job.name)?;
            if !seen.insert(job.name.clone()) {
                return Err(Error::DuplicateJob {
                    name: job.name.clone(),
                });
            }
        }
        std::fs::create_dir_all(self.store.dir())
            .map_err(|e| Error::io("create state directory", self.store.dir(), e))?;
        tracing::info!(jobs = jobs.len(), state_dir = %self.store.dir().display(), "scheduler started");
        if jobs.is_empty() {
            tracing::warn!("no jobs to schedule; waiting for shutdown");
            shutdown.cancelled().await;
        }
        let loops: Vec<JoinHandle<()>> = jobs
            .into_iter()
            .map(|job| {
                let this = self.clone();
                let clock = clock.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { this.job_loop(job, clock, shutdown).await })
            })
            .collect();
        for handle in loops {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "a job loop ended abnormally");
            }
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }

    /// Runs `job` once now (trigger [`Trigger::Manual`]) with the same lock, state, observers and
    /// span as a scheduled run; for one-shot runs (`backup --config`) and "run now" requests.
    ///
    /// # Errors
    /// [`Error::Locked`] when the job is running elsewhere; [`Error::InvalidJobName`].
    /// A failed run is not an error: see the report's status.
    pub async fn run_now(
        &self,
        job: &str,
        runner: DynJobRunner,
        clock: &dyn Clock,
        cancel: CancellationToken,
    ) -> Result<RunReport> {
        validate_job_name(job)?;
        let now = clock.now();
        let run_id = kars_backup_core::new_run_id();
        self.execute(job, &runner, clock, Trigger::Manual, now, run_id, cancel)
            .await
    }

    fn emit(&self, event: SchedulerEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    async fn job_loop(self, job: ScheduledJob, clock: DynClock, shutdown: CancellationToken) {
        let mut in_flight: Option<(String, JoinHandle<()>)> = None;
        let start = clock.now();
        match self.store.load(&job.name) {
            Ok(state) => {
                if job.catch_up
                    && let Some(missed) = state.missed_slot(&job.schedule, start)
                {
                    tracing::info!(job = %job.name, missed = %missed, "a scheduled run was missed; catching up once");
                    self.emit(SchedulerEvent::CatchUp {
                        job: job.name.clone(),
                        missed,
                    });
                    in_flight =
                        Some(self.spawn_run(&job, &clock, Trigger::CatchUp, start, &shutdown));
                }
                if state.watched_since.is_none()
                    && state.last_scheduled.is_none()
                    && let Err(e) = self
                        .store
                        .update(&job.name, |s| s.watched_since = Some(start))
                {
                    self.state_error(&job.name, &e);
                }
            }
            Err(e) => self.state_error(&job.name, &e),
        }

        let mut cursor = start;
        loop {
            let Some(next) = job.schedule.next_after(cursor) else {
                tracing::warn!(job = %job.name, schedule = %job.schedule, "the schedule has no further slot");
                break;
            };
            tracing::debug!(job = %job.name, next = %next, "waiting for the next slot");
            self.emit(SchedulerEvent::Waiting {
                job: job.name.clone(),
                next,
            });
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = clock.sleep_until(next) => {}
            }
            // When the clock jumped over several slots, run once and go on from now.
            cursor = next.max(clock.now());
            if let Some((running, handle)) = &in_flight
                && !handle.is_finished()
            {
                tracing::warn!(
                    job = %job.name, scheduled_at = %next, running_run_id = %running,
                    "the previous run is still running; skipping this slot"
                );
                self.emit(SchedulerEvent::TickSkipped {
                    job: job.name.clone(),
                    scheduled_at: next,
                    running_run_id: running.clone(),
                });
                continue;
            }
            in_flight = Some(self.spawn_run(&job, &clock, Trigger::Scheduled, next, &shutdown));
        }
        if let Some((running, handle)) = in_flight {
            if !handle.is_finished() {
                tracing::info!(job = %job.name, run_id = %running, "shutdown: waiting for the in-flight run to finish or abort");
            }
            if let Err(e) = handle.await {
                tracing::error!(job = %job.name, error = %e, "the run task ended abnormally");
            }
        }
        self.emit(SchedulerEvent::Stopped {
            job: job.name.clone(),
        });
    }

    fn spawn_run(
        &self,
        job: &ScheduledJob,
        clock: &DynClock,
        trigger: Trigger,
        scheduled_at: DateTime<Utc>,
        shutdown: &CancellationToken,
    ) -> (String, JoinHandle<()>) {
        let run_id = kars_backup_core::new_run_id();
        let this = self.clone();
        let name = job.name.clone();
        let runner = job.runner.clone();
        let clock = clock.clone();
        let cancel = shutdown.child_token();
        let id = run_id.clone();
        let handle = tokio::spawn(async move {
            // Errors (a held lock) are logged and sent as events inside `execute`.
            let _ = this
                .execute(&name, &runner, &*clock, trigger, scheduled_at, id, cancel)
                .await;
        });
        (run_id, handle)
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        job: &str,
        runner: &DynJobRunner,
        clock: &dyn Clock,
        trigger: Trigger,
        scheduled_at: DateTime<Utc>,
        run_id: String,
        cancel: CancellationToken,
    ) -> Result<RunReport> {
        let span = run_span(job, &run_id);
        let lock = match self.store.lock(job, &run_id) {
            Ok(lock) => lock,
            Err(e) => {
                span.in_scope(
                    || tracing::warn!(error = %e, "skipping this run: the job's lock is held"),
                );
                self.emit(SchedulerEvent::LockBusy {
                    job: job.to_string(),
                    scheduled_at,
                    error: e.to_string(),
                });
                return Err(e);
            }
        };
        let started_at = clock.now();
        let ctx = RunContext {
            job: job.to_string(),
            run_id: run_id.clone(),
            trigger,
            scheduled_at,
            started_at,
            cancel,
        };
        if let Err(e) = self.update_state(job, |s| {
            s.last_run_id = Some(run_id.clone());
            s.last_started = Some(started_at);
        }) {
            self.state_error(job, &e);
        }
        span.in_scope(|| tracing::info!(%trigger, scheduled_at = %scheduled_at, "run started"));
        self.emit(SchedulerEvent::RunStarted {
            job: job.to_string(),
            run_id: run_id.clone(),
            trigger,
            scheduled_at,
        });
        for observer in &self.observers {
            observer.run_started(&ctx).instrument(span.clone()).await;
        }

        let task = tokio::spawn({
            let runner = runner.clone();
            let ctx = ctx.clone();
            async move { runner.run(ctx).await }.instrument(span.clone())
        });
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => {
                RunOutcome::failure("the job panicked (a bug: please report it)")
            }
            Err(_) => RunOutcome::failure("the job's task was cancelled"),
        };
        let finished_at = clock.now();
        let report = RunReport::new(&ctx, finished_at, outcome);
        if let Err(e) = self.update_state(job, |s| {
            s.last_scheduled = Some(scheduled_at);
            s.last_finished = Some(finished_at);
            s.last_status = Some(report.status());
            s.last_error = report.outcome.error.clone();
            if report.status() == RunStatus::Success {
                s.last_success = Some(finished_at);
            }
        }) {
            self.state_error(job, &e);
        }
        drop(lock);
        let secs = report.duration().as_secs_f64();
        span.in_scope(|| match report.status() {
            RunStatus::Success => tracing::info!(
                duration_secs = secs,
                bytes = report.outcome.bytes,
                "run succeeded"
            ),
            _ => tracing::warn!(
                duration_secs = secs,
                error = report.outcome.error.as_deref().unwrap_or("unknown error"),
                "run failed"
            ),
        });
        self.emit(SchedulerEvent::RunFinished {
            report: Box::new(report.clone()),
        });
        for observer in &self.observers {
            observer
                .run_finished(&report)
                .instrument(span.clone())
                .await;
        }
        Ok(report)
    }

    /// Like [`StateStore::update`], but a corrupt state file is reported and replaced: what a
    /// run just did matters more than what the file held.
    fn update_state(&self, job: &str, change: impl FnOnce(&mut JobState)) -> Result<JobState> {
        let mut state = match self.store.load(job) {
            Ok(state) => state,
            Err(e @ Error::CorruptState { .. }) => {
                self.state_error(job, &e);
                JobState::default()
            }
            Err(e) => return Err(e),
        };
        change(&mut state);
        self.store.save(job, &state)?;
        Ok(state)
    }

    fn state_error(&self, job: &str, error: &Error) {
        tracing::warn!(job = %job, error = %error, "job state not saved");
        self.emit(SchedulerEvent::StateError {
            job: job.to_string(),
            error: error.to_string(),
        });
    }
}
