//! Physical base backups and restores to an instant against a real cluster that archives its
//! WAL (started by the test: `wal_level = replica`, `archive_mode = on`, a copying
//! `archive_command`, `track_commit_timestamp = on`). Under `CI=true` a missing server fails.
//!
//! The writer commits one row per transaction; the time each row's transaction committed is
//! read back from the server afterwards with `pg_xact_commit_timestamp(xmin)`: the very
//! timestamp of the commit record that `recovery_target_time` is compared with. A restore to T
//! must hold exactly the rows whose commit time is at or before T.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kars_backup_core::verify::{Expectation, TestQuery};
use kars_backup_core::{
    BackupJob, BackupOptions, BackupReport, Compression, DynEncryptor, NoProgress, Repository,
    VerifyPlan,
};
use kars_backup_encrypt::{AgeEncryptor, DecryptionKeys, SecretString};
use kars_backup_postgres::physical::wal::Lsn;
use kars_backup_postgres::physical::{
    PhysicalRestoreOptions, PhysicalRestoreReport, PhysicalSource, RecoveryTarget,
    restore_to_instant,
};
use kars_backup_postgres::testing::TestCluster;
use sha2::Digest;

fn cluster() -> Option<&'static TestCluster> {
    TestCluster::shared_archiving()
}

fn repo(dir: &Path) -> Repository {
    Repository::new(kars_backup_storage::sink_from_url(&dir.display().to_string()).unwrap())
}

/// A scratch directory the cluster's OS user may use (the restore runs the server as it).
fn tempdir(pg: &TestCluster) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    if let Some(user) = pg.os_user() {
        let ok = std::process::Command::new("chown")
            .arg(format!("{user}:"))
            .arg(t.path())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    t
}

async fn base_backup(
    pg: &TestCluster,
    db: &str,
    repo: &Repository,
    encryptor: Option<DynEncryptor>,
) -> BackupReport {
    let source = PhysicalSource::from_url(&pg.url(db))
        .unwrap()
        .with_pg_bin_dir(pg.bin_dir());
    let options = BackupOptions {
        compression: Compression::Zstd { level: 3 },
        ..BackupOptions::default()
    };
    let mut job = BackupJob::new(Arc::new(source), vec![repo.clone()], options);
    if let Some(e) = encryptor {
        job = job.with_encryptor(e);
    }
    job.run().await.unwrap()
}

fn copy_command(archive: &Path) -> String {
    format!("cp '{}/%f' '%p'", archive.display())
}

fn restore_options(
    pg: &TestCluster,
    pgdata: PathBuf,
    target: RecoveryTarget,
    archive: &Path,
) -> PhysicalRestoreOptions {
    let mut o = PhysicalRestoreOptions::new(pgdata, target, copy_command(archive));
    o.bin_dir = Some(pg.bin_dir().to_path_buf());
    o.run_as = pg.os_user().map(str::to_string);
    o
}

/// A plan that checks the rows of `pitr_log` while replay is paused.
fn expect_rows(n: usize) -> VerifyPlan {
    VerifyPlan {
        queries: vec![TestQuery {
            sql: "SELECT count(*)::text || '/' || coalesce(max(n), 0)::text FROM pitr_log".into(),
            expect: Expectation::Value(format!("{n}/{n}")),
            label: Some(format!("pitr_log holds rows 1..{n}")),
        }],
        ..VerifyPlan::default()
    }
}

/// Commits rows `from..=to` one transaction each, a few milliseconds apart.
async fn write_rows(client: &tokio_postgres::Client, from: i32, to: i32) {
    for n in from..=to {
        client
            .execute("INSERT INTO pitr_log (n) VALUES ($1)", &[&n])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Switches to a new WAL segment and waits until the finished one is in the archive.
async fn switch_and_archive(client: &tokio_postgres::Client, archive: &Path) -> String {
    let seg: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !archive.join(&seg).exists() {
        assert!(Instant::now() < deadline, "{seg} was not archived in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seg
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// A restored cluster started with `pg_ctl` (as it is left: ready for it), on a unix socket.
struct Started<'a> {
    pg: &'a TestCluster,
    pgdata: PathBuf,
    sock: tempfile::TempDir,
    port: u16,
}

impl<'a> Started<'a> {
    fn start(pg: &'a TestCluster, pgdata: &Path) -> Self {
        let sock = tempdir(pg);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Started {
            pg,
            pgdata: pgdata.to_path_buf(),
            sock,
            port,
        };
        let s = started.sock.path().display().to_string();
        started.run(&[
            "pg_ctl",
            "-D",
            &pgdata.display().to_string(),
            "-l",
            &format!("{s}/log"),
            "-w",
            "-o",
            &format!("-p {port} -k {s} -c listen_addresses=''"),
            "start",
        ]);
        started
    }

    /// Runs a program of the server's as the cluster's OS user; its output.
    fn run(&self, args: &[&str]) -> String {
        let program = self.pg.bin_dir().join(args[0]);
        let mut cmd = match self.pg.os_user() {
            Some(u) => {
                let mut c = std::process::Command::new("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={u}"))
                    .args(["--clear-groups", "--"])
                    .arg(program);
                c
            }
            None => std::process::Command::new(program),
        };
        let out = cmd.args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn psql(&self, sql: &str) -> String {
        self.run(&[
            "psql",
            "-h",
            &self.sock.path().display().to_string(),
            "-p",
            &self.port.to_string(),
            "-U",
            kars_backup_postgres::testing::TEST_USER,
            "-d",
            "pitr",
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ])
    }

    fn stop(self) {
        self.run(&[
            "pg_ctl",
            "-D",
            &self.pgdata.display().to_string(),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }
}

/// Starts a restored cluster, runs a query and stops it again.
fn start_and_query(pg: &TestCluster, pgdata: &Path, sql: &str) -> String {
    let started = Started::start(pg, pgdata);
    let out = started.psql(sql);
    started.stop();
    out
}

async fn restore(
    repo: &Repository,
    options: &PhysicalRestoreOptions,
) -> kars_backup_core::Result<PhysicalRestoreReport> {
    restore_to_instant(repo, options, Arc::new(NoProgress)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_to_instants_exactly_and_refuses_gaps() {
    let Some(pg) = cluster() else { return };
    let archive = pg.archive_dir().unwrap();
    pg.create_database("pitr");
    pg.psql(
        "pitr",
        "CREATE TABLE pitr_log (n int PRIMARY KEY, payload text NOT NULL DEFAULT repeat('x', 200))",
    );
    let client = connect(&pg.url("pitr")).await;
    write_rows(&client, 1, 20).await;

    let work = tempdir(pg);
    let backups = work.path().join("backups");
    let repo = repo(&backups);
    let started = Instant::now();
    let report = base_backup(pg, "pitr", &repo, None).await;
    eprintln!(
        "measured: base backup {:.2}s, {} bytes stored ({} bytes of payload)",
        started.elapsed().as_secs_f64(),
        report.manifest.archive.size_bytes,
        report.manifest.payload.size_bytes
    );
    let m = &report.manifest;
    assert!(m.name.starts_with("kars-pgbase-"), "{}", m.name);
    assert!(m.name.ends_with(".tar.zst"), "{}", m.name);
    let physical = m.physical.clone().expect("a physical manifest");
    let sysid: String = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(physical.system_identifier, sysid);
    assert_eq!(physical.timeline, 1);
    assert!(Lsn::parse(&physical.start_lsn).unwrap() < Lsn::parse(&physical.stop_lsn).unwrap());
    assert!(physical.start_wal <= physical.stop_wal);
    assert!(physical.start_time <= physical.end_time);
    assert!(
        archive.join(&physical.stop_wal).exists(),
        "the stop segment is archived"
    );
    // The manifest as stored says the same.
    let listed = repo.latest().await.unwrap().unwrap();
    assert_eq!(listed.manifest.unwrap().physical.unwrap(), physical);

    // More writes across several segments, all archived.
    write_rows(&client, 21, 40).await;
    switch_and_archive(&client, &archive).await;
    write_rows(&client, 41, 60).await;
    let middle = switch_and_archive(&client, &archive).await;
    write_rows(&client, 61, 80).await;
    switch_and_archive(&client, &archive).await;

    // The writer's log: each row's commit time, as the server recorded it.
    let rows = client
        .query(
            "SELECT n, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::int8 FROM pitr_log ORDER BY n",
            &[],
        )
        .await
        .unwrap();
    let committed: Vec<DateTime<Utc>> = rows
        .iter()
        .map(|r| DateTime::from_timestamp_micros(r.get::<_, i64>(1)).unwrap())
        .collect();
    assert_eq!(committed.len(), 80);
    assert!(committed.windows(2).all(|w| w[0] < w[1]));
    let at = |n: usize| committed[n - 1];

    // Exactly at a commit (inclusive), and one microsecond before one.
    for (i, (target, rows)) in [
        (at(30), 30),
        (at(55) - chrono::Duration::microseconds(1), 54),
        (at(79), 79),
    ]
    .into_iter()
    .enumerate()
    {
        let pgdata = work.path().join(format!("restored-{i}"));
        let mut options =
            restore_options(pg, pgdata.clone(), RecoveryTarget::Time(target), &archive);
        options.plan = expect_rows(rows);
        let started = Instant::now();
        let r = restore(&repo, &options).await.unwrap();
        eprintln!(
            "measured: restore to {target} {:.2}s ({} rows)",
            started.elapsed().as_secs_f64(),
            rows
        );
        assert_eq!(r.backup, m.name);
        assert_eq!(r.replayed_to, Some(at(rows)), "last commit replayed");
        assert!(r.verification.passed());
        assert!(
            r.verification
                .checks
                .iter()
                .any(|c| c.check.starts_with("pitr_log holds")),
            "{:?}",
            r.verification.checks
        );
        assert_eq!(r.timeline, Some(2), "promoted onto a new timeline");
        assert!(!pgdata.join("recovery.signal").exists());
        assert!(!pgdata.join("postmaster.pid").exists(), "left stopped");
        if i == 0 {
            // Ready for pg_ctl start, read-write, with exactly the rows committed by T.
            let out = start_and_query(
                pg,
                &pgdata,
                "SELECT count(*) || '/' || max(n) || '/' || current_setting('archive_mode') || '/' || pg_is_in_recovery() FROM pitr_log",
            );
            assert_eq!(out, "30/30/off/false");
        }
    }

    // The latest state.
    let pgdata = work.path().join("restored-latest");
    let mut options = restore_options(pg, pgdata.clone(), RecoveryTarget::Latest, &archive);
    options.plan = expect_rows(80);
    let started = Instant::now();
    let r = restore(&repo, &options).await.unwrap();
    eprintln!(
        "measured: restore --latest {:.2}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(r.replayed_to, Some(at(80)));
    assert!(
        r.steps.iter().any(|s| s.contains("end of the archive")),
        "{:?}",
        r.steps
    );

    // A non-empty directory is refused and left as it was.
    let busy = work.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("PG_VERSION"), "15\n").unwrap();
    let options = restore_options(pg, busy.clone(), RecoveryTarget::Latest, &archive);
    let e = restore(&repo, &options).await.unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(
        std::fs::read_to_string(busy.join("PG_VERSION")).unwrap(),
        "15\n"
    );

    // Before the first base backup ended: refused, nothing written.
    let early = work.path().join("too-early");
    let options = restore_options(pg, early.clone(), RecoveryTarget::Time(at(1)), &archive);
    let e = restore(&repo, &options).await.unwrap_err().to_string();
    assert!(e.contains("no base backup had ended"), "{e}");
    assert!(!early.exists());

    // A segment missing from the archive before the target: refused, naming it.
    let damaged = work.path().join("damaged-archive");
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(&archive)
        .arg(&damaged)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::remove_file(damaged.join(&middle)).unwrap();
    let gap = work.path().join("restored-gap");
    let options = restore_options(pg, gap.clone(), RecoveryTarget::Time(at(79)), &damaged);
    let e = restore(&repo, &options).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("WAL segment {middle} is missing")),
        "{e}"
    );
    assert!(!gap.exists(), "a failed restore leaves nothing");
    // --latest too: the archive holds WAL after the gap, so replay stopping there is refused.
    let options = restore_options(pg, gap.clone(), RecoveryTarget::Latest, &damaged);
    let e = restore(&repo, &options).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("WAL segment {middle} is missing")),
        "{e}"
    );
    assert!(e.contains("the archive holds WAL after it"), "{e}");
    assert!(!gap.exists());
    // Before the gap the same damaged archive still serves.
    let before = work.path().join("restored-before-gap");
    // (A target is reached only once replay sees the next commit after it: row 41's, in the
    // missing segment, for row 40; row 31's for row 30.)
    let mut options = restore_options(pg, before, RecoveryTarget::Time(at(30)), &damaged);
    options.plan = expect_rows(30);
    restore(&repo, &options).await.unwrap();

    // Interrupted at any point: the scratch server is gone and nothing is left behind.
    // Once during the download and extraction (150 ms in), once while the scratch server runs
    // (as soon as its postmaster.pid appears: a fixed delay would race a fast restore).
    for point in ["150ms", "server"] {
        let cut = work.path().join(format!("interrupted-{point}"));
        let options = restore_options(pg, cut.clone(), RecoveryTarget::Time(at(79)), &archive);
        let cancel = options.cancel.clone();
        let pid_file = cut.join("postmaster.pid");
        tokio::spawn(async move {
            if point == "server" {
                while !pid_file.exists() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            cancel.cancel();
        });
        match restore(&repo, &options).await {
            Err(kars_backup_core::Error::Interrupted { .. }) => {}
            other => panic!("not interrupted at {point}: {other:?}"),
        }
        assert!(!cut.exists(), "a cancelled restore leaves nothing");
        let cut = cut.display().to_string();
        let running = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .any(|c| String::from_utf8_lossy(&c).contains(&cut));
        assert!(!running, "a postmaster of {cut} is still running");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_base_backups_round_trip() {
    let Some(pg) = cluster() else { return };
    pg.create_database("sealed");
    pg.psql(
        "sealed",
        "CREATE TABLE pitr_log (n int PRIMARY KEY); INSERT INTO pitr_log SELECT generate_series(1, 12)",
    );
    let work = tempdir(pg);
    let backups = work.path().join("backups");
    let passphrase = || SecretString::from("correct horse battery staple".to_string());
    let encryptor: DynEncryptor = Arc::new(AgeEncryptor::with_passphrase(passphrase()));
    let report = base_backup(pg, "sealed", &repo(&backups), Some(encryptor)).await;
    let name = report.manifest.name.clone();
    assert!(name.ends_with(".tar.zst.age"), "{name}");
    let stored = std::fs::read(backups.join(&name)).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1"));

    // Without the key: refused before anything is written.
    let pgdata = work.path().join("restored");
    let mut options = restore_options(
        pg,
        pgdata.clone(),
        RecoveryTarget::Latest,
        &pg.archive_dir().unwrap(),
    );
    options.plan = expect_rows(12);
    options.database = Some("sealed".into());
    let e = restore(&repo(&backups), &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("encrypted"), "{e}");
    assert!(!pgdata.exists());

    let keys = DecryptionKeys::new().with_passphrase(passphrase());
    let r = restore(&repo(&backups).with_decryptor(Arc::new(keys)), &options)
        .await
        .unwrap();
    assert_eq!(r.backup, name);
    assert!(r.verification.passed());
    assert!(pgdata.join("PG_VERSION").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_after_a_promotion_follows_the_new_timeline() {
    // A cluster of its own: the new timeline goes into its archive only.
    if cluster().is_none() {
        return;
    }
    let pg = TestCluster::start_archiving().unwrap();
    let pg = &pg;
    let archive = pg.archive_dir().unwrap();
    // The archiving settings go into postgresql.auto.conf, so the restored cluster has them.
    let command = pg.psql("postgres", "SHOW archive_command");
    pg.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            command.replace('\'', "''")
        ),
    );
    pg.psql("postgres", "ALTER SYSTEM SET archive_mode = on");
    pg.psql("postgres", "ALTER SYSTEM SET track_commit_timestamp = on");
    pg.create_database("pitr");
    pg.psql("pitr", "CREATE TABLE pitr_log (n int PRIMARY KEY)");
    let client = connect(&pg.url("pitr")).await;
    write_rows(&client, 1, 5).await;
    let work = tempdir(pg);
    let repo = repo(&work.path().join("backups"));
    base_backup(pg, "pitr", &repo, None).await;
    write_rows(&client, 6, 20).await;
    switch_and_archive(&client, &archive).await;
    let t10: i64 = client
        .query_one(
            "SELECT (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::int8 FROM pitr_log WHERE n = 10",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let t10 = DateTime::from_timestamp_micros(t10).unwrap();

    // Back to row 10, keeping archiving on: the promotion writes timeline 2 into the archive.
    let first = work.path().join("first");
    let mut options = restore_options(pg, first.clone(), RecoveryTarget::Time(t10), &archive);
    options.keep_archiving = true;
    options.plan = expect_rows(10);
    let r = restore(&repo, &options).await.unwrap();
    assert_eq!(r.timeline, Some(2));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !archive.join("00000002.history").exists() {
        assert!(
            Instant::now() < deadline,
            "00000002.history was not archived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Life goes on on timeline 2.
    let started = Started::start(pg, &first);
    started.psql("INSERT INTO pitr_log SELECT generate_series(101, 103)");
    std::thread::sleep(Duration::from_millis(20));
    started.psql("INSERT INTO pitr_log VALUES (104)");
    let t103: i64 = started
        .psql("SELECT (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::int8 FROM pitr_log WHERE n = 103")
        .parse()
        .unwrap();
    let seg = started.psql("SELECT pg_walfile_name(pg_switch_wal())");
    assert!(seg.starts_with("00000002"), "{seg}");
    while !archive.join(&seg).exists() {
        assert!(Instant::now() < deadline, "{seg} was not archived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.stop();

    // From the same base backup (timeline 1), to an instant on timeline 2: rows 1..10 and
    // 101..103, none of timeline 1's 11..20, not 104.
    let second = work.path().join("second");
    let mut options = restore_options(
        pg,
        second.clone(),
        RecoveryTarget::Time(DateTime::from_timestamp_micros(t103).unwrap()),
        &archive,
    );
    options.plan = VerifyPlan {
        queries: vec![TestQuery {
            sql: "SELECT string_agg(n::text, ',' ORDER BY n) FROM pitr_log".into(),
            expect: Expectation::Value("1,2,3,4,5,6,7,8,9,10,101,102,103".into()),
            label: Some("timeline 2's rows".into()),
        }],
        ..VerifyPlan::default()
    };
    let r = restore(&repo, &options).await.unwrap();
    assert_eq!(r.timeline, Some(3), "promoted after timeline 2");
    assert!(r.verification.passed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_in_a_base_backup_is_refused_while_extracting_naming_it() {
    let Some(pg) = cluster() else { return };
    pg.create_database("tampered");
    pg.psql(
        "tampered",
        "CREATE TABLE pitr_log (n int PRIMARY KEY); INSERT INTO pitr_log SELECT generate_series(1, 7)",
    );
    let work = tempdir(pg);
    let backups = work.path().join("backups");
    let report = base_backup(pg, "tampered", &repo(&backups), None).await;
    let name = report.manifest.name.clone();
    let archive = pg.archive_dir().unwrap();

    // The untouched backup restores, its files checked against backup_manifest on the way.
    let pgdata = work.path().join("restored");
    let mut options = restore_options(pg, pgdata.clone(), RecoveryTarget::Latest, &archive);
    options.plan = expect_rows(7);
    options.database = Some("tampered".into());
    let r = restore(&repo(&backups), &options).await.unwrap();
    assert!(
        r.steps
            .iter()
            .any(|s| s.contains("match the backup's backup_manifest (size and CRC-32C")),
        "{:?}",
        r.steps
    );

    // One byte of one data file changed inside the tar, the stored checksum made to fit (as a
    // tar damaged before it was compressed would be): only backup_manifest can tell.
    let stored_path = backups.join(&name);
    let mut tar = zstd::decode_all(std::fs::read(&stored_path).unwrap().as_slice()).unwrap();
    let (member, at) = {
        let mut a = tar::Archive::new(tar.as_slice());
        let e = a
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| {
                e.header().entry_type().is_file()
                    && e.size() > 8192
                    && e.path().unwrap().starts_with("base/")
            })
            .expect("a data file");
        (
            e.path().unwrap().display().to_string(),
            e.raw_file_position() as usize + 4000,
        )
    };
    tar[at] ^= 0x55;
    let stored = zstd::encode_all(tar.as_slice(), 3).unwrap();
    std::fs::write(&stored_path, &stored).unwrap();
    let meta_path = backups.join(format!("{name}.meta"));
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["archive"]["sha256"] = hex::encode(sha2::Sha256::digest(&stored)).into();
    meta["archive"]["blake3"] = blake3::hash(&stored).to_hex().to_string().into();
    meta["archive"]["size_bytes"] = stored.len().into();
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();

    let pgdata = work.path().join("refused");
    options.pgdata = pgdata.clone();
    let e = restore(&repo(&backups), &options).await.unwrap_err();
    assert!(
        matches!(e, kars_backup_core::Error::InvalidArchive { .. }),
        "{e:?}"
    );
    let e = e.to_string();
    assert!(
        e.contains(&format!("{member} does not match its backup_manifest")),
        "{e}"
    );
    assert!(!pgdata.exists(), "nothing of a damaged backup is left");
}
