//! What a restore does about the application's sessions on the target database (a real `psql`
//! process holding a connection), the staging databases killed restores leave, and the
//! previous copies restores keep. Against a real server; under `CI=true` a missing server fails.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kars_backup_core::{
    BackupJob, BackupOptions, DatabaseSource, Error as CoreError, InUsePolicy, NoProgress,
    Repository, RestoreOptions, restore,
};
use kars_backup_postgres::testing::TestCluster;
use kars_backup_postgres::{DumpFormat, PgRestoreOptions, PostgresSource, RestoreMode};

fn repo(dir: &Path) -> Repository {
    Repository::new(kars_backup_storage::sink_from_url(&dir.display().to_string()).unwrap())
}

fn source(pg: &TestCluster, db: &str) -> PostgresSource {
    PostgresSource::from_url(&pg.url(db)).unwrap()
}

fn in_place(pg: &TestCluster, db: &str) -> PostgresSource {
    source(pg, db).with_restore_options(PgRestoreOptions {
        mode: RestoreMode::InPlace,
        ..PgRestoreOptions::default()
    })
}

async fn backup_of(pg: &TestCluster, db: &str, dir: &Path) -> Repository {
    let repo = repo(dir);
    BackupJob::new(
        Arc::new(source(pg, db).with_format(DumpFormat::Custom)),
        vec![repo.clone()],
        BackupOptions::default(),
    )
    .run()
    .await
    .unwrap();
    repo
}

async fn restore_with(
    repo: &Repository,
    target: &PostgresSource,
    in_use: InUsePolicy,
) -> kars_backup_core::Result<kars_backup_core::RestoreReport> {
    let latest = repo.latest().await?.expect("a committed backup");
    let options = RestoreOptions {
        confirmed: true,
        in_use,
        ..RestoreOptions::default()
    };
    restore(repo, &latest, target, &options, Arc::new(NoProgress)).await
}

/// An application session: an interactive `psql` reading commands from a pipe, idle between.
struct Session {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Session {
    fn open(pg: &TestCluster, db: &str) -> Session {
        let mut child = Command::new(pg.bin_dir().join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
            .arg(pg.url(db))
            .env("PGAPPNAME", "kars-app")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut s = Session { child, out };
        assert_eq!(s.query("SELECT 'connected'"), "connected");
        s
    }

    fn query(&mut self, sql: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql};").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn close(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The `kars-app` sessions on `db`.
fn app_sessions(pg: &TestCluster, db: &str) -> usize {
    pg.psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND application_name = 'kars-app'"
        ),
    )
    .trim()
    .parse()
    .unwrap()
}

fn orders(pg: &TestCluster, db: &str) -> String {
    pg.psql(db, "SELECT count(*) FROM \"Sales\".\"Orders\"")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_mode_refuses_while_the_application_is_connected_and_ends_its_sessions_when_asked() {
    let Some(pg) = TestCluster::shared() else {
        return;
    };
    let db = TestCluster::unique_name("sess_safe");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = backup_of(pg, &db, dir.path()).await;
    let full = orders(pg, &db);
    pg.psql(&db, "TRUNCATE \"Sales\".\"Orders\"");
    let before = pg.content_hashes(&db);

    let session = Session::open(pg, &db);
    let err = restore_with(&repo, &source(pg, &db), InUsePolicy::Refuse)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CoreError::InUse { .. }), "{text}");
    assert!(text.contains("kars-app"), "{text}");
    assert!(text.contains("--terminate-connections"), "{text}");
    assert_eq!(err.category(), kars_backup_core::ErrorCategory::Source);
    // Refused before the download: nothing staged, nothing renamed, the session still there.
    assert_eq!(pg.content_hashes(&db), before);
    assert!(pg.databases_like(&format!("{db}_kars_staging")).is_empty());
    assert!(pg.databases_like(&format!("{db}_pre_restore")).is_empty());
    assert_eq!(app_sessions(pg, &db), 1);

    let report = restore_with(&repo, &source(pg, &db), InUsePolicy::TerminateSessions)
        .await
        .unwrap();
    assert_eq!(orders(pg, &db), full);
    assert_eq!(
        app_sessions(pg, &db),
        0,
        "the application's session was ended"
    );
    assert!(report.previous_kept_at.is_some());
    session.close();
    // The application reconnects by name to the restored database.
    let mut again = Session::open(pg, &db);
    assert_eq!(
        again.query("SELECT count(*) FROM \"Sales\".\"Orders\""),
        full
    );
    again.close();
    for name in pg.databases_like(&format!("{db}_pre_restore")) {
        pg.drop_database(&name);
    }
    pg.drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_mode_keeps_the_sessions_with_live_and_refuses_without() {
    let Some(pg) = TestCluster::shared() else {
        return;
    };
    let db = TestCluster::unique_name("sess_inplace");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = backup_of(pg, &db, dir.path()).await;
    let full = orders(pg, &db);
    pg.psql(&db, "TRUNCATE \"Sales\".\"Orders\"");

    let mut session = Session::open(pg, &db);
    let err = restore_with(&repo, &in_place(pg, &db), InUsePolicy::Refuse)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::InUse { .. }), "{err}");
    assert_eq!(
        session.query("SELECT count(*) FROM \"Sales\".\"Orders\""),
        "0"
    );

    // --live needs the in-place mode.
    let err = restore_with(&repo, &source(pg, &db), InUsePolicy::Live)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("--mode in-place"), "{err}");

    let report = restore_with(&repo, &in_place(pg, &db), InUsePolicy::Live)
        .await
        .unwrap();
    assert!(
        report
            .steps
            .iter()
            .any(|s| s.contains("in place, in one transaction")),
        "{:?}",
        report.steps
    );
    // The application's session stayed connected and sees the restored rows.
    assert_eq!(app_sessions(pg, &db), 1);
    assert_eq!(
        session.query("SELECT count(*) FROM \"Sales\".\"Orders\""),
        full
    );
    session.close();
    pg.drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_database_of_a_dead_restore_is_dropped_and_a_running_one_is_respected() {
    let Some(pg) = TestCluster::shared() else {
        return;
    };
    let db = TestCluster::unique_name("sess_left");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = backup_of(pg, &db, dir.path()).await;
    let target = source(pg, &db);

    // A restore that is still running holds the advisory lock on its staging database's name.
    let running = format!("{db}_kars_staging_20260101T000000");
    pg.create_database(&running);
    let (client, connection) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query_one(
            "SELECT pg_advisory_lock(hashtext('kars-backup restore ' || $1)::bigint)",
            &[&running],
        )
        .await
        .unwrap();
    let err = restore_with(&repo, &target, InUsePolicy::Refuse)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::InUse { .. }), "{err}");
    assert!(
        err.to_string().contains("another kars-backup restore"),
        "{err}"
    );
    assert!(pg.database_exists(&running));

    // Once its process is gone (the lock goes with its connection), the next restore drops it.
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        match restore_with(&repo, &target, InUsePolicy::Refuse).await {
            Ok(r) => break r,
            Err(CoreError::InUse { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(!pg.database_exists(&running));
    assert_eq!(
        report.leftovers_removed.len(),
        1,
        "{:?}",
        report.leftovers_removed
    );
    assert!(report.leftovers_removed[0].contains(&running));
    for name in pg.databases_like(&format!("{db}_pre_restore")) {
        pg.drop_database(&name);
    }
    pg.drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_databases_beyond_keep_previous_are_dropped() {
    let Some(pg) = TestCluster::shared() else {
        return;
    };
    let db = TestCluster::unique_name("sess_prev");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = backup_of(pg, &db, dir.path()).await;
    let target = source(pg, &db);
    let first = restore_with(&repo, &target, InUsePolicy::Refuse)
        .await
        .unwrap();
    let first_kept = first.previous_kept_at.clone().unwrap();
    // Another second, another name.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = restore_with(&repo, &target, InUsePolicy::Refuse)
        .await
        .unwrap();
    let kept = pg.databases_like(&format!("{db}_pre_restore"));
    assert_eq!(kept, [second.previous_kept_at.clone().unwrap()]);
    assert_eq!(second.previous_removed, [first_kept]);
    let copies = target.previous_copies().await.unwrap();
    assert_eq!(copies.len(), 1);
    assert!(copies[0].size_bytes > 1_000_000, "{copies:?}");
    assert!(copies[0].kept_at.is_some());
    for name in kept {
        pg.drop_database(&name);
    }
    pg.drop_database(&db);
}
