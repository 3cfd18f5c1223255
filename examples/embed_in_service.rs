//! A service that backs up its SQLite database on a schedule, as `kars-backup daemon` would:
//! locally and, encrypted, on S3, each with its tiers and retention; a verification plan for
//! restores; a webhook alert on failure; Prometheus metrics. Environment: `APP_DB`, `BACKUP_DIR`,
//! `BACKUP_S3` (credentials from `AWS_*`), `BACKUP_KEY` (age identity, made when missing: keep a
//! copy offline), `BACKUP_CRON`, `STATE_DIR`, `ALERT_WEBHOOK`, `METRICS_ADDR` (`/metrics`),
//! `METRICS_TEXTFILE`, `BACKUP_RUNS` (stop after that many runs; else SIGTERM or Ctrl-C).
//! `cargo run -p kars-backup --features job,s3 --example embed_in_service`

use std::path::PathBuf;
use std::sync::Arc;

use kars_backup::core::Tier;
use kars_backup::core::checks::{Checks, parse_min_rows};
use kars_backup::job::{Destination, Encryption, Job, SourceOptions, scheduler_of};
use kars_backup::notify::{Metrics, MetricsServer, NotifyOptions, WebhookOptions};
use kars_backup::schedule::{Schedule, SchedulerEvent, ShutdownSignals, SystemClock};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The service's backup job (also what `restore_with_fallback.rs` restores from).
pub(crate) fn job() -> Result<Job, Error> {
    let key = PathBuf::from(var("BACKUP_KEY", "backup-key.txt"));
    if !key.exists() {
        kars_backup::encrypt::generate_identity_file(&key)?;
    }
    // Local: daily and weekly backups, the newest two kept. S3: every tier, thinned to 7
    // daily, 4 weekly, 12 monthly and every yearly backup.
    let local = Destination::new(var("BACKUP_DIR", "backups"))?
        .with_tiers(vec![Tier::Daily, Tier::Weekly])
        .with_retention("last=2".parse()?);
    let s3 = Destination::new(var("BACKUP_S3", "s3://backups/app"))?
        .with_tiers(Tier::ALL.to_vec())
        .with_retention("daily=7,weekly=4,monthly=12,yearly=all".parse()?);
    // Restores and drills check the integrity, the row counts and that `users` has a row.
    let mut checks = Checks::default();
    checks.min_rows.push(parse_min_rows("users=1")?);
    let mut notify = NotifyOptions::default(); // a webhook alert on failure
    notify
        .webhooks
        .extend(std::env::var("ALERT_WEBHOOK").map(WebhookOptions::new));
    let encryption = Encryption::to_identity_file(key);
    let cron = Schedule::parse(&var("BACKUP_CRON", "0 3 * * *"), "UTC")?;
    let job = Job::builder("app-db")
        .source_url(var("APP_DB", "app.db"), SourceOptions::default())
        .destination(local)
        .destination(s3)
        .encryption(encryption)
        .checks(checks)
        .notify(notify)
        .schedule(cron, true);
    Ok(job.build()?)
}

#[tokio::main]
pub(crate) async fn main() -> Result<(), Error> {
    let job = job()?;
    let signals = ShutdownSignals::install()?;
    let (shutdown, metrics) = (signals.graceful(), Metrics::new());
    let textfile = std::env::var_os("METRICS_TEXTFILE").map(PathBuf::from);
    let state = var("STATE_DIR", "state");
    let (events, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let jobs = std::slice::from_ref(&job);
    let scheduler = scheduler_of(state, jobs, &metrics, textfile.as_deref())?;
    let scheduler = scheduler.with_events(events);
    let scheduled = job.scheduled(&signals.forced(), &metrics)?;
    if let Ok(addr) = std::env::var("METRICS_ADDR") {
        let server = MetricsServer::bind(addr.parse()?, metrics.clone()).await?;
        tokio::spawn(server.serve(shutdown.clone()));
    }
    // Stop after BACKUP_RUNS runs (a first shutdown lets a run finish; a second aborts it).
    let runs: usize = var("BACKUP_RUNS", "0").parse()?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut count = 0;
        while let Some(event) = finished.recv().await {
            count += usize::from(matches!(event, SchedulerEvent::RunFinished { .. }));
            if count == runs {
                stop.cancel();
            }
        }
    });
    // A first backup at start, then on schedule.
    let runner = scheduled.runner.clone();
    scheduler
        .run_now(job.name(), runner, &SystemClock, shutdown.clone())
        .await?;
    scheduler
        .run(vec![scheduled], Arc::new(SystemClock), shutdown)
        .await?;
    Ok(())
}
