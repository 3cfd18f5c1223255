//! End-to-end tests of `kars-backup drill`, `restore --fallback`, restores from several
//! destinations and `status`'s last drill, on real SQLite files and local directories.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::*;

fn sql(db: &Path, batch: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(batch)
        .unwrap();
}

fn users(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap()
}

/// A KARS-like database with `n` users.
fn make_db(path: &Path, n: usize) {
    sql(
        path,
        "PRAGMA journal_mode=WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE assets (id INTEGER PRIMARY KEY, owner INTEGER REFERENCES users(id), tag TEXT);",
    );
    for i in 0..n {
        sql(
            path,
            &format!("INSERT INTO users (name) VALUES ('user{i}');"),
        );
    }
}

fn backup(db: &Path, to: &[&Path]) -> String {
    let mut args = vec!["backup".to_string(), "--db".into(), s(db), "--json".into()];
    for t in to {
        args.push("--to".into());
        args.push(s(t));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    json(&ok(run(&args)))["backup"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The live file's bytes after a checkpoint (so the WAL is empty and the file is the database).
fn settled_bytes(db: &Path) -> Vec<u8> {
    sql(db, "PRAGMA wal_checkpoint(TRUNCATE);");
    std::fs::read(db).unwrap()
}

/// Staging files and kept copies next to the live database.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.contains("kars-restore") || n.contains("pre-restore") || n.contains("staging")
        })
        .collect()
}

#[test]
fn an_invalid_latest_backup_fails_without_fallback_and_restores_the_previous_one_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let live_dir = dir.path().join("live");
    std::fs::create_dir(&live_dir).unwrap();
    let db = live_dir.join("assets.db");
    make_db(&db, 3);
    let store = dir.path().join("store");
    let good = backup(&db, &[&store]);
    // The newest backup has lost its users: it fails the test query below.
    sql(&db, "DELETE FROM users;");
    let bad = backup(&db, &[&store]);
    assert_ne!(good, bad);
    // The live database differs from both backups.
    sql(&db, "INSERT INTO users (name) VALUES ('live-only');");
    let before = settled_bytes(&db);
    let query = "SELECT count(*) > 0 FROM users";

    // Without --fallback: exit 5, the live database exactly as it was, no staging left.
    let o = run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&store),
        "--latest",
        "--yes",
        "--verify-query",
        query,
    ]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains(query), "{}", text(&o));
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(
        leftovers(&live_dir).is_empty(),
        "{:?}",
        leftovers(&live_dir)
    );
    // --min-rows fails it the same way, in JSON with the attempt listed.
    let o = run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&store),
        "--latest",
        "--yes",
        "--min-rows",
        "users=1",
        "--json",
    ]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    let doc = json(&o);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 5);
    assert_eq!(doc["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(doc["attempts"][0]["backup"], bad.as_str());
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // With --fallback: the previous backup is restored, and both attempts are reported.
    let doc = json(&ok(run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&store),
        "--latest",
        "--yes",
        "--fallback",
        "--verify-query",
        query,
        "--json",
    ])));
    assert_eq!(doc["restore"]["backup"], good.as_str());
    let attempts = doc["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["backup"], bad.as_str());
    assert_eq!(attempts[0]["outcome"], "failed");
    assert_eq!(attempts[0]["category"], "verification");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains(query),
        "{attempts:?}"
    );
    assert_eq!(attempts[1]["backup"], good.as_str());
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(users(&db), 3);

    // Text output lists the attempts too; --max-attempts 1 stops after the first.
    sql(&db, "DELETE FROM users;");
    let o = ok(run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&store),
        "--latest",
        "--yes",
        "--fallback",
        "--verify-query",
        query,
    ]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("1. ") && out.contains("2. "), "{out}");
    assert!(
        out.contains(&bad) && out.contains("FAILED (verification)"),
        "{out}"
    );
    let o = run(&[
        "restore",
        "--db",
        &s(&db),
        "--from",
        &s(&store),
        "--latest",
        "--yes",
        "--fallback",
        "--max-attempts",
        "1",
        "--verify-query",
        query,
    ]);
    assert_eq!(code(&o), 5, "{}", text(&o));
}

#[test]
fn a_corrupt_copy_at_one_destination_is_restored_from_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db, 4);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let name = backup(&db, &[&a, &b]);
    // Flip one byte in the middle of a's archive.
    let archive = a.join(&name);
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();

    let target = dir.path().join("restored.db");
    let doc = json(&ok(run(&[
        "restore",
        "--db",
        &s(&target),
        "--from",
        &s(&a),
        "--from",
        &s(&b),
        "--latest",
        "--json",
    ])));
    assert_eq!(doc["restore"]["backup"], name.as_str());
    assert!(
        doc["restore"]["destination"]
            .as_str()
            .unwrap()
            .ends_with("/b"),
        "{doc}"
    );
    let attempts = doc["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts[0]["destination"].as_str().unwrap().ends_with("/a"));
    assert_eq!(attempts[0]["category"], "verification");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{attempts:?}"
    );
    assert_eq!(users(&target), 4);

    // verify takes several destinations too; only the corrupt copy alone fails (exit 5).
    let v = json(&ok(run(&[
        "verify",
        "--from",
        &s(&a),
        "--from",
        &s(&b),
        "--latest",
        "--json",
    ])));
    assert!(v["verify"]["destination"].as_str().unwrap().ends_with("/b"));
    let o = run(&["verify", "--from", &s(&a), "--latest"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
}

#[test]
fn drills_measure_rto_and_rpo_store_their_reports_and_status_shows_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db, 3);
    let store = dir.path().join("store");
    let name = backup(&db, &[&store]);

    // No drill yet.
    let st = json(&ok(run(&["status", "--from", &s(&store), "--json"])));
    assert!(st["last_drill"].is_null());
    assert!(st["destinations"][0]["last_drill"].is_null());

    let o = ok(run(&[
        "drill",
        "--from",
        &s(&store),
        "--latest",
        "--verify-query",
        "SELECT count(*) = 3 FROM users",
        "--json",
    ]));
    let d = &json(&o)["drill"];
    assert_eq!(d["outcome"], "passed", "{d}");
    assert_eq!(d["passed"], true);
    assert_eq!(d["backup"], name.as_str());
    assert_eq!(d["engine"], "sqlite");
    let rto = d["rto"]["measured_secs"].as_f64().unwrap();
    assert!(rto > 0.0 && rto < 60.0, "{rto}");
    assert_eq!(d["rto"]["target_secs"], 3600);
    let rpo = d["rpo"]["measured_secs"].as_f64().unwrap();
    assert!((0.0..600.0).contains(&rpo), "{rpo}");
    assert_eq!(d["rpo"]["target_secs"], 86_400);
    let checks = d["verification"]["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["check"].as_str().unwrap().contains("count(*) = 3"))
    );
    // The scratch copy is gone.
    let scratch = d["scratch_target"].as_str().unwrap();
    assert!(!Path::new(scratch).exists(), "{scratch}");

    // Stored next to the backups, JSON and text; not a backup, not foreign, never pruned.
    let key = d["report_key"].as_str().unwrap();
    assert!(key.starts_with(".kars-drills/drill-"), "{key}");
    let stored: Value = serde_json::from_slice(&std::fs::read(store.join(key)).unwrap()).unwrap();
    assert_eq!(stored["id"], d["id"]);
    let txt = std::fs::read_to_string(store.join(key.replace(".json", ".txt"))).unwrap();
    assert!(
        txt.contains("PASSED") && txt.contains("RTO") && txt.contains("RPO"),
        "{txt}"
    );
    let list = json(&ok(run(&["list", "--from", &s(&store), "--all", "--json"])));
    assert_eq!(list["backups"].as_array().unwrap().len(), 1, "{list}");
    assert!(list["foreign"].as_array().unwrap().is_empty(), "{list}");
    assert_eq!(list["drill_reports"][0], key, "{list}");
    let pruned = json(&ok(run(&[
        "prune",
        "--from",
        &s(&store),
        "--policy",
        "last=1",
        "--json",
    ])));
    assert!(
        pruned["left_alone"].as_array().unwrap().is_empty(),
        "{pruned}"
    );
    assert!(store.join(key).exists());

    let st = json(&ok(run(&["status", "--from", &s(&store), "--json"])));
    assert_eq!(st["last_drill"]["passed"], true, "{st}");
    assert_eq!(st["destinations"][0]["last_drill"]["id"], d["id"]);
    assert_eq!(st["destinations"][0]["last_drill"]["backup"], name.as_str());
    let o = ok(run(&["status", "--from", &s(&store)]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("last drill") && out.contains("PASSED"),
        "{out}"
    );

    // A backup older than --rpo: verified, but the RPO is missed (exit 6), and status says so.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let o = run(&["drill", "--from", &s(&store), "--latest", "--rpo", "2s"]);
    assert_eq!(code(&o), 6, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("TARGET MISSED") && out.contains("MISSED"),
        "{out}"
    );
    let st = json(&ok(run(&["status", "--from", &s(&store), "--json"])));
    assert_eq!(st["last_drill"]["outcome"], "target-missed", "{st}");
    assert_eq!(st["last_drill"]["rpo_met"], false);
    assert_eq!(st["last_drill"]["rto_met"], true);

    // A backup that fails verification: exit 5, the failed drill is documented too.
    let o = run(&[
        "drill",
        "--from",
        &s(&store),
        "--backup",
        &name,
        "--min-rows",
        "users=1000",
        "--json",
    ]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    let d = &json(&o)["drill"];
    assert_eq!(d["outcome"], "failed");
    assert_eq!(d["error_category"], "verification");
    // status fails too (exit 5) while the last drill has failed: backups may not restore.
    let o = run(&["status", "--from", &s(&store)]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FAILED"), "{out}");
    let o = run(&["status", "--from", &s(&store), "--json"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    let st = json(&o);
    assert_eq!(st["ok"], false, "{st}");
    assert_eq!(st["drill_failed"], true, "{st}");
    let reports = std::fs::read_dir(store.join(".kars-drills"))
        .unwrap()
        .count();
    assert_eq!(reports, 6, "three drills, JSON and text each");

    // A usage error is not a drill result: nothing stored.
    let o = run(&[
        "drill",
        "--from",
        &s(&store),
        "--latest",
        "--audit-log",
        "nodot",
    ]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert_eq!(
        std::fs::read_dir(store.join(".kars-drills"))
            .unwrap()
            .count(),
        6
    );
    // --no-store stores nothing either, and an empty destination fails the drill.
    ok(run(&[
        "drill",
        "--from",
        &s(&store),
        "--latest",
        "--no-store",
    ]));
    assert_eq!(
        std::fs::read_dir(store.join(".kars-drills"))
            .unwrap()
            .count(),
        6
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = run(&["drill", "--from", &s(&empty), "--latest"]);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(text(&o).contains("no committed backup"), "{}", text(&o));
    // A passing drill clears status again.
    ok(run(&["drill", "--from", &s(&store), "--latest"]));
    let st = json(&ok(run(&["status", "--from", &s(&store), "--json"])));
    assert_eq!(st["ok"], true, "{st}");
    assert_eq!(st["drill_failed"], false, "{st}");
}
