//! End-to-end tests of `backup --physical` and `restore --physical` with the `kars-backup`
//! binary, on a real cluster that archives its WAL into a directory (a copying
//! `archive_command`; the restores fetch it with a copying `--restore-command`). Under `CI=true`
//! a missing server fails these tests.

use std::path::Path;
use std::time::{Duration, Instant};

use kars_backup::postgres::testing::{TEST_PASSWORD, TestCluster};

mod common;
use common::*;

fn cluster() -> Option<&'static TestCluster> {
    TestCluster::shared_archiving()
}

/// A directory the cluster's OS user may write into.
fn workdir(pg: &TestCluster) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    if let Some(user) = pg.os_user() {
        assert!(
            std::process::Command::new("chown")
                .arg(format!("{user}:"))
                .arg(t.path())
                .status()
                .unwrap()
                .success()
        );
    }
    t
}

/// Switches WAL segments and waits until the finished one is archived.
fn switch_wal(pg: &TestCluster, archive: &Path) {
    let seg = pg.psql("pitr", "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !archive.join(&seg).exists() {
        assert!(Instant::now() < deadline, "{seg} was not archived");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn insert(pg: &TestCluster, from: i32, to: i32) {
    for n in from..=to {
        pg.psql("pitr", &format!("INSERT INTO pitr_log VALUES ({n})"));
    }
}

/// `restore --physical` from `store` into `pgdata` with `args` after the common ones.
fn restore(store: &Path, pgdata: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "restore".to_string(),
        "--physical".into(),
        "--pgdata".into(),
        s(pgdata),
        "--from".into(),
        s(store),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    run(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn physical_backup_and_restore_to_an_instant_and_to_the_latest() {
    let Some(pg) = cluster() else { return };
    let archive = pg.archive_dir().unwrap();
    pg.create_database("pitr");
    pg.psql("pitr", "CREATE TABLE pitr_log (n int PRIMARY KEY)");
    insert(pg, 1, 5);
    let dir = workdir(pg);
    let store = dir.path().join("store");
    let bin = s(pg.bin_dir());

    let url = pg.url("pitr");
    let backup = |extra: &[&str]| {
        let mut args = vec!["backup", "--physical", "--db", &url, "--to"];
        let to = s(&store);
        args.push(&to);
        args.extend_from_slice(extra);
        run(&args)
    };
    let doc = json(&ok_pg(backup(&[
        "--compression",
        "zstd",
        "--pg-bin-dir",
        &bin,
        "--json",
    ])));
    let name = doc["backup"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("kars-pgbase-") && name.ends_with(".tar.zst"),
        "{name}"
    );
    let physical = &doc["manifest"]["physical"];
    assert_eq!(physical["timeline"], 1);
    assert!(
        archive
            .join(physical["stop_wal"].as_str().unwrap())
            .exists()
    );
    let manifest = std::fs::read_to_string(store.join(format!("{name}.meta"))).unwrap();
    assert!(!manifest.contains(TEST_PASSWORD));
    let text_out = ok_pg(run(&["list", "--from", &s(&store)]));
    assert!(text(&text_out).contains(&name), "{}", text(&text_out));

    insert(pg, 6, 10);
    let t = pg.psql(
        "pitr",
        "SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM pitr_log WHERE n = 8",
    );
    switch_wal(pg, &archive);
    let restore_command = format!("cp '{}/%f' '%p'", archive.display());

    // To the instant row 8 committed: rows 1..8, verified while paused.
    let pgdata = dir.path().join("at-8");
    let doc = json(&ok_pg(restore(
        &store,
        &pgdata,
        &[
            "--to-time",
            &t,
            "--restore-command",
            &restore_command,
            "--pg-bin-dir",
            &bin,
            "--verify-query",
            "SELECT count(*) = 8 AND max(n) = 8 FROM pitr_log",
            "--yes",
            "--json",
        ],
    )));
    assert_eq!(doc["restore"]["backup"], name.as_str());
    assert_eq!(doc["restore"]["timeline"], 2);
    assert!(pgdata.join("PG_VERSION").exists());
    assert!(!pgdata.join("postmaster.pid").exists());

    // The latest state, in text.
    let pgdata = dir.path().join("latest");
    let latest = |pgdata: &Path, query: &str, extra: &[&str]| {
        let mut args = vec!["--latest", "--restore-command", &restore_command];
        args.extend_from_slice(&["--pg-bin-dir", &bin, "--verify-query", query]);
        args.extend_from_slice(extra);
        ok_pg(restore(&store, pgdata, &args))
    };
    let o = latest(&pgdata, "SELECT count(*) = 10 FROM pitr_log", &[]);
    let out = text(&o);
    assert!(out.contains("Restore completed successfully."), "{out}");
    assert!(out.contains("end of the archive"), "{out}");

    // verify and drill: the same path into a scratch directory, removed afterwards.
    let scratch = workdir(pg);
    let scratch_dir = s(scratch.path());
    let check = |command: &str, which: &[&str], query: &str, extra: &[&str]| {
        let mut args = vec![command, "--physical", "--from"];
        let from = s(&store);
        args.push(&from);
        args.extend_from_slice(which);
        args.extend_from_slice(&[
            "--pgdata",
            &scratch_dir,
            "--restore-command",
            &restore_command,
            "--pg-bin-dir",
            &bin,
            "--verify-query",
            query,
        ]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = ok_pg(check(
        "verify",
        &["--latest"],
        "SELECT count(*) = 10 FROM pitr_log",
        &[],
    ));
    assert!(text(&o).contains("is good"), "{}", text(&o));
    let doc = json(&ok_pg(check(
        "drill",
        &["--to-time", &t],
        "SELECT count(*) = 8 FROM pitr_log",
        &["--rto", "10m", "--json"],
    )));
    assert_eq!(doc["drill"]["rto"]["met"], true, "{doc}");
    assert_eq!(doc["drill"]["passed"], true, "{doc}");
    assert_eq!(doc["restore"]["timeline"], 2);
    assert_eq!(doc["drill"]["backup"], name.as_str());
    assert!(doc["drill"]["restored_to"].is_string(), "{doc}");
    // Stored like every drill's report, and shown by status as the last drill.
    let key = doc["drill"]["report_key"].as_str().unwrap().to_string();
    assert!(key.starts_with(".kars-drills/"), "{key}");
    assert!(store.join(&key).exists(), "{key}");
    let status = json(&run(&["status", "--from", &s(&store), "--json"]));
    assert_eq!(status["last_drill"]["id"], doc["drill"]["id"], "{status}");
    assert_eq!(status["last_drill"]["passed"], true, "{status}");
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "the scratch copies are removed"
    );
    // A failing check fails the verification (exit 5) and leaves nothing behind.
    let o = check(
        "verify",
        &["--to-time", &t],
        "SELECT count(*) = 9 FROM pitr_log",
        &[],
    );
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);

    // A drill to a random instant between the two base backups' ends (commits after the window,
    // so replay can find the instant).
    let first_end = chrono::DateTime::parse_from_rfc3339(physical["end_time"].as_str().unwrap())
        .unwrap()
        .to_utc();
    let second = json(&ok_pg(backup(&["--pg-bin-dir", &bin, "--json"])));
    let second_end = chrono::DateTime::parse_from_rfc3339(
        second["manifest"]["physical"]["end_time"].as_str().unwrap(),
    )
    .unwrap()
    .to_utc();
    insert(pg, 11, 12);
    switch_wal(pg, &archive);
    let doc = json(&ok_pg(check(
        "drill",
        &["--random-instant"],
        "SELECT count(*) BETWEEN 5 AND 10 FROM pitr_log",
        &["--json"],
    )));
    let at = chrono::DateTime::parse_from_rfc3339(doc["drill"]["restored_to"].as_str().unwrap())
        .unwrap()
        .to_utc();
    assert!(first_end < at && at <= second_end, "{doc}");
    assert_eq!(doc["drill"]["passed"], true, "{doc}");
    let o = ok_pg(check(
        "drill",
        &["--random-instant"],
        "SELECT true",
        &["--no-store"],
    ));
    assert!(text(&o).contains("restored to"), "{}", text(&o));
    let o = check(
        "drill",
        &["--random-instant", "--latest"],
        "SELECT true",
        &[],
    );
    assert_eq!(code(&o), 2, "{}", text(&o));

    // The newest base backup's stored copy damaged: the restore falls back to the older one,
    // which replays more WAL to the same state, and says so.
    let damaged = store.join(second["backup"].as_str().unwrap());
    let mut bytes = std::fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&damaged, bytes).unwrap();
    let doc = json(&latest(
        &dir.path().join("fallback"),
        "SELECT count(*) = 12 FROM pitr_log",
        &["--json"],
    ));
    assert_eq!(doc["restore"]["backup"], name.as_str(), "{doc}");
    assert!(
        doc["restore"]["steps"][0]
            .as_str()
            .unwrap()
            .contains("is damaged"),
        "{doc}"
    );

    // A configuration file's job takes base backups too.
    let config = dir.path().join("kars.toml");
    std::fs::write(
        &config,
        format!(
            "[[job]]\nname = \"pg-base\"\nsource = \"{url}\"\ncompression = \"zstd\"\n\n[job.postgres]\nphysical = true\nbin-dir = \"{bin}\"\n\n[[job.destination]]\nurl = \"{}\"\n",
            s(&dir.path().join("from-config"))
        ),
    )
    .unwrap();
    let o = ok_pg(run(&["backup", "--config", &s(&config)]));
    assert!(text(&o).contains("kars-pgbase-"), "{}", text(&o));
    assert!(
        text(&o).contains("physical base backup of cluster"),
        "{}",
        text(&o)
    );

    // Usage errors.
    let o = restore(&store, &dir.path().join("x"), &[]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("--to-time <TIME>"), "{}", text(&o));
    let o = restore(
        &store,
        &pgdata,
        &["--latest", "--restore-command", &restore_command],
    );
    assert_ne!(code(&o), 0);
    assert!(text(&o).contains("not empty"), "{}", text(&o));
    let o = backup(&["--format", "custom"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("dump options"), "{}", text(&o));
}
