//! End-to-end tests of `drill`, `restore --fallback` and failed verifications on a real
//! PostgreSQL server (a throwaway cluster, or `KARS_TEST_PG_URL`). Under `CI=true` a missing
//! server fails these tests.

use std::path::Path;
use std::process::Output;

use kars_backup::postgres::testing::{TEST_PASSWORD, TestCluster};
use serde_json::Value;

mod common;
use common::*;

fn backup(url: &str, store: &Path) -> String {
    json(&ok(run_pg(&[
        "backup",
        "--db",
        url,
        "--to",
        &s(store),
        "--json",
    ])))["backup"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Everything that identifies the live database: its OID (a swap by renaming would change it),
/// its schema and every relation's content hash.
fn fingerprint(
    pg: &TestCluster,
    db: &str,
) -> (String, String, std::collections::BTreeMap<String, String>) {
    let oid = pg.psql(
        "postgres",
        &format!("SELECT oid FROM pg_database WHERE datname = '{db}'"),
    );
    (oid, pg.schema_dump(db), pg.content_hashes(db))
}

/// [`run`] and [`no_leak`]: no run may print the password, whether it succeeds or not.
fn run_pg(args: &[&str]) -> Output {
    no_leak(run(args))
}

#[test]
fn a_failed_verification_leaves_the_live_postgres_database_as_it_was_and_fallback_uses_the_previous_backup()
 {
    let Some((pg, db)) = rich_pg_database("drill_live") else {
        return;
    };
    let url = pg.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let good = backup(&url, &store);
    // The newest backup has lost its settings: it fails the test query below.
    pg.psql(&db, "DELETE FROM app_settings;");
    let bad = backup(&url, &store);
    assert_ne!(good, bad);
    // The live database differs from both backups.
    pg.psql(
        &db,
        "INSERT INTO app_settings (key, value) VALUES ('live-only', '1');",
    );
    let before = fingerprint(pg, &db);
    let query = "SELECT count(*) > 1 FROM app_settings";

    for args in [
        vec!["--verify-query", query],
        vec!["--min-rows", "public.app_settings=2"],
    ] {
        let mut full = vec![
            "restore",
            "--db",
            &url,
            "--from",
            store.to_str().unwrap(),
            "--latest",
            "--yes",
            "--json",
        ];
        full.extend(args.iter().copied());
        let o = run_pg(&full);
        assert_eq!(o.status.code(), Some(5), "{}", text(&o));
        let doc = json(&o);
        assert_eq!(doc["attempts"].as_array().unwrap().len(), 1, "{doc}");
        assert_eq!(doc["attempts"][0]["backup"], bad.as_str());
        assert_eq!(fingerprint(pg, &db), before, "the live database changed");
        assert!(
            pg.databases_like(&format!("{db}_kars_staging")).is_empty(),
            "staging database left: {:?}",
            pg.databases_like(&format!("{db}_"))
        );
        assert!(pg.databases_like(&format!("{db}_pre_restore")).is_empty());
    }

    // With --fallback: restored from the previous backup; both attempts reported.
    let doc = json(&ok(run_pg(&[
        "restore",
        "--db",
        &url,
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
    assert_eq!(attempts[0]["category"], "verification");
    assert_eq!(attempts[1]["backup"], good.as_str());
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM app_settings"), "25");
    assert!(pg.databases_like(&format!("{db}_kars_staging")).is_empty());
    for d in pg.databases_like(&format!("{db}_pre_restore")) {
        pg.drop_database(&d);
    }
    pg.drop_database(&db);
}

#[test]
fn a_drill_of_a_postgres_backup_measures_rto_and_rpo_and_stores_its_report() {
    let Some((pg, db)) = rich_pg_database("drill_src") else {
        return;
    };
    let url = pg.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let name = backup(&url, &store);

    // The engine comes from the manifest; a scratch server is needed (usage error, nothing stored).
    let o = run_pg(&["drill", "--from", &s(&store), "--latest"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--scratch-db"), "{}", text(&o));
    assert!(!store.join(".kars-drills").exists());

    let doc = json(&ok(run_pg(&[
        "drill",
        "--from",
        &s(&store),
        "--latest",
        "--scratch-db",
        &pg.server_url(),
        "--verify-query",
        "SELECT count(*) = 25 FROM app_settings",
        "--json",
    ])));
    let d = &doc["drill"];
    assert_eq!(d["outcome"], "passed", "{d}");
    assert_eq!(d["engine"], "postgres");
    assert_eq!(d["backup"], name.as_str());
    let rto = d["rto"]["measured_secs"].as_f64().unwrap();
    assert!(rto > 0.0 && rto < 600.0, "{rto}");
    assert!(d["rpo"]["measured_secs"].as_f64().unwrap() >= 0.0);
    let checks = d["verification"]["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    assert!(checks.len() >= 2, "{checks:?}");
    // The temporary database is gone.
    assert!(pg.databases_like("kars_verify_").is_empty());
    let key = d["report_key"].as_str().unwrap();
    let stored = std::fs::read_to_string(store.join(key)).unwrap();
    assert!(!stored.contains(TEST_PASSWORD));
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["outcome"], "passed");

    let st = json(&ok(run_pg(&["status", "--from", &s(&store), "--json"])));
    assert_eq!(st["last_drill"]["id"], d["id"]);
    assert_eq!(st["last_drill"]["passed"], true);

    // Too strict an RTO: verified, target missed, exit 6.
    let o = run_pg(&[
        "drill",
        "--from",
        &s(&store),
        "--latest",
        "--scratch-db",
        &pg.server_url(),
        "--rto",
        "0s",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let d = &json(&o)["drill"];
    assert_eq!(d["outcome"], "target-missed");
    assert_eq!(d["rto"]["met"], false);
    assert_eq!(d["rpo"]["met"], true);
    assert!(pg.databases_like("kars_verify_").is_empty());
    pg.drop_database(&db);
}
