//! End-to-end tests of `kars-backup replicate` and `restore --latest`/`--to-time` from its
//! replica, with a writer committing in this process: the latest state holds every commit, a
//! restore to an instant holds exactly the commits made by then, a rollback-journal database is
//! refused until `--enable-wal`, and an off-site replica needs encryption. `list` shows the
//! window the writer's commits span, `status` the lag against the RPO, `verify` and `drill`
//! rebuild the replica at instants (a corrupted segment fails, named).

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

/// Stops the writer, lets the replicator ship its last commits, stops it (which must exit 0).
fn stop_both(
    child: Child,
    flag: &AtomicBool,
    writer: std::thread::JoinHandle<Vec<(i64, i64, i64)>>,
) -> (Vec<(i64, i64, i64)>, std::process::Output) {
    flag.store(true, Ordering::SeqCst);
    let log = writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let out = stop(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    (log, out)
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
    let (log, out) = stop_both(child, &flag, writer);
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

/// µs since the epoch of an RFC 3339 time in a JSON document.
fn us(v: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("no time: {v}")))
        .unwrap()
        .timestamp_micros()
}

/// The commits of `log` ((id, begin µs, end µs)) that a state at `t` must hold (ended 50 ms
/// before it) and the first it must not (begun after it): its row count lies in between.
fn bounds(log: &[(i64, i64, i64)], t: i64) -> (i64, i64) {
    let must = log
        .iter()
        .filter(|c| c.2 <= t - 50_000)
        .map(|c| c.0)
        .max()
        .unwrap_or(0);
    let must_not = log
        .iter()
        .filter(|c| c.1 > t)
        .map(|c| c.0)
        .min()
        .unwrap_or(i64::MAX);
    (must, must_not)
}

/// A replicator started on a new WAL database, then a writer once the snapshot is stored.
struct Running {
    db: std::path::PathBuf,
    dest: std::path::PathBuf,
    from: String,
    child: Child,
    flag: Arc<AtomicBool>,
    writer: std::thread::JoinHandle<Vec<(i64, i64, i64)>>,
}

fn start(dir: &Path) -> Running {
    let db = dir.join("app.db");
    let dest = dir.join("replica");
    let from = format!("file://{}", dest.display());
    create(&db, "wal");
    let child = replicate(&db, &dest);
    wait_for_snapshot(&from);
    let flag = Arc::new(AtomicBool::new(false));
    let writer = write(&db, flag.clone());
    Running {
        db,
        dest,
        from,
        child,
        flag,
        writer,
    }
}

/// Waits until the replica at `from` has a snapshot (the replicator's start-up is done).
fn wait_for_snapshot(from: &str) {
    for _ in 0..100 {
        let list = ok_json(run(&["list", "--from", from, "--json"]));
        if list["replicas"][0]["from"].is_string() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no snapshot at {from}");
}

#[test]
fn list_verify_and_drill_a_replica_at_instants() {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(tmp.path());
    let (dest, from, flag) = (r.dest, r.from, r.flag);
    let writer = r.writer;
    let child = r.child;
    std::thread::sleep(Duration::from_millis(2500));
    let (log, _) = stop_both(child, &flag, writer);
    let (first, last) = (log[0], *log.last().unwrap());

    // The window spans the writer's commits: from the snapshot before the first to the
    // observed time of the last (noticed within the sync interval).
    let list = ok_json(run(&["list", "--from", &from, "--json"]));
    let w = &list["replicas"][0];
    assert_eq!(w["database"], "app.db", "{list}");
    assert!(us(&w["from"]) <= first.1, "{list}");
    let to = us(&w["to"]);
    assert!(
        to >= last.1 && to <= last.2 + 200_000,
        "window end {to} is not the last commit's [{}, {}]: {list}",
        last.1,
        last.2
    );
    assert_eq!(w["generations"], 1, "{list}");
    assert!(w["segments"].as_u64().unwrap() >= 2, "{list}");
    assert!(w["size_bytes"].as_u64().unwrap() > 0, "{list}");
    assert_eq!(w["gaps"], serde_json::json!([]), "{list}");
    let o = ok(run(&["list", "--from", &from]));
    assert!(
        stdout(&o).contains("app.db: restorable from"),
        "{}",
        text(&o)
    );

    // verify --to-time: the rows are exactly the commits made by then.
    for k in [4, 2, 1] {
        let t = log[log.len() - log.len() / k].2 - 20_000;
        let time = chrono_like(t);
        let v = ok_json(run(&[
            "verify",
            "--from",
            &from,
            "--to-time",
            &time,
            "--json",
        ]));
        let tables = v["verify"]["tables"].as_array().unwrap();
        let rows = tables.iter().find(|t| t["name"] == "t").unwrap()["rows"]
            .as_i64()
            .unwrap();
        let (must, must_not) = bounds(&log, t);
        assert!(
            rows >= must && rows < must_not,
            "{rows} rows at {time}, not in [{must}, {must_not}): {v}"
        );
        assert_eq!(v["verify"]["database"], "app.db");
    }
    let o = ok(run(&[
        "verify",
        "--from",
        &from,
        "--to-time",
        &chrono_like(last.2),
    ]));
    assert!(stdout(&o).contains("is good"), "{}", text(&o));
    assert!(
        stdout(&o).contains("verified through the chain"),
        "{}",
        text(&o)
    );

    // drill --to-time and --random-instant: verified, measured, stored.
    let time = chrono_like(log[log.len() / 2].2);
    let d = ok_json(run(&[
        "drill",
        "--from",
        &from,
        "--to-time",
        &time,
        "--rpo",
        "1h",
        "--json",
    ]));
    assert_eq!(d["drill"]["passed"], true, "{d}");
    assert_eq!(us(&d["drill"]["restored_to"]), us(&serde_json::json!(time)));
    assert!(d["drill"]["rto"]["measured_secs"].as_f64().is_some(), "{d}");
    assert!(d["drill"]["rpo"]["measured_secs"].as_f64().is_some(), "{d}");
    let d = ok_json(run(&[
        "drill",
        "--from",
        &from,
        "--random-instant",
        "--rpo",
        "1h",
        "--json",
    ]));
    assert_eq!(d["drill"]["passed"], true, "{d}");
    let at = us(&d["drill"]["restored_to"]);
    assert!(at >= us(&w["from"]) && at <= to, "{d}");
    let rows = d["restore"]["tables"][0]["rows"].as_i64().unwrap();
    let (must, must_not) = bounds(&log, at);
    assert!(rows >= must && rows < must_not, "{rows} at {at}: {d}");
    let reports = std::fs::read_dir(dest.join(".kars-drills"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(reports, 2);

    // A damaged segment fails verification (exit 5), named; instants before it still verify.
    let generations = dest.join(".kars-chains/sqlite/app.db/generations");
    let generation = std::fs::read_dir(generations).unwrap().next().unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(generation.unwrap().path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let bad = &segments[segments.len() / 2];
    let mut bytes = std::fs::read(bad).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 3..n / 3 + 16.min(n / 3)] {
        *b ^= 0x5a;
    }
    std::fs::write(bad, bytes).unwrap();
    let o = run(&["verify", "--from", &from, "--to-time", &chrono_like(last.2)]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    let name = bad.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr(&o).contains(&name), "{name} not named: {}", text(&o));
    ok(run(&[
        "verify",
        "--from",
        &from,
        "--to-time",
        &chrono_like(first.2),
    ]));
}

#[test]
fn status_measures_the_lag_against_the_database_and_exits_6_past_the_rpo() {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(tmp.path());
    let (db, dest, from, flag, child) = (r.db, r.dest, r.from, r.flag, r.child);
    let writer = r.writer;
    std::thread::sleep(Duration::from_millis(1500));
    // Keeping up: the lease names this host's database, the lag is below the RPO.
    let o = run(&["status", "--from", &from, "--rpo", "2s", "--json"]);
    let v = json(&o);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let r = &v["replicas"][0];
    assert!(r["lag_secs"].as_f64().unwrap() < 2.0, "{v}");
    assert_eq!(r["local_db"], s(&db), "{v}");
    assert_eq!(r["replicator"]["database"], s(&db), "{v}");
    assert_eq!(v["destinations"][0]["replicas_only"], true, "{v}");
    let o = run(&["status", "--from", &from, "--rpo", "2s"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(stdout(&o).contains("[ok]"), "{}", text(&o));

    // The replicator stops, the writer goes on: past the RPO, exit 6.
    let out = stop(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(3000));
    let db_arg = s(&db);
    let o = run(&[
        "status", "--from", &from, "--rpo", "2s", "--db", &db_arg, "--json",
    ]);
    assert_eq!(code(&o), 6, "{}", text(&o));
    let v = json(&o);
    let r = &v["replicas"][0];
    assert_eq!(r["within_rpo"], false, "{v}");
    assert!(r["lag_secs"].as_f64().unwrap() >= 2.0, "{v}");
    let o = run(&["status", "--from", &from, "--rpo", "2s", "--db", &db_arg]);
    assert_eq!(code(&o), 6, "{}", text(&o));
    assert!(stdout(&o).contains("RPO MISSED"), "{}", text(&o));
    flag.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    // Replicating again, the application idle for longer than the RPO: not lagging.
    let child = replicate(&db, &dest);
    std::thread::sleep(Duration::from_millis(1500));
    wait_for_snapshot(&from);
    std::thread::sleep(Duration::from_millis(2500));
    let o = run(&[
        "status", "--from", &from, "--rpo", "2s", "--db", &db_arg, "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(json(&o)["replicas"][0]["lag_secs"].as_f64().unwrap() < 2.0);
    let out = stop(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn an_encrypted_replica_verifies_and_drills_with_its_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    let dest = tmp.path().join("replica");
    let from = format!("file://{}", dest.display());
    let key = tmp.path().join("key.txt");
    let recipient = age_key(&key);
    create(&db, "wal");
    let child = bin()
        .args(["replicate", "--db", &s(&db), "--to", &from])
        .args(["--sync-interval", "200ms", "--encrypt-to", &recipient])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_snapshot(&from);
    let flag = Arc::new(AtomicBool::new(false));
    let writer = write(&db, flag.clone());
    std::thread::sleep(Duration::from_millis(1000));
    let (log, _) = stop_both(child, &flag, writer);
    let t = log[log.len() / 2].2;
    let time = chrono_like(t);

    // Without the key: a usage error (exit 2) that says how to fix it, not a broken chain.
    let o = run(&["verify", "--from", &from, "--to-time", &time]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("--identity"), "{}", text(&o));
    let v = ok_json(run(&[
        "verify",
        "--from",
        &from,
        "--to-time",
        &time,
        "--identity",
        &s(&key),
        "--json",
    ]));
    let rows = v["verify"]["tables"][0]["rows"].as_i64().unwrap();
    let (must, must_not) = bounds(&log, t);
    assert!(rows >= must && rows < must_not, "{rows}: {v}");
    let d = ok_json(run(&[
        "drill",
        "--from",
        &from,
        "--latest",
        "--identity",
        &s(&key),
        "--rpo",
        "1h",
        "--json",
    ]));
    assert_eq!(d["drill"]["passed"], true, "{d}");
    assert_eq!(
        d["restore"]["tables"][0]["rows"],
        log.last().unwrap().0,
        "{d}"
    );
}
