//! The WAL archive's library against real PostgreSQL clusters started here, through
//! `archive_command` and `restore_command` running `kars-test-wal` (the library's `archive_wal`,
//! `push_spool` and `fetch_wal`):
//!
//! - the asynchronous spool: every segment PostgreSQL was told is archived reaches the archive,
//!   while the spool's pushers are SIGKILLed again and again;
//! - a cluster initialised with 64 MiB WAL segments: archived, listed without false gaps, and
//!   restored to an instant exactly.
//!
//! Under `CI=true` a missing PostgreSQL fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use kars_backup_core::verify::{Expectation, TestQuery};
use kars_backup_core::{
    BackupJob, BackupOptions, Compression, DynBackupSink, NoProgress, Repository, VerifyPlan,
};
use kars_backup_postgres::physical::{
    PhysicalRestoreOptions, PhysicalSource, RecoveryTarget, restore_to_instant,
};
use kars_backup_postgres::testing::TestCluster;
use kars_backup_postgres::wal::{
    DEFAULT_SEGMENT_SIZE, FetchOptions, FetchOutcome, PushOptions, fetch_wal, list_chains,
    push_spool, queued, segment_size_key, spool_status,
};
use kars_backup_storage::LocalSink;

/// A directory the server's OS user may use, removed at the end, with a copy of
/// `kars-test-wal` in it (the build directory may be private).
struct Shared {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn chown_to_server(path: &Path) {
    if let Some((uid, gid)) = TestCluster::server_owner() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

impl Shared {
    fn new() -> Shared {
        let dir = tempfile::Builder::new()
            .prefix("kars-wal-spool-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_to_server(dir.path());
        let bin = dir.path().join("kars-test-wal");
        std::fs::copy(env!("CARGO_BIN_EXE_kars-test-wal"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["archive", "spool", "backups", "restored"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            chown_to_server(&dir.path().join(sub));
        }
        Shared { dir, bin }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }
}

/// A cluster with these initdb arguments and settings; `None` (after saying why) when there is
/// no PostgreSQL outside CI.
fn start(initdb: &[&str], settings: &[(&str, &str)]) -> Option<TestCluster> {
    match TestCluster::start_with_initdb(initdb, settings) {
        Ok(c) => Some(c),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("these tests need PostgreSQL and CI=true forbids skipping: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPING: {why}");
            None
        }
    }
}

fn sink(dir: &Path) -> DynBackupSink {
    Arc::new(LocalSink::new(dir).unwrap())
}

/// Writes some WAL and switches to a new segment; the name of the one finished.
fn switch(pg: &TestCluster, rows: u32) -> String {
    pg.psql(
        "postgres",
        &format!(
            "CREATE TABLE IF NOT EXISTS filler (id serial, pad text);
             INSERT INTO filler (pad) SELECT repeat('x', 200) FROM generate_series(1, {rows});"
        ),
    );
    pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
}

/// The pids of the running pushers of `spool`.
fn pushers(spool: &Path) -> Vec<i32> {
    let needle = spool.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_pusher = args.get(1) == Some(&&b"push"[..]) && args.contains(&needle.as_bytes());
            is_pusher.then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_segments_are_never_lost_when_pushers_are_killed() {
    let shared = Shared::new();
    let (archive, spool) = (shared.path("archive"), shared.path("spool"));
    // A bound of two segments: when the pushers fall behind, archive_command uploads itself.
    let command = format!(
        "'{}' archive '{}' %p '{}' {}",
        shared.bin.display(),
        archive.display(),
        spool.display(),
        32 << 20
    );
    let Some(pg) = start(
        &[],
        &[
            ("wal_level", "replica"),
            ("archive_mode", "on"),
            ("archive_command", &command),
        ],
    ) else {
        return;
    };

    // A killer SIGKILLs every pusher it sees while segments are written.
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU32::new(0));
    let killer = {
        let (stop, killed, spool) = (stop.clone(), killed.clone(), spool.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for pid in pushers(&spool) {
                    let ok = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        killed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let mut names = Vec::new();
    for _ in 0..10 {
        names.push(switch(&pg, 3000));
    }
    let last = names.last().unwrap().clone();
    pg.wait_archived(&last);
    stop.store(true, Ordering::Relaxed);
    killer.join().unwrap();
    let killed = killed.load(Ordering::Relaxed);
    assert!(
        killed > 0,
        "no pusher was ever killed: the test proved nothing"
    );

    // Reported archived, so each is in the archive or durably in the queue, never nowhere.
    let chains = list_chains(&sink(&archive), DEFAULT_SEGMENT_SIZE)
        .await
        .unwrap();
    let in_archive: u64 = chains
        .iter()
        .flat_map(|c| c.timelines.iter())
        .map(|t| t.segments)
        .sum();
    let waiting = queued(&spool).unwrap();
    eprintln!(
        "measured: {killed} pushers killed; {in_archive} segments in the archive, {} queued",
        waiting.len()
    );
    for name in &names {
        let stored = chains
            .iter()
            .flat_map(|c| c.timelines.iter())
            .any(|t| t.first.as_deref() <= Some(name) && t.last.as_deref() >= Some(name));
        let queued_here = waiting.iter().any(|q| q.name == *name);
        assert!(
            stored || queued_here,
            "{name} was reported archived but is neither in the archive nor queued"
        );
    }

    // The next pusher drains the queue (a killed upload is done again; nothing is doubled).
    let status = spool_status(&spool).unwrap();
    assert!(!status.pusher_running, "{status:?}");
    let report = push_spool(&[sink(&archive)], &spool, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(report.pushed, waiting.len() as u64);
    assert!(queued(&spool).unwrap().is_empty());
    let chains = list_chains(&sink(&archive), DEFAULT_SEGMENT_SIZE)
        .await
        .unwrap();
    let t1 = &chains[0].timelines[0];
    assert!(t1.gaps.is_empty(), "{:?}", t1.gaps);
    let dest_dir = tempfile::tempdir().unwrap();
    for name in &names {
        let dest = dest_dir.path().join("RECOVERYXLOG");
        let options = FetchOptions {
            system_identifier: Some(chains[0].system_identifier),
            ..FetchOptions::default()
        };
        let got = fetch_wal(&[sink(&archive)], name, &dest, &options)
            .await
            .unwrap();
        assert!(matches!(got, FetchOutcome::Fetched(_)), "{name}: {got:?}");
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_64_mib_segments_restores_to_an_instant() {
    const SEGMENT: u64 = 64 << 20;
    let shared = Shared::new();
    let archive = shared.path("archive");
    let command = format!(
        "'{}' archive '{}' %p",
        shared.bin.display(),
        archive.display()
    );
    let Some(pg) = start(
        &["--wal-segsize=64"],
        &[
            ("wal_level", "replica"),
            ("archive_mode", "on"),
            ("archive_command", &command),
            ("track_commit_timestamp", "on"),
            ("max_wal_senders", "4"),
        ],
    ) else {
        return;
    };
    assert_eq!(
        pg.psql("postgres", "SHOW wal_segment_size"),
        "64MB",
        "initdb --wal-segsize=64"
    );
    pg.create_database("pitr");
    pg.psql("pitr", "CREATE TABLE pitr_log (n int PRIMARY KEY)");
    let client = connect(&pg.url("pitr")).await;
    let insert = |from: i32, to: i32| {
        let client = &client;
        async move {
            for n in from..=to {
                client
                    .execute("INSERT INTO pitr_log VALUES ($1)", &[&n])
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    };
    insert(1, 10).await;

    let repo = Repository::new(
        kars_backup_storage::sink_from_url(&shared.path("backups").display().to_string()).unwrap(),
    );
    let source = PhysicalSource::from_url(&pg.url("pitr"))
        .unwrap()
        .with_pg_bin_dir(pg.bin_dir());
    let options = BackupOptions {
        compression: Compression::Zstd { level: 3 },
        ..BackupOptions::default()
    };
    let report = BackupJob::new(Arc::new(source), vec![repo.clone()], options)
        .run()
        .await
        .unwrap();
    let physical = report.manifest.physical.unwrap();
    assert_eq!(physical.wal_segment_size, SEGMENT);

    // Rows across three more segments.
    insert(11, 20).await;
    switch(&pg, 100);
    insert(21, 30).await;
    switch(&pg, 100);
    insert(31, 40).await;
    let last = switch(&pg, 100);
    pg.wait_archived(&last);

    // The archive records the size; listed with the default as fallback, no false gaps.
    let archived = sink(&archive);
    let sysid: u64 = physical.system_identifier.parse().unwrap();
    let keys: Vec<String> =
        std::fs::read_dir(archive.join(format!(".kars-chains/postgres/{sysid}/wal")))
            .unwrap()
            .flatten()
            .map(|e| {
                format!(
                    ".kars-chains/postgres/{sysid}/wal/{}",
                    e.file_name().to_string_lossy()
                )
            })
            .collect();
    assert!(keys.contains(&segment_size_key(sysid, SEGMENT)), "{keys:?}");
    let chains = list_chains(&archived, DEFAULT_SEGMENT_SIZE).await.unwrap();
    let t1 = &chains[0].timelines[0];
    assert!(t1.gaps.is_empty(), "{:?}", t1.gaps);
    assert_eq!(t1.last.as_deref(), Some(last.as_str()));

    let t25: i64 = client
        .query_one(
            "SELECT (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::int8 FROM pitr_log WHERE n = 25",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let target = chrono::DateTime::from_timestamp_micros(t25).unwrap();
    let restore_command = format!(
        "'{}' fetch '{}' %f %p",
        shared.bin.display(),
        archive.display()
    );
    let pgdata = shared.path("restored").join("data");
    let mut options =
        PhysicalRestoreOptions::new(&pgdata, RecoveryTarget::Time(target), restore_command);
    options.bin_dir = Some(pg.bin_dir().to_path_buf());
    options.run_as = pg.os_user().map(str::to_string);
    options.plan = VerifyPlan {
        queries: vec![TestQuery {
            sql: "SELECT count(*)::text || '/' || max(n)::text FROM pitr_log".into(),
            expect: Expectation::Value("25/25".into()),
            label: Some("pitr_log holds rows 1..25".into()),
        }],
        ..VerifyPlan::default()
    };
    let r = restore_to_instant(&repo, &options, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(r.replayed_to, Some(target));
    assert!(r.verification.passed(), "{:?}", r.verification.checks);
    assert_eq!(r.timeline, Some(2));
    let size = std::fs::metadata(
        pgdata.join("pg_wal").join(
            std::fs::read_dir(pgdata.join("pg_wal"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.len() == 24)
                .unwrap(),
        ),
    )
    .unwrap()
    .len();
    assert_eq!(size, SEGMENT, "the restored cluster keeps 64 MiB segments");
}
