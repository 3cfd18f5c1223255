//! Continuous replication against real writer processes: restores to the latest state and to
//! instants checked against the writer's commit log, WAL resets by a writer that checkpoints
//! with TRUNCATE, kill -9 of the replicator, damaged and missing segments, encryption, one
//! replicator per destination, a bounded WAL, and switching a rollback-journal database to WAL
//! while another process writes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kars_backup_core::sink::DynBackupSink;
use kars_backup_core::{CancellationToken, DynDecryptor};
use kars_backup_sqlite::replicate::{
    ReplicateOptions, ReplicationStatus, Replicator, RestorePoint, catalog, keys::ChainKeys,
    rebuild,
};
use kars_backup_storage::LocalSink;

const DB_NAME: &str = "app.db";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn kill9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn term(mut self) -> std::process::ExitStatus {
        let pid = self.0.id() as i32;
        send_signal(pid, libc::SIGTERM);
        self.0.wait().expect("wait")
    }
}

/// Sends `signal` with kill(1) (this crate forbids unsafe code).
fn send_signal(pid: i32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn start_writer(db: &Path, log: &Path, extra: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kars-test-writer"))
        .arg(db)
        .arg("wal")
        .arg("--log")
        .arg(log)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read from the writer");
    assert_eq!(line.trim(), "ready", "writer did not start");
    Proc(child)
}

fn start_replicator(db: &Path, dir: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kars-test-replicator"))
        .arg(db)
        .arg(dir)
        .args(["--sync-ms", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the replicator process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read from the replicator");
    assert_eq!(line.trim(), "started");
    Proc(child)
}

/// One line of the writer's commit log.
#[derive(Debug, Clone, Copy)]
struct Logged {
    id: i64,
    begin_us: i64,
    end_us: i64,
}

fn read_log(log: &Path) -> Vec<Logged> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            Some(Logged {
                id: p.next()?.parse().ok()?,
                begin_us: p.next()?.parse().ok()?,
                end_us: p.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Checks a restored file: integrity, ids 1..=max in both tables; returns max.
fn check_prefix(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", db.display());
    let (count, max): (i64, i64) = conn
        .query_row(
            "SELECT count(*), coalesce(max(id), 0) FROM counter",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        count, max,
        "a gap in the counter: not a prefix of the commits"
    );
    let payload: i64 = conn
        .query_row("SELECT count(*) FROM payload", [], |r| r.get(0))
        .unwrap();
    assert_eq!(payload, count, "a torn transaction");
    max
}

fn sink(dir: &Path) -> DynBackupSink {
    Arc::new(LocalSink::new(dir).unwrap())
}

async fn restore_to(
    dir: &Path,
    point: RestorePoint,
    decryptor: Option<DynDecryptor>,
) -> kars_backup_sqlite::Result<(PathBuf, tempfile::TempDir)> {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("restored.db");
    rebuild(&sink(dir), DB_NAME, point, decryptor, &out).await?;
    Ok((out, out_dir))
}

fn options() -> ReplicateOptions {
    let mut o = ReplicateOptions::default();
    o.sync_interval = Duration::from_millis(200);
    o
}

/// Runs a replicator in this process until `stop` is cancelled.
fn spawn_replicator(
    db: &Path,
    dir: &Path,
    options: ReplicateOptions,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<kars_backup_sqlite::Result<ReplicationStatus>>,
) {
    let r = Replicator::new(db, options, vec![sink(dir)]);
    let stop = CancellationToken::new();
    let handle = tokio::spawn(r.run(stop.clone()));
    (stop, handle)
}

fn time_us(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_and_instants_match_the_commit_log() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let dest = tmp.path().join("replica");
    let writer = start_writer(&db, &log, &["--rate", "300"]);
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    tokio::time::sleep(Duration::from_secs(4)).await;
    writer.kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    let status = handle.await.unwrap().unwrap();
    assert_eq!(status.generations_started, 1, "{status:?}");
    let commits = read_log(&log);
    let last = commits.last().unwrap().id;

    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    let max = check_prefix(&out);
    assert!(
        max >= last,
        "latest restore has {max}, the writer committed {last}"
    );

    // Instants spread over the run: every commit that returned 50 ms before is there, none
    // whose COMMIT was issued after the instant.
    let first_us = commits[60].end_us;
    let last_us = commits.last().unwrap().end_us;
    for i in 0..25 {
        let t = first_us + (last_us - first_us) * i / 24 + (i * 7919) % 1000;
        let (out, _keep) = restore_to(&dest, RestorePoint::Time(time_us(t)), None)
            .await
            .unwrap();
        let max = check_prefix(&out);
        let must = commits
            .iter()
            .filter(|c| c.end_us <= t - 50_000)
            .map(|c| c.id)
            .max()
            .unwrap_or(0);
        let must_not = commits
            .iter()
            .filter(|c| c.begin_us > t)
            .map(|c| c.id)
            .min()
            .unwrap_or(i64::MAX);
        assert!(
            max >= must,
            "at {t}: restored up to {max}, but {must} had committed 50 ms before"
        );
        assert!(
            max < must_not,
            "at {t}: restored {max}, but {must_not} was committed after the instant"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_truncating_the_wal_forces_new_generations_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let dest = tmp.path().join("replica");
    let writer = start_writer(&db, &log, &["--rate", "300", "--truncate-every", "40"]);
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    // While no replicator holds the WAL the writer truncates it: the next one cannot continue.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    writer.kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    let status = handle.await.unwrap().unwrap();
    assert!(status.generations_started >= 1, "{status:?}");
    let generations = catalog::generations(&sink(&dest), &ChainKeys::new(DB_NAME))
        .await
        .unwrap();
    assert!(generations.len() >= 2, "{generations:?}");
    let commits = read_log(&log);
    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    let max = check_prefix(&out);
    assert!(max >= commits.last().unwrap().id);
}
