//! End-to-end tests of the `kars-backup` binary on a real PostgreSQL server (a throwaway cluster,
//! or `KARS_TEST_PG_URL`). Under `CI=true` a missing server fails these tests.

use kars_backup::postgres::testing::{TEST_PASSWORD, TestCluster};

mod common;
use common::*;

#[test]
fn backup_list_verify_restore_and_inspect_a_postgres_database() {
    let Some((pg, db)) = rich_pg_database("cli_src") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = pg.url(&db);

    let doc = json(&ok_pg(run(&[
        "backup",
        "--db",
        &url,
        "--to",
        &s(&store),
        "--json",
    ])));
    let name = doc["backup"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("kars-postgres-") && name.ends_with(".sql.gz"),
        "{name}"
    );
    assert_eq!(doc["manifest"]["engine"], "postgres");
    let manifest = std::fs::read_to_string(store.join(format!("{name}.meta"))).unwrap();
    assert!(!manifest.contains(TEST_PASSWORD));
    assert!(manifest.contains("\"public.assets\""), "{manifest}");
    // The runbook's way back works on it: gunzip | psql.
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | head -c 100000 | grep -q 'CREATE TABLE public.assets'",
            s(&store.join(&name))
        ))
        .status()
        .unwrap();
    assert!(check.success());

    let list = json(&ok_pg(run(&["list", "--from", &s(&store), "--json"])));
    assert_eq!(list["latest"], name.as_str());
    assert_eq!(list["backups"][0]["engine"], "postgres");

    // verify needs a scratch server.
    let o = run(&["verify", "--from", &s(&store), "--latest"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--scratch-db"), "{}", text(&o));
    let v = json(&ok_pg(run(&[
        "verify",
        "--from",
        &s(&store),
        "--latest",
        "--scratch-db",
        &pg.server_url(),
        "--json",
    ])));
    assert_eq!(v["ok"], true);
    assert!(pg.databases_like("kars_verify_").is_empty());

    // With a config job, flags win over the file, as for restore: the job's programs directory
    // does not exist, so verify fails naming it, unless --pg-bin-dir points at the real one.
    let config = dir.path().join("kars.toml");
    std::fs::write(
        &config,
        format!(
            "[[job]]\nname = \"pg\"\nsource = \"{url}\"\n[[job.destination]]\nurl = \"{}\"\n\
             [job.postgres]\nbin-dir = \"/nonexistent/kars-pg-bin\"\n\
             [job.verify]\nscratch-db = \"{}\"\n",
            s(&store),
            pg.server_url()
        ),
    )
    .unwrap();
    let o = run(&["verify", "--config", &s(&config), "--latest"]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("/nonexistent/kars-pg-bin"),
        "{}",
        text(&o)
    );
    let pg_bin = kars_backup::postgres::testing::find_bin_dir().unwrap();
    let v = json(&ok_pg(run(&[
        "verify",
        "--config",
        &s(&config),
        "--latest",
        "--pg-bin-dir",
        &s(&pg_bin),
        "--json",
    ])));
    assert_eq!(v["ok"], true);

    // Restore into a new database (created), then over it (previous one kept).
    let copy = TestCluster::unique_name("cli_copy");
    ok_pg(run(&[
        "restore",
        "--db",
        &pg.url(&copy),
        "--from",
        &s(&store),
        "--latest",
    ]));
    assert_eq!(pg.content_hashes(&copy), pg.content_hashes(&db));
    let o = run(&[
        "restore",
        "--db",
        &pg.url(&copy),
        "--from",
        &s(&store),
        "--latest",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--yes"), "{}", text(&o));
    let r = json(&ok_pg(run(&[
        "restore",
        "--db",
        &pg.url(&copy),
        "--from",
        &s(&store),
        "--latest",
        "--yes",
        "--json",
    ])));
    let kept = r["restore"]["previous_kept_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(kept.starts_with(&format!("{copy}_pre_restore_")), "{kept}");

    // In place, from DATABASE_URL.
    pg.psql(
        &copy,
        "DELETE FROM app_settings; DROP TABLE \"Sales\".\"Orders\";",
    );
    let o = bin()
        .env("DATABASE_URL", pg.url(&copy))
        .args([
            "restore",
            "--from",
            &s(&store),
            "--latest",
            "--yes",
            "--mode",
            "in-place",
        ])
        .output()
        .unwrap();
    ok_pg(o);
    assert_eq!(pg.content_hashes(&copy), pg.content_hashes(&db));

    let i = json(&ok_pg(run(&["inspect", "--db", &url, "--json"])));
    assert_eq!(i["engine"], "postgres");
    assert!(i["databases"][0]["tables"].as_array().unwrap().len() >= 7);
    for d in [&db, &copy, &kept] {
        pg.drop_database(d);
    }
}

#[test]
fn custom_and_parallel_formats_with_table_selection() {
    let Some((pg, db)) = rich_pg_database("cli_fmt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = pg.url(&db);

    // DATABASE_URL when --db is absent; a parallel directory dump.
    let o = bin()
        .env("DATABASE_URL", &url)
        .args(["backup", "--to", &s(&store), "--jobs", "2", "--json"])
        .output()
        .unwrap();
    let doc = json(&ok_pg(o));
    let dir_name = doc["backup"].as_str().unwrap().to_string();
    assert!(dir_name.ends_with(".dir.tar"), "{dir_name}");
    let par = TestCluster::unique_name("cli_par");
    ok_pg(run(&[
        "restore",
        "--db",
        &pg.url(&par),
        "--from",
        &s(&store),
        "--backup",
        &dir_name,
        "--jobs",
        "2",
    ]));
    assert_eq!(pg.content_hashes(&par), pg.content_hashes(&db));

    let doc = json(&ok_pg(run(&[
        "backup",
        "--db",
        &url,
        "--to",
        &s(&store),
        "--format",
        "custom",
        "--exclude-table",
        "audit_logs*",
        "--json",
    ])));
    let custom = doc["backup"].as_str().unwrap().to_string();
    assert!(custom.ends_with(".dump"), "{custom}");
    let tables = doc["manifest"]["databases"][0]["tables"]
        .as_array()
        .unwrap();
    assert!(
        tables
            .iter()
            .all(|t| !t["name"].as_str().unwrap().contains("audit"))
    );

    pg.psql(&db, "DELETE FROM app_settings;");
    ok_pg(run(&[
        "restore",
        "--db",
        &url,
        "--from",
        &s(&store),
        "--backup",
        &custom,
        "--yes",
        "--mode",
        "in-place",
        "--table",
        "app_settings",
    ]));
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM app_settings"), "25");

    let o = run(&[
        "backup",
        "--db",
        &url,
        "--to",
        &s(&store),
        "--format",
        "plain",
        "--jobs",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let wrong = url.replace(TEST_PASSWORD, "not-the-password");
    let o = run(&["backup", "--db", &wrong, "--to", &s(&store)]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("password authentication failed"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("not-the-password"), "{}", text(&o));
    pg.drop_database(&db);
    pg.drop_database(&par);
}
