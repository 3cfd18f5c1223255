//! `kars-backup daemon --config FILE`: the config's jobs on their cron schedules, and the
//! continuous replication of those with a `[job.replicate]`, until SIGTERM/SIGINT.

use std::sync::Arc;

use kars_backup::job::replication_service::replication_services;
use kars_backup::job::runner::{load_textfiles, scheduled_jobs};
use kars_backup::notify::{Metrics, MetricsServer};
use kars_backup::schedule::{ShutdownSignals, SystemClock};

use crate::args::DaemonArgs;
use crate::exit;

pub(crate) async fn run(a: DaemonArgs) -> anyhow::Result<u8> {
    let config = kars_backup::job::load_config(&a.config)?;
    let selected = kars_backup::job::select_jobs(&config, &a.job)?;
    let signals = ShutdownSignals::install()?;
    let metrics = Metrics::new();
    // /metrics counters go on from the jobs' textfiles
    load_textfiles(&config, &selected, &metrics);
    let scheduler = kars_backup::job::scheduler_for(&config, &metrics)?;
    let jobs = scheduled_jobs(&selected, !a.job.is_empty(), &signals.forced(), &metrics)?;
    let replications = replication_services(&config, &selected, &metrics)?;
    for job in &jobs {
        tracing::info!(
            job = %job.name,
            schedule = %job.schedule.describe(),
            catch_up = job.catch_up,
            "scheduled"
        );
    }
    let shutdown = signals.graceful();
    let replicating: Vec<_> = replications
        .into_iter()
        .map(|r| {
            tracing::info!(job = %r.job(), replication = %r.describe(), "replicating");
            tokio::spawn(r.run(shutdown.clone(), signals.forced()))
        })
        .collect();
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
    if jobs.is_empty() {
        // replication only
        shutdown.cancelled().await;
    } else {
        scheduler
            .run(jobs, Arc::new(SystemClock), shutdown.clone())
            .await?;
    }
    shutdown.cancel();
    futures::future::join_all(replicating).await;
    if let Some(task) = server_task
        && let Ok(Err(e)) = task.await
    {
        tracing::error!(error = %e, "the metrics server failed");
    }
    tracing::info!("daemon stopped");
    Ok(exit::OK)
}
