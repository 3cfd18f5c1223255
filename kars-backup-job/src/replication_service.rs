//! Continuous replication under the daemon: one [`ReplicationService`] per job with an enabled
//! `[job.replicate]` ([`replication_services`]), run in the daemon's runtime next to the
//! scheduler until shutdown. It restarts a replicator that fails, after a growing delay (1 s,
//! doubled up to a minute; every failure notified), exports the replication's metrics (lag,
//! last shipped commit, transactions shipped, WAL resets, generations; see
//! [`kars_backup_notify::Metrics::update_replica`]) into the registry and the job's
//! textfile, and alerts through the job's notifications: a failure, a destination lagging past
//! `lag-alert` (once per episode, with a notice when it catches up), WAL resets that happen
//! often.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kars_backup_config::{Config, JobConfig};
use kars_backup_core::CancellationToken;
use kars_backup_notify::{Metrics, Notifier, ReplicationEvent, ReplicationEventKind};
use kars_backup_sqlite::replicate::{DestinationStatus, ReplicationStatus, StatusHandle};
use tokio::task::JoinHandle;

use crate::error::{Error, Result, error_text};
use crate::job::Job;
use crate::replicate::Replication;
use crate::runner::{TEXTFILE_LOCK, textfile_for};

/// The first delay before a failed replicator is restarted; doubled after every failure.
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);
/// The longest delay before a restart.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// How often the status is looked at (metrics, alerts).
const TICK: Duration = Duration::from_millis(500);
/// How often the job's textfile is rewritten while the replication runs.
const TEXTFILE_EVERY: Duration = Duration::from_secs(5);
/// The window WAL resets are counted in (`wal-reset-alert` per window).
const RESET_WINDOW: Duration = Duration::from_secs(3600);
/// How long notifications still being sent at shutdown are waited for.
const NOTIFY_GRACE: Duration = Duration::from_secs(15);

/// The replication services of the selected jobs: every one with an enabled `[job.replicate]`,
/// its keys checked now (a job that cannot encrypt never replicates unencrypted), its
/// notifications (`[job.notify]`, else the file's `[notify]`) and its metric series
/// registered.
///
/// # Errors
/// Bad keys, a destination that does not open, unencrypted off-site replicas, notifications
/// that cannot be set up.
pub fn replication_services(
    config: &Config,
    selected: &[&JobConfig],
    metrics: &Metrics,
) -> Result<Vec<ReplicationService>> {
    let mut services = Vec::new();
    for cfg in selected {
        let Some(r) = cfg.replication() else { continue };
        let job = Job::from_config(cfg)?;
        let to = cfg
            .replica_destinations()
            .map(|d| Ok(d.sink_url()?))
            .collect::<Result<Vec<_>>>()?;
        let replication = Replication::of_job(&job, &to, r.options())
            .map_err(|e| e.context(format!("job {}: [job.replicate]", cfg.name)))?;
        let notifier = match config.notify_for(cfg) {
            Some(n) => Some(Arc::new(Notifier::new(n.options())?)),
            None => None,
        };
        let textfile = config
            .daemon
            .metrics_textfile
            .as_ref()
            .map(|t| textfile_for(t, &cfg.name));
        services.push(ReplicationService::new(
            &cfg.name,
            replication,
            metrics.clone(),
            Alerting {
                notifier,
                lag_alert: r.lag_alert_for(job.rpo()),
                wal_reset_alert: r.wal_reset_alert,
            },
            textfile,
        ));
    }
    Ok(services)
}

/// Where and when a replication alerts.
#[derive(Debug, Clone)]
pub struct Alerting {
    /// The job's notifications; none: alerts are only logged.
    pub notifier: Option<Arc<Notifier>>,
    /// A destination lagging this long alerts.
    pub lag_alert: Duration,
    /// This many WAL resets within an hour alert (0: never).
    pub wal_reset_alert: u32,
}

/// One job's replication under the daemon: restarted when it fails, measured, alerting.
#[derive(Debug)]
pub struct ReplicationService {
    job: String,
    database: String,
    replication: Replication,
    metrics: Metrics,
    alerting: Alerting,
    textfile: Option<PathBuf>,
}

impl ReplicationService {
    /// A service for `job`'s `replication`, its metrics in `metrics` (and rewritten into
    /// `textfile`), alerting as `alerting` says.
    pub fn new(
        job: &str,
        replication: Replication,
        metrics: Metrics,
        alerting: Alerting,
        textfile: Option<PathBuf>,
    ) -> Self {
        let database = replication
            .database()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "database".into());
        metrics.update_replicator(job, &database, |v| {
            v.up.get_or_insert(false);
        });
        ReplicationService {
            job: job.to_string(),
            database,
            replication,
            metrics,
            alerting,
            textfile,
        }
    }

    /// The job's name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// One line for the logs: the database, its destinations, the sync interval.
    pub fn describe(&self) -> String {
        self.replication.describe()
    }

    /// Replicates until `shutdown` fires (then the replicator uploads what it has within its
    /// grace), restarting it after failures; `abort` (a second signal) stops at once.
    pub async fn run(self, shutdown: CancellationToken, abort: CancellationToken) {
        let mut state = State::new();
        let mut delay = FIRST_RESTART_DELAY;
        let mut notices: Vec<JoinHandle<()>> = Vec::new();
        while !shutdown.is_cancelled() {
            let replicator = self.replication.clone().replicator();
            let status = replicator.status();
            let mut run = Box::pin(replicator.run(shutdown.clone()));
            let mut attempt = Attempt::default();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let result = loop {
                tokio::select! {
                    r = &mut run => break Some(r),
                    () = abort.cancelled() => break None,
                    _ = tick.tick() => {
                        if self.observe(&status, &mut state, &mut attempt, &mut notices) {
                            delay = FIRST_RESTART_DELAY;
                        }
                    }
                }
            };
            self.observe(&status, &mut state, &mut attempt, &mut notices);
            let error = match result {
                None => break,
                Some(Ok(_)) if shutdown.is_cancelled() => break,
                Some(Ok(_)) => "the replicator stopped by itself".to_string(),
                Some(Err(e)) => error_text(&Error::Core(e.into_core(&self.database))),
            };
            self.metrics
                .update_replicator(&self.job, &self.database, |v| {
                    v.up = Some(false);
                    v.failures_total += 1;
                });
            self.write_textfile();
            tracing::error!(job = %self.job, database = %self.database, error = %error, restart_in = ?delay, "the replicator failed; restarting it");
            state.down.update(true, false);
            let message = format!(
                "the replicator of {} stopped: {error}; restarting it in {}s",
                self.database,
                delay.as_secs()
            );
            self.send(
                ReplicationEvent::new(
                    ReplicationEventKind::Failed,
                    &self.job,
                    &self.database,
                    message,
                ),
                &mut notices,
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => {}
                () = abort.cancelled() => {}
            }
            delay = (delay * 2).min(MAX_RESTART_DELAY);
        }
        self.metrics
            .update_replicator(&self.job, &self.database, |v| v.up = Some(false));
        self.write_textfile();
        tracing::info!(job = %self.job, database = %self.database, "replication stopped");
        let pending = join_handles(notices);
        let _ = tokio::time::timeout(NOTIFY_GRACE, pending).await;
    }

    /// Takes the replicator's status into the metrics and alerts; `true` once a restarted
    /// replicator runs again.
    fn observe(
        &self,
        status: &StatusHandle,
        state: &mut State,
        attempt: &mut Attempt,
        notices: &mut Vec<JoinHandle<()>>,
    ) -> bool {
        let Some(s) = status.lock().ok().map(|s| s.clone()) else {
            return false;
        };
        notices.retain(|h| !h.is_finished());
        let now = Utc::now();
        let running = s.generation.is_some();
        state.commits.record(&s);
        let resets = s.resets.saturating_sub(attempt.resets);
        let generations = s.generations_started.saturating_sub(attempt.generations);
        attempt.resets = s.resets;
        attempt.generations = s.generations_started;
        self.metrics
            .update_replicator(&self.job, &self.database, |v| {
                v.up = Some(running);
                v.wal_resets_total += resets;
                v.generations_started_total += generations;
            });
        let restored = state.down.update(false, running) == Some(false);
        if restored {
            self.send(
                ReplicationEvent::new(
                    ReplicationEventKind::Restored,
                    &self.job,
                    &self.database,
                    format!("the replicator of {} runs again", self.database),
                ),
                notices,
            );
        }
        // WAL resets within the window.
        let threshold = u64::from(self.alerting.wal_reset_alert);
        let recent = state.resets.add(resets, Instant::now());
        match state
            .resetting
            .update(threshold > 0 && recent >= threshold, recent < threshold)
        {
            Some(true) => {
                let message = format!(
                    "the WAL of {} was reset {recent} times within the last hour behind the replicator's back (another process checkpoints with RESTART or TRUNCATE, or the application restarts); each reset costs a new snapshot: find the process and let it use PASSIVE checkpoints",
                    self.database
                );
                tracing::warn!(job = %self.job, database = %self.database, resets = recent, "frequent WAL resets");
                let event = ReplicationEvent::new(
                    ReplicationEventKind::WalResets,
                    &self.job,
                    &self.database,
                    message,
                );
                self.send(event.with_wal_resets(recent), notices);
            }
            Some(false) => {
                let message = format!(
                    "the WAL of {} was reset {recent} times within the last hour",
                    self.database
                );
                let event = ReplicationEvent::new(
                    ReplicationEventKind::WalResetsCalm,
                    &self.job,
                    &self.database,
                    message,
                );
                self.send(event.with_wal_resets(recent), notices);
            }
            None => {}
        }
        // Per destination.
        if state.destinations.len() < s.destinations.len() {
            state
                .destinations
                .resize_with(s.destinations.len(), Default::default);
        }
        if attempt.shipped.len() < s.destinations.len() {
            attempt.shipped.resize(s.destinations.len(), None);
        }
        let limit = self.alerting.lag_alert;
        for (i, d) in s.destinations.iter().enumerate() {
            let lag = d.lag(now);
            let shipped = shipped_since(attempt.shipped[i].as_ref(), d, &s);
            if d.generation.is_some() {
                attempt.shipped[i] = Some((d.generation.clone(), d.shipped_txid));
            }
            let last_shipped = state
                .commits
                .time_of(d.generation.as_deref(), d.shipped_txid);
            self.metrics
                .update_replica(&self.job, &self.database, &d.destination, |v| {
                    v.lag_seconds = Some(lag.as_secs_f64());
                    v.transactions_shipped_total += shipped;
                    if let Some(t) = last_shipped {
                        v.last_shipped_commit_timestamp_seconds =
                            Some(t.timestamp_millis() as f64 / 1000.0);
                    }
                });
            if !running {
                continue;
            }
            // caught up: back under half the limit, with an upload of this replicator and no
            // error since (a restarted replicator has nothing pending at first)
            let caught_up = lag <= limit / 2 && d.last_upload.is_some() && d.last_error.is_none();
            match state.destinations[i].update(lag > limit, caught_up) {
                Some(true) => {
                    let error = d
                        .last_error
                        .as_ref()
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default();
                    let message = format!(
                        "the replica of {} at {} lags {:.0} s behind the database (alert at {} s){error}; the replicator keeps retrying, commits wait in its queue",
                        self.database,
                        d.destination,
                        lag.as_secs_f64(),
                        limit.as_secs_f64()
                    );
                    tracing::warn!(job = %self.job, database = %self.database, destination = %d.destination, lag = ?lag, "replication lags");
                    let event = self.lag_event(ReplicationEventKind::Lagging, d, lag, message);
                    self.send(event, notices);
                }
                Some(false) => {
                    let message = format!(
                        "the replica of {} at {} caught up (lag {:.1} s)",
                        self.database,
                        d.destination,
                        lag.as_secs_f64()
                    );
                    tracing::info!(job = %self.job, database = %self.database, destination = %d.destination, "replication caught up");
                    let event = self.lag_event(ReplicationEventKind::CaughtUp, d, lag, message);
                    self.send(event, notices);
                }
                None => {}
            }
        }
        if self.textfile.is_some() && state.written.is_none_or(|t| t.elapsed() >= TEXTFILE_EVERY) {
            state.written = Some(Instant::now());
            self.write_textfile();
        }
        restored
    }

    /// A lag alert or notice of destination `d`.
    fn lag_event(
        &self,
        kind: ReplicationEventKind,
        d: &DestinationStatus,
        lag: Duration,
        message: String,
    ) -> ReplicationEvent {
        ReplicationEvent::new(kind, &self.job, &self.database, message)
            .at_destination(&d.destination)
            .with_lag(lag.as_secs_f64(), self.alerting.lag_alert.as_secs_f64())
    }

    /// Sends `event` to the job's notifications in the background.
    fn send(&self, event: ReplicationEvent, notices: &mut Vec<JoinHandle<()>>) {
        let Some(notifier) = self.alerting.notifier.clone() else {
            return;
        };
        notices.push(tokio::spawn(async move {
            notifier.replication_event(&event).await;
        }));
    }

    /// Rewrites the job's textfile: what it holds (backup runs, maybe of another process)
    /// with this replication's series.
    fn write_textfile(&self) {
        let Some(path) = &self.textfile else { return };
        let _guard = TEXTFILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let file = Metrics::new();
        if let Err(e) = file.load_textfile(path) {
            tracing::warn!(job = %self.job, error = %e, "cannot read the previous metrics textfile; counting from zero");
        }
        file.copy_replication(&self.metrics, &self.job);
        if let Err(e) = file.write_textfile(path) {
            tracing::error!(job = %self.job, error = %e, "cannot write the metrics textfile");
        }
    }
}

/// The transactions `d` stored since the last look (`prev`: its generation and transaction
/// then, `None` at the first look of this attempt).
fn shipped_since(
    prev: Option<&(Option<String>, u64)>,
    d: &DestinationStatus,
    s: &ReplicationStatus,
) -> u64 {
    if d.generation.is_none() {
        return 0;
    }
    match prev {
        Some((g, txid)) if *g == d.generation => d.shipped_txid.saturating_sub(*txid),
        // a new generation counts from its snapshot (transaction 0)
        Some(_) => d.shipped_txid,
        // the first look of this attempt: from where a chain it resumed ended, from 0 in a
        // generation it started
        None => match &s.resumed {
            Some(r) if d.generation.as_ref() == Some(&r.generation) => {
                d.shipped_txid.saturating_sub(r.txid)
            }
            _ if s.generations_started > 0 && d.generation == s.generation => d.shipped_txid,
            _ => 0,
        },
    }
}

/// Waits for every handle.
async fn join_handles(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// What the service keeps across attempts.
#[derive(Debug)]
struct State {
    /// The replicator failed and has not run again since.
    down: Episode,
    /// Per destination: lagging past the alert.
    destinations: Vec<Episode>,
    /// WAL resets seen within [`RESET_WINDOW`].
    resets: Window,
    /// Frequent WAL resets.
    resetting: Episode,
    commits: Commits,
    written: Option<Instant>,
}

impl State {
    fn new() -> Self {
        // enough commit times to cover a destination ten minutes behind
        let keep = (Duration::from_secs(600).as_millis() / TICK.as_millis()).max(1) as usize;
        State {
            down: Episode::default(),
            destinations: Vec::new(),
            resets: Window {
                length: RESET_WINDOW,
                times: VecDeque::new(),
            },
            resetting: Episode::default(),
            commits: Commits {
                seen: VecDeque::new(),
                keep,
            },
            written: None,
        }
    }
}

/// A condition alerted once when it starts, with a notice when it ends.
#[derive(Debug, Default)]
struct Episode {
    on: bool,
}

impl Episode {
    /// `Some(true)` when the episode starts now (`start` while off: alert), `Some(false)` when
    /// it ends now (`end` while on: notice), `None` otherwise.
    fn update(&mut self, start: bool, end: bool) -> Option<bool> {
        if !self.on && start {
            self.on = true;
            Some(true)
        } else if self.on && end {
            self.on = false;
            Some(false)
        } else {
            None
        }
    }
}

/// Events counted within a sliding window.
#[derive(Debug)]
struct Window {
    length: Duration,
    times: VecDeque<Instant>,
}

impl Window {
    /// Adds `n` events at `now`; the events within the window ending at `now`.
    fn add(&mut self, n: u64, now: Instant) -> u64 {
        for _ in 0..n {
            self.times.push_back(now);
        }
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.length)
        {
            self.times.pop_front();
        }
        self.times.len() as u64
    }
}

/// What one attempt (one replicator) has reported so far.
#[derive(Debug, Default)]
struct Attempt {
    resets: u64,
    generations: u64,
    shipped: Vec<Option<(Option<String>, u64)>>,
}

/// The capture's (generation, transaction, commit time) at each look, to tell when the newest
/// transaction a destination stored was committed (to the look's precision).
#[derive(Debug)]
struct Commits {
    seen: VecDeque<(String, u64, DateTime<Utc>)>,
    keep: usize,
}

impl Commits {
    fn record(&mut self, s: &ReplicationStatus) {
        let (Some(g), Some(t)) = (&s.generation, s.last_commit) else {
            return;
        };
        if self
            .seen
            .back()
            .is_some_and(|(bg, bt, _)| bg == g && *bt == s.captured_txid)
        {
            return;
        }
        self.seen.push_back((g.clone(), s.captured_txid, t));
        while self.seen.len() > self.keep {
            self.seen.pop_front();
        }
    }

    /// The commit time of the newest transaction seen at or before `txid` of `generation`.
    fn time_of(&self, generation: Option<&str>, txid: u64) -> Option<DateTime<Utc>> {
        let generation = generation?;
        self.seen
            .iter()
            .rev()
            .find(|(g, t, _)| g == generation && *t <= txid)
            .map(|(_, _, time)| *time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kars_backup_sqlite::replicate::ChainEnd;

    #[test]
    fn an_episode_alerts_once_and_ends_once() {
        let mut lag = Episode::default();
        let limit = 10.0;
        let seen: Vec<_> = [1.0, 12.0, 30.0, 8.0, 12.0, 4.0, 3.0, 20.0]
            .iter()
            .map(|l| lag.update(*l > limit, *l <= limit / 2.0))
            .collect();
        assert_eq!(
            seen,
            [
                None,
                Some(true),
                None,
                None,
                None,
                Some(false),
                None,
                Some(true)
            ]
        );
    }

    #[test]
    fn wal_resets_are_counted_within_the_window() {
        let mut w = Window {
            length: Duration::from_secs(60),
            times: VecDeque::new(),
        };
        let t0 = Instant::now();
        assert_eq!(w.add(2, t0), 2);
        assert_eq!(w.add(0, t0 + Duration::from_secs(30)), 2);
        assert_eq!(w.add(1, t0 + Duration::from_secs(50)), 3);
        assert_eq!(w.add(0, t0 + Duration::from_secs(61)), 1);
        assert_eq!(w.add(0, t0 + Duration::from_secs(111)), 0);
    }

    fn status(generation: &str, started: u64, dest: Option<(&str, u64)>) -> ReplicationStatus {
        ReplicationStatus {
            generation: Some(generation.into()),
            generations_started: started,
            destinations: vec![DestinationStatus {
                destination: "file:///r".into(),
                generation: dest.map(|(g, _)| g.to_string()),
                shipped_txid: dest.map_or(0, |(_, t)| t),
                ..DestinationStatus::default()
            }],
            ..ReplicationStatus::default()
        }
    }

    #[test]
    fn transactions_shipped_count_deltas_and_new_generations_from_their_snapshot() {
        // a generation this attempt started: from 0
        let s = status("g1", 1, Some(("g1", 40)));
        assert_eq!(shipped_since(None, &s.destinations[0], &s), 40);
        // a resumed chain: its stored part is not counted again, what this attempt stored is,
        // even when the first look comes after its first upload
        let resumed = |mut s: ReplicationStatus| {
            s.resumed = Some(ChainEnd {
                generation: "g1".into(),
                txid: 40,
            });
            s
        };
        let s = resumed(status("g1", 0, Some(("g1", 40))));
        assert_eq!(shipped_since(None, &s.destinations[0], &s), 0);
        let s = resumed(status("g1", 0, Some(("g1", 52))));
        assert_eq!(shipped_since(None, &s.destinations[0], &s), 12);
        let prev = (Some("g1".to_string()), 40);
        let s = resumed(status("g1", 0, Some(("g1", 55))));
        assert_eq!(shipped_since(Some(&prev), &s.destinations[0], &s), 15);
        // a chain it resumed, then a new generation of this attempt: from its snapshot
        let s = resumed(status("g2", 1, Some(("g2", 3))));
        assert_eq!(shipped_since(None, &s.destinations[0], &s), 3);
        // a new generation (WAL reset): counted from its snapshot
        let s = status("g2", 1, Some(("g2", 7)));
        assert_eq!(shipped_since(Some(&prev), &s.destinations[0], &s), 7);
        // nothing stored yet
        let s = status("g2", 1, None);
        assert_eq!(shipped_since(None, &s.destinations[0], &s), 0);
    }

    #[test]
    fn the_last_shipped_commit_time_is_the_newest_look_at_or_before_it() {
        let mut c = Commits {
            seen: VecDeque::new(),
            keep: 3,
        };
        let t = |s: i64| DateTime::<Utc>::from_timestamp(1_764_000_000 + s, 0).unwrap();
        for (txid, at) in [(5, 1), (5, 1), (9, 2), (14, 3), (20, 4)] {
            c.record(&ReplicationStatus {
                generation: Some("g".into()),
                captured_txid: txid,
                last_commit: Some(t(at)),
                ..ReplicationStatus::default()
            });
        }
        assert_eq!(c.seen.len(), 3, "bounded, repeats not kept");
        assert_eq!(c.time_of(Some("g"), 20), Some(t(4)));
        assert_eq!(c.time_of(Some("g"), 19), Some(t(3)));
        assert_eq!(c.time_of(Some("g"), 8), None, "older than what is kept");
        assert_eq!(c.time_of(Some("other"), 20), None);
        assert_eq!(c.time_of(None, 20), None);
    }
}
