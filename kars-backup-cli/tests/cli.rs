//! End-to-end tests of the `kars-backup` binary on real SQLite files and directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;
use common::*;

/// A small KARS-like database.
fn make_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT);
         CREATE TABLE assets (id INTEGER PRIMARY KEY, owner INTEGER REFERENCES users(id), tag TEXT, photo BLOB);
         CREATE INDEX assets_owner ON assets(owner);
         INSERT INTO users (name, email) VALUES ('Ada', 'ada@example.com'), ('Grace', NULL), ('Jürgen', '');
         INSERT INTO assets (owner, tag, photo) VALUES (1, 'LAPTOP-1', x'00ff10'), (2, 'PHONE-7', NULL);",
    )
    .unwrap();
}

fn archives(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    v.sort();
    v
}

#[test]
fn demo_runs_the_whole_job() {
    let dir = tempfile::tempdir().unwrap();
    let o = ok(bin().current_dir(dir.path()).arg("demo").output().unwrap());
    let out = stdout(&o);
    assert!(out.contains("Backup created: asset-data-"), "{out}");
    assert!(out.contains("same tables and row counts"), "{out}");
    assert_eq!(archives(&dir.path().join("backups")).len(), 1);
    for table in ["users", "assets", "companies", "audit_logs"] {
        assert_eq!(
            count(&dir.path().join("kars-demo/assets.db"), table),
            count(&dir.path().join("kars-demo/restored.db"), table),
            "{table}"
        );
        assert!(
            count(&dir.path().join("kars-demo/restored.db"), table) > 0,
            "{table}"
        );
    }
}

#[test]
fn backup_list_verify_restore_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let o = ok(run(&[
        "backup",
        "--db",
        &format!("sqlite://{}", s(&db)),
        "--to",
        &s(&a),
        "--to",
        &format!("file://{}", s(&b)),
        "--json",
    ]));
    let doc = json(&o);
    assert_eq!(doc["ok"], true);
    let name = doc["backup"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("asset-data-") && name.ends_with(".tar.gz"),
        "{name}"
    );
    let tables = &doc["manifest"]["databases"][0]["tables"];
    assert_eq!(tables[1]["name"], "users");
    assert_eq!(tables[1]["rows"], 3);
    for d in [&a, &b] {
        assert!(d.join(&name).is_file());
        assert!(d.join(format!("{name}.meta")).is_file());
        assert!(!d.join(format!("{name}.pending")).exists());
        let list = json(&ok(run(&["list", "--from", &s(d), "--json"])));
        assert_eq!(list["latest"], name.as_str());
        assert_eq!(list["backups"][0]["kind"], "committed");
        assert_eq!(list["backups"][0]["rows"], 5);
    }

    let v = json(&ok(run(&[
        "verify",
        "--from",
        &s(&a),
        "--latest",
        "--json",
    ])));
    assert_eq!(v["ok"], true);
    assert!(
        v["verify"]["verification"]["checks"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );

    // Change the live database, then restore over it.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DELETE FROM assets; DELETE FROM users WHERE id > 1;")
        .unwrap();
    assert_eq!(count(&db, "users"), 1);
    let r = json(&ok(run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&b),
        "--backup",
        &name,
        "--yes",
        "--json",
    ])));
    assert_eq!(r["restore"]["checksum_verified"], true);
    assert_eq!(count(&db, "users"), 3);
    assert_eq!(count(&db, "assets"), 2);
    let kept = r["restore"]["previous_kept_at"].as_str().unwrap();
    assert_eq!(
        count(Path::new(kept), "users"),
        1,
        "the previous database is kept"
    );

    let i = json(&ok(run(&["inspect", "--db", &s(&db), "--json"])));
    assert_eq!(i["databases"][0]["tables"][1]["rows"], 3);
    let text = stdout(&ok(run(&["inspect", "--db", &s(&db)])));
    assert!(text.contains("users") && text.contains("3 rows"), "{text}");
}

#[test]
fn restore_without_a_terminal_or_yes_refuses_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    ok(run(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &s(&dir.path().join("b")),
    ]));
    let before = std::fs::read(&db).unwrap();
    let o = run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&dir.path().join("b")),
        "--latest",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn a_corrupted_archive_fails_verify_and_restore_and_the_database_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let dest = dir.path().join("b");
    ok(run(&["backup", "--db", &s(&db), "--to", &s(&dest)]));
    let archive = archives(&dest).pop().unwrap();
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&archive, bytes).unwrap();

    let o = run(&["verify", "--from", &s(&dest), "--latest"]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));

    let before = std::fs::read(&db).unwrap();
    let o = run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&dest),
        "--latest",
        "--yes",
    ]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "live database untouched"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("kars-restore") || n.contains("pre-restore"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn runbook_archives_are_listed_as_such_and_restore_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let live = data.join("assets.db");
    make_db(&live);
    // Checkpoint so that the runbook's raw `tar czf` of the volume holds the data.
    rusqlite::Connection::open(&live)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
        .unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let name = "asset-data-20241218-020000.tar.gz";
    let st = Command::new("tar")
        .args(["czf", &s(&backups.join(name)), "-C", &s(&data), "."])
        .status()
        .expect("tar is installed");
    assert!(st.success());
    std::fs::write(
        backups.join(format!("{name}.meta")),
        "Backup Date: 2024-12-18T02:00:00+00:00\nDatabase Type: SQLite\n",
    )
    .unwrap();

    let list = json(&ok(run(&["list", "--from", &s(&backups), "--json"])));
    assert_eq!(list["backups"][0]["kind"], "runbook");
    assert_eq!(list["latest"], Value::Null);

    let target = dir.path().join("restore/assets.db");
    std::fs::create_dir(dir.path().join("restore")).unwrap();
    let o = run(&[
        "restore",
        "--db",
        &s(&target),
        "--from",
        &s(&backups),
        "--latest",
        "--yes",
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--backup"),
        "the error says how to restore it: {}",
        stderr(&o)
    );

    ok(run(&[
        "restore",
        "--db",
        &s(&target),
        "--from",
        &s(&backups),
        "--backup",
        name,
        "--yes",
    ]));
    assert_eq!(count(&target, "users"), 3);
    ok(run(&["verify", "--from", &s(&backups), "--backup", name]));
}

#[test]
fn clear_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let o = run(&[
        "backup",
        "--db",
        &s(&missing),
        "--to",
        &s(&dir.path().join("b")),
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains(&s(&missing)), "{}", stderr(&o));
    assert!(archives(&dir.path().join("b")).is_empty());

    let db = dir.path().join("assets.db");
    make_db(&db);
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = run(&["backup", "--db", &s(&db), "--to", &s(&file.join("sub"))]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains(&s(&file)), "{}", stderr(&o));

    let o = run(&["backup", "--db", &s(&db), "--to", "ftp://host/x"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));

    let o = run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&dir.path().join("b")),
        "--latest",
        "--backup",
        "x",
    ]);
    assert_eq!(code(&o), 2, "clap usage error: {}", stderr(&o));

    let not_sqlite = dir.path().join("notes.txt");
    std::fs::write(&not_sqlite, "hello").unwrap();
    let o = run(&[
        "backup",
        "--db",
        &s(&not_sqlite),
        "--to",
        &s(&dir.path().join("b")),
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not an SQLite database"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unreadable_and_unwritable_paths_are_named() {
    // Root ignores permission bits, so run as an unprivileged user when we are root.
    let as_user = |args: &[&str]| -> Output {
        if unsafe_is_root() {
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_kars-backup"))
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("setpriv (util-linux) is installed")
        } else {
            run(args)
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("kars-perm-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    make_db(&data.join("assets.db"));
    for e in std::fs::read_dir(&data).unwrap() {
        std::fs::set_permissions(
            e.unwrap().path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    // Unreadable directory (volume mode).
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let o = as_user(&["backup", "--db", &s(&data), "--to", &s(&out.join("b1"))]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains(&s(&data)), "{}", stderr(&o));
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // Destination not writable.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let o = as_user(&[
        "backup",
        "--db",
        &s(&data.join("assets.db")),
        "--to",
        &s(&ro.join("b")),
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains(&s(&ro.join("b"))), "{}", stderr(&o));
}

fn unsafe_is_root() -> bool {
    // SAFETY-free: read the effective uid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_backup_killed_mid_way_leaves_no_listed_backup() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    {
        // ~96 MiB of incompressible rows, so the backup takes long enough to be killed.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB); BEGIN;")
            .unwrap();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut stmt = conn.prepare("INSERT INTO blobs (b) VALUES (?1)").unwrap();
        for _ in 0..1536 {
            let blob: Vec<u8> = (0..65536)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            stmt.execute([blob]).unwrap();
        }
        drop(stmt);
        conn.execute_batch("COMMIT;").unwrap();
    }
    let dest = dir.path().join("b");
    let mut child = bin()
        .args([
            "backup",
            "--db",
            &s(&db),
            "--to",
            &s(&dest),
            "--threads",
            "1",
            "--compression",
            "gzip:9",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as the archive upload has started.
    let started = std::time::Instant::now();
    loop {
        // The marker is committed and the archive's temporary file exists.
        let names: Vec<String> = std::fs::read_dir(&dest)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let uploading = names.iter().any(|n| n.ends_with(".tar.gz.pending"))
            && names
                .iter()
                .any(|n| n.starts_with(".kars-tmp-asset-data") && n.contains(".tar.gz-"));
        if uploading {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup finished before it could be killed"
        );
        assert!(started.elapsed().as_secs() < 60, "the upload never started");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let list = json(&ok(run(&["list", "--from", &s(&dest), "--json"])));
    assert_eq!(list["backups"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(list["latest"], Value::Null);
    let all = json(&ok(run(&["list", "--from", &s(&dest), "--json", "--all"])));
    assert_eq!(all["backups"][0]["kind"], "incomplete", "{all}");
    let o = run(&[
        "restore",
        "--db",
        &s(&dir.path().join("x.db")),
        "--from",
        &s(&dest),
        "--latest",
        "--yes",
    ]);
    assert_ne!(code(&o), 0);
}

#[test]
fn a_volume_backup_restores_into_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("uploads")).unwrap();
    make_db(&data.join("assets.db"));
    std::fs::write(data.join("uploads/logo.png"), b"\x89PNG fake").unwrap();
    let dest = dir.path().join("b");
    let doc = json(&ok(run(&[
        "backup",
        "--db",
        &s(&data),
        "--to",
        &s(&dest),
        "--json",
    ])));
    assert_eq!(doc["manifest"]["databases"][0]["name"], "assets.db");
    ok(run(&["verify", "--from", &s(&dest), "--latest"]));
    let target = dir.path().join("restored-volume");
    ok(run(&[
        "restore",
        "--db",
        &s(&target),
        "--from",
        &s(&dest),
        "--latest",
    ]));
    assert_eq!(count(&target.join("assets.db"), "users"), 3);
    assert_eq!(
        std::fs::read(target.join("uploads/logo.png")).unwrap(),
        b"\x89PNG fake"
    );
}

#[test]
fn zstd_backups_restore_and_open_with_the_zstd_tool() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let dest = dir.path().join("b");
    let doc = json(&ok(run(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &s(&dest),
        "--compression",
        "zstd:5",
        "--json",
    ])));
    let name = doc["backup"].as_str().unwrap().to_string();
    assert!(name.ends_with(".tar.zst"), "{name}");
    assert_eq!(doc["manifest"]["archive"]["compression"]["codec"], "zstd");
    ok(run(&["verify", "--from", &s(&dest), "--latest"]));
    let target = dir.path().join("restored.db");
    ok(run(&[
        "restore",
        "--db",
        &s(&target),
        "--from",
        &s(&dest),
        "--latest",
    ]));
    assert_eq!(count(&target, "users"), 3);
    // The runbook's tools open it too: zstd -d, then tar.
    let out = dir.path().join("x");
    std::fs::create_dir(&out).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc '{}' | tar xf - -C '{}'",
            s(&dest.join(&name)),
            s(&out)
        ))
        .status()
        .expect("sh");
    assert!(st.success(), "zstd -dc | tar xf");
    assert_eq!(count(&out.join("assets.db"), "users"), 3);
}

#[test]
fn test_queries_and_minimum_rows_gate_verify_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let dest = dir.path().join("b");
    ok(run(&["backup", "--db", &s(&db), "--to", &s(&dest)]));
    let v = json(&ok(run(&[
        "verify",
        "--from",
        &s(&dest),
        "--latest",
        "--json",
        "--verify-query",
        "SELECT count(*) = 3 FROM users",
        "--min-rows",
        "assets=2",
    ])));
    let checks = v["verify"]["verification"]["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["check"].as_str().unwrap().contains("SELECT count(*) = 3"))
    );
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");

    let o = run(&[
        "verify",
        "--from",
        &s(&dest),
        "--latest",
        "--min-rows",
        "users=1000",
    ]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("users"), "{}", stderr(&o));

    // A failing test query stops the restore before the swap: the live file is untouched.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let o = run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&dest),
        "--latest",
        "--yes",
        "--verify-query",
        "SELECT count(*) > 100 FROM users",
    ]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let o = run(&[
        "verify",
        "--from",
        &s(&dest),
        "--latest",
        "--min-rows",
        "users",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn the_audit_log_check_catches_data_older_than_the_backup_claims() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE audit_logs (id INTEGER PRIMARY KEY, action TEXT, created_at TEXT NOT NULL);
         INSERT INTO audit_logs (action, created_at) VALUES ('login', datetime('now', '-3 days'));",
    )
    .unwrap();
    let dest = dir.path().join("b");
    ok(run(&["backup", "--db", &s(&db), "--to", &s(&dest)]));
    // The newest audit entry is three days older than the backup: stale data under a new name.
    let o = run(&[
        "verify",
        "--from",
        &s(&dest),
        "--latest",
        "--audit-log",
        "audit_logs.created_at",
    ]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stale or mislabelled"),
        "{}",
        stderr(&o)
    );
    // With a 4-day RPO, or with fresh activity, it passes.
    ok(run(&[
        "verify",
        "--from",
        &s(&dest),
        "--latest",
        "--audit-log",
        "audit_logs.created_at",
        "--rpo",
        "4d",
    ]));
    conn.execute(
        "INSERT INTO audit_logs (action, created_at) VALUES ('update', datetime('now'))",
        [],
    )
    .unwrap();
    let dest2 = dir.path().join("b2");
    ok(run(&["backup", "--db", &s(&db), "--to", &s(&dest2)]));
    ok(run(&[
        "verify",
        "--from",
        &s(&dest2),
        "--latest",
        "--audit-log",
        "audit_logs.created_at",
    ]));
    let o = run(&[
        "verify",
        "--from",
        &s(&dest2),
        "--latest",
        "--audit-log",
        "audit_logs",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}
