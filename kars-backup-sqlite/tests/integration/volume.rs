//! Volume mode (a directory of databases and files) and runbook archives (`tar czf X -C dir .`).

use std::path::Path;

use kars_backup_core::{Error, RestoreHooks, RestoreOptions, SinkExt};
use kars_backup_sqlite::SqliteSource;
use kars_backup_sqlite::sample::{SampleSize, create_kars_database};

use crate::common::*;

/// Every regular file under `root` (relative path → bytes), leaving out SQLite side files and
/// databases (compared by content instead).
fn plain_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                walk(root, &path, out);
            } else if !rel.ends_with(".db") && !rel.ends_with("-wal") && !rel.ends_with("-shm") {
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// A volume: `a.db` (WAL, with an open -wal), `sub/b.db` (rollback journal), text files, an
/// empty directory, and a symbolic link.
fn make_volume(root: &Path) -> rusqlite::Connection {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("notes.txt"), "Notizen über Geräte\n").unwrap();
    std::fs::write(root.join("sub/deeper/readme.md"), "# readme\n".repeat(100)).unwrap();
    let a = rich_database(&root.join("a.db"), "wal");
    a.execute("INSERT INTO log (msg) VALUES ('in the wal')", [])
        .unwrap();
    assert!(std::fs::metadata(root.join("a.db-wal")).unwrap().len() > 0);
    drop(rich_database(&root.join("sub/b.db"), "delete"));
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_round_trips() {
    let src = tempfile::tempdir().unwrap();
    let writer = make_volume(src.path());
    let expected_a = dump_conn(&writer);
    let expected_b = dump(&src.path().join("sub/b.db"));

    let (repo, sink) = repo();
    let source = SqliteSource::new(src.path());
    assert!(source.is_volume());
    let report = backup(source, &repo).await;
    let names: Vec<&str> = report
        .manifest
        .databases
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(names, ["a.db", "sub/b.db"]);
    assert!(kars_backup_sqlite::is_volume_manifest(&report.manifest));
    assert!(report.manifest.source.ends_with('/'));
    for db in &report.manifest.databases {
        assert_eq!(db.integrity_check.as_deref(), Some("ok"));
        assert_eq!(db.rows("items"), Some(2000));
    }
    assert_eq!(report.manifest.databases[0].rows("log"), Some(11));

    let stored = sink.get_bytes(&report.manifest.name).await.unwrap();
    let mut entries = tar_entry_names(&stored);
    entries.sort();
    assert_eq!(
        entries,
        [
            "a.db",
            "empty",
            "notes.txt",
            "sub",
            "sub/b.db",
            "sub/deeper",
            "sub/deeper/readme.md"
        ],
        "no -wal/-shm files and no symbolic link in the archive"
    );

    let dst = tempfile::tempdir().unwrap();
    let target_dir = dst.path().join("volume");
    let target = SqliteSource::new_volume(&target_dir);
    let restored = restore_named(&repo, &report.manifest.name, &target, &confirmed())
        .await
        .unwrap();
    assert!(
        restored.verification.passed(),
        "{:?}",
        restored.verification
    );
    assert_eq!(
        restored
            .verification
            .checks
            .iter()
            .filter(|c| c.check.starts_with("row counts of"))
            .count(),
        2
    );
    assert_eq!(restored.previous_kept_at, None);
    assert_eq!(dump(&target_dir.join("a.db")), expected_a);
    assert_eq!(dump(&target_dir.join("sub/b.db")), expected_b);
    let mut expected_files = plain_files(src.path());
    expected_files.retain(|(name, _)| name != "link");
    assert_eq!(plain_files(&target_dir), expected_files);
    assert!(entries_starting_with(&target_dir, ".kars-").is_empty());

    // A scratch verification of the volume backup leaves nothing behind.
    let scratch = dst.path().join("scratch/volume");
    let entry = repo.find(&report.manifest.name).await.unwrap();
    let verified = kars_backup_core::verify_backup(
        &repo,
        &entry,
        &SqliteSource::new_volume(&scratch),
        &kars_backup_core::VerifyPlan::default(),
        std::sync::Arc::new(kars_backup_core::NoProgress),
    )
    .await
    .unwrap();
    assert!(verified.verification.passed());
    assert!(!dst.path().join("scratch").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_restore_over_existing_data_keeps_it_and_rolls_back_exactly() {
    let src = tempfile::tempdir().unwrap();
    drop(make_volume(src.path()));
    let (repo, _sink) = repo();
    let report = backup(SqliteSource::new(src.path()), &repo).await;

    // The live volume: other content, with a database and its -wal.
    let live = tempfile::tempdir().unwrap();
    let (db, _, _) = live_database_with_wal(live.path(), "assets.db");
    let db_before = dump_copy(&db);
    std::fs::write(live.path().join("keep.txt"), "old").unwrap();
    let before = plain_files(live.path());

    let failing = RestoreOptions {
        hooks: RestoreHooks {
            health_check: Some("false".into()),
            health_check_attempts: 1,
            health_check_interval_secs: 0,
            ..RestoreHooks::default()
        },
        ..confirmed()
    };
    let target = SqliteSource::new(live.path());
    let err = restore_named(&repo, &report.manifest.name, &target, &failing)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RolledBack { .. }), "{err}");
    assert_eq!(plain_files(live.path()), before);
    // The database is back with its content (its -wal settled into it before the swap).
    assert_eq!(dump_copy(&db), db_before);
    assert!(!with_suffix(&db, "-wal").exists());
    assert!(entries_starting_with(live.path(), ".kars-").is_empty());

    let ok = restore_named(&repo, &report.manifest.name, &target, &confirmed())
        .await
        .unwrap();
    let kept = std::path::PathBuf::from(ok.previous_kept_at.expect("previous content kept"));
    assert_eq!(kept.parent(), Some(live.path()));
    assert_eq!(dump_copy(&kept.join("assets.db")), db_before);
    assert_eq!(
        std::fs::read_to_string(kept.join("keep.txt")).unwrap(),
        "old"
    );
    assert!(!live.path().join("keep.txt").exists());
    assert!(live.path().join("sub/b.db").is_file());
}

/// Builds a runbook-style archive, as `tar czf X -C dir .` makes it: `./`, `./name`, ….
fn runbook_archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut root = tar::Header::new_gnu();
    root.set_entry_type(tar::EntryType::Directory);
    root.set_mode(0o755);
    root.set_size(0);
    builder
        .append_data(&mut root, "./", std::io::empty())
        .unwrap();
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, format!("./{name}"), *data)
            .unwrap();
    }
    gzip(&builder.into_inner().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_archives_restore_into_a_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    create_kars_database(&src, SampleSize::demo()).unwrap();
    let db = std::fs::read(&src).unwrap();
    let expected = dump(&src);
    let (repo, sink) = repo();

    // Named like the target, beside another file.
    let name = "asset-data-20241218-020000.tar.gz";
    put_runbook_archive(
        &sink,
        name,
        runbook_archive(&[("assets.db", &db), ("other.txt", b"x")]),
    )
    .await;
    let target = dir.path().join("a/assets.db");
    let report = restore_named(&repo, name, &SqliteSource::new(&target), &confirmed())
        .await
        .unwrap();
    assert!(!report.checksum_verified);
    assert!(report.verification.passed());
    assert_eq!(dump(&target), expected);
    assert!(
        !dir.path().join("a/other.txt").exists(),
        "only the database is restored into a file"
    );

    // The only SQLite file, named differently.
    let name = "asset-data-20241218-030000.tar.gz";
    put_runbook_archive(
        &sink,
        name,
        runbook_archive(&[("kars.db", &db), ("readme.txt", b"hi")]),
    )
    .await;
    let target = dir.path().join("b/assets.db");
    restore_named(&repo, name, &SqliteSource::new(&target), &confirmed())
        .await
        .unwrap();
    assert_eq!(dump(&target), expected);

    // Two databases, neither named like the target: the error lists them and says how to choose.
    let name = "asset-data-20241218-040000.tar.gz";
    put_runbook_archive(
        &sink,
        name,
        runbook_archive(&[("x.db", &db), ("y.db", &db)]),
    )
    .await;
    let err = restore_named(
        &repo,
        name,
        &SqliteSource::new(dir.path().join("c/assets.db")),
        &confirmed(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidInput(_)), "{msg}");
    assert!(
        msg.contains("x.db") && msg.contains("y.db") && msg.contains("restore into"),
        "{msg}"
    );
    assert!(
        !dir.path().join("c").exists(),
        "a directory made for the restore is removed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_archive_of_a_live_wal_database_keeps_the_wal_content() {
    // `tar czf` of a live volume captures assets.db and assets.db-wal as they are.
    let live_dir = tempfile::tempdir().unwrap();
    let (db, db_bytes, wal_bytes) = live_database_with_wal(live_dir.path(), "assets.db");
    let expected = {
        let copy = tempfile::tempdir().unwrap();
        let c = copy.path().join("c.db");
        std::fs::copy(&db, &c).unwrap();
        std::fs::copy(with_suffix(&db, "-wal"), with_suffix(&c, "-wal")).unwrap();
        dump(&c)
    };
    let (repo, sink) = repo();
    let name = "asset-data-20241218-050000.tar.gz";
    put_runbook_archive(
        &sink,
        name,
        runbook_archive(&[("assets.db", &db_bytes), ("assets.db-wal", &wal_bytes)]),
    )
    .await;
    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("assets.db");
    restore_named(&repo, name, &SqliteSource::new(&target), &confirmed())
        .await
        .unwrap();
    let names: Vec<_> = std::fs::read_dir(dst.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["assets.db"],
        "the WAL was applied in staging, not left beside the file"
    );
    assert_eq!(
        dump(&target),
        expected,
        "the archived WAL's transactions are applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_tar_runbook_archive_restores_as_a_volume() {
    if !tool_available("tar") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    create_kars_database(&src.path().join("assets.db"), SampleSize::demo()).unwrap();
    std::fs::write(src.path().join("uploads.txt"), "files").unwrap();
    let expected = dump(&src.path().join("assets.db"));
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("asset-data-20241218-020000.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(src.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let (repo, sink) = repo();
    put_runbook_archive(
        &sink,
        "asset-data-20241218-020000.tar.gz",
        std::fs::read(&archive).unwrap(),
    )
    .await;
    let target = out.path().join("data");
    restore_named(
        &repo,
        "asset-data-20241218-020000.tar.gz",
        &SqliteSource::new_volume(&target),
        &confirmed(),
    )
    .await
    .unwrap();
    assert_eq!(dump(&target.join("assets.db")), expected);
    assert_eq!(
        std::fs::read_to_string(target.join("uploads.txt")).unwrap(),
        "files"
    );
    // And into a file target, the database is picked out of the same archive.
    let file_target = out.path().join("file/assets.db");
    restore_named(
        &repo,
        "asset-data-20241218-020000.tar.gz",
        &SqliteSource::new(&file_target),
        &confirmed(),
    )
    .await
    .unwrap();
    assert_eq!(dump(&file_target), expected);
}
