//! Encrypted backups of a real SQLite database through the library: round trips for age
//! (recipient, passphrase) and OpenPGP, interoperability with the `age` and `gpg` tools both
//! ways, and wrong, missing or tampered keys and data that leave the live database alone.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use kars_backup_core::progress::no_progress;
use kars_backup_core::{
    BackupJob, BackupOptions, DynEncryptor, EncryptionScheme, Error, ErrorCategory, Repository,
    RestoreOptions, VerifyPlan, restore, verify_backup,
};
use kars_backup_encrypt::{
    AgeEncryptor, DecryptionKeys, Gpg, OpenPgpEncryptor, encryptor_with_gpg, read_passphrase_file,
};
use kars_backup_sqlite::SqliteSource;
use kars_backup_storage::LocalSink;

fn repo(dir: &Path) -> Repository {
    Repository::new(Arc::new(LocalSink::new(dir).unwrap()))
}

async fn back_up(db: &Path, dir: &Path, enc: DynEncryptor) -> kars_backup_core::Manifest {
    BackupJob::new(
        Arc::new(SqliteSource::new(db)),
        vec![repo(dir)],
        BackupOptions::default(),
    )
    .with_encryptor(enc)
    .run()
    .await
    .expect("encrypted backup")
    .manifest
}

async fn restore_into(
    repo: &Repository,
    name: &str,
    target: &Path,
) -> kars_backup_core::Result<()> {
    let entry = repo.find(name).await?;
    restore(
        repo,
        &entry,
        &SqliteSource::new(target),
        &RestoreOptions {
            confirmed: true,
            ..RestoreOptions::default()
        },
        no_progress(),
    )
    .await
    .map(|_| ())
}

fn manifest_text(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.meta"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_recipient_round_trip_and_the_age_tool_opens_it() {
    if !tool("age", "age") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("assets.db");
    make_db(&db);
    let key = age_key(tmp.path(), "key.txt");
    let backups = tmp.path().join("backups");
    let enc = Arc::new(AgeEncryptor::to_recipients(&[key.recipient.as_str()]).unwrap());
    let m = back_up(&db, &backups, enc).await;

    assert!(m.name.ends_with(".tar.gz.age"), "{}", m.name);
    assert_eq!(m.format_version, 2);
    let info = m.archive.encryption.as_ref().expect("encryption recorded");
    assert_eq!(info.scheme, EncryptionScheme::Age);
    assert_eq!(info.recipients[0].id, key.recipient);
    let text = manifest_text(&backups, &m.name);
    assert!(text.contains(&key.recipient));
    assert!(!text.contains("AGE-SECRET-KEY"), "a secret in the manifest");
    // The stored bytes are ciphertext, not gzip.
    let archive = backups.join(&m.name);
    let stored = std::fs::read(&archive).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1"));

    // Library round trip.
    let keys = DecryptionKeys::new()
        .with_identity_file(&key.identity)
        .unwrap();
    let r = repo(&backups).with_decryptor(Arc::new(keys));
    let restored = tmp.path().join("restored.db");
    restore_into(&r, &m.name, &restored).await.unwrap();
    assert_eq!(count(&restored, "users"), 500);
    assert_eq!(count(&restored, "assets"), 500);

    // `age -d -i key.txt archive | tar xzf -` gives the database.
    let tgz = run(Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key.identity)
        .arg(&archive));
    let out = tmp.path().join("by-age");
    untar(&tgz, &out);
    assert_eq!(count(&out.join("assets.db"), "assets"), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_passphrase_round_trip_both_ways_with_the_age_tool() {
    if !tool("age", "age") || !tool("script", "bsdutils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("assets.db");
    make_db(&db);
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "correct horse battery\n").unwrap();
    let backups = tmp.path().join("backups");
    let enc = Arc::new(AgeEncryptor::with_passphrase(
        read_passphrase_file(&pass).unwrap(),
    ));
    let m = back_up(&db, &backups, enc).await;
    let info = m.archive.encryption.as_ref().unwrap();
    assert_eq!(info.recipients[0].kind, "scrypt");
    assert!(!manifest_text(&backups, &m.name).contains("correct horse"));

    let keys = DecryptionKeys::new().with_passphrase_file(&pass).unwrap();
    let r = repo(&backups).with_decryptor(Arc::new(keys));
    let restored = tmp.path().join("restored.db");
    restore_into(&r, &m.name, &restored).await.unwrap();
    assert_eq!(count(&restored, "users"), 500);

    // The age tool reads passphrases from a terminal only: drive it through a pseudo-terminal.
    let archive = backups.join(&m.name);
    let out_tgz = tmp.path().join("by-age.tgz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'correct horse battery\\n' | timeout 60 script -qec \"age -d -o '{}' '{}'\" /dev/null",
            out_tgz.display(),
            archive.display()
        ))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    untar(
        &std::fs::read(&out_tgz).unwrap(),
        &tmp.path().join("by-age"),
    );
    assert_eq!(count(&tmp.path().join("by-age/assets.db"), "assets"), 500);

    // `age -p` of a runbook archive restores with the passphrase.
    let runbook = tmp.path().join("runbook");
    std::fs::create_dir_all(&runbook).unwrap();
    let manual = runbook.join("backup-20241218.tar.gz.age");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(printf 'correct horse battery\\n'; sleep 1; printf 'correct horse battery\\n') | timeout 60 script -qec \"age -p -o '{}' '{}'\" /dev/null",
            manual.display(),
            out_tgz.display()
        ))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success() && manual.exists());
    let keys = DecryptionKeys::new().with_passphrase_file(&pass).unwrap();
    let r = repo(&runbook).with_decryptor(Arc::new(keys));
    let target = tmp.path().join("from-manual.db");
    restore_into(&r, "backup-20241218.tar.gz.age", &target)
        .await
        .unwrap();
    assert_eq!(count(&target, "assets"), 500);

    // A wrong passphrase is a decryption failure; none at all is a usage error.
    std::fs::write(&pass, "wrong\n").unwrap();
    let keys = DecryptionKeys::new().with_passphrase_file(&pass).unwrap();
    let r = repo(&backups).with_decryptor(Arc::new(keys));
    let entry = r.find(&m.name).await.unwrap();
    let scratch = tmp.path().join("scratch.db");
    let err = verify_backup(
        &r,
        &entry,
        &SqliteSource::new(&scratch),
        &VerifyPlan::default(),
        no_progress(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed { .. }), "{err}");
    assert!(err.to_string().contains("passphrase is wrong"), "{err}");
    let r = repo(&backups).with_decryptor(Arc::new(DecryptionKeys::new()));
    let err = verify_backup(
        &r,
        &entry,
        &SqliteSource::new(&scratch),
        &VerifyPlan::default(),
        no_progress(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::KeyMissing { .. }), "{err}");
    assert_eq!(err.category(), ErrorCategory::Usage);
    assert!(err.to_string().contains("--passphrase-file"), "{err}");
    assert!(!scratch.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openpgp_round_trip_and_gpg_decrypt_opens_it() {
    if !tool("gpg", "gnupg") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("assets.db");
    make_db(&db);
    let home = GpgHome::new("admin@example.com", "future-default");
    let gpg = Gpg::new().with_homedir(home.path());
    let backups = tmp.path().join("backups");
    let enc = encryptor_with_gpg(&["gpg:admin@example.com".into()], None, &gpg)
        .unwrap()
        .unwrap();
    let m = back_up(&db, &backups, enc).await;
    assert!(m.name.ends_with(".tar.gz.gpg"), "{}", m.name);
    let info = m.archive.encryption.as_ref().unwrap();
    assert_eq!(info.scheme, EncryptionScheme::OpenPgp);
    assert_eq!(info.recipients[0].id, home.fingerprint);
    assert!(info.recipients[0].subkey.is_some(), "the cv25519 subkey");
    assert!(!manifest_text(&backups, &m.name).contains("PRIVATE KEY"));

    let keys = DecryptionKeys::new().with_gpg(gpg.clone());
    let r = repo(&backups).with_decryptor(Arc::new(keys));
    let restored = tmp.path().join("restored.db");
    restore_into(&r, &m.name, &restored).await.unwrap();
    assert_eq!(count(&restored, "assets"), 500);

    // The runbook's `gpg --decrypt backup.tar.gz.gpg > backup.tar.gz`, then `tar xzf`.
    let tgz = run(home.gpg().arg("--decrypt").arg(backups.join(&m.name)));
    untar(&tgz, &tmp.path().join("by-gpg"));
    assert_eq!(count(&tmp.path().join("by-gpg/assets.db"), "users"), 500);

    // A public key file works as well as the keyring.
    let key_file = tmp.path().join("admin.asc");
    let armored = run(home.gpg().args(["--export", "-a", "admin@example.com"]));
    std::fs::write(&key_file, armored).unwrap();
    let mut from_file = OpenPgpEncryptor::new();
    from_file.add_key_file(&key_file).unwrap();
    let m2 = back_up(&db, &backups, Arc::new(from_file)).await;
    assert_eq!(
        m2.archive.encryption.as_ref().unwrap().recipients,
        info.recipients
    );
    let tgz = run(home.gpg().arg("--decrypt").arg(backups.join(&m2.name)));
    untar(&tgz, &tmp.path().join("by-gpg-2"));
    assert_eq!(count(&tmp.path().join("by-gpg-2/assets.db"), "users"), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_archives_encrypted_by_hand_restore_by_name() {
    if !tool("age", "age") || !tool("gpg", "gnupg") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    make_db(&data.join("assets.db"));
    let backups = tmp.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    // The runbook: tar czf backup-20241218.tar.gz -C /data . ; then encrypt it by hand.
    let tgz = backups.join("backup-20241218.tar.gz");
    run(Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&data)
        .arg("."));
    let key = age_key(tmp.path(), "key.txt");
    run(Command::new("age")
        .arg("-r")
        .arg(&key.recipient)
        .arg("-o")
        .arg(backups.join("backup-20241218.tar.gz.age"))
        .arg(&tgz));
    let home = GpgHome::new("ops@example.com", "default");
    run(home
        .gpg()
        .args([
            "--trust-model",
            "always",
            "--encrypt",
            "--recipient",
            "ops@example.com",
        ])
        .arg("-o")
        .arg(backups.join("backup-20241219.tar.gz.gpg"))
        .arg(&tgz));
    std::fs::remove_file(&tgz).unwrap();

    let keys = DecryptionKeys::new()
        .with_identity_file(&key.identity)
        .unwrap()
        .with_gpg(Gpg::new().with_homedir(home.path()));
    let r = repo(&backups).with_decryptor(Arc::new(keys));
    let listing = r.list().await.unwrap();
    assert_eq!(
        listing.entries.len(),
        2,
        "both are listed as runbook archives"
    );
    for (name, target) in [
        ("backup-20241218.tar.gz.age", "from-age.db"),
        ("backup-20241219.tar.gz.gpg", "from-gpg.db"),
    ] {
        let target = tmp.path().join(target);
        restore_into(&r, name, &target).await.unwrap();
        assert_eq!(count(&target, "users"), 500, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_missing_keys_and_tampering_leave_the_live_database_alone() {
    if !tool("age", "age") || !tool("gpg", "gnupg") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("assets.db");
    make_db(&db);
    let key = age_key(tmp.path(), "key.txt");
    let other = age_key(tmp.path(), "other.txt");
    let backups = tmp.path().join("backups");
    let enc = Arc::new(AgeEncryptor::to_recipients(&[key.recipient.as_str()]).unwrap());
    let m = back_up(&db, &backups, enc).await;

    let live = tmp.path().join("live.db");
    make_db(&live);
    rusqlite::Connection::open(&live)
        .unwrap()
        .execute("DELETE FROM users WHERE id > 10", [])
        .unwrap();
    let before = std::fs::read(&live).unwrap();
    let untouched = |what: &str| {
        assert_eq!(
            std::fs::read(&live).unwrap(),
            before,
            "{what} changed the live db"
        );
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("restore") || n.contains("staging"))
            .collect();
        assert!(leftovers.is_empty(), "{what} left {leftovers:?}");
    };

    // No decryptor at all (library use without keys): a usage error, before any download.
    let err = restore_into(&repo(&backups), &m.name, &live)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyMissing { .. }), "{err}");
    untouched("no keys");

    // Keys, but no age identity.
    let r = repo(&backups).with_decryptor(Arc::new(DecryptionKeys::new()));
    let err = restore_into(&r, &m.name, &live).await.unwrap_err();
    assert!(matches!(err, Error::KeyMissing { .. }), "{err}");
    assert!(err.to_string().contains("--identity"), "{err}");
    assert!(err.to_string().contains(&key.recipient), "{err}");
    untouched("missing identity");

    // The wrong identity.
    let keys = DecryptionKeys::new()
        .with_identity_file(&other.identity)
        .unwrap();
    let r = repo(&backups).with_decryptor(Arc::new(keys));
    let err = restore_into(&r, &m.name, &live).await.unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed { .. }), "{err}");
    assert_eq!(err.category(), ErrorCategory::Verification);
    untouched("wrong identity");

    // Tampered ciphertext: the manifest's checksum catches it.
    let keys = Arc::new(
        DecryptionKeys::new()
            .with_identity_file(&key.identity)
            .unwrap(),
    );
    let archive = backups.join(&m.name);
    let good = std::fs::read(&archive).unwrap();
    flip_middle_byte(&archive);
    let r = repo(&backups).with_decryptor(keys.clone());
    let err = restore_into(&r, &m.name, &live).await.unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    untouched("tampered archive");

    // A damaged header does not open either: the checksum says the bytes are damaged (so a
    // restore with fallback tries another copy), not that the key is wrong.
    let mut header_damaged = good.clone();
    header_damaged[5] ^= 0xff;
    std::fs::write(&archive, &header_damaged).unwrap();
    let err = restore_into(&r, &m.name, &live).await.unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    untouched("damaged header");
    std::fs::write(&archive, &good).unwrap();
    flip_middle_byte(&archive);

    // Without a manifest, age's authentication catches it.
    let runbook = tmp.path().join("runbook");
    std::fs::create_dir_all(&runbook).unwrap();
    let loose = runbook.join("backup-20241218.tar.gz.age");
    std::fs::copy(&archive, &loose).unwrap();
    let r = repo(&runbook).with_decryptor(keys.clone());
    let err = restore_into(&r, "backup-20241218.tar.gz.age", &live)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed { .. }), "{err}");
    untouched("tampered age file");
    // A truncated one too.
    std::fs::write(&loose, &good[..good.len() - 100]).unwrap();
    let err = restore_into(&r, "backup-20241218.tar.gz.age", &live)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed { .. }), "{err}");
    untouched("truncated age file");

    // OpenPGP: a keyring without the secret key, and tampered ciphertext.
    let home = GpgHome::new("admin@example.com", "future-default");
    let stranger = GpgHome::new("someone@example.com", "future-default");
    let gpg = Gpg::new().with_homedir(home.path());
    let enc = encryptor_with_gpg(&["gpg:admin@example.com".into()], None, &gpg)
        .unwrap()
        .unwrap();
    let pm = back_up(&db, &backups, enc).await;
    let r = repo(&backups).with_decryptor(Arc::new(
        DecryptionKeys::new().with_gpg(Gpg::new().with_homedir(stranger.path())),
    ));
    let err = restore_into(&r, &pm.name, &live).await.unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed { .. }), "{err}");
    assert!(err.to_string().contains("no secret key"), "{err}");
    untouched("keyring without the key");
    let loose = runbook.join("backup-20241219.tar.gz.gpg");
    std::fs::copy(backups.join(&pm.name), &loose).unwrap();
    flip_middle_byte(&loose);
    let r = repo(&runbook).with_decryptor(Arc::new(DecryptionKeys::new().with_gpg(gpg)));
    let err = restore_into(&r, "backup-20241219.tar.gz.gpg", &live)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed { .. }), "{err}");
    untouched("tampered gpg file");
}

/// The library's default, for a service embedding it: an unencrypted backup to an off-site
/// sink is refused before the database is even opened; a key made by
/// `generate_identity_file` encrypts it, and the same file restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_site_needs_encryption_and_a_generated_identity_round_trips() {
    use kars_backup_core::testing::InMemorySink;
    use kars_backup_core::{Placement, PlaintextPolicy};
    let dir = tempfile::tempdir().unwrap();
    let off_site = || {
        Repository::new(Arc::new(
            InMemorySink::new().with_placement(Placement::Cloud),
        ))
    };
    // No such database: the refusal comes first, and names how to encrypt or opt out.
    let err = BackupJob::new(
        Arc::new(SqliteSource::new(dir.path().join("missing.db"))),
        vec![off_site()],
        BackupOptions::default(),
    )
    .run()
    .await
    .unwrap_err();
    assert!(matches!(err, Error::PlaintextRefused { .. }), "{err}");
    assert_eq!(err.category(), ErrorCategory::Usage);
    assert!(err.to_string().contains("memory://"), "{err}");

    let db = dir.path().join("assets.db");
    make_db(&db);
    // Opting out stores it unencrypted.
    let plain = off_site();
    BackupJob::new(
        Arc::new(SqliteSource::new(&db)),
        vec![plain.clone()],
        BackupOptions {
            plaintext: PlaintextPolicy::Anywhere,
            ..BackupOptions::default()
        },
    )
    .run()
    .await
    .unwrap();
    assert!(
        plain
            .latest()
            .await
            .unwrap()
            .unwrap()
            .manifest
            .unwrap()
            .archive
            .encryption
            .is_none()
    );

    // A generated identity: its recipient encrypts, the file restores.
    let key = dir.path().join("keys/age-identity.txt");
    let recipient = kars_backup_encrypt::generate_identity_file(&key).unwrap();
    assert_eq!(
        kars_backup_encrypt::identity_file_recipients(&key).unwrap(),
        vec![recipient.clone()]
    );
    let remote = off_site();
    let report = BackupJob::new(
        Arc::new(SqliteSource::new(&db)),
        vec![remote.clone()],
        BackupOptions::default(),
    )
    .with_encryptor(Arc::new(AgeEncryptor::to_recipients(&[recipient]).unwrap()))
    .run()
    .await
    .unwrap();
    assert!(report.manifest.name.ends_with(".tar.gz.age"));
    let keys = DecryptionKeys::new().with_identity_file(&key).unwrap();
    let remote = remote.with_decryptor(Arc::new(keys));
    let entry = remote.latest().await.unwrap().unwrap();
    let check = kars_backup_core::status::check_keys(&remote, &entry)
        .await
        .unwrap();
    assert!(check.encrypted && check.opens, "{check:?}");
    let target = dir.path().join("restored/assets.db");
    restore(
        &remote,
        &entry,
        &SqliteSource::new(&target),
        &RestoreOptions {
            confirmed: true,
            ..RestoreOptions::default()
        },
        no_progress(),
    )
    .await
    .unwrap();
    assert_eq!(count(&target, "users"), count(&db, "users"));
    // Another generated identity does not open it, and says so without touching anything.
    let other = dir.path().join("other.txt");
    kars_backup_encrypt::generate_identity_file(&other).unwrap();
    let stranger = Repository::new(remote.sink().clone()).with_decryptor(Arc::new(
        DecryptionKeys::new().with_identity_file(&other).unwrap(),
    ));
    let check = kars_backup_core::status::check_keys(&stranger, &entry)
        .await
        .unwrap();
    assert!(!check.opens, "{check:?}");
    assert!(check.detail.contains("other.txt"), "{}", check.detail);
}
