//! End-to-end tests of the `kars-backup` binary with remote destinations: one backup to local
//! disk, S3 (moto), Azure (Azurite), GCS (fake-gcs-server) and Git LFS in one run, then list,
//! restore and copy from each. The emulators come from `scripts/services.sh`; outside CI a test
//! whose emulators are not configured prints why and passes, under `CI=true` it fails.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

mod common;
use common::*;

fn env(var: &str) -> Option<String> {
    kars_backup_core::testing::service_var(var)
}

fn make_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE assets (id INTEGER PRIMARY KEY, owner INTEGER, tag TEXT, photo BLOB);
         INSERT INTO users (name) VALUES ('Ada'), ('Grace'), ('Jürgen');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO assets (owner, tag, photo) SELECT i % 3 + 1, 'TAG-' || i, randomblob(2000) FROM n;",
    )
    .unwrap();
}

/// kars-backup with the S3 emulator's credentials (see [`bin_s3`]).
fn run_s3(args: &[&str]) -> Output {
    bin_s3().args(args).output().expect("run kars-backup")
}

#[test]
fn one_backup_to_local_s3_azure_gcs_and_git_lfs_then_list_restore_and_copy() {
    let (Some(s3), Some(bucket), Some(az), Some(container), Some(gcs), Some(gbucket)) = (
        env("KARS_TEST_S3_ENDPOINT"),
        env("KARS_TEST_S3_BUCKET"),
        env("KARS_TEST_AZURE_ENDPOINT"),
        env("KARS_TEST_AZURE_CONTAINER"),
        env("KARS_TEST_GCS_ENDPOINT"),
        env("KARS_TEST_GCS_BUCKET"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let run_id = format!("e2e-{}", std::process::id());
    let local = format!("file://{}", dir.path().join("local").display());
    let dests = [
        local.clone(),
        format!("s3://{bucket}/{run_id}?endpoint={s3}&allow_http=true"),
        format!("az://{container}/{run_id}?emulator=true&endpoint={az}"),
        format!("gs://{gbucket}/{run_id}?endpoint={gcs}"),
        format!("git+file://{}/lfs.git?path=kars", dir.path().display()),
    ];
    let mut args = vec![
        "backup",
        "--db",
        db.to_str().unwrap(),
        "--verify-upload",
        "--json",
    ];
    for d in &dests {
        args.extend(["--to", d.as_str()]);
    }
    let doc = ok_json(run_s3(&args));
    assert_eq!(doc["ok"], true, "{doc}");
    let name = doc["backup"].as_str().unwrap().to_string();
    let outcomes = doc["destinations"].as_array().unwrap();
    assert_eq!(outcomes.len(), dests.len());
    assert!(outcomes.iter().all(|o| o["error"].is_null()), "{doc}");

    for (i, d) in dests.iter().enumerate() {
        let list = ok_json(run_s3(&["list", "--from", d, "--json"]));
        assert_eq!(list["latest"], name.as_str(), "{d}: {list}");
        assert_eq!(list["backups"][0]["kind"], "committed", "{d}");
        // Restore from this destination over a changed live database.
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("DELETE FROM assets WHERE id > 10;")
            .unwrap();
        let r = ok_json(run_s3(&[
            "restore",
            "--db",
            db.to_str().unwrap(),
            "--from",
            d,
            "--latest",
            "--yes",
            "--json",
        ]));
        assert_eq!(r["restore"]["checksum_verified"], true, "{d}");
        assert_eq!(
            count(&db, "assets"),
            2000,
            "restored from destination {i} ({d})"
        );
        assert_eq!(count(&db, "users"), 3);
    }

    // Copy the backup from S3 to a new local directory and from GCS to Git LFS (another path).
    let copy_target = format!("file://{}", dir.path().join("copy").display());
    let c = ok_json(run_s3(&[
        "copy",
        "--from",
        &dests[1],
        "--to",
        &copy_target,
        "--latest",
        "--json",
    ]));
    assert_eq!(c["copy"]["backup"], name.as_str());
    let again = ok_json(run_s3(&[
        "copy",
        "--from",
        &dests[1],
        "--to",
        &copy_target,
        "--backup",
        &name,
        "--json",
    ]));
    assert_eq!(again["copy"]["already_present"], true);
    let list = ok_json(run_s3(&["list", "--from", &copy_target, "--json"]));
    assert_eq!(list["latest"], name.as_str());
    let verify = ok_json(run_s3(&[
        "verify",
        "--from",
        &copy_target,
        "--latest",
        "--json",
    ]));
    assert_eq!(verify["ok"], true);
    let lfs2 = format!("git+file://{}/lfs.git?path=copied", dir.path().display());
    ok_json(run_s3(&[
        "copy", "--from", &dests[3], "--to", &lfs2, "--latest", "--json",
    ]));
    let list = ok_json(run_s3(&["list", "--from", &lfs2, "--json"]));
    assert_eq!(list["latest"], name.as_str());
}

/// A destination that cannot be reached fails the run with exit code 4, names the failure, and
/// the copy at the other destination is committed. Needs no emulator: nothing listens there.
#[test]
fn an_unreachable_destination_gives_exit_4_and_keeps_the_other_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let local = dir.path().join("local");
    let dead = format!("s3://nowhere/x?endpoint=http://127.0.0.1:{port}&allow_http=true");
    let o = run_s3(&[
        "backup",
        "--db",
        db.to_str().unwrap(),
        "--to",
        local.to_str().unwrap(),
        "--to",
        &dead,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert!(doc["destinations"][0]["error"].is_null(), "{doc}");
    assert!(doc["destinations"][1]["error"].as_str().is_some(), "{doc}");
    let list = ok_json(run_s3(&[
        "list",
        "--from",
        local.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(list["latest"], doc["backup"]);
    assert!(!text(&o).contains("AWS_SECRET"), "no secrets in output");
}

/// Secrets never show: a URL with credentials is refused without echoing them.
#[test]
fn credentials_in_a_url_are_refused_and_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let o = run_s3(&[
        "backup",
        "--db",
        db.to_str().unwrap(),
        "--to",
        "s3://AKIAEXAMPLE:hunter2@bucket/x",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!text(&o).contains("hunter2"), "{}", text(&o));
}
