//! Encrypted PostgreSQL backups through the `kars-backup` binary (a throwaway cluster, or
//! `KARS_TEST_PG_URL`; under `CI=true` a missing server or `age` tool fails these tests).

use std::process::Command;

use kars_backup::postgres::testing::TestCluster;

mod common;
use common::*;

#[test]
fn encrypted_plain_and_custom_dumps_restore_only_with_the_key() {
    if !tool("age-keygen", "age") {
        return;
    }
    let Some((pg, db)) = rich_pg_database("enc_src") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let recipient = age_key(&key);
    let wrong = dir.path().join("wrong.txt");
    age_key(&wrong);

    for (format, ending) in [("plain", ".sql.gz.age"), ("custom", ".dump.age")] {
        let store = dir.path().join(format!("store-{format}"));
        let doc = json(&ok_pg(run(&[
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
        ok_pg(run(&[
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
        ok_pg(run(&[
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
