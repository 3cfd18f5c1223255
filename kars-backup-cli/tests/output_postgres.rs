//! Snapshot tests of the human (text) output of `kars-backup` on a real PostgreSQL server (the
//! throwaway test cluster, or `KARS_TEST_PG_URL`; under `CI=true` a missing server fails these
//! tests): backup, list, inspect, verify, restore (into a new database, over a live one, in
//! place, refused by its checks, rolled back by a failing hook), drill and status. See
//! `output_sqlite.rs` for how the snapshots are kept.

use kars_backup::postgres::testing::{TEST_PASSWORD, TestCluster};

mod common;
use common::*;
#[path = "common/transcript.rs"]
mod transcript;
use transcript::{Scrub, check_lines};

/// A database on the test cluster, the directory its backups go to, and a scrub that hides the
/// names, paths, password and port that differ between runs.
struct Fixture {
    pg: &'static TestCluster,
    db: String,
    dir: tempfile::TempDir,
    scrub: Scrub,
    drop: Vec<String>,
}

impl Fixture {
    fn new(prefix: &str) -> Option<Self> {
        let (pg, db) = rich_pg_database(prefix)?;
        let dir = tempfile::tempdir().unwrap();
        let scrub = Scrub::default()
            .exact(s(dir.path()), "[TMP]")
            .exact(TEST_PASSWORD, "[PASSWORD]")
            .exact(&db, "[DB]");
        Some(Fixture {
            pg,
            drop: vec![db.clone()],
            db,
            dir,
            scrub,
        })
    }

    /// A new database name on the cluster, shown as `placeholder`.
    fn other_database(&mut self, prefix: &str, placeholder: &str) -> String {
        let name = TestCluster::unique_name(prefix);
        self.scrub = self.scrub.clone().exact(&name, placeholder);
        self.drop.push(name.clone());
        name
    }

    fn store(&self) -> String {
        s(&self.dir.path().join("store"))
    }

    /// Runs `kars-backup`, asserts its exit code and that the password shows nowhere, returns the
    /// transcript with the names of kept copies and staging databases generalised.
    fn run(&self, args: &[&str], expected_code: i32) -> String {
        let (o, t) = self.scrub.run(args);
        let o = no_leak(o);
        assert_eq!(code(&o), expected_code, "{}", text(&o));
        // Check lines name tables, never the scratch or staging database.
        for line in check_lines(&t) {
            assert!(
                !line.contains("kars_verify_") && !line.contains("_kars_staging_"),
                "a check line names an internal database: {line}\n{t}"
            );
        }
        t
    }

    /// [`run`](Self::run) of `command --from store --latest` and `more`; `verify` and `drill`
    /// with the cluster as their scratch server.
    fn latest(&self, command: &str, more: &[&str], expected_code: i32) -> String {
        let (store, server) = (self.store(), self.pg.server_url());
        let mut args = vec![command, "--from", &store, "--latest"];
        if command != "restore" {
            args.extend(["--scratch-db", server.as_str()]);
        }
        args.extend_from_slice(more);
        self.run(&args, expected_code)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for db in &self.drop {
            for kept in self.pg.databases_like(&format!("{db}_pre_restore_")) {
                self.pg.drop_database(&kept);
            }
            self.pg.drop_database(db);
        }
    }
}

#[test]
fn backup_list_inspect_verify_drill_and_status() {
    let Some(f) = Fixture::new("snap_src") else {
        return;
    };
    let url = f.pg.url(&f.db);
    let store = f.store();

    let t = f.run(&["backup", "--db", &url, "--to", &store], 0);
    assert!(t.contains("PostgreSQL [VERSION]"), "{t}");
    assert!(!t.contains("SQLite"), "{t}");
    insta::assert_snapshot!("postgres_backup", t);
    let t = f.run(&["list", "--from", &store], 0);
    insta::assert_snapshot!("postgres_list", t);
    let t = f.run(&["inspect", "--db", &url], 0);
    insta::assert_snapshot!("postgres_inspect", t);

    let t = f.latest(
        "verify",
        &[
            "--min-rows",
            "users=1",
            "--min-rows",
            "public.assets=500",
            "--verify-query",
            "SELECT count(*) > 0 FROM users",
            "--audit-log",
            "audit_logs.timestamp",
            "--rpo",
            "10000d",
        ],
        0,
    );
    insta::assert_snapshot!("postgres_verify", t);
    let t = f.latest(
        "verify",
        &[
            "--min-rows",
            "users=1000",
            "--verify-query",
            "SELECT count(*) > 0 FROM users WHERE name = 'Nobody'",
        ],
        5,
    );
    insta::assert_snapshot!("postgres_verify_failed", t);

    let t = f.latest("drill", &["--min-rows", "users=1"], 0);
    insta::assert_snapshot!("postgres_drill", t);
    let t = f.run(&["status", "--from", &store], 0);
    insta::assert_snapshot!("postgres_status", t);
}

#[test]
fn restores() {
    let Some(mut f) = Fixture::new("snap_live") else {
        return;
    };
    let url = f.pg.url(&f.db);
    let store = f.store();
    f.run(&["backup", "--db", &url, "--to", &store], 0);

    // Into a new database: created, nothing to confirm.
    let copy = f.other_database("snap_copy", "[COPY]");
    let copy_url = f.pg.url(&copy);
    let t = f.latest("restore", &["--db", &copy_url], 0);
    insta::assert_snapshot!("postgres_restore_new", t);
    assert_eq!(f.pg.content_hashes(&copy), f.pg.content_hashes(&f.db));

    // Over a live database, without --yes: refused.
    f.pg.psql(&f.db, "DELETE FROM app_settings;");
    let t = f.latest("restore", &["--db", &url], 2);
    insta::assert_snapshot!("postgres_restore_unconfirmed", t);

    // Refused by its checks: the live database untouched.
    let t = f.latest(
        "restore",
        &["--db", &url, "--yes", "--min-rows", "app_settings=100"],
        5,
    );
    insta::assert_snapshot!("postgres_restore_refused_by_checks", t);
    assert_eq!(f.pg.psql(&f.db, "SELECT count(*) FROM app_settings"), "0");

    // A start hook that fails (with nothing on its stderr): rolled back.
    let t = f.latest(
        "restore",
        &["--db", &url, "--yes", "--start-cmd", "exit 3"],
        3,
    );
    insta::assert_snapshot!("postgres_restore_rolled_back", t);
    assert_eq!(f.pg.psql(&f.db, "SELECT count(*) FROM app_settings"), "0");

    // Safe mode over the live database, with hooks: the previous one kept.
    let t = f.latest(
        "restore",
        &[
            "--db",
            &url,
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
    insta::assert_snapshot!("postgres_restore_safe_over_live", t);
    assert_eq!(f.pg.psql(&f.db, "SELECT count(*) FROM app_settings"), "25");

    // In place.
    f.pg.psql(&f.db, "DELETE FROM app_settings;");
    let t = f.latest("restore", &["--db", &url, "--yes", "--mode", "in-place"], 0);
    insta::assert_snapshot!("postgres_restore_in_place", t);
    assert_eq!(f.pg.psql(&f.db, "SELECT count(*) FROM app_settings"), "25");
}
