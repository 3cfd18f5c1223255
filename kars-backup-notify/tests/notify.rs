//! Webhooks, pings and commands, received by real local servers and a real shell.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use common::TestServer;
use kars_backup_notify::*;
use tokio_util::sync::CancellationToken;

fn utc(h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 12, 18, h, mi, s).unwrap()
}

fn context() -> RunContext {
    RunContext {
        job: "asset-data".into(),
        run_id: "20241218T020000Z-abc123".into(),
        trigger: Trigger::Scheduled,
        scheduled_at: utc(2, 0, 0),
        started_at: utc(2, 0, 1),
        cancel: CancellationToken::new(),
    }
}

fn failed_report() -> RunReport {
    let outcome = RunOutcome::failure("upload to s3://bucket/kars failed: connection reset")
        .with_bytes(4096)
        .with_destination(DestinationResult::success("local", Some(4096)))
        .with_destination(DestinationResult::failure("s3", "connection reset"));
    RunReport::new(&context(), utc(2, 0, 13), outcome)
}

fn ok_report() -> RunReport {
    let outcome = RunOutcome::success()
        .with_bytes(4096)
        .with_destination(DestinationResult::success("local", Some(4096)));
    RunReport::new(&context(), utc(2, 0, 11), outcome)
}

fn fast(mut w: WebhookOptions) -> WebhookOptions {
    w.retry_delay_ms = 0;
    w
}

#[tokio::test]
async fn webhook_posts_the_run_as_json_with_extra_headers() {
    let mut server = TestServer::start().await;
    let mut hook = fast(WebhookOptions::new(server.url("/hooks/T0PSECRET")));
    hook.headers = BTreeMap::from([("Authorization".into(), "Bearer s3cr3t".into())]);
    let notifier = Notifier::new(NotifyOptions {
        webhooks: vec![hook],
        ..Default::default()
    })
    .unwrap();

    // Default `on = failure`: a success sends nothing.
    assert!(notifier.run_finished(&ok_report()).await.is_empty());

    let deliveries = notifier.run_finished(&failed_report()).await;
    assert_eq!(deliveries.len(), 1);
    assert!(deliveries[0].is_ok(), "{deliveries:?}");
    assert_eq!(
        deliveries[0].target,
        format!("webhook http://{}/…", server.addr)
    );
    let req = server.next().await;
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/T0PSECRET");
    assert_eq!(req.headers["authorization"], "Bearer s3cr3t");
    assert_eq!(req.headers["content-type"], "application/json");
    let body = req.json();
    assert_eq!(body["event"], "run-finished");
    assert_eq!(body["job"], "asset-data");
    assert_eq!(body["run_id"], "20241218T020000Z-abc123");
    assert_eq!(body["status"], "failure");
    assert_eq!(body["trigger"], "scheduled");
    assert_eq!(
        body["error"],
        "upload to s3://bucket/kars failed: connection reset"
    );
    assert_eq!(body["scheduled_at"], "2024-12-18T02:00:00Z");
    assert_eq!(body["started_at"], "2024-12-18T02:00:01Z");
    assert_eq!(body["finished_at"], "2024-12-18T02:00:13Z");
    assert_eq!(body["duration_seconds"], 12.0);
    assert_eq!(body["size_bytes"], 4096);
    assert_eq!(body["destinations"][0]["name"], "local");
    assert_eq!(body["destinations"][0]["status"], "success");
    assert_eq!(body["destinations"][1]["name"], "s3");
    assert_eq!(body["destinations"][1]["error"], "connection reset");
    assert!(body["tool"].as_str().unwrap().starts_with("kars-backup "));
    assert!(!body["host"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn webhook_retries_server_errors_but_not_client_errors() {
    let mut server = TestServer::start().await;
    let mut hook = fast(WebhookOptions::new(server.url("/hook")));
    hook.on = NotifyOn::Always;
    let notifier = Notifier::new(NotifyOptions {
        webhooks: vec![hook],
        ..Default::default()
    })
    .unwrap();

    server.respond_with(&[500, 503]);
    let d = notifier.run_finished(&ok_report()).await;
    assert!(d[0].is_ok(), "{d:?}");
    assert_eq!(d[0].attempts, 3);
    assert_eq!(server.drain().len(), 3);

    server.respond_with(&[500, 500, 500]);
    let d = notifier.run_finished(&ok_report()).await;
    assert_eq!(d[0].attempts, 3); // 1 + 2 retries
    assert!(d[0].error.as_deref().unwrap().contains("500"), "{d:?}");
    server.drain();

    server.respond_with(&[404]);
    let d = notifier.run_finished(&ok_report()).await;
    assert_eq!(d[0].attempts, 1);
    assert!(d[0].error.as_deref().unwrap().contains("404"), "{d:?}");
}

#[tokio::test]
async fn an_unreachable_webhook_fails_without_leaking_its_url() {
    // A port that was just free: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut hook = fast(WebhookOptions::new(format!(
        "http://{addr}/hooks/T0PSECRET"
    )));
    hook.retries = 1;
    let notifier = Notifier::new(NotifyOptions {
        webhooks: vec![hook],
        ..Default::default()
    })
    .unwrap();
    let d = notifier.run_finished(&failed_report()).await;
    assert_eq!(d[0].attempts, 2);
    let error = d[0].error.clone().unwrap();
    assert!(
        !error.contains("T0PSECRET") && !d[0].target.contains("T0PSECRET"),
        "{d:?}"
    );
}

#[tokio::test]
async fn hc_ping_style_start_success_and_fail() {
    let mut server = TestServer::start().await;
    let uuid = "5f0e1a2b-0000-4000-8000-00000000abcd";
    let notifier = Notifier::new(NotifyOptions {
        pings: vec![PingOptions::hc_ping(server.url(&format!("/{uuid}")))],
        ..Default::default()
    })
    .unwrap();

    let d = notifier.run_started(&context()).await;
    assert!(d[0].is_ok(), "{d:?}");
    assert!(d[0].target.starts_with("ping start http://"), "{d:?}");
    let start = server.next().await;
    assert_eq!(
        (start.method.as_str(), start.path.as_str()),
        ("GET", format!("/{uuid}/start").as_str())
    );

    notifier.run_finished(&ok_report()).await;
    let success = server.next().await;
    assert_eq!(
        (success.method.as_str(), success.path.as_str()),
        ("GET", format!("/{uuid}").as_str())
    );

    notifier.run_finished(&failed_report()).await;
    let fail = server.next().await;
    assert_eq!(
        (fail.method.as_str(), fail.path.as_str()),
        ("GET", format!("/{uuid}/fail").as_str())
    );
    assert!(server.drain().is_empty());
}

#[tokio::test]
async fn explicit_post_pings_carry_a_summary() {
    let mut server = TestServer::start().await;
    let pings = PingOptions {
        start: Some(server.url("/begin")),
        fail: Some(server.url("/down?token=abc")),
        method: PingMethod::Post,
        retry_delay_ms: 0,
        ..PingOptions::hc_ping(server.url("/ok"))
    };
    assert_eq!(pings.success_url(), Some(server.url("/ok")));
    let notifier = Notifier::new(NotifyOptions {
        pings: vec![pings],
        ..Default::default()
    })
    .unwrap();
    notifier.run_started(&context()).await;
    let start = server.next().await;
    assert_eq!(
        (start.method.as_str(), start.path.as_str()),
        ("POST", "/begin")
    );
    assert!(
        start.text().contains("20241218T020000Z-abc123"),
        "{}",
        start.text()
    );

    server.respond_with(&[502]); // retried
    let d = notifier.run_finished(&failed_report()).await;
    assert_eq!(d[0].attempts, 2, "{d:?}");
    let fail = server.next().await;
    assert_eq!(fail.path, "/down?token=abc");
    assert_eq!(fail.headers["content-type"], "text/plain; charset=utf-8");
    let text = fail.text();
    assert!(
        text.contains("asset-data") && text.contains("failure"),
        "{text}"
    );
    assert!(
        text.contains("error: upload to s3://bucket/kars failed"),
        "{text}"
    );
    assert!(
        text.contains("destination s3: failure (connection reset)"),
        "{text}"
    );
    assert!(!d[0].target.contains("token=abc"), "{d:?}");
}

#[tokio::test]
async fn command_gets_the_run_in_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env.txt");
    let mut cmd = CommandOptions::new(
        r#"printf '%s\n' "$KARS_JOB" "$KARS_RUN_ID" "$KARS_STATUS" "$KARS_ERROR" "$KARS_TRIGGER" \
           "$KARS_STARTED_AT" "$KARS_FINISHED_AT" "$KARS_DURATION_SECONDS" "$KARS_SIZE_BYTES" \
           "$KARS_DESTINATIONS" "$KARS_FAILED_DESTINATIONS" "$EXTRA" > "$OUT_FILE"
           printf '%s' "$KARS_REPORT_JSON" > "$OUT_FILE.json""#,
    );
    cmd.env = BTreeMap::from([
        ("OUT_FILE".into(), out.display().to_string()),
        ("EXTRA".into(), "extra value".into()),
    ]);
    let notifier = Notifier::new(NotifyOptions {
        commands: vec![cmd],
        ..Default::default()
    })
    .unwrap();
    let d = notifier.run_finished(&failed_report()).await;
    assert_eq!(
        d,
        vec![Delivery {
            target: "command #1".into(),
            attempts: 1,
            error: None
        }]
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            "asset-data",
            "20241218T020000Z-abc123",
            "failure",
            "upload to s3://bucket/kars failed: connection reset",
            "scheduled",
            "2024-12-18T02:00:01Z",
            "2024-12-18T02:00:13Z",
            "12.000",
            "4096",
            "local,s3",
            "s3",
            "extra value",
        ]
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("env.txt.json")).unwrap())
            .unwrap();
    assert_eq!(json["run_id"], "20241218T020000Z-abc123");
}

#[tokio::test]
async fn failing_and_hanging_commands_are_reported_not_raised() {
    let failing = CommandOptions::new("echo oops >&2; exit 3");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // A command that starts a child and waits for it: the timeout must stop both.
    let mut hanging = CommandOptions::new(format!(
        "sleep 30 & echo $! > '{}'; wait",
        pid_file.display()
    ));
    hanging.timeout_secs = 1;
    let notifier = Notifier::new(NotifyOptions {
        commands: vec![failing, hanging],
        ..Default::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let d = notifier.run_finished(&failed_report()).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        d[0].error.as_deref().unwrap().contains("exit status: 3"),
        "{d:?}"
    );
    assert!(
        d[1].error.as_deref().unwrap().contains("timed out"),
        "{d:?}"
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    // SIGKILL lands asynchronously: give it up to 5 s to show. Gone, or a zombie waiting for
    // its (container's) init to reap it, both count as stopped.
    let stopped = || {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !stopped() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(stopped(), "the command's child is still running");
}

#[test]
fn bad_options_are_refused_with_clear_errors() {
    let err = Notifier::new(NotifyOptions {
        webhooks: vec![WebhookOptions::new("ftp://example.com/T0K3N")],
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("ftp"), "{err}");
    assert!(!err.to_string().contains("T0K3N"), "{err}");
    let mut hook = WebhookOptions::new("https://example.com/");
    hook.headers.insert("Bad Header".into(), "v".into());
    let err = Notifier::new(NotifyOptions {
        webhooks: vec![hook],
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, Error::InvalidHeader { .. }), "{err}");
    let err = Notifier::new(NotifyOptions {
        pings: vec![PingOptions::default()],
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("no URL"), "{err}");
    let err = Notifier::new(NotifyOptions {
        commands: vec![CommandOptions::new("  ")],
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn options_deserialize_from_kebab_case_with_defaults() {
    let options: NotifyOptions = serde_json::from_value(serde_json::json!({
        "webhooks": [{"url": "https://hooks.example.com/x", "on": "always", "headers": {"X-Token": "t"}}],
        "commands": [{"command": "logger backup failed"}],
        "pings": [{"url": "https://hc-ping.com/uuid", "method": "post", "retry-delay-ms": 5}],
    }))
    .unwrap();
    assert_eq!(options.webhooks[0].on, NotifyOn::Always);
    assert_eq!(options.webhooks[0].timeout_secs, 10);
    assert_eq!(options.webhooks[0].retries, 2);
    assert_eq!(options.commands[0].on, NotifyOn::Failure);
    assert_eq!(
        options.pings[0].fail_url().as_deref(),
        Some("https://hc-ping.com/uuid/fail")
    );
    assert_eq!(options.pings[0].retry_delay_ms, 5);
    let unknown = serde_json::from_value::<WebhookOptions>(
        serde_json::json!({"url": "https://x/", "bogus": 1}),
    );
    assert!(unknown.is_err());
}

#[tokio::test]
async fn a_replication_alert_goes_where_failures_go_and_its_notice_follows() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.txt");
    let mut cmd = CommandOptions::new(
        r#"printf '%s|%s|%s|%s|%s\n' "$KARS_EVENT" "$KARS_STATUS" "$KARS_DESTINATION" "$KARS_LAG_SECONDS" "$KARS_ERROR" >> "$OUT_FILE""#,
    );
    cmd.env = BTreeMap::from([("OUT_FILE".into(), out.display().to_string())]);
    let only_successes = WebhookOptions {
        on: NotifyOn::Success,
        ..fast(WebhookOptions::new(server.url("/successes")))
    };
    let notifier = Notifier::new(NotifyOptions {
        webhooks: vec![
            fast(WebhookOptions::new(server.url("/hook"))),
            only_successes,
        ],
        commands: vec![cmd],
        pings: vec![PingOptions::hc_ping(server.url("/ping"))],
    })
    .unwrap();

    let alert = ReplicationEvent::new(
        ReplicationEventKind::Lagging,
        "kars",
        "assets.db",
        "the replica lags",
    )
    .at_destination("s3://b/r")
    .with_lag(75.5, 60.0);
    let d = notifier.replication_event(&alert).await;
    assert!(d.iter().all(Delivery::is_ok), "{d:?}");
    assert_eq!(d.len(), 3, "webhook, command, fail ping: {d:?}");
    let mut got = [server.next().await, server.next().await];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[1].path, "/ping/fail");
    let body = got[0].json();
    assert_eq!(body["event"], "replication-lagging");
    assert_eq!(body["status"], "failure");
    assert_eq!(body["destination"], "s3://b/r");
    assert_eq!(body["lag_seconds"], 75.5);

    let notice = ReplicationEvent::new(
        ReplicationEventKind::CaughtUp,
        "kars",
        "assets.db",
        "caught up",
    )
    .at_destination("s3://b/r")
    .with_lag(0.0, 60.0);
    notifier.replication_event(&notice).await;
    let mut got = [server.next().await, server.next().await];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got[0].path, "/hook", "a notice goes where its alert went");
    assert_eq!(got[0].json()["event"], "replication-caught-up");
    assert_eq!(got[1].path, "/ping");
    assert!(
        server.drain().is_empty(),
        "nothing to the successes-only hook"
    );
    let lines = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        vec![
            "replication-lagging|failure|s3://b/r|75.500|the replica lags",
            "replication-caught-up|success|s3://b/r|0.000|",
        ]
    );
}
