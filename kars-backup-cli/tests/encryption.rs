//! End-to-end tests of encrypted backups through the `kars-backup` binary, with the real `age`
//! and `gpg` tools: `--encrypt-to`, `--passphrase-file`, `--identity`, gpg's keyring
//! (GNUPGHOME), exit codes, and a live database left alone when the key is wrong or missing.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::*;

fn kb(args: &[&str], gnupghome: Option<&Path>) -> Output {
    let mut c = bin();
    c.args(args);
    if let Some(h) = gnupghome {
        c.env("GNUPGHOME", h);
    }
    c.output().expect("run kars-backup")
}

fn make_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO users (name) VALUES ('Ada'), ('Grace'), ('Jürgen');
         CREATE TABLE assets (id INTEGER PRIMARY KEY, tag TEXT, photo BLOB);
         INSERT INTO assets (tag, photo) VALUES ('LAPTOP-1', randomblob(5000)), ('PHONE-7', NULL);",
    )
    .unwrap();
}

fn untar(tgz: &[u8], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut child = Command::new("tar")
        .args(["xzf", "-", "-C"])
        .arg(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(tgz).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn age_recipients_backup_list_verify_restore_and_key_errors() {
    if !tool("age", "age") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("assets.db");
    make_db(&db);
    let key = tmp.path().join("key.txt");
    let recipient = age_key(&key);
    let other = tmp.path().join("other.txt");
    let other_recipient = age_key(&other);
    let to = tmp.path().join("backups");
    let o = ok(kb(
        &[
            "backup",
            "--db",
            &s(&db),
            "--to",
            &s(&to),
            "--encrypt-to",
            &recipient,
            "--encrypt-to",
            &other_recipient,
            "--json",
        ],
        None,
    ));
    let j = json(&o);
    let name = j["backup"].as_str().unwrap().to_string();
    assert!(name.ends_with(".tar.gz.age"), "{name}");
    let recipients = &j["manifest"]["archive"]["encryption"]["recipients"];
    assert_eq!(recipients[0]["id"], recipient.as_str());
    assert_eq!(recipients[1]["id"], other_recipient.as_str());
    let meta = std::fs::read_to_string(to.join(format!("{name}.meta"))).unwrap();
    assert!(!meta.contains("AGE-SECRET-KEY"));
    // The age tool opens it with either key.
    let tgz = run_tool(
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&other)
            .arg(to.join(&name)),
    );
    untar(&tgz, &tmp.path().join("by-age"));
    assert_eq!(count(&tmp.path().join("by-age/assets.db"), "users"), 3);

    let o = ok(kb(&["list", "--from", &s(&to), "--json"], None));
    assert!(o.stdout.windows(name.len()).any(|w| w == name.as_bytes()));
    ok(kb(
        &[
            "verify",
            "--from",
            &s(&to),
            "--latest",
            "--identity",
            &s(&key),
        ],
        None,
    ));

    let (live, before) = live_db(tmp.path(), make_db);
    // No identity: a usage error naming the flag; the live database is untouched.
    let o = kb(&["verify", "--from", &s(&to), "--latest"], None);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("--identity"), "{}", text(&o));
    let o = kb(
        &[
            "restore",
            "--db",
            &s(&live),
            "--from",
            &s(&to),
            "--latest",
            "--yes",
        ],
        None,
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert_eq!(std::fs::read(&live).unwrap(), before);
    // A wrong identity: exit 5, untouched.
    let stranger = tmp.path().join("stranger.txt");
    age_key(&stranger);
    let o = kb(
        &[
            "restore",
            "--db",
            &s(&live),
            "--from",
            &s(&to),
            "--latest",
            "--yes",
            "--identity",
            &s(&stranger),
        ],
        None,
    );
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("stranger.txt"), "{}", text(&o));
    assert_eq!(std::fs::read(&live).unwrap(), before);
    // Tampered ciphertext: exit 5, untouched.
    let archive = to.join(&name);
    let good = std::fs::read(&archive).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&archive, &bad).unwrap();
    let o = kb(
        &[
            "restore",
            "--db",
            &s(&live),
            "--from",
            &s(&to),
            "--latest",
            "--yes",
            "--identity",
            &s(&key),
        ],
        None,
    );
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert_eq!(std::fs::read(&live).unwrap(), before);
    std::fs::write(&archive, &good).unwrap();
    // The right key restores it.
    ok(kb(
        &[
            "restore",
            "--db",
            &s(&live),
            "--from",
            &s(&to),
            "--latest",
            "--yes",
            "--identity",
            &s(&key),
        ],
        None,
    ));
    assert_eq!(count(&live, "users"), 3);
    // Prune's plan sees the encrypted backup as a backup.
    let o = ok(kb(
        &["prune", "--from", &s(&to), "--dry-run", "--json"],
        None,
    ));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&name));
}

#[test]
fn passphrase_backup_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("assets.db");
    make_db(&db);
    let pass = tmp.path().join("pass.txt");
    std::fs::write(&pass, "s3cret words\n").unwrap();
    let to = tmp.path().join("backups");
    let o = ok(kb(
        &[
            "backup",
            "--db",
            &s(&db),
            "--to",
            &s(&to),
            "--passphrase-file",
            &s(&pass),
            "--json",
        ],
        None,
    ));
    let j = json(&o);
    assert_eq!(
        j["manifest"]["archive"]["encryption"]["recipients"][0]["kind"],
        "scrypt"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("s3cret"));
    let target = tmp.path().join("restored.db");
    ok(kb(
        &[
            "restore",
            "--db",
            &s(&target),
            "--from",
            &s(&to),
            "--latest",
            "--passphrase-file",
            &s(&pass),
        ],
        None,
    ));
    assert_eq!(count(&target, "assets"), 2);
    let wrong = tmp.path().join("wrong.txt");
    std::fs::write(&wrong, "not it\n").unwrap();
    let o = kb(
        &[
            "verify",
            "--from",
            &s(&to),
            "--latest",
            "--passphrase-file",
            &s(&wrong),
        ],
        None,
    );
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        !text(&o).contains("not it"),
        "the passphrase leaked: {}",
        text(&o)
    );
    // A passphrase and recipients together: a usage error before anything is read.
    let o = kb(
        &[
            "backup",
            "--db",
            &s(&db),
            "--to",
            &s(&to),
            "--passphrase-file",
            &s(&pass),
            "--encrypt-to",
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        ],
        None,
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
}

#[test]
fn openpgp_through_the_gpg_keyring() {
    if !tool("gpg", "gnupg") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("gnupg");
    let empty = tmp.path().join("gnupg-empty");
    for h in [&home, &empty] {
        std::fs::create_dir_all(h).unwrap();
        std::fs::set_permissions(h, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    let gpg = |h: &Path| {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", h).args(["--batch", "--no-tty"]);
        c
    };
    run_tool(gpg(&home).args([
        "--passphrase",
        "",
        "--quick-gen-key",
        "Backup Admin <admin@example.com>",
        "default",
        "default",
        "never",
    ]));
    let db = tmp.path().join("assets.db");
    make_db(&db);
    let to = tmp.path().join("backups");
    let o = ok(kb(
        &[
            "backup",
            "--db",
            &s(&db),
            "--to",
            &s(&to),
            "--encrypt-to",
            "gpg:admin@example.com",
            "--json",
        ],
        Some(&home),
    ));
    let j = json(&o);
    let name = j["backup"].as_str().unwrap().to_string();
    assert!(name.ends_with(".tar.gz.gpg"), "{name}");
    let fpr = j["manifest"]["archive"]["encryption"]["recipients"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(fpr.len(), 40, "{fpr}");
    // The runbook's way back: gpg --decrypt, tar xzf.
    let tgz = run_tool(gpg(&home).arg("--decrypt").arg(to.join(&name)));
    untar(&tgz, &tmp.path().join("by-gpg"));
    assert_eq!(count(&tmp.path().join("by-gpg/assets.db"), "users"), 3);
    // kars-backup decrypts through gpg and its keyring.
    let target = tmp.path().join("restored.db");
    ok(kb(
        &[
            "restore",
            "--db",
            &s(&target),
            "--from",
            &s(&to),
            "--latest",
        ],
        Some(&home),
    ));
    assert_eq!(count(&target, "users"), 3);
    // A keyring without the secret key: exit 5, the live database untouched.
    let (live, before) = live_db(tmp.path(), make_db);
    let o = kb(
        &[
            "restore",
            "--db",
            &s(&live),
            "--from",
            &s(&to),
            "--latest",
            "--yes",
        ],
        Some(&empty),
    );
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("no secret key"), "{}", text(&o));
    assert_eq!(std::fs::read(&live).unwrap(), before);
    // An unknown recipient: a usage error before the database is read.
    let o = kb(
        &[
            "backup",
            "--db",
            &s(&db),
            "--to",
            &s(&to),
            "--encrypt-to",
            "gpg:nobody@example.com",
        ],
        Some(&home),
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("nobody@example.com"), "{}", text(&o));
    // A runbook archive encrypted by hand with gpg restores by name.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(&db, data.join("assets.db")).unwrap();
    let runbook = tmp.path().join("runbook");
    std::fs::create_dir_all(&runbook).unwrap();
    let tgz = runbook.join("backup-20241218.tar.gz");
    run_tool(
        Command::new("tar")
            .arg("czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&data)
            .arg("."),
    );
    run_tool(
        gpg(&home)
            .args([
                "--trust-model",
                "always",
                "--encrypt",
                "--recipient",
                "admin@example.com",
            ])
            .arg(&tgz),
    );
    std::fs::remove_file(&tgz).unwrap();
    let target = tmp.path().join("from-runbook.db");
    ok(kb(
        &[
            "restore",
            "--db",
            &s(&target),
            "--from",
            &s(&runbook),
            "--backup",
            "backup-20241218.tar.gz.gpg",
        ],
        Some(&home),
    ));
    assert_eq!(count(&target, "assets"), 2);
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "gpg-agent"])
        .status();
}
