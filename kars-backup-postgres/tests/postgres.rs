//! Integration tests of the PostgreSQL source against a real server (a throwaway cluster, or
//! `KARS_TEST_PG_URL`). Under `CI=true` a missing server fails these tests.

use std::path::Path;
use std::sync::Arc;

use kars_backup_core::verify::{Expectation, TestQuery};
use kars_backup_core::{
    BackupJob, BackupOptions, DatabaseSource, Error as CoreError, NoProgress, Repository,
    RestoreHooks, RestoreOptions, VerifyPlan, restore, verify_backup,
};
use kars_backup_postgres::testing::TestCluster;
use kars_backup_postgres::{
    DumpFormat, DumpOptions, PgRestoreOptions, PostgresSource, RestoreMode,
};

fn cluster() -> Option<&'static TestCluster> {
    TestCluster::shared()
}

fn repo(dir: &Path) -> Repository {
    Repository::new(kars_backup_storage::sink_from_url(&dir.display().to_string()).unwrap())
}

fn source(pg: &TestCluster, db: &str) -> PostgresSource {
    PostgresSource::from_url(&pg.url(db)).unwrap()
}

async fn backup(
    source: PostgresSource,
    repo: &Repository,
) -> kars_backup_core::Result<kars_backup_core::BackupReport> {
    BackupJob::new(
        Arc::new(source),
        vec![repo.clone()],
        BackupOptions::default(),
    )
    .run()
    .await
}

async fn restore_into(
    repo: &Repository,
    target: &PostgresSource,
    options: RestoreOptions,
) -> kars_backup_core::Result<kars_backup_core::RestoreReport> {
    let latest = repo.latest().await?.expect("a committed backup");
    restore(repo, &latest, target, &options, Arc::new(NoProgress)).await
}

fn confirmed() -> RestoreOptions {
    RestoreOptions {
        confirmed: true,
        ..RestoreOptions::default()
    }
}

/// Backs up the rich fixture in `format`, restores it into a new database, and compares content
/// hashes and schema dumps.
async fn round_trip(format: DumpFormat, jobs: usize) {
    let Some(pg) = cluster() else { return };
    let src_db = TestCluster::unique_name("rt_src");
    let dst_db = TestCluster::unique_name("rt_dst");
    pg.create_rich_database(&src_db);
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let report = backup(
        source(pg, &src_db).with_format(format).with_jobs(jobs),
        &repo,
    )
    .await
    .unwrap();
    let m = &report.manifest;
    let ext = match format {
        DumpFormat::Plain => ".sql.gz",
        DumpFormat::Custom => ".dump",
        DumpFormat::Directory => ".dir.tar",
    };
    assert!(
        m.name.starts_with("kars-postgres-") && m.name.ends_with(ext),
        "{}",
        m.name
    );
    assert_eq!(m.engine, "postgres");
    assert!(!m.source.contains("kars-test-secret"), "{}", m.source);
    let db = &m.databases[0];
    assert_eq!(db.name, src_db);
    assert!(db.engine_version.starts_with(char::is_numeric));
    assert!(db.size_bytes > 0);
    assert_eq!(db.rows("public.assets"), Some(500));
    assert_eq!(db.rows("\"Sales\".\"Orders\""), Some(40));
    assert_eq!(
        db.rows("public.asset_events_2024").unwrap() + db.rows("public.asset_events_2025").unwrap(),
        510
    );
    assert_eq!(db.details["format"], format.to_string());
    assert!(db.details.contains_key("pg_dump_version"));

    let target = source(pg, &dst_db).with_jobs(jobs);
    assert!(!target.exists().await.unwrap());
    let restored = restore_into(&repo, &target, confirmed()).await.unwrap();
    assert!(
        restored.verification.passed(),
        "{:?}",
        restored.verification
    );
    assert!(restored.previous_kept_at.is_none());
    assert_eq!(pg.content_hashes(&src_db), pg.content_hashes(&dst_db));
    assert_eq!(pg.schema_dump(&src_db), pg.schema_dump(&dst_db));
    assert!(
        pg.databases_like(&format!("{dst_db}_kars_staging"))
            .is_empty()
    );
    pg.drop_database(&src_db);
    pg.drop_database(&dst_db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_round_trip_keeps_everything() {
    round_trip(DumpFormat::Plain, 1).await;
}

/// The restore's check whose name starts with `name`.
fn check_named<'a>(
    restored: &'a kars_backup_core::RestoreReport,
    name: &str,
) -> &'a kars_backup_core::verify::CheckOutcome {
    restored
        .verification
        .checks
        .iter()
        .find(|c| c.check.starts_with(name))
        .unwrap_or_else(|| panic!("a {name} check in {:?}", restored.verification))
}

/// A plain dump loaded over three connections (tables side by side, indexes and constraints
/// side by side, the rest in order) keeps everything, and the row counts it verifies are the
/// server's own `COPY` results where a table was loaded by one `COPY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_round_trip_in_parallel_keeps_everything() {
    round_trip(DumpFormat::Plain, 3).await;
    let Some(pg) = cluster() else { return };
    let src_db = TestCluster::unique_name("par_src");
    let dst_db = TestCluster::unique_name("par_dst");
    pg.create_rich_database(&src_db);
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    backup(source(pg, &src_db), &repo).await.unwrap();
    // amcheck during the load (the CLI passes its --integrity level); the extension it installs
    // is gone again (the schema dumps compare equal). The full level adds heapallindexed.
    let target = source(pg, &dst_db)
        .with_jobs(2)
        .with_restore_checks(kars_backup_core::IntegrityLevel::Full);
    let mut options = confirmed();
    options.plan.integrity = kars_backup_core::IntegrityLevel::Full;
    let restored = restore_into(&repo, &target, options).await.unwrap();
    let amcheck = check_named(&restored, "amcheck");
    assert!(amcheck.passed, "{amcheck:?}");
    assert!(
        amcheck.detail.contains("as soon as they were built")
            && amcheck
                .detail
                .contains("with bt_index_check (heapallindexed)"),
        "{amcheck:?}"
    );
    let counts = check_named(&restored, "row counts");
    assert!(counts.passed, "{counts:?}");
    assert!(
        counts
            .detail
            .contains("counted by the server while loading"),
        "{counts:?}"
    );
    assert_eq!(pg.content_hashes(&src_db), pg.content_hashes(&dst_db));
    assert_eq!(pg.schema_dump(&src_db), pg.schema_dump(&dst_db));
    // The default level: every B-tree index checked with bt_index_check, without heapallindexed.
    let target = source(pg, &dst_db)
        .with_jobs(2)
        .with_restore_checks(kars_backup_core::IntegrityLevel::Standard);
    let restored = restore_into(&repo, &target, confirmed()).await.unwrap();
    let amcheck = check_named(&restored, "amcheck");
    assert!(amcheck.passed, "{amcheck:?}");
    assert!(
        amcheck.detail.contains("as soon as they were built")
            && amcheck.detail.contains("with bt_index_check,")
            && !amcheck.detail.contains("heapallindexed"),
        "{amcheck:?}"
    );
    assert_eq!(pg.content_hashes(&src_db), pg.content_hashes(&dst_db));
    for kept in pg.databases_like(&format!("{dst_db}_pre_restore")) {
        pg.drop_database(&kept);
    }
    pg.drop_database(&src_db);
    pg.drop_database(&dst_db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_round_trip_keeps_everything() {
    round_trip(DumpFormat::Custom, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_round_trip_with_two_jobs_keeps_everything() {
    round_trip(DumpFormat::Directory, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_round_trip_restores_with_two_jobs() {
    round_trip(DumpFormat::Custom, 2).await;
}

fn rows(pg: &TestCluster, db: &str, table: &str) -> i64 {
    pg.psql(db, &format!("SELECT count(*) FROM {table}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_restore_over_a_live_database_keeps_the_previous_one() {
    let Some(pg) = cluster() else { return };
    let db = TestCluster::unique_name("safe");
    pg.create_rich_database(&db);
    let original = pg.content_hashes(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    backup(source(pg, &db), &repo).await.unwrap();
    // The live database changes after the backup.
    pg.psql(
        &db,
        "DELETE FROM \"Sales\".\"Orders\"; INSERT INTO companies (name) VALUES ('Later Inc');",
    );

    let target = source(pg, &db);
    assert!(target.exists().await.unwrap());
    let not_confirmed = restore_into(&repo, &target, RestoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(not_confirmed, CoreError::NotConfirmed(_)),
        "{not_confirmed}"
    );

    let report = restore_into(&repo, &target, confirmed()).await.unwrap();
    let kept = report
        .previous_kept_at
        .clone()
        .expect("previous database kept");
    assert!(kept.starts_with(&format!("{db}_pre_restore_")), "{kept}");
    assert!(
        report
            .verification
            .checks
            .iter()
            .any(|c| c.check == "amcheck"),
        "{:?}",
        report.verification
    );
    assert_eq!(pg.content_hashes(&db), original);
    assert_eq!(rows(pg, &kept, "\"Sales\".\"Orders\""), 0);
    assert!(pg.databases_like(&format!("{db}_kars_staging")).is_empty());
    pg.drop_database(&db);
    pg.drop_database(&kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_verification_leaves_the_live_database_unchanged() {
    let Some(pg) = cluster() else { return };
    let db = TestCluster::unique_name("rbv");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    backup(source(pg, &db), &repo).await.unwrap();
    pg.psql(
        &db,
        "DELETE FROM \"Sales\".\"Orders\" WHERE \"OrderID\" > 10;",
    );
    let before = pg.content_hashes(&db);

    let options = RestoreOptions {
        plan: VerifyPlan {
            queries: vec![TestQuery {
                sql: "SELECT count(*) FROM public.users".into(),
                expect: Expectation::Value("999999".into()),
                label: None,
            }],
            ..VerifyPlan::default()
        },
        confirmed: true,
        ..RestoreOptions::default()
    };
    let err = restore_into(&repo, &source(pg, &db), options)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::VerificationFailed(_)), "{err}");
    assert!(err.to_string().contains("999999"), "{err}");
    assert_eq!(pg.content_hashes(&db), before);
    assert!(pg.databases_like(&format!("{db}_kars_staging")).is_empty());
    assert!(pg.databases_like(&format!("{db}_pre_restore")).is_empty());
    pg.drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_health_check_swaps_the_previous_database_back() {
    let Some(pg) = cluster() else { return };
    let db = TestCluster::unique_name("rbh");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    backup(source(pg, &db).with_format(DumpFormat::Custom), &repo)
        .await
        .unwrap();
    pg.psql(&db, "TRUNCATE \"Sales\".\"Orders\";");
    let before = pg.content_hashes(&db);
    let options = RestoreOptions {
        hooks: RestoreHooks {
            health_check: Some("exit 1".into()),
            health_check_attempts: 1,
            health_check_interval_secs: 0,
            ..RestoreHooks::default()
        },
        confirmed: true,
        ..RestoreOptions::default()
    };
    let err = restore_into(&repo, &source(pg, &db), options)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::RolledBack { .. }), "{err}");
    assert!(
        err.to_string().contains("previous database is back"),
        "{err}"
    );
    assert_eq!(pg.content_hashes(&db), before);
    assert!(pg.databases_like(&format!("{db}_kars_staging")).is_empty());
    assert!(pg.databases_like(&format!("{db}_pre_restore")).is_empty());
    pg.drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_restore_replaces_the_schemas_in_one_transaction() {
    let Some(pg) = cluster() else { return };
    let db = TestCluster::unique_name("inplace");
    pg.create_rich_database(&db);
    let original = pg.content_hashes(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    for format in [DumpFormat::Plain, DumpFormat::Custom] {
        backup(source(pg, &db).with_format(format), &repo)
            .await
            .unwrap();
        pg.psql(
            &db,
            "DELETE FROM assets WHERE id > 100; CREATE TABLE stray (x int);",
        );
        let target = source(pg, &db).with_restore_options(PgRestoreOptions {
            mode: RestoreMode::InPlace,
            ..PgRestoreOptions::default()
        });
        let report = restore_into(&repo, &target, confirmed()).await.unwrap();
        assert!(report.previous_kept_at.is_none());
        assert_eq!(pg.content_hashes(&db), original, "{format}");
        assert!(pg.try_psql(&db, "SELECT * FROM stray").is_err());
    }

    // A failing import (the row counts differ from a doctored manifest) changes nothing.
    let latest = repo.latest().await.unwrap().unwrap();
    let mut entry = latest.clone();
    let manifest = entry.manifest.as_mut().unwrap();
    let t = manifest.databases[0]
        .tables
        .iter_mut()
        .find(|t| t.name == "public.assets")
        .unwrap();
    t.rows += 1;
    pg.psql(&db, "DELETE FROM assets WHERE id > 400;");
    let before = pg.content_hashes(&db);
    let target = source(pg, &db).with_restore_options(PgRestoreOptions {
        mode: RestoreMode::InPlace,
        ..PgRestoreOptions::default()
    });
    let err = restore(&repo, &entry, &target, &confirmed(), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the manifest says 501"), "{err}");
    assert_eq!(pg.content_hashes(&db), before);
    pg.drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tables_restore_selectively() {
    let Some(pg) = cluster() else { return };
    let db = TestCluster::unique_name("sel");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    backup(source(pg, &db).with_format(DumpFormat::Custom), &repo)
        .await
        .unwrap();
    let original = pg.content_hashes(&db);

    // Into a new database: only the two tables.
    let new_db = TestCluster::unique_name("sel_new");
    let target = source(pg, &new_db).with_restore_options(PgRestoreOptions {
        tables: vec!["companies".into(), "app_settings".into()],
        ..PgRestoreOptions::default()
    });
    let report = restore_into(&repo, &target, confirmed()).await.unwrap();
    assert!(report.verification.passed());
    assert_eq!(rows(pg, &new_db, "companies"), 12);
    assert_eq!(rows(pg, &new_db, "app_settings"), 25);
    assert!(pg.try_psql(&new_db, "SELECT 1 FROM users").is_err());

    // In place: the two tables' rows are replaced in one transaction, the rest is left alone.
    pg.psql(&db, "DELETE FROM \"Sales\".\"Orders\" WHERE \"OrderID\" > 5; DELETE FROM app_settings; INSERT INTO app_settings VALUES ('new', '1'); UPDATE companies SET description = NULL;");
    let changed = pg.content_hashes(&db);
    let target = source(pg, &db).with_restore_options(PgRestoreOptions {
        mode: RestoreMode::InPlace,
        tables: vec!["Orders".into(), "app_settings".into()],
        ..PgRestoreOptions::default()
    });
    restore_into(&repo, &target, confirmed()).await.unwrap();
    let now = pg.content_hashes(&db);
    assert_eq!(
        now["r \"Sales\".\"Orders\""],
        original["r \"Sales\".\"Orders\""]
    );
    assert_eq!(
        now["r public.app_settings"],
        original["r public.app_settings"]
    );
    assert_eq!(now["r public.companies"], changed["r public.companies"]);
    assert_ne!(now["r public.companies"], original["r public.companies"]);

    // With --clean the two tables are dropped and recreated.
    pg.psql(&db, "DELETE FROM app_settings;");
    let target = source(pg, &db).with_restore_options(PgRestoreOptions {
        mode: RestoreMode::InPlace,
        tables: vec!["Orders".into(), "app_settings".into()],
        clean: true,
        ..PgRestoreOptions::default()
    });
    restore_into(&repo, &target, confirmed()).await.unwrap();
    assert_eq!(rows(pg, &db, "app_settings"), 25);
    assert_eq!(rows(pg, &db, "\"Sales\".\"Orders\""), 40);

    // A table that others reference cannot be emptied alone: nothing changes.
    let before = pg.content_hashes(&db);
    let target = source(pg, &db).with_restore_options(PgRestoreOptions {
        mode: RestoreMode::InPlace,
        tables: vec!["companies".into()],
        ..PgRestoreOptions::default()
    });
    let err = restore_into(&repo, &target, confirmed()).await.unwrap_err();
    assert!(err.to_string().contains("foreign key"), "{err}");
    assert_eq!(pg.content_hashes(&db), before);

    // A selective restore into an existing database refuses safe mode.
    let target = source(pg, &db).with_restore_options(PgRestoreOptions {
        tables: vec!["companies".into()],
        ..PgRestoreOptions::default()
    });
    let err = restore_into(&repo, &target, confirmed()).await.unwrap_err();
    assert!(err.to_string().contains("--mode in-place"), "{err}");
    pg.drop_database(&db);
    pg.drop_database(&new_db);
}

fn fake_bin(dir: &Path, pg_dump_script: &str, real: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join("pg_dump");
    std::fs::write(
        &p,
        pg_dump_script.replace("@REAL@", &real.display().to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    for tool in ["psql", "pg_restore"] {
        std::os::unix::fs::symlink(real.join(tool), bin.join(tool)).unwrap();
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pg_dump_lists_no_backup() {
    let Some(pg) = cluster() else { return };
    let db = TestCluster::unique_name("killed");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_bin(
        dir.path(),
        "#!/bin/sh\nif [ \"$1\" = --version ]; then exec @REAL@/pg_dump --version; fi\nprintf -- '--\\n-- partial dump\\nCREATE TABLE half (x int);\\n'\necho 'pg_dump: simulated crash' >&2\nkill -9 $$\n",
        pg.bin_dir(),
    );
    let store = dir.path().join("store");
    let repo = repo(&store);
    let err = backup(source(pg, &db).with_pg_bin_dir(&bin), &repo)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("killed by signal 9"), "{text}");
    assert!(text.contains("simulated crash"), "{text}");
    let listing = repo.list().await.unwrap();
    assert!(listing.latest().is_none());
    assert!(listing.entries.is_empty(), "{:?}", listing.entries);

    // A non-zero exit too.
    let bin2 = fake_bin(
        &dir.path().join("b2"),
        "#!/bin/sh\nif [ \"$1\" = --version ]; then exec @REAL@/pg_dump --version; fi\necho 'pg_dump: error: query failed: server closed the connection unexpectedly' >&2\nexit 1\n",
        pg.bin_dir(),
    );
    let err = backup(source(pg, &db).with_pg_bin_dir(&bin2), &repo)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("server closed the connection"),
        "{err}"
    );
    assert!(repo.list().await.unwrap().entries.is_empty());
    pg.drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_pg_dump_is_refused_before_starting() {
    let Some(pg) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_bin(
        dir.path(),
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) 9.6.24'; exit 0; fi\necho 'must not run' >&2; exit 3\n",
        pg.bin_dir(),
    );
    let repo = repo(&dir.path().join("store"));
    let err = backup(source(pg, "postgres").with_pg_bin_dir(&bin), &repo)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::UnsupportedVersion { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("9.6.24"), "{text}");
    let server = pg.psql("postgres", "SHOW server_version");
    let server = server.split_whitespace().next().unwrap();
    assert!(text.contains(server), "{text}");
    assert!(text.contains("--pg-bin-dir"), "{text}");
    assert!(!text.contains("must not run"), "{text}");
    assert!(repo.list().await.unwrap().entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_problems_are_explained() {
    let Some(pg) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let good = pg.url("postgres");
    let wrong_password = good.replace("kars-test-secret", "wrong-password");
    let err = backup(PostgresSource::from_url(&wrong_password).unwrap(), &repo)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong-password"), "{err}");

    let err = backup(
        PostgresSource::from_url("postgres://kars:pw@no-such-host.invalid:5432/db").unwrap(),
        &repo,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no-such-host.invalid"), "{err}");
    assert!(err.contains("check the host"), "{err}");
    assert!(!err.contains(":pw@"), "{err}");

    let err = backup(source(pg, "no_such_database"), &repo)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("database \"no_such_database\" does not exist"),
        "{err}"
    );
    assert!(repo.list().await.unwrap().entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_files_restore_by_name() {
    let Some(pg) = cluster() else { return };
    let db = TestCluster::unique_name("runbook");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    // `pg_dump | gzip > kars-postgres-….sql.gz` and `pg_dump -Fc > backup-YYYYmmdd.dump`.
    let url = pg.url(&db);
    let dump = pg.bin_dir().join("pg_dump");
    let sh = |cmd: String| {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh(format!(
        "'{}' '{url}' | gzip > '{}/kars-postgres-20241218-020000.sql.gz'",
        dump.display(),
        dir.path().display()
    ));
    sh(format!(
        "'{}' -Fc '{url}' > '{}/backup-20241219.dump'",
        dump.display(),
        dir.path().display()
    ));
    let repo = repo(dir.path());
    let listing = repo.list().await.unwrap();
    assert!(listing.latest().is_none());
    assert_eq!(listing.entries.len(), 2);
    for name in [
        "kars-postgres-20241218-020000.sql.gz",
        "backup-20241219.dump",
    ] {
        let entry = repo.find(name).await.unwrap();
        let scratch = source(pg, &TestCluster::unique_name("scratch"));
        let report = verify_backup(
            &repo,
            &entry,
            &scratch,
            &VerifyPlan::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(!report.checksum_verified);
        assert!(!scratch.exists().await.unwrap());
        let target_db = TestCluster::unique_name("rb_dst");
        let target = source(pg, &target_db);
        restore(&repo, &entry, &target, &confirmed(), Arc::new(NoProgress))
            .await
            .unwrap();
        assert_eq!(
            pg.content_hashes(&target_db),
            pg.content_hashes(&db),
            "{name}"
        );
        pg.drop_database(&target_db);
    }
    pg.drop_database(&db);
}

/// A bad row in one table of a plain dump fails the parallel load with the server's message
/// naming that table; the staging database is dropped and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_row_fails_the_parallel_load_and_leaves_nothing() {
    let Some(pg) = cluster() else { return };
    let db = TestCluster::unique_name("badrow");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let dump = pg.bin_dir().join("pg_dump");
    let cmd = format!(
        "'{}' '{}' | sed '/^COPY public.assets /a this is not a row' | gzip > '{}/kars-postgres-20241218-020000.sql.gz'",
        dump.display(),
        pg.url(&db),
        dir.path().display()
    );
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
    let repo = repo(dir.path());
    let entry = repo
        .find("kars-postgres-20241218-020000.sql.gz")
        .await
        .unwrap();
    let target_db = TestCluster::unique_name("badrow_dst");
    let target = source(pg, &target_db).with_jobs(2);
    let err = restore(&repo, &entry, &target, &confirmed(), Arc::new(NoProgress))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("public.assets"), "{err}");
    assert!(!target.exists().await.unwrap());
    assert!(
        pg.databases_like(&format!("{target_db}_kars_staging"))
            .is_empty()
    );
    pg.drop_database(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selections_and_schema_only_shape_the_manifest() {
    let Some(pg) = cluster() else { return };
    let db = TestCluster::unique_name("shape");
    pg.create_rich_database(&db);
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let report = backup(
        source(pg, &db).with_dump_options(DumpOptions {
            tables: vec!["users".into(), "\"Sales\".*".into()],
            ..DumpOptions::default()
        }),
        &repo,
    )
    .await
    .unwrap();
    let names: Vec<_> = report.manifest.databases[0]
        .tables
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["\"Sales\".\"Orders\"", "public.users"]);
    let report = backup(
        source(pg, &db).with_dump_options(DumpOptions {
            exclude_tables: vec!["audit_logs*".into()],
            schema_only: true,
            ..DumpOptions::default()
        }),
        &repo,
    )
    .await
    .unwrap();
    let db_info = &report.manifest.databases[0];
    assert!(
        db_info
            .tables
            .iter()
            .all(|t| t.rows == 0 && !t.name.contains("audit"))
    );
    assert_eq!(db_info.details["schema_only"], true);
    let scratch = source(pg, &TestCluster::unique_name("shape_v"));
    let latest = repo.latest().await.unwrap().unwrap();
    verify_backup(
        &repo,
        &latest,
        &scratch,
        &VerifyPlan::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    pg.drop_database(&db);
}
