//! End-to-end tests of `kars-backup replicate` and `restore --latest`/`--to-time` from its
//! replica, with a writer committing in this process: the latest state holds every commit, a
//! restore to an instant holds exactly the commits made by then, a rollback-journal database is
//! refused until `--enable-wal`, and an off-site replica needs encryption.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;
use common::*;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Commits one row per transaction until `stop`; returns (id, begin µs, end µs) per commit.
fn write(db: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(i64, i64, i64)>> {
    let db = db.to_path_buf();
    std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        let mut log = Vec::new();
        let mut id = conn
            .query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
        while !stop.load(Ordering::SeqCst) {
            id += 1;
            let tx = conn.unchecked_transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (?1, zeroblob(1000))", [id])
                .unwrap();
            let begin = now_us();
            tx.commit().unwrap();
            log.push((id, begin, now_us()));
            std::thread::sleep(Duration::from_millis(4));
        }
        log
    })
}

fn create(db: &Path, mode: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA journal_mode={mode}; CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB);"
    ))
    .unwrap();
}

fn replicate(db: &Path, dest: &Path) -> Child {
    bin()
        .args(["replicate", "--db", &s(db), "--to"])
        .arg(format!("file://{}", dest.display()))
        .args(["--sync-interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kars-backup replicate")
}

fn stop(child: Child) -> std::process::Output {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

#[test]
fn replicate_then_restore_latest_and_to_an_instant() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    let dest = tmp.path().join("replica");
    create(&db, "wal");
    let flag = Arc::new(AtomicBool::new(false));
    let writer = write(&db, flag.clone());
    std::thread::sleep(Duration::from_millis(300));
    let child = replicate(&db, &dest);
    std::thread::sleep(Duration::from_millis(2500));
    flag.store(true, Ordering::SeqCst);
    let log = writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let out = stop(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("Replication stopped"),
        "{}",
        text(&out)
    );

    let from = format!("file://{}", dest.display());
    let last = log.last().unwrap().0;
    assert_eq!(latest_replicated(tmp.path(), &dest), (last, last));

    let (_, _, t_end) = log[log.len() / 2];
    let t = t_end + 100_000;
    let time = chrono_like(t);
    let at = tmp.path().join("at.db");
    let o = ok(run(&[
        "restore",
        "--db",
        &s(&at),
        "--from",
        &from,
        "--to-time",
        &time,
        "--yes",
    ]));
    assert!(
        stdout(&o).contains("Restore completed successfully"),
        "{}",
        text(&o)
    );
    let (count, max) = ids(&at);
    assert_eq!(count, max, "a gap");
    let must = log
        .iter()
        .filter(|c| c.2 <= t - 50_000)
        .map(|c| c.0)
        .max()
        .unwrap();
    let must_not = log.iter().filter(|c| c.1 > t).map(|c| c.0).min().unwrap();
    assert!(
        max >= must && max < must_not,
        "{max} not in [{must}, {must_not})"
    );

    // Before the replica's first snapshot: nothing to restore, said so.
    let o = run(&[
        "restore",
        "--db",
        &s(&tmp.path().join("early.db")),
        "--from",
        &from,
        "--to-time",
        "2020-01-01T00:00:00Z",
        "--yes",
    ]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("window starts"), "{}", text(&o));
}

/// RFC 3339 with microseconds from µs since the epoch, without a date library.
fn chrono_like(us: i64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", us / 1_000_000),
            "+%Y-%m-%dT%H:%M:%S",
        ])
        .output()
        .unwrap();
    format!(
        "{}.{:06}Z",
        String::from_utf8_lossy(&out.stdout).trim(),
        us % 1_000_000
    )
}

#[test]
fn a_rollback_journal_database_is_refused_until_enable_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    let dest = tmp.path().join("replica");
    create(&db, "delete");
    let o = run(&["replicate", "--db", &s(&db), "--to", &s(&dest)]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("--enable-wal"), "{}", text(&o));
    let mut child = bin()
        .args([
            "replicate",
            "--db",
            &s(&db),
            "--to",
            &s(&dest),
            "--enable-wal",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "replicate exited");
    let out = stop(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mode: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn an_off_site_replica_needs_encryption() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    create(&db, "wal");
    let o = bin_s3()
        .args(["replicate", "--db", &s(&db), "--to", "s3://bucket/replica"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("--no-encrypt"), "{}", text(&o));
}
