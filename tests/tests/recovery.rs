//! Restores from several destinations with retries and fallbacks (`kars_backup_core::recovery`)
//! and drills (`kars_backup_core::drill`), on real SQLite files, local directories and
//! `FaultySink`-injected storage failures.

use std::sync::Arc;
use std::time::Duration;

use kars_backup_core::checks::PlanSource;
use kars_backup_core::drill::{self, DrillOptions, DrillOutcome, run_drill};
use kars_backup_core::fault::{FaultySink, Op};
use kars_backup_core::progress::no_progress;
use kars_backup_core::recovery::{
    AttemptOptions, AttemptOutcome, AttemptsFailed, Candidates, Origin, Pick, Recovered, Recovery,
    recover,
};
use kars_backup_core::testing::InMemorySink;
use kars_backup_core::{
    BackupJob, BackupOptions, DynBackupSink, DynDatabaseSource, Repository, RestoreOptions,
    VerifyPlan,
};
use kars_backup_sqlite::SqliteSource;
use kars_backup_storage::LocalSink;

fn make_db(path: &std::path::Path, users: i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT);")
        .unwrap();
    for i in 0..users {
        conn.execute("INSERT INTO users (name) VALUES (?1)", [format!("u{i}")])
            .unwrap();
    }
}

fn users(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap()
}

async fn back_up(db: &std::path::Path, sinks: &[DynBackupSink]) -> String {
    let repos = sinks.iter().map(|s| Repository::new(s.clone())).collect();
    let report = BackupJob::new(
        Arc::new(SqliteSource::new(db)),
        repos,
        BackupOptions::default(),
    )
    .run()
    .await
    .unwrap();
    report.manifest.name.clone()
}

/// The same plan for every backup (a `VerifyPlan` is a `PlanSource`).
fn fixed_plan(plan: VerifyPlan) -> VerifyPlan {
    plan
}

/// One scratch file for every attempt.
#[derive(Debug)]
struct OneScratch(std::path::PathBuf);

impl kars_backup_core::checks::ScratchTargets for OneScratch {
    fn scratch_for(
        &self,
        _: &kars_backup_core::BackupEntry,
    ) -> kars_backup_core::Result<DynDatabaseSource> {
        Ok(Arc::new(SqliteSource::new(self.0.clone())))
    }
}

/// Identical copies: the local one is read first, even when given second; the newest backup
/// across destinations wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_backup_across_destinations_and_the_local_copy_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    make_db(&db, 3);
    let remote: DynBackupSink = Arc::new(InMemorySink::new());
    let local: DynBackupSink = Arc::new(LocalSink::new(dir.path().join("local")).unwrap());
    let both = back_up(&db, &[remote.clone(), local.clone()]).await;
    let origins = vec![
        Origin::new("s3://kars/prod", remote.clone()),
        Origin::new(
            dir.path().join("local").display().to_string(),
            local.clone(),
        ),
    ];
    let c = Candidates::find(&origins, &Pick::Latest).await.unwrap();
    assert_eq!(c.backups.len(), 1, "identical copies are one backup");
    assert_eq!(c.backups[0].name, both);
    assert_eq!(c.backups[0].copies.len(), 2);
    assert!(c.backups[0].copies[0].local, "the local copy first");
    assert_eq!(c.backups[0].copies[1].origin, "s3://kars/prod");

    // A newer backup only at the remote: it is the latest, the older one comes second.
    make_db(&db, 1);
    let newer = back_up(&db, std::slice::from_ref(&remote)).await;
    let c = Candidates::find(&origins, &Pick::Latest).await.unwrap();
    assert_eq!(c.backups[0].name, newer);
    assert_eq!(c.backups[1].name, both);
    // By name: the named one, then only older ones.
    // A destination that cannot be listed is skipped and reported, as long as another works.
    let broken: DynBackupSink = Arc::new(FaultySink::new(remote.clone()).fail(Op::List, 1));
    let partly = vec![
        Origin::new("s3://kars/broken", broken),
        Origin::new(
            dir.path().join("local").display().to_string(),
            local.clone(),
        ),
    ];
    let c = Candidates::find(&partly, &Pick::Latest).await.unwrap();
    assert_eq!(c.backups[0].name, both);
    assert_eq!(c.unavailable.len(), 1);
    assert_eq!(c.unavailable[0].destination, "s3://kars/broken");
    let c = Candidates::find(&origins, &Pick::Named(both.clone()))
        .await
        .unwrap();
    assert_eq!(c.backups.len(), 1);
    assert_eq!(c.backups[0].name, both);
    let err = Candidates::find(
        &origins,
        &Pick::Named("asset-data-20200101-000000.tar.gz".into()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, kars_backup_core::Error::NotFound { .. }),
        "{err}"
    );
}

/// A transient storage failure is retried on the same copy; without retries it counts as
/// failed, and the next copy is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_then_the_next_copy_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    make_db(&db, 3);
    let flaky_inner: DynBackupSink = Arc::new(InMemorySink::new());
    let other: DynBackupSink = Arc::new(InMemorySink::new());
    let name = back_up(&db, &[flaky_inner.clone(), other.clone()]).await;
    let plan = fixed_plan(VerifyPlan::default());
    let options = RestoreOptions {
        confirmed: true,
        ..Default::default()
    };

    // The download of the archive (the second get, after the manifest's) fails with a connection
    // reset; one retry restores.
    let flaky: DynBackupSink = Arc::new(FaultySink::new(flaky_inner.clone()).fail(Op::Get, 2));
    let origins = vec![Origin::new("s3://flaky/kars", flaky)];
    let c = Candidates::find(&origins, &Pick::Latest).await.unwrap();
    let target = SqliteSource::new(dir.path().join("restored1.db"));
    let attempts = AttemptOptions {
        retries: 2,
        backoff: Duration::from_millis(10),
        ..Default::default()
    };
    let ok = restore_first(&c, &target, &options, &plan, &attempts)
        .await
        .unwrap();
    let outcomes: Vec<_> = ok.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [AttemptOutcome::Retried, AttemptOutcome::Succeeded]
    );
    assert_eq!(ok.attempts[0].category.as_deref(), Some("storage"));
    assert_eq!(ok.attempts[1].try_number, 2);
    assert_eq!(users(&dir.path().join("restored1.db")), 3);

    // No retries: the flaky copy fails, and the other copy of the same backup is used.
    let flaky: DynBackupSink = Arc::new(FaultySink::new(flaky_inner.clone()).fail(Op::Get, 2));
    let origins = vec![
        Origin::new("s3://flaky/kars", flaky),
        Origin::new("gs://other/kars", other.clone()),
    ];
    let c = Candidates::find(&origins, &Pick::Latest).await.unwrap();
    let target = SqliteSource::new(dir.path().join("restored2.db"));
    let no_retry = AttemptOptions {
        retries: 0,
        ..attempts.clone()
    };
    let ok = restore_first(&c, &target, &options, &plan, &no_retry)
        .await
        .unwrap();
    assert_eq!(ok.attempts.len(), 2);
    assert_eq!(ok.attempts[0].outcome, AttemptOutcome::Failed);
    assert_eq!(ok.attempts[0].destination, "s3://flaky/kars");
    assert_eq!(ok.report.destination, "gs://other/kars");
    assert_eq!(ok.report.backup, name);

    // A verification failure is never retried, and without fallback nothing else is tried.
    let failing = fixed_plan(VerifyPlan {
        min_rows: vec![kars_backup_core::TableInfo {
            name: "users".into(),
            rows: 1000,
        }],
        ..VerifyPlan::default()
    });
    let target = SqliteSource::new(dir.path().join("restored3.db"));
    let err = restore_first(&c, &target, &options, &failing, &attempts)
        .await
        .unwrap_err();
    assert_eq!(err.attempts.len(), 1, "{:?}", err.attempts);
    assert_eq!(
        err.error.category(),
        kars_backup_core::ErrorCategory::Verification
    );
    assert!(!dir.path().join("restored3.db").exists());
}

/// Restores the first candidate of `c` that works into `target` (core's `recover`).
async fn restore_first(
    c: &Candidates,
    target: &SqliteSource,
    options: &RestoreOptions,
    plan: &dyn PlanSource,
    attempts: &AttemptOptions,
) -> Result<Recovered, AttemptsFailed> {
    let what = Recovery::Restore { target, options };
    recover(c, what, plan, attempts, no_progress()).await
}

/// A drill stores its report (JSON and text) at the destination; listings do not see it as a
/// backup or a foreign file; `latest_report` reads the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_stores_its_report_where_listings_and_prune_leave_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    make_db(&db, 3);
    let sink: DynBackupSink = Arc::new(LocalSink::new(dir.path().join("b")).unwrap());
    let name = back_up(&db, std::slice::from_ref(&sink)).await;
    let origins = vec![Origin::new(
        dir.path().join("b").display().to_string(),
        sink.clone(),
    )];
    let scratch_dir = tempfile::tempdir().unwrap();
    let scratch = OneScratch(scratch_dir.path().join("scratch.db"));
    let plan = fixed_plan(VerifyPlan::default());
    let report = run_drill(
        &origins,
        &Pick::Latest,
        &scratch,
        &plan,
        &DrillOptions::default(),
        no_progress(),
    )
    .await;
    assert_eq!(report.outcome, DrillOutcome::Passed, "{}", report.to_text());
    assert!(report.passed);
    assert_eq!(report.backup.as_deref(), Some(name.as_str()));
    assert!(report.rto.measured_secs.unwrap() > 0.0 && report.rto.met);
    assert!(report.rpo.measured_secs.unwrap() >= 0.0 && report.rpo.met);
    assert!(report.store_errors.is_empty(), "{:?}", report.store_errors);
    assert!(
        !scratch_dir.path().join("scratch.db").exists(),
        "scratch removed"
    );

    let repo = Repository::new(sink.clone());
    let stored = drill::latest_report(&repo).await.unwrap().unwrap();
    assert_eq!(stored.id, report.id);
    assert_eq!(stored.outcome, DrillOutcome::Passed);
    let text_key = report.report_key.replace(".json", ".txt");
    assert!(dir.path().join("b").join(&text_key).exists());
    let listing = repo.list().await.unwrap();
    assert!(listing.foreign.is_empty(), "{:?}", listing.foreign);
    assert_eq!(listing.committed().count(), 1);
    let pruned = kars_backup_core::prune(
        &repo,
        &"last=1".parse::<kars_backup_core::KeepRules>().unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    assert!(pruned.left_alone.is_empty(), "{:?}", pruned.left_alone);
    assert!(dir.path().join("b").join(&report.report_key).exists());

    // A missed RPO: the drill verifies, but reports the target missed; the newest report wins.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let strict = DrillOptions {
        rpo: chrono::Duration::seconds(1),
        ..DrillOptions::default()
    };
    let missed = run_drill(
        &origins,
        &Pick::Latest,
        &scratch,
        &plan,
        &strict,
        no_progress(),
    )
    .await;
    assert_eq!(missed.outcome, DrillOutcome::TargetMissed);
    assert!(missed.rto.met && !missed.rpo.met);
    let stored = drill::latest_report(&repo).await.unwrap().unwrap();
    assert_eq!(stored.id, missed.id);
    assert_eq!(drill::report_keys(&repo).await.unwrap().len(), 2);
}
