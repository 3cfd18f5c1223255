//! End-to-end tests of the `kars-backup` binary with remote destinations: one backup (encrypted
//! to a key made by `kars-backup key init`) to local disk, S3 (moto), Azure (Azurite), GCS
//! (fake-gcs-server) and Git LFS in one run, then list, restore and copy from each; unencrypted
//! backups and copies refused at every kind of off-site destination unless `--no-encrypt` says so. The emulators come from `scripts/services.sh`; outside CI a test
//! whose emulators are not configured prints why and passes, under `CI=true` it fails.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

mod common;
use common::*;

fn env(var: &str) -> Option<String> {
    kars_backup::core::testing::service_var(var)
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

/// The emulators' endpoints and buckets (see `scripts/services.sh`).
struct Emulators {
    s3: String,
    bucket: String,
    az: String,
    container: String,
    gcs: String,
    gbucket: String,
}

/// The emulators, or `None` (outside CI) when they are not configured.
fn emulators() -> Option<Emulators> {
    Some(Emulators {
        s3: env("KARS_TEST_S3_ENDPOINT")?,
        bucket: env("KARS_TEST_S3_BUCKET")?,
        az: env("KARS_TEST_AZURE_ENDPOINT")?,
        container: env("KARS_TEST_AZURE_CONTAINER")?,
        gcs: env("KARS_TEST_GCS_ENDPOINT")?,
        gbucket: env("KARS_TEST_GCS_BUCKET")?,
    })
}

/// kars-backup with the S3 emulator's credentials (see [`bin_s3`]).
fn run_s3(args: &[&str]) -> Output {
    bin_s3().args(args).output().expect("run kars-backup")
}

#[test]
fn one_backup_to_local_s3_azure_gcs_and_git_lfs_then_list_restore_and_copy() {
    let Some(Emulators {
        s3,
        bucket,
        az,
        container,
        gcs,
        gbucket,
    }) = emulators()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    // Off-site copies are encrypted: a key made by `key init`.
    let key = dir.path().join("keys/age-identity.txt");
    let recipient = stdout(&ok(run(&["key", "init", "--out", &s(&key)])))
        .trim()
        .to_string();
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
        "--encrypt-to",
        &recipient,
        "--json",
    ];
    for d in &dests {
        args.extend(["--to", d.as_str()]);
    }
    let doc = ok_json(run_s3(&args));
    assert_eq!(doc["ok"], true, "{doc}");
    let name = doc["backup"].as_str().unwrap().to_string();
    assert!(name.ends_with(".tar.gz.age"), "{name}");
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
            "--identity",
            &s(&key),
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
        "--identity",
        &s(&key),
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
        "--no-encrypt",
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

/// One URL of every off-site destination kind (none of them is contacted: the refusal comes
/// first), each paired with what it is.
fn off_site_urls(dir: &Path, port: u16) -> Vec<String> {
    let lfs = dir.join("never.git");
    vec![
        format!("s3://bucket/kars?endpoint=http://127.0.0.1:{port}&allow_http=true"),
        format!("s3a://bucket/kars?endpoint=http://127.0.0.1:{port}&allow_http=true"),
        format!("gs://bucket/kars?endpoint=http://127.0.0.1:{port}"),
        format!("gcs://bucket/kars?endpoint=http://127.0.0.1:{port}"),
        format!("az://container/kars?emulator=true&endpoint=http://127.0.0.1:{port}"),
        format!("azure://container/kars?emulator=true&endpoint=http://127.0.0.1:{port}"),
        "https://account.blob.core.windows.net/container/kars".to_string(),
        format!("git+file://{}?path=kars", lfs.display()),
        format!("git+ssh://git@127.0.0.1:{port}/srv/backups.git"),
    ]
}

/// Without encryption and without `--no-encrypt`, a backup to any off-site destination kind is
/// refused with exit 2 and a message saying how to encrypt or opt out, before the database is
/// read or anything is written (also not at the local destination given beside it).
#[test]
fn a_plaintext_backup_to_any_off_site_destination_is_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let before = std::fs::read(&db).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let local = dir.path().join("local");
    for url in off_site_urls(dir.path(), port) {
        let o = run_s3(&["backup", "--db", &s(&db), "--to", &s(&local), "--to", &url]);
        assert_eq!(code(&o), 2, "{url}: {}", text(&o));
        let err = stderr(&o);
        assert!(err.contains("refusing to store"), "{url}: {err}");
        assert!(err.contains("unencrypted"), "{url}: {err}");
        assert!(err.contains("kars-backup key init"), "{url}: {err}");
        assert!(err.contains("--encrypt-to"), "{url}: {err}");
        assert!(err.contains("--no-encrypt"), "{url}: {err}");
        assert!(err.contains("encryption = \"none\""), "{url}: {err}");
        // Nothing was written anywhere, and the database is as it was.
        let written = std::fs::read_dir(&local).map_or(0, |d| d.count());
        assert_eq!(written, 0, "{url}: the local destination stays empty");
        assert!(!dir.path().join("never.git").exists(), "{url}");
        assert_eq!(std::fs::read(&db).unwrap(), before, "{url}");
        // --json: one document with the exit code.
        let o = run_s3(&["backup", "--db", &s(&db), "--to", &url, "--json"]);
        assert_eq!(code(&o), 2, "{url}");
        assert_eq!(json(&o)["exit_code"], 2, "{url}");
    }
    // A local destination alone stays plaintext by default, with a one-line note.
    let o = ok(run(&["backup", "--db", &s(&db), "--to", &s(&local)]));
    let err = stderr(&o);
    let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("note: ")).collect();
    assert_eq!(notes.len(), 1, "{}", text(&o));
    assert!(notes[0].contains("not encrypted"), "{}", notes[0]);
    assert!(notes[0].contains("kars-backup key init"), "{}", notes[0]);
    // --no-encrypt with keys is a contradiction.
    let o = run(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &s(&local),
        "--no-encrypt",
        "--encrypt-to",
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
    ]);
    assert_eq!(code(&o), 2, "{}", text(&o));
}

/// A copy cannot encrypt: an unencrypted backup is copied off-site only with `--no-encrypt`.
#[test]
fn a_plaintext_copy_to_any_off_site_destination_is_refused_without_the_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let local = dir.path().join("local");
    ok(run(&["backup", "--db", &s(&db), "--to", &s(&local)]));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for url in off_site_urls(dir.path(), port) {
        let o = run_s3(&["copy", "--from", &s(&local), "--to", &url, "--latest"]);
        assert_eq!(code(&o), 2, "{url}: {}", text(&o));
        assert!(stderr(&o).contains("--no-encrypt"), "{url}: {}", text(&o));
        assert!(!dir.path().join("never.git").exists(), "{url}");
    }
    // With the opt-out the copy is attempted (and fails here only because nothing listens).
    let dead = format!("s3://nowhere/x?endpoint=http://127.0.0.1:{port}&allow_http=true");
    let o = run_s3(&[
        "copy",
        "--from",
        &s(&local),
        "--to",
        &dead,
        "--latest",
        "--no-encrypt",
    ]);
    assert_eq!(code(&o), 4, "{}", text(&o));
}

/// With `--no-encrypt` plaintext goes to every emulated off-site destination, and copies between
/// them need the opt-out too.
#[test]
fn no_encrypt_stores_plaintext_at_s3_azure_gcs_and_git_lfs() {
    let Some(Emulators {
        s3,
        bucket,
        az,
        container,
        gcs,
        gbucket,
    }) = emulators()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let run_id = format!("plain-{}", std::process::id());
    let dests = [
        format!("s3://{bucket}/{run_id}?endpoint={s3}&allow_http=true"),
        format!("az://{container}/{run_id}?emulator=true&endpoint={az}"),
        format!("gs://{gbucket}/{run_id}?endpoint={gcs}"),
        format!("git+file://{}/lfs.git?path=plain", dir.path().display()),
    ];
    for d in &dests {
        let o = run_s3(&["backup", "--db", &s(&db), "--to", d]);
        assert_eq!(code(&o), 2, "{d}: {}", text(&o));
        let doc = ok_json(run_s3(&[
            "backup",
            "--db",
            &s(&db),
            "--to",
            d,
            "--no-encrypt",
            "--json",
        ]));
        let name = doc["backup"].as_str().unwrap();
        assert!(name.ends_with(".tar.gz"), "{d}: {name}");
        assert!(doc["manifest"]["archive"]["encryption"].is_null(), "{d}");
        assert!(
            !stderr(&ok(run_s3(&["list", "--from", d]))).contains("note:"),
            "{d}"
        );
    }
    let to = format!("s3://{bucket}/{run_id}-copy?endpoint={s3}&allow_http=true");
    let o = run_s3(&["copy", "--from", &dests[2], "--to", &to, "--latest"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    ok(run_s3(&[
        "copy",
        "--from",
        &dests[2],
        "--to",
        &to,
        "--latest",
        "--no-encrypt",
    ]));
    let list = ok_json(run_s3(&["list", "--from", &to, "--json"]));
    assert_eq!(list["backups"][0]["kind"], "committed");
}
