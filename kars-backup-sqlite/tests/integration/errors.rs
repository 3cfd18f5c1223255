//! Errors name what is wrong and where.

use std::sync::Arc;

use kars_backup_core::{BackupJob, BackupOptions, DatabaseSource};
use kars_backup_sqlite::SqliteSource;

use crate::common::*;

async fn backup_error(source: SqliteSource) -> kars_backup_core::Error {
    let (repo, _sink) = repo();
    BackupJob::new(Arc::new(source), vec![repo], BackupOptions::default())
        .run()
        .await
        .expect_err("the backup fails")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing/assets.db");
    let err = backup_error(SqliteSource::new(&path)).await;
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("no SQLite database at {}", path.display())),
        "{msg}"
    );
    let err = SqliteSource::new(&path).inspect().await.unwrap_err();
    assert!(err.to_string().contains("no SQLite database at"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_sqlite_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assets.db");
    std::fs::write(&path, "name,value\nx,1\n").unwrap();
    let err = backup_error(SqliteSource::new(&path)).await;
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{} is not an SQLite database", path.display())),
        "{msg}"
    );
    assert_eq!(err.category(), kars_backup_core::ErrorCategory::Source);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_volume_directory_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("locked");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read_dir(&sub).is_ok() {
        // root reads any directory; make the failure real by pointing at a file instead.
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let err = backup_error(SqliteSource::new_volume(&file)).await;
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
        return;
    }
    let err = backup_error(SqliteSource::new(dir.path())).await;
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        err.to_string().contains(&sub.display().to_string()),
        "{err}"
    );
}
