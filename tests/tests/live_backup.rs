//! Backups of a database that another process keeps writing to: every archive must hold a
//! committed state (integrity ok, no gap in the counter, both tables equal), in WAL and in
//! rollback-journal mode.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use kars_backup_core::{BackupJob, BackupOptions, Repository, RestoreOptions, restore};
use kars_backup_sqlite::SqliteSource;
use kars_backup_storage::LocalSink;

struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_writer(db: &std::path::Path, mode: &str) -> Writer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kars-test-writer"))
        .arg(db)
        .arg(mode)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read from the writer");
    assert_eq!(line.trim(), "ready", "writer did not start");
    Writer(child)
}

fn check_committed_state(db: &std::path::Path) -> i64 {
    let conn = rusqlite_open(db);
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let (count, max): (i64, i64) = conn
        .query_row(
            "SELECT count(*), coalesce(max(id), 0) FROM counter",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(count, max, "the counter has a gap: a torn snapshot");
    let payload: i64 = conn
        .query_row("SELECT count(*) FROM payload", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        payload, count,
        "counter and payload disagree: a torn transaction"
    );
    max
}

fn rusqlite_open(db: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap();
    // The writer holds its lock between commits in rollback-journal mode.
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    conn
}

async fn backups_under_load(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let writer = start_writer(&db, mode);
    let repo = Repository::new(Arc::new(
        LocalSink::new(dir.path().join("backups")).unwrap(),
    ));
    let mut last_max = 0;
    for round in 0..3 {
        let report = BackupJob::new(
            Arc::new(SqliteSource::new(&db)),
            vec![repo.clone()],
            BackupOptions::default(),
        )
        .run()
        .await
        .unwrap_or_else(|e| panic!("backup {round} under load failed: {e}"));
        let entry = repo.find(&report.manifest.name).await.unwrap();
        let restored = dir.path().join(format!("restored-{round}.db"));
        restore(
            &repo,
            &entry,
            &SqliteSource::new(&restored),
            &RestoreOptions::default(),
            kars_backup_core::progress::no_progress(),
        )
        .await
        .unwrap();
        let max = check_committed_state(&restored);
        let manifest_rows = report.manifest.databases[0].rows("counter").unwrap();
        assert_eq!(
            manifest_rows as i64, max,
            "manifest counts come from the snapshot itself"
        );
        assert!(max >= last_max, "snapshots go forward");
        last_max = max;
    }
    // The writer was still committing all along.
    let live = rusqlite_open(&db);
    let now: i64 = live
        .query_row("SELECT max(id) FROM counter", [], |r| r.get(0))
        .unwrap();
    assert!(
        now > last_max,
        "the writer kept committing during the backups"
    );
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_live_wal_database_is_a_committed_state() {
    backups_under_load("wal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_live_rollback_journal_database_is_a_committed_state() {
    backups_under_load("delete").await;
}
