//! The `kars` verification preset end to end, on SQLite (the generated KARS database) and on
//! PostgreSQL (the KARS fixture on a throwaway cluster): `--checks kars`, `checks = "kars"` in
//! `[job.verify]`, run by `demo`, and failing when the data is not a healthy KARS.

use std::path::Path;

use kars_backup::postgres::testing::TestCluster;

mod common;
use common::*;

/// The names of the preset's checks, as reports show them.
const KARS_CHECKS: [&str; 6] = [
    "kars: users exist",
    "kars: at least one admin user",
    "kars: every asset's company exists",
    "kars: serial numbers are unique",
    "kars: asset tags are unique",
    "kars: newest audit_logs.timestamp within the RPO",
];

/// Every preset check appears in a verification report, passed.
fn assert_all_passed(checks: &serde_json::Value) {
    assert_passed(checks, &KARS_CHECKS);
}

/// These checks appear in a verification report, passed.
fn assert_passed(checks: &serde_json::Value, names: &[&str]) {
    let checks = checks.as_array().expect("checks");
    for &name in names {
        let c = checks
            .iter()
            .find(|c| c["check"].as_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} in {checks:?}"));
        assert_eq!(c["passed"], true, "{c}");
    }
}

fn sqlite_kars(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("assets.db");
    ok(run(&["demo-db", "--path", &s(&db), "--size-mb", "1"]));
    db
}

#[test]
fn demo_runs_the_kars_checks() {
    let dir = tempfile::tempdir().unwrap();
    let o = ok(bin()
        .current_dir(dir.path())
        .args(["demo", "--json"])
        .output()
        .unwrap());
    let doc = json(&o);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_all_passed(&doc["verify"]["verification"]["checks"]);
    let o = ok(bin().current_dir(dir.path()).arg("demo").output().unwrap());
    assert!(
        stdout(&o).contains("kars: at least one admin user"),
        "{}",
        text(&o)
    );
    let mode: String = rusqlite::Connection::open(dir.path().join("kars-demo/assets.db"))
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
}

#[test]
fn the_kars_checks_pass_on_kars_and_fail_without_an_admin_or_with_a_stale_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_kars(dir.path());
    let to = dir.path().join("backups");
    ok(run(&["backup", "--db", &s(&db), "--to", &s(&to)]));
    let doc = ok_json(run(&[
        "verify",
        "--from",
        &s(&to),
        "--latest",
        "--checks",
        "kars",
        "--json",
    ]));
    assert_all_passed(&doc["verify"]["verification"]["checks"]);

    // The newest audit entry is about a minute old: older than a 10-second RPO.
    let o = run(&[
        "verify",
        "--from",
        &s(&to),
        "--latest",
        "--checks",
        "kars",
        "--rpo",
        "10s",
    ]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("stale"), "{}", text(&o));

    // No admin left: exit 5, the check named with its SQL; restore leaves the live file alone.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE users SET role = 'manager' WHERE role = 'admin'", [])
        .unwrap();
    ok(run(&["backup", "--db", &s(&db), "--to", &s(&to)]));
    let o = run(&["verify", "--from", &s(&to), "--latest", "--checks", "kars"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("kars: at least one admin user"), "{all}");
    assert!(all.contains("role = 'admin'"), "{all}");
    let live = dir.path().join("live.db");
    ok(run(&["demo-db", "--path", &s(&live), "--size-mb", "1"]));
    let before = std::fs::read(&live).unwrap();
    let o = run(&[
        "restore",
        "--db",
        &s(&live),
        "--from",
        &s(&to),
        "--latest",
        "--yes",
        "--checks",
        "kars",
    ]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert_eq!(std::fs::read(&live).unwrap(), before);

    // An asset whose company is gone (foreign keys off, as a broken import would leave it).
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "UPDATE users SET role = 'admin' WHERE id = 1; PRAGMA foreign_keys = OFF; UPDATE assets SET company_id = 999999 WHERE id = 3;",
    )
    .unwrap();
    drop(conn);
    ok(run(&["backup", "--db", &s(&db), "--to", &s(&to)]));
    let o = run(&["verify", "--from", &s(&to), "--latest", "--checks", "kars"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains("kars: every asset's company exists"),
        "{}",
        text(&o)
    );
    assert!(
        !text(&o).contains("kars: at least one admin user: "),
        "{}",
        text(&o)
    );

    // --rpo is the window of --audit-log or --checks, and means nothing alone.
    let o = run(&["verify", "--from", &s(&to), "--latest", "--rpo", "1h"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let o = run(&["verify", "--from", &s(&to), "--latest", "--checks", "karss"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("use kars"), "{}", text(&o));
}

#[test]
fn checks_kars_in_a_job_verify_plan() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_kars(dir.path());
    let to = dir.path().join("backups");
    let config = dir.path().join("kars-backup.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate-dir = \"{}\"\n[[job]]\nname = \"kars\"\nsource = \"{}\"\n[[job.destination]]\nurl = \"{}\"\n[job.verify]\nchecks = \"kars\"\naudit-log = \"audit_logs.timestamp\"\nrpo = \"24h\"\n",
            s(&dir.path().join("state")),
            s(&db),
            s(&to)
        ),
    )
    .unwrap();
    let o = ok(run(&["config", "check", "--config", &s(&config)]));
    assert!(stdout(&o).contains("checks = \"kars\""), "{}", text(&o));
    ok(run(&["backup", "--config", &s(&config)]));
    let doc = ok_json(run(&[
        "verify",
        "--config",
        &s(&config),
        "--latest",
        "--json",
    ]));
    let checks = &doc["verify"]["verification"]["checks"];
    assert_passed(checks, &KARS_CHECKS[..5]);
    // audit-log = the preset's own audit check: it runs once (as the job's query).
    let audit: Vec<_> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"].as_str().unwrap().contains("audit_logs"))
        .collect();
    assert_eq!(audit.len(), 1, "{checks}");
    assert_eq!(audit[0]["passed"], true, "{checks}");
    let bad = config.with_file_name("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("checks = \"kars\"", "checks = \"karz\""),
    )
    .unwrap();
    let o = run(&["config", "check", "--config", &s(&bad)]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("unknown check preset"), "{}", text(&o));
}

#[test]
fn the_kars_checks_on_postgres() {
    let Some(pg) = TestCluster::shared() else {
        return;
    };
    let db = TestCluster::unique_name("kars_checks");
    pg.create_kars_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups");
    let url = pg.url(&db);
    ok_pg(run(&["backup", "--db", &url, "--to", &s(&to)]));
    let (store, server) = (s(&to), pg.server_url());
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--from",
            &store,
            "--latest",
            "--scratch-db",
            &server,
            "--checks",
            "kars",
        ];
        args.extend_from_slice(extra);
        no_leak(run(&args))
    };
    let doc = json(&ok(verify(&["--json"])));
    assert_all_passed(&doc["verify"]["verification"]["checks"]);
    // The audit log's `timestamp` (without time zone) is read as UTC: a 10-second RPO misses.
    let o = verify(&["--rpo", "10s"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("stale"), "{}", text(&o));

    // Without an admin the restore fails verification and leaves the live database as it was.
    pg.psql(
        &db,
        "UPDATE users SET role = 'manager' WHERE role = 'admin';",
    );
    ok_pg(run(&["backup", "--db", &url, "--to", &s(&to)]));
    let o = verify(&[]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains("kars: at least one admin user"),
        "{}",
        text(&o)
    );
    pg.psql(&db, "UPDATE users SET role = 'admin' WHERE id = 1;");
    let before = pg.content_hashes(&db);
    let o = no_leak(run(&[
        "restore",
        "--db",
        &url,
        "--from",
        &s(&to),
        "--latest",
        "--yes",
        "--checks",
        "kars",
    ]));
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert_eq!(pg.content_hashes(&db), before);
    pg.drop_database(&db);
}
