//! Scheduling for kars-backup: when jobs run, and that each runs once at a time.
//!
//! - [`Schedule`]: a 5-field cron expression (`0 2 * * *`) or nickname (`@daily`) in an IANA
//!   time zone, DST-correct (Vixie cron semantics, through `croner` and `chrono-tz`).
//! - [`Clock`]: [`SystemClock`] for real, [`ManualClock`] for tests that never sleep.
//! - [`JobLock`]: a per-job run lock that holds across processes (an OS file lock).
//! - [`StateStore`] / [`JobState`]: the last run per job, persisted as JSON, for catch-up.
//! - [`Scheduler`]: the loop that runs [`ScheduledJob`]s through a caller's [`JobRunner`],
//!   tells [`RunObserver`]s (notifications, metrics), and stops on a [`CancellationToken`]
//!   (see [`ShutdownSignals`] for SIGTERM/SIGINT).
//! - [`run_span`]: the tracing span carrying a run's id.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> kars_backup_schedule::Result<()> {
//! use std::sync::Arc;
//! use chrono::{TimeZone, Utc};
//! use kars_backup_schedule::*;
//!
//! let dir = std::env::temp_dir().join(format!("kars-schedule-doc-{}", std::process::id()));
//! let clock = ManualClock::new(Utc.with_ymd_and_hms(2024, 3, 1, 1, 59, 0).unwrap());
//! let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
//! let job = ScheduledJob::new(
//!     "nightly",
//!     Schedule::parse("0 2 * * *", "UTC")?,
//!     runner_fn(|_ctx| async { RunOutcome::success().with_bytes(1) }),
//! );
//! let shutdown = CancellationToken::new();
//! let scheduler = Scheduler::new(&dir).with_events(tx);
//! let task = tokio::spawn({
//!     let (clock, shutdown) = (clock.clone(), shutdown.clone());
//!     async move { scheduler.run(vec![job], Arc::new(clock), shutdown).await }
//! });
//! let mut advanced = false;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         // The loop waits for 02:00: move the clock there (tests never sleep).
//!         SchedulerEvent::Waiting { next, .. } if !advanced => { clock.set(next); advanced = true; }
//!         SchedulerEvent::RunFinished { report } => {
//!             assert!(report.outcome.is_success());
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! shutdown.cancel();
//! task.await.unwrap()?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```

pub mod clock;
pub mod cron;
pub mod error;
mod job_name;
pub mod lock;
pub mod outcome;
pub mod scheduler;
pub mod signal;
pub mod span;
pub mod state;

pub use chrono_tz::Tz;
pub use clock::{Clock, DynClock, ManualClock, SystemClock};
pub use cron::{Schedule, parse_time_zone};
pub use error::{Error, Result};
pub use lock::{JobLock, LockHolder};
pub use outcome::{
    DestinationResult, DynJobRunner, DynRunObserver, FnRunner, JobRunner, RunContext, RunObserver,
    RunOutcome, RunReport, RunStatus, Trigger, runner_fn,
};
pub use scheduler::{ScheduledJob, Scheduler, SchedulerEvent};
pub use signal::ShutdownSignals;
pub use span::run_span;
pub use state::{JobState, StateStore, validate_job_name};
pub use tokio_util::sync::CancellationToken;
