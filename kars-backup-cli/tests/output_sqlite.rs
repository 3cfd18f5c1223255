//! Snapshot tests of the human (text) output of `kars-backup` on real SQLite files: backup, list,
//! inspect, verify (each kind of check, passing and failing), restore (into a new file, over a
//! live one with hooks, unconfirmed, refused by its checks, rolled back by a failing hook, a
//! volume), drill and status; list, status and verify of a replicated database. The snapshots in `tests/snapshots/` are the output an operator
//! reads, with what varies between runs replaced (see `common/transcript.rs`); a wording change
//! shows in review as a change of a `.snap` file.
//!
//! Under `CI=true` a snapshot that differs fails the test and nothing is written; elsewhere insta
//! also writes the new output beside it as `.snap.new` (`cargo insta review`, or
//! `INSTA_UPDATE=always` to accept).

use std::path::Path;

mod common;
use common::*;
#[path = "common/transcript.rs"]
mod transcript;
use transcript::{Scrub, check_lines};

fn sql(db: &Path, batch: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(batch)
        .unwrap();
}

/// A small KARS-like database: users, assets, an audit log whose newest entry is a minute old.
fn make_db(path: &Path) {
    sql(
        path,
        "PRAGMA journal_mode=WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT);
         CREATE TABLE assets (id INTEGER PRIMARY KEY, owner INTEGER REFERENCES users(id), tag TEXT);
         CREATE INDEX assets_owner ON assets(owner);
         CREATE TABLE audit_logs (id INTEGER PRIMARY KEY, action TEXT, created_at TEXT NOT NULL);
         INSERT INTO users (name, email) VALUES ('Ada', 'ada@example.com'), ('Grace', NULL), ('Jürgen', '');
         INSERT INTO assets (owner, tag) VALUES (1, 'LAPTOP-1'), (2, 'PHONE-7');
         INSERT INTO audit_logs (action, created_at) VALUES ('create', datetime('now', '-1 minute'));",
    );
}

/// A temporary directory, a scrub that hides it, and a database with a committed backup.
struct Fixture {
    dir: tempfile::TempDir,
    scrub: Scrub,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let scrub = Scrub::default().exact(s(dir.path()), "[TMP]");
        Fixture { dir, scrub }
    }

    fn path(&self, name: &str) -> String {
        s(&self.dir.path().join(name))
    }

    /// Runs `kars-backup`, asserts its exit code, returns the transcript.
    fn run(&self, args: &[&str], expected_code: i32) -> String {
        let (o, t) = self.scrub.run(args);
        assert_eq!(code(&o), expected_code, "{}", text(&o));
        t
    }

    /// [`run`](Self::run) of `command --from DIR/store --latest` and `more`.
    fn latest(&self, command: &str, more: &[&str], expected_code: i32) -> String {
        let store = self.path("store");
        let mut args = vec![command, "--from", &store, "--latest"];
        args.extend_from_slice(more);
        self.run(&args, expected_code)
    }
}

#[test]
fn backup_list_inspect_and_verify() {
    let f = Fixture::new();
    let db = f.path("assets.db");
    let store = f.path("store");
    make_db(Path::new(&db));

    let t = f.run(&["backup", "--db", &db, "--to", &store], 0);
    insta::assert_snapshot!("sqlite_backup", t);
    let t = f.run(&["list", "--from", &store], 0);
    insta::assert_snapshot!("sqlite_list", t);
    let t = f.run(&["inspect", "--db", &db], 0);
    insta::assert_snapshot!("sqlite_inspect", t);

    let t = f.latest(
        "verify",
        &[
            "--min-rows",
            "users=1",
            "--min-rows",
            "assets=2",
            "--verify-query",
            "SELECT count(*) > 0 FROM users",
            "--audit-log",
            "audit_logs.created_at",
        ],
        0,
    );
    assert!(check_lines(&t).len() >= 6, "{t}");
    insta::assert_snapshot!("sqlite_verify", t);
}

/// Each kind of test query of a config job, passing, then failing (a value that differs, a row
/// count that differs, a NULL, no rows at all).
#[test]
fn verify_with_every_kind_of_query() {
    let f = Fixture::new();
    let db = f.path("assets.db");
    let store = f.path("store");
    make_db(Path::new(&db));
    f.run(&["backup", "--db", &db, "--to", &store], 0);
    let config = |queries: &str| {
        let path = f.dir.path().join("kars-backup.toml");
        std::fs::write(
            &path,
            format!(
                "[[job]]\nname = \"assets\"\nsource = \"{db}\"\n\
                 [[job.destination]]\nurl = \"{store}\"\n[job.verify]\n{queries}"
            ),
        )
        .unwrap();
        s(&path)
    };

    let passing = config(
        "[[job.verify.query]]\nsql = \"SELECT count(*) > 0 FROM users\"\n\
         [[job.verify.query]]\nsql = \"SELECT tag FROM assets WHERE id = 1\"\nvalue = \"LAPTOP-1\"\n\
         [[job.verify.query]]\nsql = \"SELECT id FROM users\"\nrows = 3\n\
         [[job.verify.query]]\nsql = \"SELECT email FROM users WHERE id = 3\"\nvalue = \"\"\n",
    );
    let t = f.run(&["verify", "--config", &passing, "--latest"], 0);
    insta::assert_snapshot!("sqlite_verify_queries", t);

    let failing = config(
        "[[job.verify.query]]\nsql = \"SELECT count(*) FROM users\"\nvalue = \"4\"\n\
         [[job.verify.query]]\nsql = \"SELECT id FROM users\"\nrows = 1\n\
         [[job.verify.query]]\nsql = \"SELECT email FROM users WHERE id = 2\"\nvalue = \"grace@example.com\"\n\
         [[job.verify.query]]\nsql = \"SELECT count(*) > 0 FROM users WHERE name = 'Nobody'\"\n\
         [[job.verify.query]]\nsql = \"SELECT name FROM users WHERE id = 99\"\nvalue = \"Ada\"\n",
    );
    let t = f.run(&["verify", "--config", &failing, "--latest"], 5);
    assert!(!t.contains("Some("), "{t}");
    insta::assert_snapshot!("sqlite_verify_queries_failed", t);
}

#[test]
fn restores() {
    let f = Fixture::new();
    let db = f.path("assets.db");
    let store = f.path("store");
    make_db(Path::new(&db));
    f.run(&["backup", "--db", &db, "--to", &store], 0);

    // Into a new file: nothing to replace, no confirmation needed.
    std::fs::create_dir(f.dir.path().join("copy")).unwrap();
    let copy = f.path("copy/assets.db");
    let t = f.latest("restore", &["--db", &copy], 0);
    insta::assert_snapshot!("sqlite_restore_new", t);
    assert_eq!(count(Path::new(&copy), "users"), 3);

    // Over a live database without --yes and without a terminal: refused.
    sql(Path::new(&db), "DELETE FROM assets;");
    let t = f.latest("restore", &["--db", &db], 2);
    insta::assert_snapshot!("sqlite_restore_unconfirmed", t);
    assert_eq!(count(Path::new(&db), "assets"), 0);

    // Refused by its checks: the live database untouched.
    let t = f.latest(
        "restore",
        &["--db", &db, "--yes", "--min-rows", "users=10"],
        5,
    );
    insta::assert_snapshot!("sqlite_restore_refused_by_checks", t);
    assert_eq!(count(Path::new(&db), "assets"), 0);

    // A start hook that fails (with nothing on its stderr): rolled back.
    let t = f.latest(
        "restore",
        &[
            "--db",
            &db,
            "--yes",
            "--stop-cmd",
            "true",
            "--start-cmd",
            "exit 3",
        ],
        3,
    );
    insta::assert_snapshot!("sqlite_restore_rolled_back", t);
    assert_eq!(count(Path::new(&db), "assets"), 0);

    // Over the live database with hooks: the previous one kept.
    let t = f.latest(
        "restore",
        &[
            "--db",
            &db,
            "--yes",
            "--stop-cmd",
            "true",
            "--start-cmd",
            "true",
            "--health-cmd",
            "true",
        ],
        0,
    );
    insta::assert_snapshot!("sqlite_restore_over_live_with_hooks", t);
    assert_eq!(count(Path::new(&db), "assets"), 2);

    // With --fallback, a newer backup (without assets) and the older one both fail their checks.
    sql(Path::new(&db), "DELETE FROM assets;");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    f.run(&["backup", "--db", &db, "--to", &store], 0);
    let t = f.latest(
        "restore",
        &[
            "--db",
            &db,
            "--yes",
            "--fallback",
            "--min-rows",
            "assets=1",
            "--min-rows",
            "users=10",
        ],
        5,
    );
    assert!(t.contains("No attempt succeeded:"), "{t}");
    insta::assert_snapshot!("sqlite_restore_fallback_all_failed", t);
    assert_eq!(count(Path::new(&db), "assets"), 0, "untouched");
}

#[test]
fn volume_backup_and_restore() {
    let f = Fixture::new();
    let data = f.dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    make_db(&data.join("assets.db"));
    sql(
        &data.join("sub/sessions.db"),
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY, token TEXT);
         INSERT INTO sessions (token) VALUES ('a'), ('b');",
    );
    std::fs::write(data.join("uploads.txt"), "photo-1.jpg\n").unwrap();
    let data = s(&data);
    let store = f.path("store");

    let t = f.run(&["backup", "--db", &data, "--to", &store], 0);
    insta::assert_snapshot!("sqlite_volume_backup", t);
    let t = f.latest("restore", &["--db", &data, "--yes"], 0);
    insta::assert_snapshot!("sqlite_volume_restore", t);
    assert_eq!(
        count(&Path::new(&data).join("sub/sessions.db"), "sessions"),
        2
    );
}

#[test]
fn drill_and_status() {
    let f = Fixture::new();
    let db = f.path("assets.db");
    let store = f.path("store");
    make_db(Path::new(&db));

    let t = f.run(&["status", "--from", &store], 6);
    insta::assert_snapshot!("sqlite_status_empty", t);

    f.run(&["backup", "--db", &db, "--to", &store], 0);
    let t = f.latest(
        "drill",
        &[
            "--min-rows",
            "users=1",
            "--audit-log",
            "audit_logs.created_at",
        ],
        0,
    );
    insta::assert_snapshot!("sqlite_drill", t);
    let t = f.run(&["status", "--from", &store], 0);
    insta::assert_snapshot!("sqlite_status", t);

    // A drill whose checks fail.
    let t = f.latest("drill", &["--min-rows", "users=10"], 5);
    insta::assert_snapshot!("sqlite_drill_failed", t);
    let t = f.run(&["status", "--from", &store], 5);
    insta::assert_snapshot!("sqlite_status_drill_failed", t);
}

/// A replicated database: its window in `list`, its lag in `status`, its rebuild in `verify`.
#[test]
fn replica_list_status_and_verify() {
    let f = Fixture::new();
    let db = f.path("assets.db");
    let replica = f.path("replica");
    make_db(Path::new(&db));
    let mut child = bin()
        .args(["replicate", "--db", &db, "--to", &replica])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let snapshot =
        || json(&run(&["list", "--from", &replica, "--json"]))["replicas"][0]["from"].is_string();
    for _ in 0..100 {
        if snapshot() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // What varies between runs and no pattern knows: the generation and the database checksum.
    let v = ok_json(run(&["verify", "--from", &replica, "--latest", "--json"]));
    let rebuild = &v["verify"]["rebuild"];
    let text_of = |k: &str| rebuild[k].as_str().unwrap().to_string();
    let scrub = f
        .scrub
        .clone()
        .exact(text_of("snapshot"), "[SNAPSHOT]")
        .exact(text_of("generation"), "[GENERATION]")
        .exact(text_of("checksum"), "[CHECKSUM]");
    let transcript = |args: &[&str], expected: i32| {
        let (o, t) = scrub.run(args);
        assert_eq!(code(&o), expected, "{}", text(&o));
        t
    };
    insta::assert_snapshot!(
        "sqlite_replica_list",
        transcript(&["list", "--from", &replica], 0)
    );
    insta::assert_snapshot!(
        "sqlite_replica_status",
        transcript(&["status", "--from", &replica], 0)
    );
    insta::assert_snapshot!(
        "sqlite_replica_verify",
        transcript(&["verify", "--from", &replica, "--latest"], 0)
    );
}
