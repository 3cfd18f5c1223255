//! `[job.replicate]` under `kars-backup daemon`, end to end: a real writer process (the
//! `sqlite3` shell) commits while the daemon replicates; a destination that stops working
//! alerts the job's webhook once and sends a notice when it caught up; the metrics textfile
//! shows the lag; after SIGTERM, `restore --latest` holds every commit the writer made. A second
//! replicator holding the destination's lease makes the daemon's fail (notified), and it is
//! restarted once the lease is free. The job's `[job.encryption]` encrypts the replica, and a
//! restarted daemon continues that chain, counting every transaction it ships. Bad
//! `[job.replicate]` tables are refused with their line and column.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::http::{Received, Receiver};
use common::*;

/// Whether the `sqlite3` shell (the writer process) is installed; under `CI=true` it must be.
fn have_sqlite3() -> bool {
    let found = Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: the sqlite3 shell is missing (apt-get install sqlite3)"
        );
        eprintln!("skipped: the sqlite3 shell is not installed");
    }
    found
}

/// The `sqlite3` shell writing to `db`: one autocommit transaction per [`Writer::commit`],
/// each followed by a `SELECT` of its id, so every id on its standard output was committed.
struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
    next: i64,
}

impl Writer {
    fn start(db: &Path) -> Writer {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sqlite3");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, ".timeout 30000").unwrap();
        Writer {
            child,
            stdin: Some(stdin),
            next: 1,
        }
    }

    /// Commits `n` rows of ~1 KB, about `n` per 10 ms… at the pace the shell takes them.
    fn commit(&mut self, n: usize) {
        let stdin = self.stdin.as_mut().unwrap();
        for _ in 0..n {
            let id = self.next;
            self.next += 1;
            writeln!(
                stdin,
                "INSERT INTO t VALUES ({id}, zeroblob(1000)); SELECT {id};"
            )
            .unwrap();
        }
        stdin.flush().unwrap();
    }

    /// Commits for `d`, about 100 transactions a second.
    fn commit_for(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.commit(1);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Ends the shell; returns the ids it committed, in order.
    fn finish(mut self) -> Vec<i64> {
        drop(self.stdin.take());
        let mut out = String::new();
        let mut stdout = BufReader::new(self.child.stdout.take().unwrap());
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            out.push_str(&line);
            line.clear();
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "sqlite3 failed: {status}");
        out.lines().map(|l| l.trim().parse().unwrap()).collect()
    }
}

fn create(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=wal; CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB);",
    )
    .unwrap();
}

/// A daemon process, SIGKILLed if the test fails before stopping it.
struct Daemon(Option<Child>);

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let child = bin()
            .args(["daemon", "--config", &s(config), "-v"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        Daemon(Some(child))
    }

    /// SIGTERM, then the exit code and logs.
    fn stop(mut self) -> (i32, String) {
        let child = self.0.take().unwrap();
        term(child.id());
        let o = child.wait_with_output().unwrap();
        (code(&o), stderr(&o))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn term(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The webhook events received until one with `event` (within `timeout`).
fn events_until(hooks: &Receiver, event: &str, timeout: Duration) -> Vec<Value> {
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < timeout {
        let Some(Received { body, .. }) = hooks.next_within(Duration::from_millis(200)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&body).unwrap();
        let done = v["event"] == event;
        got.push(v);
        if done {
            return got;
        }
    }
    panic!("no {event} event within {timeout:?}; received: {got:?}");
}

/// The value of a metric with `database` and `destination` labels in a textfile.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("database=\"app.db\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn config(dir: &Path, dest: &Path, hook: &str, replicate: &str) -> PathBuf {
    let text = format!(
        r#"
[daemon]
state-dir = "{state}"
metrics-textfile = "{prom}"

[[job]]
name = "live"
source = "{db}"
[[job.destination]]
url = "file://{dest}"
[job.notify]
webhook = "{hook}/hook"
[job.replicate]
{replicate}
"#,
        state = s(&dir.join("state")),
        prom = s(&dir.join("kars.prom")),
        db = s(&dir.join("app.db")),
        dest = s(dest),
    );
    let path = dir.join("kars-backup.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_daemon_replicates_alerts_once_on_lag_recovers_and_leaves_every_commit_on_sigterm() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("replica");
    create(&db);
    let hooks = Receiver::start();
    let path = config(
        dir.path(),
        &dest,
        &hooks.url,
        "sync-interval = \"200ms\"\nlag-alert = \"2s\"",
    );
    let o = ok(run(&["config", "check", "--config", &s(&path)]));
    assert!(stdout(&o).contains("lag-alert = \"2s\""), "{}", text(&o));

    let mut writer = Writer::start(&db);
    writer.commit_for(Duration::from_millis(300));
    let daemon = Daemon::start(&path);
    writer.commit_for(Duration::from_secs(2));

    // Nothing alerted while it worked.
    if let Some(r) = hooks.next_within(Duration::from_millis(10)) {
        panic!("an alert while the replication works: {}", r.body);
    }
    // The destination stops working: a file where its directory was.
    let away = dir.path().join("replica.away");
    std::fs::rename(&dest, &away).unwrap();
    std::fs::write(&dest, b"not a directory").unwrap();
    let start = Instant::now();
    let mut lagging = Vec::new();
    while lagging.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no lag alert: {lagging:?}"
        );
        writer.commit_for(Duration::from_millis(300));
        if let Some(r) = hooks.next_within(Duration::from_millis(10)) {
            lagging.push(serde_json::from_str::<Value>(&r.body).unwrap());
        }
    }
    let alert = &lagging[0];
    assert_eq!(alert["event"], "replication-lagging", "{alert}");
    assert_eq!(alert["status"], "failure", "{alert}");
    assert_eq!(alert["job"], "live", "{alert}");
    assert_eq!(alert["database"], "app.db", "{alert}");
    assert!(alert["lag_seconds"].as_f64().unwrap() > 2.0, "{alert}");
    // the textfile shows the lag (it is rewritten every few seconds)
    let prom = dir.path().join("kars.live.prom");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&prom).unwrap_or_default();
        if metric(&text, "kars_backup_replication_lag_seconds").is_some_and(|l| l >= 2.0) {
            assert_eq!(
                metric(&text, "kars_backup_replication_up"),
                Some(1.0),
                "{text}"
            );
            assert!(
                metric(&text, "kars_backup_replication_transactions_shipped_total")
                    .is_some_and(|n| n > 0.0),
                "{text}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no lag in the textfile: {text}"
        );
        writer.commit_for(Duration::from_millis(300));
    }
    writer.commit_for(Duration::from_secs(1));

    // It works again: one notice that it caught up, and no second alert of the episode.
    std::fs::remove_file(&dest).unwrap();
    std::fs::rename(&away, &dest).unwrap();
    writer.commit_for(Duration::from_millis(500));
    let after = events_until(&hooks, "replication-caught-up", Duration::from_secs(90));
    assert!(
        after.iter().all(|e| e["event"] != "replication-lagging"),
        "one alert per episode: {after:?}"
    );
    let notice = after.last().unwrap();
    assert_eq!(notice["status"], "success", "{notice}");
    writer.commit_for(Duration::from_secs(1));

    let committed = writer.finish();
    let last = *committed.last().unwrap();
    assert_eq!(ids(&db), (last, last));
    // the sync interval passes, then SIGTERM: the replicator uploads what it has and stops
    std::thread::sleep(Duration::from_millis(400));
    let (code, logs) = daemon.stop();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("replication stopped"), "{logs}");
    assert!(logs.contains("daemon stopped"), "{logs}");
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(
        metric(&text, "kars_backup_replication_up"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "kars_backup_replication_lag_seconds"),
        Some(0.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "kars_backup_replication_last_shipped_commit_timestamp_seconds"
        )
        .is_some(),
        "{text}"
    );

    assert_eq!(
        latest_replicated(dir.path(), &dest),
        (last, last),
        "every commit is in the replica"
    );
}

#[test]
fn a_held_lease_fails_the_daemons_replicator_which_restarts_once_it_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("replica");
    create(&db);
    let hooks = Receiver::start();
    let path = config(dir.path(), &dest, &hooks.url, "sync-interval = \"200ms\"");
    // another replicator holds the destination's lease
    let other = bin()
        .args(["replicate", "--db", &s(&db), "--to"])
        .arg(format!("file://{}", dest.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dest.join(".kars-chains").exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "no replica");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let daemon = Daemon::start(&path);
    let got = events_until(&hooks, "replication-failed", Duration::from_secs(30));
    let failed = got.last().unwrap();
    assert_eq!(failed["status"], "failure", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("lease") && message.contains("restarting it in"),
        "{message}"
    );
    // the other one stops (releasing its lease): the daemon's replicator takes over
    term(other.id());
    let o = other.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let got = events_until(&hooks, "replication-restored", Duration::from_secs(90));
    assert_eq!(got.last().unwrap()["status"], "success");
    let (code, logs) = daemon.stop();
    assert_eq!(code, 0, "{logs}");
    let text = std::fs::read_to_string(dir.path().join("kars.live.prom")).unwrap();
    assert!(
        metric(&text, "kars_backup_replication_failures_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

/// Every file below `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_jobs_encryption_encrypts_the_replica() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("replica");
    let key = dir.path().join("age-identity.txt");
    create(&db);
    ok(run(&["key", "init", "--out", &s(&key)]));
    let path = config(
        dir.path(),
        &dest,
        "http://127.0.0.1:9",
        &format!(
            "sync-interval = \"200ms\"\n[job.encryption]\nidentity-file = \"{}\"",
            s(&key)
        ),
    );
    let mut writer = Writer::start(&db);
    writer.commit_for(Duration::from_millis(200));
    let daemon = Daemon::start(&path);
    writer.commit_for(Duration::from_secs(2));
    let last = *writer.finish().last().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let (code, logs) = daemon.stop();
    assert_eq!(code, 0, "{logs}");
    let stored = files(&dest.join(".kars-chains"));
    let chain: Vec<_> = stored
        .iter()
        .filter(|p| !p.ends_with("lease.json"))
        .collect();
    assert!(chain.len() >= 2, "a snapshot and segments: {stored:?}");
    for p in chain {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1"),
            "{} is not encrypted",
            p.display()
        );
    }
    // `restore --latest` with the identity: the ids there.
    let restored = || {
        let latest = dir.path().join("latest.db");
        let _ = std::fs::remove_file(&latest);
        ok(run(&[
            "restore",
            "--db",
            &s(&latest),
            "--from",
            &format!("file://{}", dest.display()),
            "--latest",
            "--identity",
            &s(&key),
            "--yes",
        ]));
        ids(&latest)
    };
    assert_eq!(restored(), (last, last));
    let generations = |dest: &Path| {
        let mut g: Vec<String> = files(&dest.join(".kars-chains"))
            .iter()
            .filter_map(|p| {
                let rest = p.to_str()?.split("/generations/").nth(1)?;
                Some(rest.split('/').next()?.to_string())
            })
            .collect();
        g.dedup();
        g
    };
    let first = generations(&dest);
    assert_eq!(first.len(), 1, "{first:?}");

    // Started again, it continues the encrypted chain (its resume record beside the
    // database) and counts exactly the transactions it shipped, the first segment's too (the
    // counters go on from the textfile).
    let prom = dir.path().join("kars.live.prom");
    let counted = |name: &str| metric(&std::fs::read_to_string(&prom).unwrap(), name).unwrap();
    let shipped = counted("kars_backup_replication_transactions_shipped_total");
    let generations_started = counted("kars_backup_replication_generations_started_total");
    let daemon = Daemon::start(&path);
    std::thread::sleep(Duration::from_millis(500));
    let mut writer = Writer::start(&db);
    writer.next = last + 1;
    writer.commit_for(Duration::from_secs(1));
    let committed = writer.finish();
    std::thread::sleep(Duration::from_millis(400));
    let (code, logs) = daemon.stop();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("resuming the stored chain"), "{logs}");
    assert_eq!(generations(&dest), first, "no new generation");
    assert_eq!(
        counted("kars_backup_replication_transactions_shipped_total") - shipped,
        committed.len() as f64
    );
    assert_eq!(
        counted("kars_backup_replication_generations_started_total"),
        generations_started
    );
    let newest = *committed.last().unwrap();
    assert_eq!(restored(), (newest, newest));
}

#[test]
fn bad_replicate_tables_are_refused_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("replica");
    let check = |replicate: &str, source: Option<&str>| {
        let path = config(dir.path(), &dest, "http://127.0.0.1:9", replicate);
        if let Some(url) = source {
            let text = std::fs::read_to_string(&path).unwrap();
            let db = s(&dir.path().join("app.db"));
            std::fs::write(&path, text.replace(&db, url)).unwrap();
        }
        let o = run(&["config", "check", "--config", &s(&path)]);
        assert_ne!(code(&o), 0, "{}", text(&o));
        stderr(&o)
    };
    let file = s(&dir.path().join("kars-backup.toml"));
    // [job.replicate] is on line 13
    let e = check("sync-interval = \"1s\"\nsnapshots = \"1h\"", None);
    assert!(
        e.contains(&format!("{file}:15:1: unknown field `snapshots`")),
        "{e}"
    );
    let e = check("sync-interval = \"soon\"", None);
    assert!(e.contains(&format!("{file}:14:17: ")), "{e}");
    assert!(e.contains("soon"), "{e}");
    let e = check(
        "",
        Some("postgres://kars:pw@127.0.0.1:5432/kars?sslmode=disable"),
    );
    assert!(e.contains(&format!("{file}:13:1: ")), "{e}");
    assert!(e.contains("WAL archive"), "{e}");
}
