//! Encrypted PostgreSQL backups through the `kars-backup` binary (a throwaway cluster, or
//! `KARS_TEST_PG_URL`; under `CI=true` a missing server or `age` tool fails these tests).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use kars_backup_postgres::testing::{TEST_PASSWORD, TestCluster};
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kars-backup"))
        .env_remove("KARS_BACKUP_LOG")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .args(args)
        .output()
        .expect("run kars-backup")
}

fn text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains(TEST_PASSWORD), "password leaked");
    o
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn age_available() -> bool {
    let found = Command::new("age-keygen").arg("--version").output().is_ok();
    if !found {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "age is required under CI=true (apt-get install age)"
        );
        eprintln!("skipping: age is not installed");
    }
    found
}

fn age_key(path: &Path) -> String {
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn encrypted_plain_and_custom_dumps_restore_only_with_the_key() {
    if !age_available() {
        return;
    }
    let Some(pg) = TestCluster::shared() else {
        return;
    };
    let db = TestCluster::unique_name("enc_src");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let recipient = age_key(&key);
    let wrong = dir.path().join("wrong.txt");
    age_key(&wrong);

    for (format, ending) in [("plain", ".sql.gz.age"), ("custom", ".dump.age")] {
        let store = dir.path().join(format!("store-{format}"));
        let doc = json(&ok(run(&[
            "backup",
            "--db",
            &pg.url(&db),
            "--to",
            &s(&store),
            "--format",
            format,
            "--encrypt-to",
            &recipient,
            "--json",
        ])));
        let name = doc["backup"].as_str().unwrap().to_string();
        assert!(name.ends_with(ending), "{name}");
        assert_eq!(doc["manifest"]["archive"]["encryption"]["scheme"], "age");

        // The runbook's way back for the plain dump: age -d | gunzip | psql.
        if format == "plain" {
            let check = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "age -d -i '{}' '{}' | gzip -dc | head -c 100000 | grep -q 'CREATE TABLE public.assets'",
                    s(&key),
                    s(&store.join(&name))
                ))
                .status()
                .unwrap();
            assert!(check.success());
        }

        // A wrong key, in place over a live copy: exit 5, the copy unchanged.
        let copy = TestCluster::unique_name("enc_copy");
        ok(run(&[
            "restore",
            "--db",
            &pg.url(&copy),
            "--from",
            &s(&store),
            "--latest",
            "--identity",
            &s(&key),
        ]));
        assert_eq!(pg.content_hashes(&copy), pg.content_hashes(&db));
        pg.psql(&copy, "DELETE FROM app_settings;");
        let before = pg.content_hashes(&copy);
        let o = run(&[
            "restore",
            "--db",
            &pg.url(&copy),
            "--from",
            &s(&store),
            "--latest",
            "--yes",
            "--mode",
            "in-place",
            "--identity",
            &s(&wrong),
        ]);
        assert_eq!(o.status.code(), Some(5), "{}", text(&o));
        assert_eq!(
            pg.content_hashes(&copy),
            before,
            "a wrong key changed the database"
        );
        let o = run(&[
            "restore",
            "--db",
            &pg.url(&copy),
            "--from",
            &s(&store),
            "--latest",
            "--yes",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert_eq!(pg.content_hashes(&copy), before);

        // verify with the key.
        ok(run(&[
            "verify",
            "--from",
            &s(&store),
            "--latest",
            "--scratch-db",
            &pg.server_url(),
            "--identity",
            &s(&key),
        ]));
        pg.drop_database(&copy);
    }
    pg.drop_database(&db);
}
