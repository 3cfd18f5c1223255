//! End-to-end tests of the job's own age key: `key init` and `key show`, a backup encrypted to a
//! generated key and restored with it, `[job.encryption] identity-file`, and what happens when
//! the key is wrong or missing (`verify`, `drill`, `restore`, `status`): the documented exit
//! code, a clear message, and a live database left byte-for-byte as it was.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod common;
use common::*;

fn make_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, password_hash TEXT);
         INSERT INTO users (name, password_hash) VALUES ('Ada', '$2b$10$fake'), ('Grace', '$2b$10$fake2');
         CREATE TABLE assets (id INTEGER PRIMARY KEY, tag TEXT);
         INSERT INTO assets (tag) VALUES ('LAPTOP-1'), ('PHONE-7');",
    )
    .unwrap();
}

/// `key init --out FILE`: the recipient on stdout.
fn key_init(path: &Path) -> String {
    let o = ok(run(&["key", "init", "--out", &s(path)]));
    stdout(&o).trim().to_string()
}

/// A database, a generated key with its recipient and a second, unrelated key, in `dir`.
struct Fixture {
    db: PathBuf,
    key: PathBuf,
    recipient: String,
    other: PathBuf,
    to: PathBuf,
}

fn fixture(dir: &Path) -> Fixture {
    let db = dir.join("assets.db");
    make_db(&db);
    let key = dir.join("key.txt");
    let recipient = key_init(&key);
    let other = dir.join("other.txt");
    key_init(&other);
    Fixture {
        db,
        key,
        recipient,
        other,
        to: dir.join("backups"),
    }
}

#[test]
fn key_init_writes_a_private_identity_prints_its_recipient_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("etc/kars-backup/age-identity.txt");
    let o = ok(run(&["key", "init", "--out", &s(&key)]));
    let recipient = stdout(&o).trim().to_string();
    assert!(recipient.starts_with("age1"), "{}", text(&o));
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "only the recipient on stdout"
    );
    let advice = stderr(&o);
    assert!(advice.contains("offline"), "{advice}");
    assert!(advice.contains("identity-file"), "{advice}");
    assert!(
        !text(&o).contains("AGE-SECRET-KEY"),
        "the secret is never printed"
    );
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    for created in [key.parent().unwrap(), &dir.path().join("etc")] {
        assert_eq!(
            std::fs::metadata(created).unwrap().mode() & 0o777,
            0o700,
            "{}",
            created.display()
        );
    }
    // `key show` gives the same recipient; so does the age tool's format.
    let shown = ok(run(&["key", "show", "--identity", &s(&key)]));
    assert_eq!(stdout(&shown).trim(), recipient);
    let doc = ok_json(run(&["key", "show", "--identity", &s(&key), "--json"]));
    assert_eq!(doc["recipients"][0], recipient.as_str());
    if tool("age-keygen", "age") {
        let y = run_tool(std::process::Command::new("age-keygen").arg("-y").arg(&key));
        assert_eq!(String::from_utf8_lossy(&y).trim(), recipient);
    }
    // An existing file is never replaced: exit 2, the file as it was.
    let before = std::fs::read(&key).unwrap();
    let o = run(&["key", "init", "--out", &s(&key)]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("never overwritten"), "{}", text(&o));
    assert_eq!(std::fs::read(&key).unwrap(), before);
    // A missing identity file: exit 2 naming it and `key init`.
    let o = run(&[
        "key",
        "show",
        "--identity",
        &s(&dir.path().join("nope.txt")),
    ]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("nope.txt"), "{}", text(&o));
    assert!(stderr(&o).contains("kars-backup key init"), "{}", text(&o));
    // Without --out: under XDG_CONFIG_HOME (the default in docs/operators/encryption.md).
    let o = ok(bin()
        .args(["key", "init", "--json"])
        .env("XDG_CONFIG_HOME", dir.path().join("xdg"))
        .output()
        .unwrap());
    let doc = json(&o);
    assert_eq!(
        doc["identity_file"],
        s(&dir.path().join("xdg/kars-backup/age-identity.txt")).as_str()
    );
    assert!(doc["recipient"].as_str().unwrap().starts_with("age1"));
}

#[test]
fn a_generated_key_round_trips_and_a_wrong_or_missing_one_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Fixture {
        db,
        key,
        recipient,
        other,
        to,
    } = fixture(dir.path());
    let doc = ok_json(run(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &s(&to),
        "--encrypt-to",
        &recipient,
        "--json",
    ]));
    let name = doc["backup"].as_str().unwrap().to_string();
    assert!(name.ends_with(".tar.gz.age"), "{name}");
    assert_eq!(
        doc["manifest"]["archive"]["encryption"]["recipients"][0]["id"],
        recipient.as_str()
    );
    // The stored archive holds no plaintext of the database.
    let stored = std::fs::read(to.join(&name)).unwrap();
    assert!(!stored.windows(11).any(|w| w == b"$2b$10$fake"));

    ok(run(&[
        "verify",
        "--from",
        &s(&to),
        "--latest",
        "--identity",
        &s(&key),
    ]));
    let drill = ok_json(run(&[
        "drill",
        "--from",
        &s(&to),
        "--latest",
        "--identity",
        &s(&key),
        "--no-store",
        "--json",
    ]));
    assert_eq!(drill["drill"]["outcome"], "passed", "{drill}");

    // verify/drill with a key that does not open it: exit 5, naming the key file and the
    // backup's recipient.
    for command in ["verify", "drill"] {
        let o = run(&[
            command,
            "--from",
            &s(&to),
            "--latest",
            "--identity",
            &s(&other),
        ]);
        assert_eq!(code(&o), 5, "{command}: {}", text(&o));
        let all = text(&o);
        assert!(all.contains("other.txt"), "{command}: {all}");
        assert!(all.contains(&recipient), "{command}: {all}");
        // … and without any key: exit 2, saying how to give one.
        let o = run(&[command, "--from", &s(&to), "--latest"]);
        assert_eq!(code(&o), 2, "{command}: {}", text(&o));
        assert!(text(&o).contains("--identity"), "{command}: {}", text(&o));
    }

    // restore: a wrong key (exit 5), no key (2), an identity file that does not exist (2):
    // each before anything is touched.
    let (live, before) = live_db(dir.path(), make_db);
    let cases: [(&[&str], i32); 3] = [
        (&["--identity", &s(&other)], 5),
        (&[], 2),
        (&["--identity", &s(&dir.path().join("missing.txt"))], 2),
    ];
    for (extra, want) in cases {
        let mut args = vec![
            "restore",
            "--db",
            live.to_str().unwrap(),
            "--from",
            to.to_str().unwrap(),
            "--latest",
            "--yes",
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert_eq!(code(&o), want, "{extra:?}: {}", text(&o));
        assert_eq!(std::fs::read(&live).unwrap(), before, "{extra:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("pre-restore"))
            .collect();
        assert!(leftovers.is_empty(), "{extra:?}");
    }
    // The generated key restores it.
    ok(run(&[
        "restore",
        "--db",
        &s(&live),
        "--from",
        &s(&to),
        "--latest",
        "--yes",
        "--identity",
        &s(&key),
    ]));
    assert_eq!(count(&live, "users"), 2);
}

#[test]
fn status_warns_when_the_keys_given_do_not_open_the_newest_backup() {
    let dir = tempfile::tempdir().unwrap();
    let Fixture {
        db,
        key,
        recipient,
        other,
        to,
    } = fixture(dir.path());
    ok(run(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &s(&to),
        "--encrypt-to",
        &recipient,
    ]));
    // Without keys: no key check at all.
    let doc = ok_json(run(&["status", "--from", &s(&to), "--json"]));
    assert!(doc["destinations"][0]["keys"].is_null(), "{doc}");
    assert_eq!(doc["keys_fail"], false);
    // The right key: checked and fine.
    let doc = ok_json(run(&[
        "status",
        "--from",
        &s(&to),
        "--identity",
        &s(&key),
        "--json",
    ]));
    assert_eq!(doc["destinations"][0]["keys"]["opens"], true, "{doc}");
    assert_eq!(doc["destinations"][0]["keys"]["encrypted"], true, "{doc}");
    // Another key: a warning and exit 5.
    let o = run(&["status", "--from", &s(&to), "--identity", &s(&other)]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(stdout(&o).contains("WARNING"), "{}", text(&o));
    assert!(stderr(&o).contains("cannot be decrypted"), "{}", text(&o));
    assert!(stderr(&o).contains("other.txt"), "{}", text(&o));
    let o = run(&[
        "status",
        "--from",
        &s(&to),
        "--identity",
        &s(&other),
        "--json",
    ]);
    assert_eq!(code(&o), 5);
    let doc = json(&o);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["keys_fail"], true);
    assert_eq!(doc["destinations"][0]["keys"]["opens"], false);
    // A newer unencrypted backup opens with any key.
    ok(run(&["backup", "--db", &s(&db), "--to", &s(&to)]));
    let doc = ok_json(run(&[
        "status",
        "--from",
        &s(&to),
        "--identity",
        &s(&other),
        "--json",
    ]));
    assert_eq!(doc["destinations"][0]["keys"]["encrypted"], false, "{doc}");
}

#[test]
fn a_jobs_identity_file_encrypts_its_backups_and_opens_them_for_verify_drill_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let key = dir.path().join("job-key.txt");
    let recipient = key_init(&key);
    let to = dir.path().join("backups");
    let config = dir.path().join("kars-backup.toml");
    let write = |identity: &Path| {
        std::fs::write(
            &config,
            format!(
                "[daemon]\nstate-dir = \"{}\"\n[[job]]\nname = \"enc\"\nsource = \"{}\"\n[[job.destination]]\nurl = \"{}\"\n[job.encryption]\nidentity-file = \"{}\"\n",
                s(&dir.path().join("state")),
                s(&db),
                s(&to),
                s(identity)
            ),
        )
        .unwrap();
    };
    write(&key);
    let o = ok(run(&["config", "check", "--config", &s(&config)]));
    assert!(stdout(&o).contains("identity-file"), "{}", text(&o));
    assert!(!stdout(&o).contains("# note:"), "{}", text(&o));
    let doc = ok_json(run(&["backup", "--config", &s(&config), "--json"]));
    let job = &doc["jobs"][0];
    assert!(
        job["backup"].as_str().unwrap().ends_with(".tar.gz.age"),
        "{doc}"
    );
    assert_eq!(
        job["manifest"]["archive"]["encryption"]["recipients"][0]["id"],
        recipient.as_str(),
        "the recipient is derived from the identity file"
    );
    ok(run(&["verify", "--config", &s(&config), "--latest"]));
    ok(run(&[
        "drill",
        "--config",
        &s(&config),
        "--latest",
        "--no-store",
    ]));
    let doc = ok_json(run(&["status", "--config", &s(&config), "--json"]));
    assert_eq!(doc["destinations"][0]["keys"]["opens"], true, "{doc}");

    // The job's key replaced by another: verify and drill fail clearly (exit 5), status warns.
    let other = dir.path().join("other-key.txt");
    key_init(&other);
    write(&other);
    let cfg = s(&config);
    for command in ["verify", "drill"] {
        let mut args = vec![command, "--config", &cfg, "--latest"];
        if command == "drill" {
            args.push("--no-store");
        }
        let o = run(&args);
        assert_eq!(code(&o), 5, "{command}: {}", text(&o));
        assert!(
            text(&o).contains("other-key.txt"),
            "{command}: {}",
            text(&o)
        );
    }
    let o = run(&["status", "--config", &s(&config)]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(stderr(&o).contains("cannot be decrypted"), "{}", text(&o));

    // An identity file that does not exist: config check passes with a note; the backup fails
    // with exit 2 before anything is written.
    let missing = dir.path().join("not-yet.txt");
    write(&missing);
    let o = ok(run(&["config", "check", "--config", &s(&config)]));
    assert!(stdout(&o).contains("# note: job enc"), "{}", text(&o));
    assert!(
        stdout(&o).contains("kars-backup key init --out"),
        "{}",
        text(&o)
    );
    let listed = std::fs::read_dir(&to).unwrap().count();
    let o = run(&["backup", "--config", &s(&config)]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("not-yet.txt"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), listed);
}
