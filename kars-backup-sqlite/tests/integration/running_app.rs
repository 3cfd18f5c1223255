//! Restores while another process (a Python "application" with its own SQLite connection) has
//! the database open: refused by default, naming it; allowed after a stop command that really
//! stops it; written into its database with `InUsePolicy::Live`, while it keeps writing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kars_backup_core::{Error, InUsePolicy, RestoreHooks, RestoreOptions};
use kars_backup_sqlite::SqliteSource;
use rusqlite::Connection;

use crate::common::*;

/// The application: one connection (autocommit, waits up to 30 s for locks); in `write` mode a
/// thread inserts a row every 5 ms and counts failures. Commands on stdin: `marker` (rows that
/// came from the backup), `writes` (successful writes so far), `stop` (prints `ok errors first`).
const APP: &str = r#"
import sqlite3, sys, threading, time
db, mode = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
conn.execute("SELECT count(*) FROM log").fetchone()
lock = threading.Lock()
state = {"ok": 0, "errors": [], "stop": False}
def writer():
    n = 0
    while not state["stop"]:
        n += 1
        try:
            with lock:
                conn.execute("INSERT INTO log (msg) VALUES (?)", ("app write %d" % n,))
            state["ok"] += 1
        except Exception as e:
            state["errors"].append(str(e))
        time.sleep(0.005)
t = threading.Thread(target=writer)
if mode == "write":
    t.start()
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "stop":
        break
    with lock:
        if cmd == "marker":
            print(conn.execute("SELECT count(*) FROM log WHERE msg = 'from the backup'").fetchone()[0], flush=True)
        elif cmd == "writes":
            print(state["ok"], flush=True)
state["stop"] = True
if mode == "write":
    t.join()
print("%d %d %s" % (state["ok"], len(state["errors"]), "|".join(state["errors"][:3])), flush=True)
"#;

/// A running application process.
struct App {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl App {
    fn start(db: &Path, mode: &str) -> App {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(APP)
            .arg(db)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut app = App {
            child,
            stdin,
            stdout,
        };
        assert_eq!(app.line(), "ready");
        app
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn ask(&mut self, cmd: &str) -> u64 {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.line().parse().unwrap()
    }

    /// Stops it; returns (successful writes, failed writes, the first errors).
    fn stop(mut self) -> (u64, u64, String) {
        writeln!(self.stdin, "stop").unwrap();
        let last = self.line();
        self.child.wait().unwrap();
        let mut parts = last.splitn(3, ' ');
        (
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap_or("").to_string(),
        )
    }
}

/// An application database: a `log` table, a few rows, in `journal_mode`.
fn app_db(path: &Path, journal_mode: &str, rows: &[&str]) {
    let conn = Connection::open(path).unwrap();
    let _: String = conn
        .query_row(&format!("PRAGMA journal_mode = {journal_mode}"), [], |r| {
            r.get(0)
        })
        .unwrap();
    conn.execute_batch(
        "CREATE TABLE log (id INTEGER PRIMARY KEY, msg TEXT NOT NULL);
         CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);",
    )
    .unwrap();
    for r in rows {
        conn.execute("INSERT INTO log (msg) VALUES (?1)", [r])
            .unwrap();
    }
    for i in 0..500 {
        conn.execute(
            "INSERT INTO items (name) VALUES (?1)",
            [format!("item {i}")],
        )
        .unwrap();
    }
}

/// A backup of an application database holding the row `from the backup`.
async fn marked_backup(
    journal_mode: &str,
) -> (tempfile::TempDir, kars_backup_core::Repository, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    app_db(&db, journal_mode, &["from the backup"]);
    let (repo, _sink) = repo();
    let report = backup(SqliteSource::new(&db), &repo).await;
    (dir, repo, report.manifest.name)
}

fn marker_rows(db: &Path) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM log WHERE msg = 'from the backup'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn journal_mode(db: &Path) -> String {
    Connection::open(db)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap()
}

fn previous(report: &kars_backup_core::RestoreReport) -> PathBuf {
    PathBuf::from(report.previous_kept_at.clone().expect("a previous copy"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_another_process_has_open_is_refused_and_left_as_it_was() {
    for mode in ["delete", "wal"] {
        let (_src, repo, name) = marked_backup("delete").await;
        let live_dir = tempfile::tempdir().unwrap();
        let live = live_dir.path().join("assets.db");
        app_db(&live, mode, &["live"]);
        let app = App::start(&live, "idle");
        let before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(live_dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        let err = restore_named(&repo, &name, &SqliteSource::new(&live), &confirmed())
            .await
            .unwrap_err();
        for (path, bytes) in before {
            if !path.to_string_lossy().ends_with("-shm") {
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "{}", path.display());
            }
        }
        let (_, failed, _) = app.stop();
        assert_eq!(failed, 0);
        let text = err.to_string();
        assert!(matches!(err, Error::InUse { .. }), "{mode}: {text}");
        assert!(text.contains("python3"), "{mode}: {text}");
        assert!(
            text.contains("--stop-cmd") && text.contains("--live"),
            "{text}"
        );
        assert!(text.contains("was not changed"), "{text}");
        assert_eq!(err.category(), kars_backup_core::ErrorCategory::Source);
        // Nothing was downloaded or staged: the refusal comes first.
        assert!(entries_starting_with(live_dir.path(), ".kars-").is_empty());
        assert_eq!(marker_rows(&live), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pid_of_the_holder_is_named() {
    let (_src, repo, name) = marked_backup("delete").await;
    let live_dir = tempfile::tempdir().unwrap();
    let live = live_dir.path().join("assets.db");
    app_db(&live, "delete", &["live"]);
    let app = App::start(&live, "idle");
    let pid = app.pid();
    let err = restore_named(&repo, &name, &SqliteSource::new(&live), &confirmed())
        .await
        .unwrap_err();
    app.stop();
    let text = err.to_string();
    assert!(text.contains(&format!("pid {pid} (")), "{text}");
    assert!(text.contains("python3") && text.contains("-c"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_command_that_stops_the_application_lets_the_restore_go_on() {
    let (_src, repo, name) = marked_backup("delete").await;
    let live_dir = tempfile::tempdir().unwrap();
    let live = live_dir.path().join("assets.db");
    app_db(&live, "delete", &["live"]);
    let app = App::start(&live, "write");
    let pid = app.pid();
    let options = RestoreOptions {
        hooks: RestoreHooks {
            // Until the test reaps it, the stopped app is a zombie: wait for that state.
            stop: Some(format!(
                "kill {pid}; while [ -e /proc/{pid} ] && ! grep -q '^[^)]*) Z' /proc/{pid}/stat; do sleep 0.05; done"
            )),
            ..RestoreHooks::default()
        },
        ..confirmed()
    };
    let report = restore_named(&repo, &name, &SqliteSource::new(&live), &options)
        .await
        .unwrap();
    let mut app = app;
    let _ = app.child.wait();
    assert!(report.steps.contains(&"application stopped".to_string()));
    assert_eq!(marker_rows(&live), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_command_that_does_not_stop_it_is_refused_after_it_and_the_app_started_again() {
    let (_src, repo, name) = marked_backup("delete").await;
    let live_dir = tempfile::tempdir().unwrap();
    let live = live_dir.path().join("assets.db");
    app_db(&live, "delete", &["live"]);
    let app = App::start(&live, "write");
    let started = live_dir.path().join("started");
    let options = RestoreOptions {
        hooks: RestoreHooks {
            stop: Some("true".into()),
            start: Some(format!("touch '{}'", started.display())),
            ..RestoreHooks::default()
        },
        ..confirmed()
    };
    let err = restore_named(&repo, &name, &SqliteSource::new(&live), &options)
        .await
        .unwrap_err();
    let (ok, failed, errors) = app.stop();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::RolledBack { cause, .. } if matches!(**cause, Error::InUse { .. })),
        "{text}"
    );
    assert!(
        text.contains("the stop command ran but they still have it open"),
        "{text}"
    );
    assert!(text.contains("application started again"), "{text}");
    assert!(started.exists(), "the start command ran after the refusal");
    assert_eq!((failed, errors.as_str()), (0, ""));
    assert!(ok > 0);
    assert_eq!(marker_rows(&live), 0);
    assert!(entries_starting_with(live_dir.path(), ".kars-").is_empty());
    assert!(entries_starting_with(live_dir.path(), "assets.db.pre-restore").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_restore_writes_into_the_database_the_application_keeps_writing() {
    for (live_mode, backup_mode) in [("delete", "wal"), ("wal", "delete"), ("delete", "delete")] {
        let (_src, repo, name) = marked_backup(backup_mode).await;
        let live_dir = tempfile::tempdir().unwrap();
        let live = live_dir.path().join("assets.db");
        app_db(&live, live_mode, &["live before"]);
        let mut app = App::start(&live, "write");
        let deadline = Instant::now() + Duration::from_secs(20);
        while app.ask("writes") < 20 {
            assert!(Instant::now() < deadline, "the application does not write");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(app.ask("marker"), 0);
        let options = RestoreOptions {
            in_use: InUsePolicy::Live,
            ..confirmed()
        };
        let report = restore_named(&repo, &name, &SqliteSource::new(&live), &options)
            .await
            .unwrap_or_else(|e| panic!("{live_mode}/{backup_mode}: {e}"));
        // The application sees the restored data through its own connection, and goes on
        // writing to the same file.
        assert_eq!(app.ask("marker"), 1, "{live_mode}/{backup_mode}");
        let after = app.ask("writes");
        let deadline = Instant::now() + Duration::from_secs(20);
        while app.ask("writes") < after + 20 {
            assert!(Instant::now() < deadline, "the application stopped writing");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (ok, failed, errors) = app.stop();
        assert_eq!(
            (failed, errors.as_str()),
            (0, ""),
            "{live_mode}/{backup_mode}"
        );
        assert!(ok >= after + 20);
        assert!(
            report.steps.iter().any(|s| s.contains("online backup API")),
            "{:?}",
            report.steps
        );
        // Its journal mode is the one it had; its content is the backup's plus the app's writes.
        assert_eq!(journal_mode(&live), live_mode);
        assert_eq!(marker_rows(&live), 1);
        let conn = Connection::open(&live).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let before: i64 = conn
            .query_row(
                "SELECT count(*) FROM log WHERE msg = 'live before'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(before, 0, "the live rows were replaced");
        // The previous content was kept, consistent, without the restored rows.
        let kept = previous(&report);
        assert_eq!(marker_rows(&kept), 0);
        let kept_conn = Connection::open(&kept).unwrap();
        let kept_live: i64 = kept_conn
            .query_row(
                "SELECT count(*) FROM log WHERE msg = 'live before'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept_live, 1);
        assert!(entries_starting_with(live_dir.path(), ".kars-restore-").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_with_an_open_database_is_refused_and_written_live_when_asked() {
    let src = tempfile::tempdir().unwrap();
    app_db(
        &src.path().join("assets.db"),
        "delete",
        &["from the backup"],
    );
    std::fs::write(src.path().join("notes.txt"), "from the backup").unwrap();
    let (repo, _sink) = repo();
    let name = backup(SqliteSource::new(src.path()), &repo)
        .await
        .manifest
        .name;

    let live = tempfile::tempdir().unwrap();
    let db = live.path().join("assets.db");
    app_db(&db, "delete", &["live"]);
    std::fs::write(live.path().join("notes.txt"), "live").unwrap();
    let target = SqliteSource::new(live.path());
    let mut app = App::start(&db, "write");

    let err = restore_named(&repo, &name, &target, &confirmed())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InUse { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("pid {}", app.pid())),
        "{err}"
    );
    assert_eq!(app.ask("marker"), 0);

    let options = RestoreOptions {
        in_use: InUsePolicy::Live,
        ..confirmed()
    };
    let report = restore_named(&repo, &name, &target, &options)
        .await
        .unwrap();
    assert_eq!(app.ask("marker"), 1);
    let (_, failed, errors) = app.stop();
    assert_eq!((failed, errors.as_str()), (0, ""));
    // Only the databases are written live; the volume's other files stay as they were.
    assert_eq!(
        std::fs::read_to_string(live.path().join("notes.txt")).unwrap(),
        "live"
    );
    let kept = previous(&report);
    assert_eq!(marker_rows(&kept.join("assets.db")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_copies_beyond_keep_previous_are_removed() {
    let (_src, repo, name) = marked_backup("delete").await;
    let live_dir = tempfile::tempdir().unwrap();
    let live = live_dir.path().join("assets.db");
    app_db(&live, "delete", &["live"]);
    let target = SqliteSource::new(&live);
    let kept = |dir: &Path| entries_starting_with(dir, "assets.db.pre-restore-");
    let first = restore_named(&repo, &name, &target, &confirmed())
        .await
        .unwrap();
    assert_eq!(kept(live_dir.path()), [previous(&first)]);
    // The default keeps one: the one just made replaces the older one.
    let second = restore_named(&repo, &name, &target, &confirmed())
        .await
        .unwrap();
    assert_eq!(kept(live_dir.path()), [previous(&second)]);
    assert_eq!(
        second.previous_removed,
        [previous(&first).display().to_string()]
    );
    let keep_two = RestoreOptions {
        keep_previous: 2,
        ..confirmed()
    };
    restore_named(&repo, &name, &target, &keep_two)
        .await
        .unwrap();
    assert_eq!(kept(live_dir.path()).len(), 2);
    let keep_none = RestoreOptions {
        keep_previous: 0,
        ..confirmed()
    };
    let last = restore_named(&repo, &name, &target, &keep_none)
        .await
        .unwrap();
    assert!(kept(live_dir.path()).is_empty());
    assert_eq!(last.previous_kept_at, None);
    assert_eq!(last.previous_removed.len(), 3);
    assert_eq!(marker_rows(&live), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_inside_the_health_start_period_do_not_count() {
    let (_src, repo, name) = marked_backup("delete").await;
    for (start_period, passes) in [(5, true), (0, false)] {
        let live_dir = tempfile::tempdir().unwrap();
        let live = live_dir.path().join("assets.db");
        app_db(&live, "delete", &["live"]);
        let ready = live_dir.path().join("ready");
        let options = RestoreOptions {
            hooks: RestoreHooks {
                // The application takes about a second to come up, in the background.
                start: Some(format!("(sleep 1; touch '{}') &", ready.display())),
                health_check: Some(format!("test -f '{}'", ready.display())),
                health_check_attempts: 1,
                health_check_interval_secs: 1,
                health_check_start_period_secs: start_period,
                ..RestoreHooks::default()
            },
            ..confirmed()
        };
        let result = restore_named(&repo, &name, &SqliteSource::new(&live), &options).await;
        match (passes, result) {
            (true, Ok(report)) => {
                assert!(report.steps.contains(&"health check passed".to_string()));
                assert_eq!(marker_rows(&live), 1);
            }
            (false, Err(e)) => {
                assert!(
                    e.to_string().contains("not healthy after 1 attempts"),
                    "{e}"
                );
                assert_eq!(marker_rows(&live), 0, "rolled back");
            }
            (expected, other) => {
                panic!("start period {start_period}: expected pass={expected}, got {other:?}")
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_hook_past_its_timeout_fails_the_restore_before_anything_changed() {
    let (_src, repo, name) = marked_backup("delete").await;
    let live_dir = tempfile::tempdir().unwrap();
    let live = live_dir.path().join("assets.db");
    app_db(&live, "delete", &["live"]);
    let bytes = std::fs::read(&live).unwrap();
    let options = RestoreOptions {
        hooks: RestoreHooks {
            stop: Some("sleep 600".into()),
            timeout_secs: 1,
            ..RestoreHooks::default()
        },
        ..confirmed()
    };
    let started = Instant::now();
    let err = restore_named(&repo, &name, &SqliteSource::new(&live), &options)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        err.to_string().contains("did not finish within 1s"),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was swapped"), "{err}");
    assert_eq!(std::fs::read(&live).unwrap(), bytes);
    assert!(entries_starting_with(live_dir.path(), ".kars-").is_empty());
}
