//! Metrics: text rendered and parsed back, the textfile, the /metrics endpoint, and the
//! scheduler feeding metrics and a webhook through `Alerts`.

mod common;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use kars_backup_notify::*;
use kars_backup_schedule::{
    DynClock, ManualClock, Schedule, ScheduledJob, Scheduler, SchedulerEvent, runner_fn,
};
use tokio_util::sync::CancellationToken;

fn utc(d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 12, d, h, mi, s).unwrap()
}

fn report(job: &str, start: DateTime<Utc>, secs: i64, outcome: RunOutcome) -> RunReport {
    let ctx = RunContext {
        job: job.into(),
        run_id: format!("run-{}", start.timestamp()),
        trigger: Trigger::Scheduled,
        scheduled_at: start,
        started_at: start,
        cancel: CancellationToken::new(),
    };
    RunReport::new(&ctx, start + chrono::TimeDelta::seconds(secs), outcome)
}

fn value(samples: &[Sample], name: &str, job: &str, destination: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.get("job").map(String::as_str) == Some(job)
                && s.labels.get("destination").map(String::as_str) == Some(destination)
        })
        .map(|s| s.value)
}

fn recorded() -> Metrics {
    let m = Metrics::new();
    m.register("asset-data", ["local", "s3"]);
    m.register("pg \"main\"", ["local"]);
    // Day 18: both destinations succeed.
    m.record(&report(
        "asset-data",
        utc(18, 2, 0, 0),
        12,
        RunOutcome::success()
            .with_bytes(4096)
            .with_destination(DestinationResult::success("local", Some(4096)))
            .with_destination(DestinationResult::success("s3", Some(4096))),
    ));
    // Day 19: s3 fails.
    m.record(&report(
        "asset-data",
        utc(19, 2, 0, 0),
        30,
        RunOutcome::success()
            .with_bytes(5000)
            .with_destination(DestinationResult::success("local", Some(5000)))
            .with_destination(DestinationResult::failure("s3", "timeout")),
    ));
    // The PostgreSQL job fails before any destination: counts for its registered one.
    m.record(&report(
        "pg \"main\"",
        utc(19, 3, 0, 0),
        2,
        RunOutcome::failure("pg_dump failed"),
    ));
    m
}

#[test]
fn rendered_text_parses_back_to_the_recorded_values() {
    let m = recorded();
    let text = m.render();
    assert!(
        text.contains("# TYPE kars_backup_failures_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE kars_backup_last_success_timestamp_seconds gauge"),
        "{text}"
    );
    let samples = parse_text(&text).unwrap();
    let day18 = utc(18, 2, 0, 12).timestamp() as f64;
    let day19 = utc(19, 2, 0, 30).timestamp() as f64;
    let v = |name: &str, job: &str, d: &str| value(&samples, name, job, d);
    assert_eq!(
        v(
            "kars_backup_last_success_timestamp_seconds",
            "asset-data",
            "local"
        ),
        Some(day19)
    );
    assert_eq!(
        v(
            "kars_backup_last_success_timestamp_seconds",
            "asset-data",
            "s3"
        ),
        Some(day18)
    );
    assert_eq!(
        v("kars_backup_last_run_timestamp_seconds", "asset-data", "s3"),
        Some(day19)
    );
    assert_eq!(
        v("kars_backup_last_run_success", "asset-data", "s3"),
        Some(0.0)
    );
    assert_eq!(
        v("kars_backup_last_run_success", "asset-data", "local"),
        Some(1.0)
    );
    assert_eq!(
        v("kars_backup_last_duration_seconds", "asset-data", "local"),
        Some(30.0)
    );
    assert_eq!(
        v("kars_backup_last_size_bytes", "asset-data", "local"),
        Some(5000.0)
    );
    assert_eq!(
        v("kars_backup_last_size_bytes", "asset-data", "s3"),
        Some(4096.0)
    );
    assert_eq!(v("kars_backup_runs_total", "asset-data", "s3"), Some(2.0));
    assert_eq!(
        v("kars_backup_failures_total", "asset-data", "s3"),
        Some(1.0)
    );
    assert_eq!(
        v("kars_backup_failures_total", "asset-data", "local"),
        Some(0.0)
    );
    // Label values are escaped and parsed back.
    assert_eq!(
        v("kars_backup_failures_total", "pg \"main\"", "local"),
        Some(1.0)
    );
    assert_eq!(
        v(
            "kars_backup_last_success_timestamp_seconds",
            "pg \"main\"",
            "local"
        ),
        None
    );
    assert_eq!(m.get("asset-data", "s3").unwrap().failures_total, 1);
}

#[test]
fn a_job_without_registered_destinations_records_under_all() {
    let m = Metrics::new();
    m.record(&report(
        "adhoc",
        utc(18, 1, 0, 0),
        1,
        RunOutcome::failure("boom"),
    ));
    assert_eq!(
        m.series(),
        vec![("adhoc".to_string(), ALL_DESTINATIONS.to_string())]
    );
    assert_eq!(m.get("adhoc", "all").unwrap().failures_total, 1);
}

#[test]
fn textfile_is_written_atomically_and_one_shot_runs_keep_counting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kars-backup.prom");
    let first = recorded();
    first.write_textfile(&path).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary file left behind"
    );
    let samples = parse_text(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        value(&samples, "kars_backup_runs_total", "asset-data", "local"),
        Some(2.0)
    );

    // The next one-shot process: load, record, write.
    let next = Metrics::new();
    assert!(next.load_textfile(&path).unwrap());
    next.record(&report(
        "asset-data",
        utc(20, 2, 0, 0),
        5,
        RunOutcome::success().with_destination(DestinationResult::success("s3", Some(6000))),
    ));
    next.write_textfile(&path).unwrap();
    let samples = parse_text(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        value(&samples, "kars_backup_runs_total", "asset-data", "s3"),
        Some(3.0)
    );
    assert_eq!(
        value(&samples, "kars_backup_failures_total", "asset-data", "s3"),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "kars_backup_last_size_bytes", "asset-data", "s3"),
        Some(6000.0)
    );
    assert_eq!(
        value(
            &samples,
            "kars_backup_last_success_timestamp_seconds",
            "asset-data",
            "local"
        ),
        Some(utc(19, 2, 0, 30).timestamp() as f64)
    );
    assert!(
        !Metrics::new()
            .load_textfile(&dir.path().join("missing.prom"))
            .unwrap()
    );
    std::fs::write(
        dir.path().join("bad.prom"),
        "kars_backup_runs_total{job=\"x\" 1\n",
    )
    .unwrap();
    let err = Metrics::new()
        .load_textfile(&dir.path().join("bad.prom"))
        .unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[tokio::test]
async fn metrics_endpoint_serves_the_text_format() {
    let metrics = recorded();
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), metrics.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(shutdown.clone()));
    let client = reqwest::Client::new();

    let resp = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], TEXT_FORMAT);
    let samples = parse_text(&resp.text().await.unwrap()).unwrap();
    assert_eq!(
        value(&samples, "kars_backup_failures_total", "asset-data", "s3"),
        Some(1.0)
    );

    // New runs show up on the next scrape.
    metrics.record(&report(
        "asset-data",
        utc(20, 2, 0, 0),
        1,
        RunOutcome::failure("x"),
    ));
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_text(&text).unwrap();
    assert_eq!(
        value(&samples, "kars_backup_failures_total", "asset-data", "s3"),
        Some(2.0)
    );

    let missing = client
        .get(format!("http://{addr}/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let post = client
        .post(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn binding_a_busy_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = MetricsServer::bind(taken.local_addr().unwrap(), Metrics::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot listen for /metrics"),
        "{err}"
    );
}

#[tokio::test]
async fn the_scheduler_feeds_alerts_with_one_run_id_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut hooks = common::TestServer::start().await;
    let mut hook = WebhookOptions::new(hooks.url("/hook"));
    hook.retry_delay_ms = 0;
    let notifier = Notifier::new(NotifyOptions {
        webhooks: vec![hook],
        pings: vec![PingOptions::hc_ping(hooks.url("/ping"))],
        ..Default::default()
    })
    .unwrap();
    let metrics = Metrics::new();
    metrics.register("nightly", ["local"]);
    let alerts = Alerts::new()
        .with_job("nightly", notifier)
        .with_metrics(metrics.clone());

    let runner = runner_fn(|ctx| async move {
        RunOutcome::failure(format!("disk full during run {}", ctx.run_id))
            .with_destination(DestinationResult::failure("local", "disk full"))
    });
    let job = ScheduledJob::new(
        "nightly",
        Schedule::parse("0 2 * * *", "UTC").unwrap(),
        runner,
    );
    let clock = ManualClock::new(utc(18, 1, 0, 0));
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let scheduler = Scheduler::new(dir.path())
        .with_observer(Arc::new(alerts))
        .with_events(tx);
    let task = tokio::spawn({
        let clock: DynClock = Arc::new(clock.clone());
        let shutdown = shutdown.clone();
        async move { scheduler.run(vec![job], clock, shutdown).await }
    });
    let mut run_id = None;
    while run_id.is_none() {
        match events.recv().await.unwrap() {
            SchedulerEvent::Waiting { next, .. } if next == utc(18, 2, 0, 0) => clock.set(next),
            SchedulerEvent::RunStarted { run_id: id, .. } => run_id = Some(id),
            _ => {}
        }
    }
    let run_id = run_id.unwrap();
    let start = hooks.next().await;
    assert_eq!(start.path, "/ping/start");
    // The webhook and the fail ping go out concurrently.
    let mut finish = [hooks.next().await, hooks.next().await];
    finish.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(finish[0].path, "/hook");
    assert_eq!(finish[1].path, "/ping/fail");
    let body = finish[0].json();
    assert_eq!(body["run_id"], run_id.as_str());
    assert_eq!(body["error"], format!("disk full during run {run_id}"));
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let values = metrics.get("nightly", "local").unwrap();
    assert_eq!((values.runs_total, values.failures_total), (1, 1));
    assert_eq!(values.last_run_success, Some(false));
}

#[test]
fn an_independent_parser_reads_the_same_values_and_types() {
    // prometheus-parse: a third-party parser of the text format, as a cross-check of ours.
    let m = Metrics::new();
    m.register("asset-data", ["local", "s3"]);
    m.record(&report(
        "asset-data",
        utc(18, 2, 0, 0),
        12,
        RunOutcome::success()
            .with_bytes(4096)
            .with_destination(DestinationResult::success("local", Some(4096)))
            .with_destination(DestinationResult::failure("s3", "timeout")),
    ));
    let text = m.render();
    let ours = parse_text(&text).unwrap();
    let theirs = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let names: Vec<String> = theirs
        .samples
        .iter()
        .map(|s| format!("{} {}", s.metric, s.labels.get("destination").unwrap()))
        .collect();
    assert_eq!(theirs.samples.len(), ours.len(), "{text}\n{names:#?}");
    // 2 destinations x 7 families, less the failed s3's unknown success time and size.
    assert_eq!(ours.len(), 12);
    for sample in &theirs.samples {
        let (job, destination) = (
            sample.labels.get("job").unwrap(),
            sample.labels.get("destination").unwrap(),
        );
        let expected = value(&ours, &sample.metric, job, destination).unwrap();
        match sample.value {
            prometheus_parse::Value::Counter(v) => {
                assert!(sample.metric.ends_with("_total"), "{}", sample.metric);
                assert_eq!(v, expected);
            }
            prometheus_parse::Value::Gauge(v) => {
                assert!(!sample.metric.ends_with("_total"), "{}", sample.metric);
                assert_eq!(v, expected);
            }
            ref other => panic!("unexpected type for {}: {other:?}", sample.metric),
        }
    }
    assert!(
        theirs
            .docs
            .contains_key("kars_backup_last_success_timestamp_seconds")
    );
}

#[test]
fn replication_series_render_parse_and_survive_a_textfile_rewrite() {
    let live = Metrics::new();
    live.register("kars", ["file:///r"]);
    live.update_replica("kars", "assets.db", "file:///r", |v| {
        v.lag_seconds = Some(2.5);
        v.last_shipped_commit_timestamp_seconds = Some(1_764_000_000.25);
        v.transactions_shipped_total = 42;
    });
    live.update_replicator("kars", "assets.db", |v| {
        v.up = Some(true);
        v.wal_resets_total = 1;
        v.generations_started_total = 2;
    });
    let text = live.render();
    // the official parser takes it
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let lag = scrape
        .samples
        .iter()
        .find(|s| s.metric == "kars_backup_replication_lag_seconds")
        .unwrap();
    assert_eq!(lag.labels.get("database"), Some("assets.db"));
    assert!(matches!(lag.value, prometheus_parse::Value::Gauge(v) if v == 2.5));
    let resets = scrape
        .samples
        .iter()
        .find(|s| s.metric == "kars_backup_replication_wal_resets_total")
        .unwrap();
    assert_eq!(resets.labels.get("destination"), None);

    // a backup run rewriting the job's textfile (load, record, write) keeps them
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kars.prom");
    live.write_textfile(&path).unwrap();
    let rewrite = Metrics::new();
    assert!(rewrite.load_textfile(&path).unwrap());
    rewrite.record(&report("kars", utc(1, 2, 0, 0), 3, RunOutcome::success()));
    assert_eq!(
        rewrite.replica("kars", "assets.db", "file:///r"),
        live.replica("kars", "assets.db", "file:///r")
    );
    assert_eq!(
        rewrite.replicator("kars", "assets.db"),
        live.replicator("kars", "assets.db")
    );
    // and the replication side overlays the newest values on what the file holds
    live.update_replica("kars", "assets.db", "file:///r", |v| {
        v.lag_seconds = Some(0.0)
    });
    rewrite.copy_replication(&live, "kars");
    let samples = parse_text(&rewrite.render()).unwrap();
    assert_eq!(
        value(
            &samples,
            "kars_backup_replication_lag_seconds",
            "kars",
            "file:///r"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "kars_backup_runs_total", "kars", "file:///r"),
        Some(1.0)
    );
    // no replication, no replication families
    assert!(!Metrics::new().render().contains("replication"));
}
