//! Test helpers: real age and gpg tools, temporary keys and databases.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether a command-line tool is there; under `CI=true` a missing tool fails the test.
pub fn tool(name: &str, package: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} is required under CI=true (Debian: apt-get install {package})");
        }
        eprintln!("skipping: {name} is not installed (apt-get install {package})");
    }
    found
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An age identity file and its recipient.
pub struct AgeKey {
    pub identity: PathBuf,
    pub recipient: String,
}

pub fn age_key(dir: &Path, name: &str) -> AgeKey {
    let identity = dir.join(name);
    run(Command::new("age-keygen").arg("-o").arg(&identity));
    let recipient = String::from_utf8(run(Command::new("age-keygen").arg("-y").arg(&identity)))
        .unwrap()
        .trim()
        .to_string();
    AgeKey {
        identity,
        recipient,
    }
}

/// A temporary gpg keyring with one key without passphrase; its agent is stopped on drop.
pub struct GpgHome {
    pub dir: tempfile::TempDir,
    pub fingerprint: String,
    pub email: String,
}

impl GpgHome {
    pub fn new(email: &str, algo: &str) -> GpgHome {
        let dir = tempfile::Builder::new()
            .prefix("kars-gpg-")
            .tempdir()
            .unwrap();
        run(Command::new("gpg")
            .arg("--homedir")
            .arg(dir.path())
            .args(["--batch", "--passphrase", "", "--quick-gen-key"])
            .arg(format!("Backup Admin <{email}>"))
            .args([algo, "default", "never"]));
        let listing = String::from_utf8(run(Command::new("gpg")
            .arg("--homedir")
            .arg(dir.path())
            .args(["--batch", "--with-colons", "--list-keys", email])))
        .unwrap();
        let fingerprint = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string();
        GpgHome {
            dir,
            fingerprint,
            email: email.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(self.dir.path())
            .args(["--batch", "--no-tty"]);
        c
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.dir.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// A small KARS-like database.
pub fn make_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE assets (id INTEGER PRIMARY KEY, owner INTEGER, tag TEXT, photo BLOB);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..500 {
        tx.execute(
            "INSERT INTO users (name) VALUES (?1)",
            [format!("user {i}")],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO assets (owner, tag, photo) VALUES (?1, ?2, randomblob(200))",
            rusqlite::params![i, format!("TAG-{i}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

pub fn count(db: &Path, table: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Extracts a `tar.gz` stream into `dir` with the system's tar (the runbook's `tar xzf`).
pub fn untar(tgz: &[u8], dir: &Path) {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let mut child = Command::new("tar")
        .arg("xzf")
        .arg("-")
        .arg("-C")
        .arg(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(tgz).unwrap();
    assert!(child.wait().unwrap().success());
}

/// Flips one byte in the middle of a file.
pub fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}
