//! Backup → restore round trips of single database files.

use std::sync::Arc;

use kars_backup_core::{NoProgress, SinkExt, VerifyPlan, verify_backup};
use kars_backup_sqlite::SqliteSource;
use kars_backup_sqlite::sample::{SampleSize, create_kars_database};

use crate::common::*;

async fn round_trip(journal_mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("assets.db");
    // Keep the writer open, without checkpoints: in WAL mode the newest rows live only in the -wal.
    let writer = rich_database(&live, journal_mode);
    writer
        .execute(
            "INSERT INTO log (msg) VALUES ('last commit before the backup')",
            [],
        )
        .unwrap();
    if journal_mode == "wal" {
        let wal = std::fs::metadata(with_suffix(&live, "-wal")).unwrap().len();
        assert!(wal > 0, "the -wal file holds the latest transactions");
    }
    let expected = dump_conn(&writer);

    let (repo, _sink) = repo();
    let report = backup(SqliteSource::new(&live), &repo).await;
    let manifest = &report.manifest;
    assert_eq!(manifest.engine, "sqlite");
    assert!(!kars_backup_sqlite::is_volume_manifest(manifest));
    assert!(manifest.name.starts_with("asset-data-") && manifest.name.ends_with(".tar.gz"));
    let db = &manifest.databases[0];
    assert_eq!(db.name, "assets.db");
    assert_eq!(db.integrity_check.as_deref(), Some("ok"));
    assert_eq!(db.engine_version, rusqlite::version());
    let names: Vec<&str> = db.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["items", "log", "odd \"name"]);
    assert_eq!(db.rows("items"), Some(2000));
    assert_eq!(db.rows("odd \"name"), Some(50));
    assert_eq!(db.rows("log"), Some(11), "10 trigger rows and one insert");
    assert_eq!(db.details["journal_mode"], journal_mode);
    for key in ["page_size", "page_count", "user_version"] {
        assert!(db.details[key].is_i64(), "{key} in details");
    }
    let page_size = db.details["page_size"].as_u64().unwrap();
    let page_count = db.details["page_count"].as_u64().unwrap();
    assert_eq!(
        db.size_bytes,
        page_size * page_count,
        "size is the snapshot's"
    );

    // Restore into a new path: identical content and schema.
    let target_path = dir.path().join("restored/assets.db");
    let target = SqliteSource::new(&target_path);
    let restored = restore_named(&repo, &manifest.name, &target, &confirmed())
        .await
        .expect("restore succeeds");
    assert!(restored.checksum_verified);
    assert!(restored.verification.passed());
    assert!(
        restored
            .verification
            .checks
            .iter()
            .any(|c| c.check == "row counts of assets.db" && c.passed),
        "counts compared with the manifest: {:?}",
        restored.verification
    );
    assert_eq!(restored.previous_kept_at, None);
    assert_eq!(dump(&target_path), expected);
    assert!(entries_starting_with(target_path.parent().unwrap(), ".kars-").is_empty());
    // The live database was only read.
    assert_eq!(dump_conn(&writer), expected);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "a new database file is private");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_database_round_trips() {
    round_trip("wal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_journal_database_round_trips() {
    round_trip("delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_files_are_removed_and_snapshot_dir_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let live = dir.path().join("assets.db");
    create_kars_database(&live, SampleSize::demo()).unwrap();
    let (repo, _sink) = repo();
    let report = backup(
        SqliteSource::new(&live).with_snapshot_dir(snapshots.path()),
        &repo,
    )
    .await;
    assert_eq!(report.manifest.databases.len(), 1);
    assert_eq!(
        std::fs::read_dir(snapshots.path()).unwrap().count(),
        0,
        "the snapshot file is deleted after the backup"
    );
    let sizes = SampleSize::demo();
    let db = &report.manifest.databases[0];
    assert_eq!(db.rows("companies"), Some(sizes.companies));
    assert_eq!(db.rows("users"), Some(sizes.users));
    assert_eq!(db.rows("assets"), Some(sizes.assets));
    assert_eq!(db.rows("audit_logs"), Some(sizes.audit_logs));
    // A missing snapshot directory is an error naming it, not a silent fallback.
    let (repo2, _) = crate::common::repo();
    let missing = snapshots.path().join("missing");
    let err = kars_backup_core::BackupJob::new(
        Arc::new(SqliteSource::new(&live).with_snapshot_dir(&missing)),
        vec![repo2],
        Default::default(),
    )
    .run()
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_backup_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("assets.db");
    create_kars_database(&live, SampleSize::demo()).unwrap();
    let (repo, _sink) = repo();
    let report = backup(SqliteSource::new(&live), &repo).await;
    let entry = repo.find(&report.manifest.name).await.unwrap();
    let scratch_dir = dir.path().join("scratch");
    let scratch = SqliteSource::new(scratch_dir.join("verify.db"));
    let verified = verify_backup(
        &repo,
        &entry,
        &scratch,
        &VerifyPlan::default(),
        Arc::new(NoProgress),
    )
    .await
    .expect("the backup verifies");
    assert!(verified.verification.passed());
    assert!(
        verified
            .verification
            .checks
            .iter()
            .any(|c| c.check == "integrity_check of assets.db")
    );
    assert!(
        !scratch_dir.exists(),
        "the scratch restore and its directory are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_exists_describe_the_live_database() {
    use kars_backup_core::DatabaseSource;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("assets.db");
    let source = SqliteSource::new(&live);
    assert!(!source.exists().await.unwrap());
    create_kars_database(&live, SampleSize::demo()).unwrap();
    assert!(source.exists().await.unwrap());
    let info = source.inspect().await.unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].name, "assets.db");
    assert_eq!(info[0].rows("assets"), Some(SampleSize::demo().assets));
    assert_eq!(info[0].integrity_check.as_deref(), Some("ok"));
    assert_eq!(
        info[0].details["journal_mode"], "delete",
        "KARS's own journal mode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_is_readable_by_tar_and_sqlite3() {
    if !(tool_available("tar") && tool_available("sqlite3")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("assets.db");
    let writer = rich_database(&live, "wal");
    let expensive: i64 = writer
        .query_row("SELECT count(*) FROM expensive", [], |r| r.get(0))
        .unwrap();
    let (repo, sink) = repo();
    let report = backup(SqliteSource::new(&live), &repo).await;
    drop(writer);
    let bytes = sink.get_bytes(&report.manifest.name).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join(&report.manifest.name);
    std::fs::write(&archive, &bytes).unwrap();
    let extract = out.path().join("x");
    std::fs::create_dir(&extract).unwrap();
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&extract)
        .status()
        .unwrap();
    assert!(status.success());
    let db = extract.join("assets.db");
    assert!(db.is_file(), "the entry is named like the database");
    let sqlite3 = |sql: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(sqlite3("PRAGMA integrity_check"), "ok");
    assert_eq!(sqlite3("SELECT count(*) FROM items"), "2000");
    assert_eq!(
        sqlite3("SELECT count(*) FROM expensive"),
        expensive.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_consistent_while_another_connection_commits() {
    for mode in ["wal", "delete"] {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("busy.db");
        {
            let conn = rusqlite::Connection::open(&live).unwrap();
            conn.query_row(&format!("PRAGMA journal_mode = {mode}"), [], |_| Ok(()))
                .unwrap();
            conn.execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, batch INTEGER, pad BLOB);
                 CREATE TABLE totals (batch INTEGER PRIMARY KEY, n INTEGER);",
            )
            .unwrap();
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (live, stop) = (live.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn = rusqlite::Connection::open(&live).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(30))
                    .unwrap();
                let mut batch = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || batch < 20 {
                    let tx = conn.transaction().unwrap();
                    for _ in 0..10 {
                        tx.execute(
                            "INSERT INTO t (batch, pad) VALUES (?1, zeroblob(2000))",
                            [batch],
                        )
                        .unwrap();
                    }
                    tx.execute("INSERT INTO totals VALUES (?1, 10)", [batch])
                        .unwrap();
                    tx.commit().unwrap();
                    batch += 1;
                }
                batch
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (repo, _sink) = repo();
        let mut reports = Vec::new();
        for _ in 0..3 {
            reports.push(backup(SqliteSource::new(&live), &repo).await);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let batches = writer.join().unwrap();
        assert!(batches >= 20);
        for report in reports {
            let db = &report.manifest.databases[0];
            assert_eq!(db.integrity_check.as_deref(), Some("ok"));
            let rows = db.rows("t").unwrap();
            let totals = db.rows("totals").unwrap();
            assert_eq!(
                rows,
                totals * 10,
                "{mode}: the snapshot holds whole transactions only"
            );
            // And the archive restores to the same counts.
            let target = dir
                .path()
                .join(format!("restored-{}", report.manifest.name));
            let target_db = target.join("busy.db");
            restore_named(
                &repo,
                &report.manifest.name,
                &SqliteSource::new(&target_db),
                &confirmed(),
            )
            .await
            .unwrap();
            let conn = rusqlite::Connection::open(&target_db).unwrap();
            let n: i64 = conn
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n as u64, rows);
        }
    }
}
