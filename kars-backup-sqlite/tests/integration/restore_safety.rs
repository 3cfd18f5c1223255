//! Restores over an existing database: the previous one is kept with its WAL, and failures leave
//! the live database byte-identical.

use kars_backup_core::verify::{Expectation, TestQuery};
use kars_backup_core::{Error, RestoreHooks, RestoreOptions, VerifyPlan};
use kars_backup_sqlite::SqliteSource;
use kars_backup_sqlite::sample::{SampleSize, create_kars_database};

use crate::common::*;

/// A backup of a sample database (different from the live one), committed to a fresh repo.
async fn sample_backup() -> (tempfile::TempDir, kars_backup_core::Repository, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    create_kars_database(&db, SampleSize::demo()).unwrap();
    let (repo, _sink) = repo();
    let report = backup(SqliteSource::new(&db), &repo).await;
    (dir, repo, report.manifest.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_over_an_existing_database_keeps_it_with_its_wal_content() {
    let (_src, repo, name) = sample_backup().await;
    let live_dir = tempfile::tempdir().unwrap();
    let (live, _, _) = live_database_with_wal(live_dir.path(), "assets.db");
    let before = dump_copy(&live);
    let target = SqliteSource::new(&live);

    // Without confirmation nothing happens.
    let err = restore_named(&repo, &name, &target, &RestoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotConfirmed(_)), "{err}");

    let report = restore_named(&repo, &name, &target, &confirmed())
        .await
        .unwrap();
    let kept = std::path::PathBuf::from(report.previous_kept_at.expect("the previous db is kept"));
    assert_eq!(kept.parent(), live.parent());
    assert!(
        kept.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("assets.db.pre-restore-"),
        "{}",
        kept.display()
    );
    // The previous database was settled before the swap: its -wal is in the kept file, which
    // is the whole previous database on its own.
    assert!(!with_suffix(&kept, "-wal").exists());
    assert_eq!(dump_copy(&kept), before);
    assert!(
        !with_suffix(&live, "-wal").exists(),
        "no stale WAL beside the restored file"
    );

    // The restored database is the sample.
    let conn = rusqlite::Connection::open(&live).unwrap();
    let assets: u64 = conn
        .query_row("SELECT count(*) FROM assets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(assets, SampleSize::demo().assets);
    drop(conn);

    // The kept database holds what was only in the WAL.
    let old = rusqlite::Connection::open(&kept).unwrap();
    let in_wal: i64 = old
        .query_row(
            "SELECT count(*) FROM log WHERE msg = 'only in the wal'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(in_wal, 1);
    assert!(entries_starting_with(live_dir.path(), ".kars-restore-").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_verification_leaves_the_live_database_untouched() {
    let (_src, repo, name) = sample_backup().await;
    let live_dir = tempfile::tempdir().unwrap();
    let (live, db_bytes, wal_bytes) = live_database_with_wal(live_dir.path(), "assets.db");
    let options = RestoreOptions {
        plan: VerifyPlan {
            queries: vec![
                TestQuery {
                    sql: "SELECT count(*) FROM users".into(),
                    expect: Expectation::Value(SampleSize::demo().users.to_string()),
                    label: None,
                },
                TestQuery {
                    sql: "SELECT count(*) FROM no_such_table".into(),
                    expect: Expectation::Value("1".into()),
                    label: None,
                },
            ],
            ..VerifyPlan::default()
        },
        ..confirmed()
    };
    let err = restore_named(&repo, &name, &SqliteSource::new(&live), &options)
        .await
        .unwrap_err();
    match &err {
        Error::VerificationFailed(msg) => {
            assert!(msg.contains("no_such_table"), "{msg}");
            assert!(
                !msg.contains("FROM users"),
                "the passing query is not a failure: {msg}"
            );
        }
        other => panic!("expected a verification failure, got {other}"),
    }
    assert_eq!(std::fs::read(&live).unwrap(), db_bytes);
    assert_eq!(
        std::fs::read(with_suffix(&live, "-wal")).unwrap(),
        wal_bytes
    );
    let names: Vec<_> = std::fs::read_dir(live_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "only the database and its WAL: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_health_check_rolls_back_to_the_same_database() {
    let (_src, repo, name) = sample_backup().await;
    let live_dir = tempfile::tempdir().unwrap();
    let (live, _, _) = live_database_with_wal(live_dir.path(), "assets.db");
    let before = dump_copy(&live);
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&live).unwrap());
    let marker = live_dir.path().join("health-checked");
    let options = RestoreOptions {
        hooks: RestoreHooks {
            // The "application" opens the restored database (making a -wal) and is unhealthy.
            health_check: Some(format!(
                "sqlite3 \"$KARS_BACKUP_TARGET\" 'INSERT INTO companies (name, country, created_at) VALUES (1, 2, 3)' 2>/dev/null; touch '{}'; false",
                marker.display()
            )),
            health_check_attempts: 1,
            health_check_interval_secs: 0,
            ..RestoreHooks::default()
        },
        ..confirmed()
    };
    let err = restore_named(&repo, &name, &SqliteSource::new(&live), &options)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RolledBack { .. }), "{err}");
    assert!(
        err.to_string().contains("previous database is back"),
        "{err}"
    );
    assert!(marker.exists(), "the health check ran after the swap");
    // The same file (inode) is back, with the same content (its -wal was settled into it
    // before the swap, so that no rename ever left a database beside another one's -wal).
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&live).unwrap()),
        inode
    );
    assert_eq!(dump_copy(&live), before);
    let mut names: Vec<_> = std::fs::read_dir(live_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["assets.db", "health-checked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_without_a_previous_database_removes_the_restored_one() {
    let (_src, repo, name) = sample_backup().await;
    let live_dir = tempfile::tempdir().unwrap();
    let live = live_dir.path().join("assets.db");
    let options = RestoreOptions {
        hooks: RestoreHooks {
            health_check: Some("false".into()),
            health_check_attempts: 1,
            health_check_interval_secs: 0,
            ..RestoreHooks::default()
        },
        ..confirmed()
    };
    let err = restore_named(&repo, &name, &SqliteSource::new(&live), &options)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RolledBack { .. }), "{err}");
    assert_eq!(std::fs::read_dir(live_dir.path()).unwrap().count(), 0);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restored_file_keeps_the_previous_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let (_src, repo, name) = sample_backup().await;
    let live_dir = tempfile::tempdir().unwrap();
    let (live, _, _) = live_database_with_wal(live_dir.path(), "assets.db");
    std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o640)).unwrap();
    restore_named(&repo, &name, &SqliteSource::new(&live), &confirmed())
        .await
        .unwrap();
    let mode = std::fs::metadata(&live).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}
