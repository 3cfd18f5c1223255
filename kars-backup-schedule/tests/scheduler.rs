//! The scheduler loop with a manual clock: no test sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use kars_backup_schedule::*;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

/// A guard against hangs (real time, but only waited for when a test is broken).
const GUARD: Duration = Duration::from_secs(20);

struct Harness {
    clock: ManualClock,
    events: mpsc::UnboundedReceiver<SchedulerEvent>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<()>>,
    /// Every event received.
    seen: Vec<SchedulerEvent>,
    /// Received events no `until` has taken yet (the loop and its runs race, so order varies).
    pending: std::collections::VecDeque<SchedulerEvent>,
}

impl Harness {
    fn start(dir: &std::path::Path, start: DateTime<Utc>, jobs: Vec<ScheduledJob>) -> Self {
        Self::start_with(Scheduler::new(dir), start, jobs)
    }

    fn start_with(scheduler: Scheduler, start: DateTime<Utc>, jobs: Vec<ScheduledJob>) -> Self {
        let clock = ManualClock::new(start);
        let (tx, events) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let scheduler = scheduler.with_events(tx);
        let task = tokio::spawn({
            let clock: DynClock = Arc::new(clock.clone());
            let shutdown = shutdown.clone();
            async move { scheduler.run(jobs, clock, shutdown).await }
        });
        Harness {
            clock,
            events,
            shutdown,
            task,
            seen: Vec::new(),
            pending: Default::default(),
        }
    }

    /// The first event not taken yet that `pred` accepts.
    async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&SchedulerEvent) -> bool,
    ) -> SchedulerEvent {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).unwrap();
        }
        loop {
            let event = tokio::time::timeout(GUARD, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; seen {:#?}", self.seen))
                .unwrap_or_else(|| panic!("scheduler ended before {what}; seen {:#?}", self.seen));
            self.seen.push(event.clone());
            if pred(&event) {
                return event;
            }
            self.pending.push_back(event);
        }
    }

    /// Waits until the job's loop waits for `next`, then sets the clock there.
    async fn fire(&mut self, next: DateTime<Utc>) {
        self.until(
            "waiting",
            |e| matches!(e, SchedulerEvent::Waiting { next: n, .. } if *n == next),
        )
        .await;
        self.clock.set(next);
    }

    async fn finished(&mut self) -> RunReport {
        match self
            .until("run finished", |e| {
                matches!(e, SchedulerEvent::RunFinished { .. })
            })
            .await
        {
            SchedulerEvent::RunFinished { report } => *report,
            _ => unreachable!(),
        }
    }

    async fn stop(mut self) -> Vec<SchedulerEvent> {
        self.shutdown.cancel();
        tokio::time::timeout(GUARD, &mut self.task)
            .await
            .expect("scheduler did not stop")
            .unwrap()
            .unwrap();
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        self.seen
    }
}

fn count(events: &[SchedulerEvent], pred: impl Fn(&SchedulerEvent) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

fn daily(name: &str, runner: DynJobRunner) -> ScheduledJob {
    ScheduledJob::new(name, Schedule::parse("0 2 * * *", "UTC").unwrap(), runner)
}

/// A runner that counts runs and records the largest number in flight at once.
#[derive(Debug, Default)]
struct Counting {
    runs: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    contexts: Mutex<Vec<RunContext>>,
    gate: Option<Arc<Notify>>,
}

#[async_trait]
impl JobRunner for Counting {
    async fn run(&self, ctx: RunContext) -> RunOutcome {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.contexts.lock().await.push(ctx);
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        RunOutcome::success()
            .with_bytes(100)
            .with_destination(DestinationResult::success("local", Some(100)))
    }
}

#[tokio::test]
async fn runs_on_its_slot_and_records_state() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(Counting::default());
    let mut h = Harness::start(
        dir.path(),
        utc(2024, 5, 1, 1, 0),
        vec![daily("nightly", runner.clone())],
    );
    h.fire(utc(2024, 5, 1, 2, 0)).await;
    let report = h.finished().await;
    assert_eq!(report.job, "nightly");
    assert_eq!(report.trigger, Trigger::Scheduled);
    assert_eq!(report.scheduled_at, utc(2024, 5, 1, 2, 0));
    assert!(report.outcome.is_success());
    assert_eq!(report.outcome.bytes, Some(100));
    // Next slot is the following day.
    h.until(
        "next wait",
        |e| matches!(e, SchedulerEvent::Waiting { next, .. } if *next == utc(2024, 5, 2, 2, 0)),
    )
    .await;
    let ctx = runner.contexts.lock().await[0].clone();
    assert_eq!(ctx.run_id, report.run_id);
    assert!(!ctx.cancel.is_cancelled());
    let state = StateStore::new(dir.path()).load("nightly").unwrap();
    assert_eq!(state.last_scheduled, Some(utc(2024, 5, 1, 2, 0)));
    assert_eq!(state.last_run_id.as_deref(), Some(report.run_id.as_str()));
    assert_eq!(state.last_status, Some(RunStatus::Success));
    assert_eq!(state.last_success, Some(utc(2024, 5, 1, 2, 0)));
    // The lock was released after the run.
    assert_eq!(JobLock::holder(dir.path(), "nightly").unwrap(), None);
    let events = h.stop().await;
    assert!(matches!(events.last(), Some(SchedulerEvent::Stopped { job }) if job == "nightly"));
}

#[tokio::test]
async fn a_tick_during_a_long_run_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Notify::new());
    let runner = Arc::new(Counting {
        gate: Some(gate.clone()),
        ..Default::default()
    });
    let job = ScheduledJob::new(
        "often",
        Schedule::parse("*/5 * * * *", "UTC").unwrap(),
        runner.clone(),
    );
    let mut h = Harness::start(dir.path(), utc(2024, 5, 1, 10, 1), vec![job]);

    h.fire(utc(2024, 5, 1, 10, 5)).await;
    let first = match h
        .until("first run", |e| {
            matches!(e, SchedulerEvent::RunStarted { .. })
        })
        .await
    {
        SchedulerEvent::RunStarted { run_id, .. } => run_id,
        _ => unreachable!(),
    };
    // Two more slots come while the first run is still going: both skipped.
    for slot in [utc(2024, 5, 1, 10, 10), utc(2024, 5, 1, 10, 15)] {
        h.fire(slot).await;
        let skipped = h
            .until("skip", |e| matches!(e, SchedulerEvent::TickSkipped { .. }))
            .await;
        assert_eq!(
            skipped,
            SchedulerEvent::TickSkipped {
                job: "often".into(),
                scheduled_at: slot,
                running_run_id: first.clone()
            }
        );
    }
    assert_eq!(runner.runs.load(Ordering::SeqCst), 1);
    // A second process (or a one-shot run) is refused too while the run holds the lock.
    let err = Scheduler::new(dir.path())
        .run_now("often", runner.clone(), &h.clock, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&first), "{err}");

    gate.notify_one();
    let report = h.finished().await;
    assert_eq!(report.run_id, first);
    h.fire(utc(2024, 5, 1, 10, 20)).await;
    gate.notify_one(); // let the second run through (a stored permit if it has not started yet)
    let second = h.finished().await;
    assert_ne!(second.run_id, first);
    assert_eq!(second.scheduled_at, utc(2024, 5, 1, 10, 20));
    assert_eq!(runner.runs.load(Ordering::SeqCst), 2);
    assert_eq!(runner.max_in_flight.load(Ordering::SeqCst), 1);
    let events = h.stop().await;
    assert_eq!(
        count(&events, |e| matches!(e, SchedulerEvent::TickSkipped { .. })),
        2
    );
    assert_eq!(
        count(&events, |e| matches!(e, SchedulerEvent::RunStarted { .. })),
        2
    );
}

fn state_with_last_run(dir: &std::path::Path, job: &str, last: DateTime<Utc>) {
    StateStore::new(dir)
        .save(
            job,
            &JobState {
                last_scheduled: Some(last),
                ..Default::default()
            },
        )
        .unwrap();
}

#[tokio::test]
async fn catch_up_after_downtime_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    // Last run 1 May 02:00; the scheduler was down until 4 May 10:00: three slots missed.
    state_with_last_run(dir.path(), "nightly", utc(2024, 5, 1, 2, 0));
    let runner = Arc::new(Counting::default());
    let job = daily("nightly", runner.clone()).with_catch_up(true);
    let mut h = Harness::start(dir.path(), utc(2024, 5, 4, 10, 0), vec![job]);
    let report = h.finished().await;
    assert_eq!(report.trigger, Trigger::CatchUp);
    assert_eq!(report.started_at, utc(2024, 5, 4, 10, 0));
    h.until(
        "next wait",
        |e| matches!(e, SchedulerEvent::Waiting { next, .. } if *next == utc(2024, 5, 5, 2, 0)),
    )
    .await;
    let events = h.stop().await;
    assert_eq!(
        count(
            &events,
            |e| matches!(e, SchedulerEvent::CatchUp { missed, .. } if *missed == utc(2024, 5, 2, 2, 0))
        ),
        1
    );
    assert_eq!(runner.runs.load(Ordering::SeqCst), 1);
    // The catch-up is remembered: a restart right after does not catch up again.
    let state = StateStore::new(dir.path()).load("nightly").unwrap();
    assert_eq!(state.last_scheduled, Some(utc(2024, 5, 4, 10, 0)));
    let job = daily("nightly", runner.clone()).with_catch_up(true);
    let mut h = Harness::start(dir.path(), utc(2024, 5, 4, 11, 0), vec![job]);
    h.until("wait", |e| matches!(e, SchedulerEvent::Waiting { .. }))
        .await;
    let events = h.stop().await;
    assert_eq!(
        count(&events, |e| matches!(e, SchedulerEvent::RunStarted { .. })),
        0
    );
    assert_eq!(runner.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn no_catch_up_when_disabled_or_nothing_was_missed() {
    let dir = tempfile::tempdir().unwrap();
    state_with_last_run(dir.path(), "nightly", utc(2024, 5, 1, 2, 0));
    state_with_last_run(dir.path(), "fresh", utc(2024, 5, 4, 2, 0));
    let runner = Arc::new(Counting::default());
    let jobs = vec![
        daily("nightly", runner.clone()),                   // catch-up off
        daily("fresh", runner.clone()).with_catch_up(true), // its last run was today's slot
    ];
    let mut h = Harness::start(dir.path(), utc(2024, 5, 4, 10, 0), jobs);
    for job in ["nightly", "fresh"] {
        h.until(
            "wait",
            |e| matches!(e, SchedulerEvent::Waiting { job: j, .. } if j == job),
        )
        .await;
    }
    let events = h.stop().await;
    assert_eq!(
        count(&events, |e| matches!(
            e,
            SchedulerEvent::RunStarted { .. } | SchedulerEvent::CatchUp { .. }
        )),
        0
    );
    assert_eq!(runner.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_job_that_never_ran_catches_up_from_when_it_was_first_watched() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(Counting::default());
    // First start on 1 May at 10:00: no state, nothing to catch up; the time is remembered.
    let mut h = Harness::start(
        dir.path(),
        utc(2024, 5, 1, 10, 0),
        vec![daily("new", runner.clone()).with_catch_up(true)],
    );
    h.until("wait", |e| matches!(e, SchedulerEvent::Waiting { .. }))
        .await;
    let events = h.stop().await;
    assert_eq!(
        count(&events, |e| matches!(e, SchedulerEvent::RunStarted { .. })),
        0
    );
    let state = StateStore::new(dir.path()).load("new").unwrap();
    assert_eq!(state.watched_since, Some(utc(2024, 5, 1, 10, 0)));
    // Down over the 2 May 02:00 slot: the next start catches up once.
    let mut h = Harness::start(
        dir.path(),
        utc(2024, 5, 2, 9, 0),
        vec![daily("new", runner.clone()).with_catch_up(true)],
    );
    let report = h.finished().await;
    assert_eq!(report.trigger, Trigger::CatchUp);
    h.stop().await;
    assert_eq!(runner.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_clock_jump_over_several_slots_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(Counting::default());
    let job = ScheduledJob::new(
        "hourly",
        Schedule::parse("@hourly", "UTC").unwrap(),
        runner.clone(),
    );
    let mut h = Harness::start(dir.path(), utc(2024, 5, 1, 0, 30), vec![job]);
    h.until(
        "wait",
        |e| matches!(e, SchedulerEvent::Waiting { next, .. } if *next == utc(2024, 5, 1, 1, 0)),
    )
    .await;
    // Suspend and resume: five hours pass at once.
    h.clock.set(utc(2024, 5, 1, 5, 30));
    let report = h.finished().await;
    assert_eq!(report.scheduled_at, utc(2024, 5, 1, 1, 0));
    h.until(
        "wait",
        |e| matches!(e, SchedulerEvent::Waiting { next, .. } if *next == utc(2024, 5, 1, 6, 0)),
    )
    .await;
    h.stop().await;
    assert_eq!(runner.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_lock_held_elsewhere_skips_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(Counting::default());
    let held = JobLock::try_acquire(dir.path(), "nightly", "other-process-run").unwrap();
    let mut h = Harness::start(
        dir.path(),
        utc(2024, 5, 1, 1, 0),
        vec![daily("nightly", runner.clone())],
    );
    h.fire(utc(2024, 5, 1, 2, 0)).await;
    let busy = h
        .until("lock busy", |e| {
            matches!(e, SchedulerEvent::LockBusy { .. })
        })
        .await;
    let SchedulerEvent::LockBusy {
        scheduled_at,
        error,
        ..
    } = busy
    else {
        unreachable!()
    };
    assert_eq!(scheduled_at, utc(2024, 5, 1, 2, 0));
    assert!(error.contains("other-process-run"), "{error}");
    drop(held);
    h.fire(utc(2024, 5, 2, 2, 0)).await;
    let report = h.finished().await;
    assert_eq!(report.scheduled_at, utc(2024, 5, 2, 2, 0));
    h.stop().await;
    assert_eq!(runner.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn shutdown_during_a_run_cancels_it_and_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let started = Arc::new(Notify::new());
    let runner = runner_fn({
        let started = started.clone();
        move |ctx: RunContext| {
            let started = started.clone();
            async move {
                started.notify_one();
                // A long upload that watches for shutdown and aborts.
                ctx.cancel.cancelled().await;
                RunOutcome::failure("aborted by shutdown; nothing was committed")
            }
        }
    });
    let mut h = Harness::start(
        dir.path(),
        utc(2024, 5, 1, 1, 0),
        vec![daily("nightly", runner)],
    );
    h.fire(utc(2024, 5, 1, 2, 0)).await;
    tokio::time::timeout(GUARD, started.notified())
        .await
        .unwrap();
    let events = h.stop().await; // returns only after the run returned
    let finished: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SchedulerEvent::RunFinished { report } => Some(report.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].status(), RunStatus::Failure);
    assert_eq!(
        finished[0].outcome.error.as_deref(),
        Some("aborted by shutdown; nothing was committed")
    );
    let stopped = events
        .iter()
        .position(|e| matches!(e, SchedulerEvent::Stopped { .. }))
        .unwrap();
    let done = events
        .iter()
        .position(|e| matches!(e, SchedulerEvent::RunFinished { .. }))
        .unwrap();
    assert!(done < stopped, "the loop stopped before its run ended");
    assert_eq!(JobLock::holder(dir.path(), "nightly").unwrap(), None);
}

#[tokio::test]
async fn shutdown_lets_a_run_that_chooses_to_finish_finish() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Notify::new());
    let runner = runner_fn({
        let gate = gate.clone();
        move |ctx: RunContext| {
            let gate = gate.clone();
            async move {
                ctx.cancel.cancelled().await;
                gate.notified().await; // finishing the upload
                RunOutcome::success().with_bytes(7)
            }
        }
    });
    let mut h = Harness::start(
        dir.path(),
        utc(2024, 5, 1, 1, 0),
        vec![daily("nightly", runner)],
    );
    h.fire(utc(2024, 5, 1, 2, 0)).await;
    h.until("started", |e| {
        matches!(e, SchedulerEvent::RunStarted { .. })
    })
    .await;
    h.shutdown.cancel();
    assert!(!h.task.is_finished());
    gate.notify_one();
    let report = h.finished().await;
    assert!(report.outcome.is_success());
    h.stop().await;
}

#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl RunObserver for Recorder {
    async fn run_started(&self, ctx: &RunContext) {
        self.0
            .lock()
            .unwrap()
            .push(format!("start {} {}", ctx.job, ctx.run_id));
    }
    async fn run_finished(&self, report: &RunReport) {
        self.0.lock().unwrap().push(format!(
            "finish {} {} {}",
            report.job,
            report.run_id,
            report.status()
        ));
    }
}

#[tokio::test]
async fn observers_hear_start_and_finish_and_a_panic_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let runner = runner_fn(|_ctx| async { panic!("boom") });
    let scheduler = Scheduler::new(dir.path()).with_observer(recorder.clone());
    let mut h = Harness::start_with(
        scheduler,
        utc(2024, 5, 1, 1, 0),
        vec![daily("nightly", runner)],
    );
    h.fire(utc(2024, 5, 1, 2, 0)).await;
    let report = h.finished().await;
    assert_eq!(report.status(), RunStatus::Failure);
    assert!(
        report
            .outcome
            .error
            .as_deref()
            .unwrap()
            .contains("panicked")
    );
    h.stop().await;
    let log = recorder.0.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            format!("start nightly {}", report.run_id),
            format!("finish nightly {} failure", report.run_id)
        ]
    );
    let state = StateStore::new(dir.path()).load("nightly").unwrap();
    assert_eq!(state.last_status, Some(RunStatus::Failure));
    assert_eq!(state.last_success, None);
}

#[tokio::test]
async fn run_now_is_a_manual_run_with_lock_state_and_observers() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let clock = ManualClock::new(utc(2024, 5, 1, 12, 0));
    let runner = runner_fn({
        let clock = clock.clone();
        move |ctx: RunContext| {
            let clock = clock.clone();
            async move {
                assert_eq!(ctx.trigger, Trigger::Manual);
                clock.advance(TimeDelta::seconds(90)); // the backup takes 90 s
                RunOutcome::success().with_bytes(5)
            }
        }
    });
    let report = Scheduler::new(dir.path())
        .with_observer(recorder.clone())
        .run_now("adhoc", runner, &clock, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.trigger, Trigger::Manual);
    assert_eq!(report.duration(), Duration::from_secs(90));
    assert_eq!(recorder.0.lock().unwrap().len(), 2);
    assert_eq!(
        StateStore::new(dir.path())
            .load("adhoc")
            .unwrap()
            .last_run_id,
        Some(report.run_id)
    );
}

#[tokio::test]
async fn bad_job_lists_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(Counting::default());
    let s = Scheduler::new(dir.path());
    let clock: DynClock = Arc::new(ManualClock::new(utc(2024, 5, 1, 0, 0)));
    let dup = vec![daily("a", runner.clone()), daily("a", runner.clone())];
    let err = s
        .run(dup, clock.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateJob { .. }), "{err}");
    let bad = vec![daily("a/b", runner.clone())];
    let err = s
        .run(bad, clock, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidJobName { .. }), "{err}");
}

#[tokio::test]
async fn a_corrupt_state_file_is_reported_and_the_job_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nightly.state.json"), "{not json").unwrap();
    let err = StateStore::new(dir.path()).load("nightly").unwrap_err();
    assert!(err.to_string().contains("delete it"), "{err}");
    let runner = Arc::new(Counting::default());
    let mut h = Harness::start(
        dir.path(),
        utc(2024, 5, 1, 1, 0),
        vec![daily("nightly", runner.clone()).with_catch_up(true)],
    );
    h.until("state error", |e| {
        matches!(e, SchedulerEvent::StateError { .. })
    })
    .await;
    h.fire(utc(2024, 5, 1, 2, 0)).await;
    let report = h.finished().await;
    h.stop().await;
    assert_eq!(runner.runs.load(Ordering::SeqCst), 1);
    // The run's record replaced the corrupt file.
    let state = StateStore::new(dir.path()).load("nightly").unwrap();
    assert_eq!(state.last_run_id, Some(report.run_id));
    assert_eq!(state.last_scheduled, Some(utc(2024, 5, 1, 2, 0)));
}

#[tokio::test]
async fn no_jobs_waits_for_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), utc(2024, 5, 1, 0, 0), vec![]);
    tokio::task::yield_now().await;
    assert!(!h.task.is_finished());
    h.stop().await;
}

#[tokio::test]
async fn a_daily_job_in_berlin_across_the_spring_forward_night() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(Counting::default());
    // 02:30 does not exist on 31 March 2024 in Berlin: the run happens at 03:00 CEST.
    let job = ScheduledJob::new(
        "nightly",
        Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap(),
        runner.clone(),
    );
    let mut h = Harness::start(dir.path(), utc(2024, 3, 30, 12, 0), vec![job]);
    h.fire(utc(2024, 3, 31, 1, 0)).await;
    let report = h.finished().await;
    assert_eq!(report.scheduled_at, utc(2024, 3, 31, 1, 0));
    // The next day is back to 02:30, now CEST (00:30 UTC).
    h.fire(utc(2024, 4, 1, 0, 30)).await;
    let report = h.finished().await;
    assert_eq!(report.scheduled_at, utc(2024, 4, 1, 0, 30));
    h.stop().await;
    assert_eq!(runner.runs.load(Ordering::SeqCst), 2);
}
