//! Runs `examples/embed_in_service.rs` and `examples/restore_with_fallback.rs` as a service
//! would run: child processes of this test binary (`harness = false`: with `KARS_EXAMPLE` set it
//! runs that example's `main`), against the real S3 emulator of `scripts/services.sh up` (under
//! `CI=true` a missing emulator fails the test), a local directory, a webhook listener on
//! 127.0.0.1 and a metrics textfile.
//!
//! The service backs up twice in one process (at start and at the next minute of its
//! every-minute schedule), then once more after each change of the database, then fails once on
//! a database that is not one. Then the newest backup is damaged in both destinations and the
//! restore example falls back to the one before.

// The restore example includes the service's (its job), so the service is reached through it.
#[path = "../../examples/restore_with_fallback.rs"]
mod restore_with_fallback;
use restore_with_fallback::service as embed_in_service;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use kars_backup::core::testing::service_var;
use kars_backup::core::{BackupSink, Repository, SinkExt, Tier};
use kars_backup::notify::{RunStatus, WebhookPayload, parse_text};
use kars_backup::storage::s3::S3Builder;

fn main() {
    match std::env::var("KARS_EXAMPLE").as_deref() {
        Ok("embed_in_service") => embed_in_service::main().expect("the service runs"),
        Ok("restore_with_fallback") => restore_with_fallback::main().expect("the restore runs"),
        _ => {
            // The lines libtest prints, so that summaries count this test too.
            let name = "the_service_backs_up_prunes_alerts_and_the_restore_falls_back";
            let Ok(ran) = std::panic::catch_unwind(
                the_service_backs_up_prunes_alerts_and_the_restore_falls_back,
            ) else {
                println!("test {name} ... FAILED");
                println!(
                    "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
                );
                std::process::exit(101);
            };
            let (passed, ignored) = if ran { (1, 0) } else { (0, 1) };
            println!("test {name} ... {}", if ran { "ok" } else { "ignored" });
            println!(
                "test result: ok. {passed} passed; 0 failed; {ignored} ignored; 0 measured; 0 filtered out"
            );
        }
    }
}

/// Everything a child process of an example needs.
struct World {
    dir: tempfile::TempDir,
    s3_url: String,
    webhook: String,
}

impl World {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs an example as a child process with the world's environment plus `extra`.
    fn run(&self, example: &str, extra: &[(&str, &str)]) -> Output {
        let out = Command::new(std::env::current_exe().expect("the test binary"))
            .env("KARS_EXAMPLE", example)
            .env("APP_DB", self.path("app.db"))
            .env("BACKUP_DIR", self.path("backups"))
            .env("BACKUP_S3", &self.s3_url)
            .env("BACKUP_KEY", self.path("keys/age-identity.txt"))
            .env("STATE_DIR", self.path("state"))
            .env("ALERT_WEBHOOK", &self.webhook)
            .env("METRICS_TEXTFILE", self.path("kars.prom"))
            .env("BACKUP_RUNS", "1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .envs(extra.iter().copied())
            .output()
            .expect("run the example");
        assert!(
            out.status.success(),
            "{example} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Sets the application's data: `users` with `n` rows named after `version`.
fn write_app_db(path: &Path, version: &str, n: u32) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT); DELETE FROM users;",
    )
    .unwrap();
    for i in 1..=n {
        conn.execute(
            "INSERT INTO users (id, name) VALUES (?1, ?2)",
            (i, format!("{version}-{i}")),
        )
        .unwrap();
    }
}

fn app_names(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT name FROM users ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A webhook receiver on 127.0.0.1: every request's body, answered 204.
fn webhook_listener() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let received = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                received
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

/// The scenario; false when it did not run (no emulator, outside CI).
fn the_service_backs_up_prunes_alerts_and_the_restore_falls_back() -> bool {
    let (Some(endpoint), Some(bucket)) = (
        service_var("KARS_TEST_S3_ENDPOINT"),
        service_var("KARS_TEST_S3_BUCKET"),
    ) else {
        return false;
    };
    let prefix = format!("examples-{}-{}", std::process::id(), chrono_stamp());
    let s3_url = format!("s3://{bucket}/{prefix}?endpoint={endpoint}&allow_http=true");
    let (webhook, alerts) = webhook_listener();
    let world = World {
        dir: tempfile::tempdir().unwrap(),
        s3_url: s3_url.clone(),
        webhook,
    };
    let app = world.path("app.db");

    // Two runs in one process: at start, then on the every-minute schedule.
    write_app_db(&app, "v1", 3);
    world.run(
        "embed_in_service",
        &[("BACKUP_CRON", "* * * * *"), ("BACKUP_RUNS", "2")],
    );
    // One run after each change.
    write_app_db(&app, "v2", 4);
    world.run("embed_in_service", &[]);
    write_app_db(&app, "v3", 5);
    world.run("embed_in_service", &[]);
    assert!(
        alerts.lock().unwrap().is_empty(),
        "successful runs send no alert"
    );
    // A run that fails: the database is not one.
    let broken = world.path("broken.db");
    std::fs::write(&broken, "not a database").unwrap();
    world.run("embed_in_service", &[("APP_DB", broken.to_str().unwrap())]);

    // The alert of the failed run.
    let alerts = alerts.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1, "one alert, for the failed run: {alerts:?}");
    let alert: WebhookPayload = serde_json::from_str(&alerts[0]).unwrap();
    assert_eq!(
        (alert.job.as_str(), alert.status),
        ("app-db", RunStatus::Failure)
    );
    assert!(
        alert.error.as_deref().unwrap_or("").contains("broken.db"),
        "{alert:?}"
    );

    // Both destinations, as the tiers and retention say.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let local = Repository::new(
        kars_backup::storage::sink_from_url(&world.path("backups").display().to_string()).unwrap(),
    );
    let s3_sink: Arc<dyn BackupSink> = Arc::new(
        S3Builder::from_url(&s3_url)
            .unwrap()
            .with_credentials("test", "test")
            .with_region("us-east-1")
            .build()
            .unwrap(),
    );
    let s3 = Repository::new(s3_sink.clone());
    let committed = |repo: &Repository| {
        let listing = rt.block_on(repo.list()).unwrap();
        listing
            .committed()
            .map(|e| e.manifest.clone().unwrap())
            .collect::<Vec<_>>()
    };
    let (local_backups, s3_backups) = (committed(&local), committed(&s3));
    assert_eq!(local_backups.len(), 2, "local keeps the last two of four");
    assert!(
        (1..=2).contains(&s3_backups.len()),
        "S3 keeps the newest of each day: {}",
        s3_backups.len()
    );
    let newest = local_backups.last().unwrap();
    assert_eq!(s3_backups.last().unwrap().name, newest.name);
    for m in local_backups.iter().chain(&s3_backups) {
        let tiers: Vec<String> = Tier::of(m.created_at)
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        assert_eq!(m.tiers, tiers, "{} is tagged with its tiers", m.name);
        assert!(m.archive.encryption.is_some(), "{} is encrypted", m.name);
    }

    // The metrics textfile: five runs, one failure.
    let text = std::fs::read_to_string(world.path("kars.app-db.prom")).unwrap();
    let samples = parse_text(&text).unwrap();
    // One series per destination, both counting every run of the job.
    let values = |name: &str| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.name == name && s.labels.get("job").map(String::as_str) == Some("app-db"))
            .map(|s| s.value)
            .collect()
    };
    assert_eq!(values("kars_backup_runs_total"), [5.0, 5.0], "{text}");
    assert_eq!(values("kars_backup_failures_total"), [1.0, 1.0], "{text}");
    assert_eq!(values("kars_backup_last_run_success"), [0.0, 0.0], "{text}");

    // Damage the newest backup everywhere: the restore falls back to the one before (v2).
    let damage = |sink: &dyn BackupSink, key: &str| {
        let mut bytes = rt.block_on(read_all(sink, key));
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        rt.block_on(sink.put_bytes(key, bytes.into())).unwrap();
    };
    damage(local.sink().as_ref(), &newest.name);
    damage(s3_sink.as_ref(), &newest.name);
    let out = world.run("restore_with_fallback", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let previous = &local_backups[0].name;
    assert!(
        stdout.contains(&format!("restored {previous} into")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} from", newest.name)) && stdout.contains("checksum"),
        "the damaged newest backup was tried first: {stdout}"
    );
    assert_eq!(
        app_names(&app),
        ["v2-1", "v2-2", "v2-3", "v2-4"],
        "the database holds the previous backup's data"
    );
    true
}

fn chrono_stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

async fn read_all(sink: &dyn BackupSink, key: &str) -> Vec<u8> {
    use futures::StreamExt;
    let mut stream = sink.get(key, Default::default()).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}
