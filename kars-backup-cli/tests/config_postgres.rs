//! `backup --config` of a PostgreSQL job on a real server (a throwaway cluster, or
//! `KARS_TEST_PG_URL`). Under `CI=true` a missing server fails this test.

use kars_backup::postgres::testing::TEST_PASSWORD;
use serde_json::Value;

mod common;
use common::*;

#[test]
fn a_postgres_job_from_the_config_backs_up_with_its_dump_options() {
    let Some((pg, db)) = rich_pg_database("config_src") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = dir.path().join("kars-backup.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state-dir = "{state}"

[[job]]
name = "kars-postgres"
source = "${{DATABASE_URL}}"
[[job.destination]]
url = "{store}"
[job.postgres]
format = "custom"
"#,
            state = dir.path().join("state").display(),
            store = store.display(),
        ),
    )
    .unwrap();
    let o = bin()
        .args(["backup", "--config"])
        .arg(&config)
        .arg("--json")
        .env("DATABASE_URL", pg.url(&db))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(!text.contains(TEST_PASSWORD), "password leaked: {text}");
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let job = &doc["jobs"][0];
    let name = job["backup"].as_str().unwrap();
    assert!(
        name.starts_with("kars-postgres-") && name.ends_with(".dump"),
        "{name}"
    );
    assert_eq!(job["manifest"]["engine"], "postgres");
    let manifest = std::fs::read_to_string(store.join(format!("{name}.meta"))).unwrap();
    assert!(!manifest.contains(TEST_PASSWORD));
    assert!(manifest.contains(job["run_id"].as_str().unwrap()));

    // config check shows the URL redacted
    let o = bin()
        .args(["config", "check", "--config"])
        .arg(&config)
        .env("DATABASE_URL", pg.url(&db))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        !text.contains(TEST_PASSWORD) && text.contains(":***@"),
        "{text}"
    );
}
