//! Helpers shared by the CLI crate's integration tests. Each test binary includes this module
//! with `mod common;` and uses only a subset of it.
#![allow(dead_code)]

pub(crate) mod http;
pub(crate) mod restore;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use kars_backup::postgres::testing::{TEST_PASSWORD, TestCluster};
use serde_json::Value;

/// The `kars-backup` binary with no stdin and neither `KARS_BACKUP_LOG` nor `DATABASE_URL`
/// inherited from the environment the tests run in.
pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kars-backup"));
    c.env_remove("KARS_BACKUP_LOG")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null());
    c
}

/// [`bin`] with the S3 emulator's static credentials (without them object_store would ask the
/// instance metadata service) and no inherited `STORAGE_EMULATOR_HOST`.
pub(crate) fn bin_s3() -> Command {
    let mut c = bin();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("STORAGE_EMULATOR_HOST");
    c
}

/// Runs `kars-backup` (see [`bin`]) with `args` and waits for it.
pub(crate) fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run kars-backup")
}

/// The exit code; panics when the process was killed by a signal.
pub(crate) fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// Standard output, lossily decoded.
pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error, lossily decoded.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Both streams, labelled, for assertion messages and `contains` checks.
pub(crate) fn text(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", stdout(o), stderr(o))
}

/// Standard output parsed as one JSON document; panics with both streams if it is not.
pub(crate) fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// Asserts exit code 0 (with both streams in the message) and passes the output on.
pub(crate) fn ok(o: Output) -> Output {
    assert_eq!(code(&o), 0, "{}", text(&o));
    o
}

/// [`ok`], then [`json`] of its standard output.
pub(crate) fn ok_json(o: Output) -> Value {
    json(&ok(o))
}

/// Asserts that neither stream contains the test cluster's password, and passes the output on.
pub(crate) fn no_leak(o: Output) -> Output {
    assert!(
        !text(&o).contains(TEST_PASSWORD),
        "password leaked: {}",
        text(&o)
    );
    o
}

/// [`ok`] and [`no_leak`]: the check of every successful run against PostgreSQL.
pub(crate) fn ok_pg(o: Output) -> Output {
    no_leak(ok(o))
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A path as a command-line argument.
pub(crate) fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The number of rows in `table` of the SQLite database `db`.
pub(crate) fn count(db: &Path, table: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Whether the external tool `name` (from the Debian `package`) is installed. Outside CI a missing
/// tool prints why the test is skipped; under `CI=true` it fails the test.
pub(crate) fn tool(name: &str, package: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} is required under CI=true (Debian: apt-get install {package})");
        }
        eprintln!("skipping: {name} is not installed (apt-get install {package})");
    }
    found
}

/// Runs an external tool, asserts it succeeded (with its stderr in the message), returns stdout.
pub(crate) fn run_tool(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new age identity file at `path` (needs `age-keygen`, Debian package age); returns its
/// recipient (`age1…`).
pub(crate) fn age_key(path: &Path) -> String {
    run_tool(Command::new("age-keygen").arg("-o").arg(path));
    String::from_utf8(run_tool(Command::new("age-keygen").arg("-y").arg(path)))
        .unwrap()
        .trim()
        .to_string()
}

/// A live database made by `make` (which must create a `users` table with more than one row),
/// changed so that it differs from its backups, and its bytes.
pub(crate) fn live_db(dir: &Path, make: fn(&Path)) -> (std::path::PathBuf, Vec<u8>) {
    let live = dir.join("live.db");
    make(&live);
    rusqlite::Connection::open(&live)
        .unwrap()
        .execute("DELETE FROM users WHERE id > 1", [])
        .unwrap();
    let bytes = std::fs::read(&live).unwrap();
    (live, bytes)
}

/// The shared PostgreSQL test cluster with a new rich database named after `prefix`; `None`
/// (the test passes without running) when no server is available outside CI.
pub(crate) fn rich_pg_database(prefix: &str) -> Option<(&'static TestCluster, String)> {
    let pg = TestCluster::shared()?;
    let db = TestCluster::unique_name(prefix);
    pg.create_rich_database(&db);
    Some((pg, db))
}

/// (rows, max id) of table `t` of a writer's database, after its integrity check passed.
pub(crate) fn ids(db: &Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    conn.query_row("SELECT count(*), coalesce(max(id), 0) FROM t", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

/// `restore --latest` of the replica at directory `dest` into `dir/latest.db`, then its
/// [`ids`].
pub(crate) fn latest_replicated(dir: &Path, dest: &Path) -> (i64, i64) {
    let latest = dir.join("latest.db");
    ok(run(&[
        "restore",
        "--db",
        &latest.display().to_string(),
        "--from",
        &format!("file://{}", dest.display()),
        "--latest",
        "--yes",
    ]));
    ids(&latest)
}
