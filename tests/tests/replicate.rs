//! Continuous replication against real writer processes: restores to the latest state and to
//! instants checked against the writer's commit log, WAL resets by a writer that checkpoints
//! with TRUNCATE, kill -9 of the replicator, damaged and missing segments, encryption, one
//! replicator per destination, a bounded WAL, switching a rollback-journal database to WAL
//! while another process writes, and an encrypted chain continued after SIGTERM and SIGKILL
//! through the resume record (a new generation whenever the record does not match).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kars_backup_core::sink::DynBackupSink;
use kars_backup_core::{CancellationToken, DynDecryptor};
use kars_backup_sqlite::replicate::{
    ReplicateOptions, ReplicationStatus, Replicator, RestorePoint, catalog, keys::ChainKeys,
    rebuild,
};
use kars_backup_storage::LocalSink;

const DB_NAME: &str = "app.db";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn kill9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn term(mut self) -> std::process::ExitStatus {
        let pid = self.0.id() as i32;
        send_signal(pid, libc::SIGTERM);
        self.0.wait().expect("wait")
    }
}

/// Sends `signal` with kill(1) (this crate forbids unsafe code).
fn send_signal(pid: i32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn start_writer(db: &Path, log: &Path, extra: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kars-test-writer"))
        .arg(db)
        .arg("wal")
        .arg("--log")
        .arg(log)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read from the writer");
    assert_eq!(line.trim(), "ready", "writer did not start");
    Proc(child)
}

fn start_replicator(db: &Path, dir: &Path) -> Proc {
    start_replicator_with(db, dir, &[])
}

fn start_replicator_with(db: &Path, dir: &Path, extra: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kars-test-replicator"))
        .arg(db)
        .arg(dir)
        .args(["--sync-ms", "100"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the replicator process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read from the replicator");
    assert_eq!(line.trim(), "started");
    Proc(child)
}

/// One line of the writer's commit log.
#[derive(Debug, Clone, Copy)]
struct Logged {
    id: i64,
    begin_us: i64,
    end_us: i64,
}

fn read_log(log: &Path) -> Vec<Logged> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            Some(Logged {
                id: p.next()?.parse().ok()?,
                begin_us: p.next()?.parse().ok()?,
                end_us: p.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Checks a restored file: integrity, ids 1..=max in both tables; returns max.
fn check_prefix(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", db.display());
    let (count, max): (i64, i64) = conn
        .query_row(
            "SELECT count(*), coalesce(max(id), 0) FROM counter",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        count, max,
        "a gap in the counter: not a prefix of the commits"
    );
    let payload: i64 = conn
        .query_row("SELECT count(*) FROM payload", [], |r| r.get(0))
        .unwrap();
    assert_eq!(payload, count, "a torn transaction");
    max
}

fn sink(dir: &Path) -> DynBackupSink {
    Arc::new(LocalSink::new(dir).unwrap())
}

async fn restore_to(
    dir: &Path,
    point: RestorePoint,
    decryptor: Option<DynDecryptor>,
) -> kars_backup_sqlite::Result<(PathBuf, tempfile::TempDir)> {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("restored.db");
    rebuild(&sink(dir), DB_NAME, point, decryptor, &out).await?;
    Ok((out, out_dir))
}

fn options() -> ReplicateOptions {
    let mut o = ReplicateOptions::default();
    o.sync_interval = Duration::from_millis(200);
    o
}

/// Runs a replicator in this process until `stop` is cancelled.
fn spawn_replicator(
    db: &Path,
    dir: &Path,
    options: ReplicateOptions,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<kars_backup_sqlite::Result<ReplicationStatus>>,
) {
    let r = Replicator::new(db, options, vec![sink(dir)]);
    let stop = CancellationToken::new();
    let handle = tokio::spawn(r.run(stop.clone()));
    (stop, handle)
}

fn time_us(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_and_instants_match_the_commit_log() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let dest = tmp.path().join("replica");
    let writer = start_writer(&db, &log, &["--rate", "300"]);
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    tokio::time::sleep(Duration::from_secs(4)).await;
    writer.kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    let status = handle.await.unwrap().unwrap();
    assert_eq!(status.generations_started, 1, "{status:?}");
    let commits = read_log(&log);
    let last = commits.last().unwrap().id;

    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    let max = check_prefix(&out);
    assert!(
        max >= last,
        "latest restore has {max}, the writer committed {last}"
    );

    // Instants spread over the run, from the first snapshot on (the replicator may start
    // late on a loaded machine).
    let window = catalog::window(&sink(&dest), DB_NAME).await.unwrap();
    let first_us = commits[60]
        .end_us
        .max(window.from.unwrap().timestamp_micros());
    let last_us = commits.last().unwrap().end_us;
    let instants: Vec<i64> = (0..25)
        .map(|i| first_us + (last_us - first_us) * i / 24 + (i * 7919) % 1000)
        .collect();
    assert_instants(&dest, None, &commits, &instants).await;
}

/// Checks a restore at each instant against the commit log: never a commit whose COMMIT was
/// issued after the instant; every commit that returned 50 ms before it is there (the bench
/// measures this precision; on a loaded test machine the capture thread may be scheduled late,
/// so 2 instants may miss by up to half a second).
async fn assert_instants(
    dest: &Path,
    keys: Option<DynDecryptor>,
    commits: &[Logged],
    instants: &[i64],
) {
    // The last commit that had returned by `us`.
    let returned_by = |us: i64| {
        commits
            .iter()
            .filter(|c| c.end_us <= us)
            .map(|c| c.id)
            .max()
            .unwrap_or(0)
    };
    let mut late = 0;
    for &t in instants {
        let (out, _keep) = restore_to(dest, RestorePoint::Time(time_us(t)), keys.clone())
            .await
            .unwrap();
        let max = check_prefix(&out);
        let must = returned_by(t - 50_000);
        let must_not = commits
            .iter()
            .filter(|c| c.begin_us > t)
            .map(|c| c.id)
            .min()
            .unwrap_or(i64::MAX);
        if max < must {
            late += 1;
            let within = returned_by(t - 500_000);
            assert!(
                max >= within,
                "at {t}: restored up to {max}, but {within} had committed 500 ms before"
            );
        }
        assert!(
            max < must_not,
            "at {t}: restored {max}, but {must_not} was committed after the instant"
        );
    }
    assert!(
        late <= 2,
        "{late} of {} instants missed commits made 50 ms before them",
        instants.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_truncating_the_wal_forces_new_generations_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let dest = tmp.path().join("replica");
    let writer = start_writer(&db, &log, &["--rate", "300", "--truncate-every", "40"]);
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    // While no replicator holds the WAL the writer truncates it: the next one cannot continue.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    writer.kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    let status = handle.await.unwrap().unwrap();
    assert!(status.generations_started >= 1, "{status:?}");
    let generations = catalog::generations(&sink(&dest), &ChainKeys::new(DB_NAME))
        .await
        .unwrap();
    assert!(generations.len() >= 2, "{generations:?}");
    let commits = read_log(&log);
    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    let max = check_prefix(&out);
    assert!(max >= commits.last().unwrap().id);
}

/// A small pseudo-random sequence (no dependency), seeded from the clock and printed.
struct Lcg(u64);

impl Lcg {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("seed {seed}");
        Lcg(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_replicator_at_random_points_never_loses_a_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let dest = tmp.path().join("replica");
    let writer = start_writer(&db, &log, &["--rate", "300"]);
    let mut rng = Lcg::new();
    let started = Instant::now();
    let mut trials = 0;
    let mut last_max = 0;
    while trials < 20 && started.elapsed() < Duration::from_secs(40) {
        let replicator = start_replicator(&db, &dest);
        tokio::time::sleep(Duration::from_millis(80 + rng.below(700))).await;
        replicator.kill9();
        trials += 1;
        // Whatever was stored is a committed prefix, never torn, and never shrinks.
        if let Ok((out, _keep)) = restore_to(&dest, RestorePoint::Latest, None).await {
            let max = check_prefix(&out);
            assert!(max >= last_max, "trial {trials}: {max} < {last_max}");
            last_max = max;
        }
    }
    assert!(trials >= 10, "only {trials} trials");
    // A last replicator stops cleanly after the writer is gone: everything committed is there.
    let replicator = start_replicator(&db, &dest);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    writer.kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(replicator.term().success());
    let commits = read_log(&log);
    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    let max = check_prefix(&out);
    assert!(max >= commits.last().unwrap().id, "{max}");
    // Every generation restores at its own end too (a chain without gaps).
    let generations = catalog::generations(&sink(&dest), &ChainKeys::new(DB_NAME))
        .await
        .unwrap();
    for g in &generations {
        let end = g.end().unwrap();
        let (out, _keep) = restore_to(&dest, RestorePoint::Time(end), None)
            .await
            .unwrap();
        check_prefix(&out);
    }
}

/// Replicates a writer for a while into `dest`; returns the commit log.
async fn replicate_for(
    tmp: &Path,
    dest: &Path,
    options: ReplicateOptions,
    run: Duration,
) -> (Vec<Logged>, ReplicationStatus) {
    let db = tmp.join(DB_NAME);
    let log = tmp.join("commits.log");
    let writer = start_writer(&db, &log, &["--rate", "300"]);
    let (stop, handle) = spawn_replicator(&db, dest, options);
    tokio::time::sleep(run).await;
    writer.kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    let status = handle.await.unwrap().unwrap();
    (read_log(&log), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_missing_segment_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("replica");
    replicate_for(tmp.path(), &dest, options(), Duration::from_secs(2)).await;
    let generations = catalog::generations(&sink(&dest), &ChainKeys::new(DB_NAME))
        .await
        .unwrap();
    let segments = &generations.last().unwrap().segments;
    assert!(segments.len() >= 4, "{segments:?}");
    let victim = &segments[segments.len() / 2];
    let path = dest.join(&victim.key);
    let good = std::fs::read(&path).unwrap();

    // Damaged: one flipped bit.
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let err = restore_to(&dest, RestorePoint::Latest, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&victim.key), "{err}");
    // Before it, the chain still restores.
    let before = segments[segments.len() / 2 - 1].time;
    let (out, _keep) = restore_to(&dest, RestorePoint::Time(before), None)
        .await
        .unwrap();
    check_prefix(&out);

    // Missing: the next segment is named, with the transactions that are gone.
    std::fs::remove_file(&path).unwrap();
    let err = restore_to(&dest, RestorePoint::Latest, None)
        .await
        .unwrap_err()
        .to_string();
    let next = &segments[segments.len() / 2 + 1];
    assert!(err.contains(&next.key) && err.contains("missing"), "{err}");
    std::fs::write(&path, &good).unwrap();
    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    check_prefix(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_replica_needs_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("replica");
    let identity = tmp.path().join("key.txt");
    let recipient = kars_backup_encrypt::generate_identity_file(&identity).unwrap();
    let mut o = options();
    o.encryptor = kars_backup_encrypt::encryptor(std::slice::from_ref(&recipient), None).unwrap();
    let (commits, _) = replicate_for(tmp.path(), &dest, o, Duration::from_secs(2)).await;
    let generations = catalog::generations(&sink(&dest), &ChainKeys::new(DB_NAME))
        .await
        .unwrap();
    let g = generations.last().unwrap();
    for key in g
        .snapshots
        .iter()
        .map(|s| &s.key)
        .chain(g.segments.iter().map(|s| &s.key))
    {
        let bytes = std::fs::read(dest.join(key)).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1"),
            "{key} is not encrypted"
        );
    }
    let err = restore_to(&dest, RestorePoint::Latest, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("decryption keys"), "{err}");
    let keys: DynDecryptor = Arc::new(
        kars_backup_encrypt::DecryptionKeys::new()
            .with_identity_file(&identity)
            .unwrap(),
    );
    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, Some(keys.clone()))
        .await
        .unwrap();
    assert!(check_prefix(&out) >= commits.last().unwrap().id);

    // Compaction reads them with the keys and encrypts what it writes; without recipients it
    // refuses rather than store them in the clear.
    use kars_backup_sqlite::replicate::{CompactOptions, compact};
    let window = catalog::window(&sink(&dest), DB_NAME).await.unwrap();
    let points = instants(&commits, window.from.unwrap(), 8);
    let expected = states_with(&dest, &points, Some(keys.clone())).await;
    assert!(expected.iter().all(Result::is_ok), "{expected:?}");
    let all = chain_keys(&dest).await;
    let mut c = CompactOptions::default();
    c.span = Duration::from_secs(1);
    c.min_age = Duration::ZERO;
    c.decryptor = Some(keys.clone());
    let later = Utc::now() + chrono::Duration::hours(1);
    let err = compact(&sink(&dest), DB_NAME, &c, later)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("in the clear"), "{err}");
    assert_eq!(chain_keys(&dest).await, all);
    c.encryptor = kars_backup_encrypt::encryptor(std::slice::from_ref(&recipient), None).unwrap();
    let report = compact(&sink(&dest), DB_NAME, &c, later).await.unwrap();
    assert!(!report.written.is_empty(), "{report:?}");
    for w in &report.written {
        let bytes = std::fs::read(dest.join(&w.key)).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1"),
            "{} is not encrypted",
            w.key
        );
    }
    assert_eq!(states_with(&dest, &points, Some(keys)).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replicator_on_the_same_destination_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let dest = tmp.path().join("replica");
    let _writer = start_writer(&db, &log, &["--rate", "100"]);
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = start_replicator_output(&db, &dest);
    assert_eq!(second.status.code(), Some(3), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another replicator"), "{stderr}");
    stop.cancel();
    handle.await.unwrap().unwrap();
    // Stopped cleanly, it let go: the next one starts.
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
}

fn start_replicator_output(db: &Path, dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kars-test-replicator"))
        .arg(db)
        .arg(dir)
        .output()
        .expect("run the replicator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_a_steady_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let dest = tmp.path().join("replica");
    let writer = start_writer(&db, &log, &["--rate", "400"]);
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    let wal = tmp.path().join(format!("{DB_NAME}-wal"));
    let mut max = 0;
    let started = Instant::now();
    // The WAL file keeps its largest size (a restart overwrites it from the start): measure
    // the steady state, after the replicator's start-up snapshot, by its growth.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    while started.elapsed() < Duration::from_secs(10) {
        max = max.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let status = handle.await.unwrap().unwrap();
    let commits = read_log(&log);
    assert!(commits.len() > 1000, "{}", commits.len());
    eprintln!(
        "{} commits, largest -wal {max} bytes, {status:?}",
        commits.len()
    );
    // Without checkpoints the WAL would grow by every frame written (about 3 per commit).
    let unbounded = commits.len() as u64 * 3 * 4120;
    assert!(
        max.saturating_sub(base) < unbounded / 4,
        "the WAL grew from {base} to {max} bytes ({unbounded} unbounded)"
    );
    assert_eq!(status.generations_started, 1, "{status:?}");
    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    assert!(check_prefix(&out) >= commits.last().unwrap().id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_journal_database_is_refused_or_switched_while_another_process_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let dest = tmp.path().join("replica");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kars-test-writer"))
        .arg(&db)
        .arg("delete")
        .arg("--log")
        .arg(&log)
        // A writer that leaves gaps between transactions (a saturating rollback-journal writer
        // never lets anyone take the exclusive lock the switch needs).
        .args(["--rate", "50"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let writer = Proc(child);
    let err = Replicator::new(&db, options(), vec![sink(&dest)])
        .run(CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--enable-wal") && err.contains("delete"),
        "{err}"
    );

    let mut o = options();
    o.enable_wal = true;
    let replicator = Replicator::new(&db, o, vec![sink(&dest)]);
    let status = replicator.status();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(replicator.run(stop.clone()));
    // The switch waits for the writer's locks; then the first snapshot is taken.
    let started = Instant::now();
    while status.lock().unwrap().generation.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the replicator did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = read_log(&log).len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        read_log(&log).len() > before,
        "the writer stopped writing after the switch"
    );
    let mut w = writer;
    assert!(w.0.try_wait().unwrap().is_none(), "the writer died");
    let mode: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    w.kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    let commits = read_log(&log);
    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    assert!(check_prefix(&out) >= commits.last().unwrap().id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_to_s3_and_a_local_directory_at_once() {
    let prefix = format!("replica-{}", kars_backup_core::new_run_id());
    let Some(s3) = kars_backup_tests::emulator_s3(&prefix) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let dest = tmp.path().join("replica");
    let writer = start_writer(&db, &log, &["--rate", "200"]);
    let r = Replicator::new(&db, options(), vec![sink(&dest), s3.clone()]);
    let stop = CancellationToken::new();
    let handle = tokio::spawn(r.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    writer.kill9();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.cancel();
    let status = handle.await.unwrap().unwrap();
    let last = read_log(&log).last().unwrap().id;
    assert_eq!(status.destinations.len(), 2);
    for d in &status.destinations {
        assert_eq!(d.queued_bytes, 0, "{d:?}");
        assert!(d.last_error.is_none(), "{d:?}");
    }
    for from in [sink(&dest), s3] {
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("restored.db");
        rebuild(&from, DB_NAME, RestorePoint::Latest, None, &out)
            .await
            .unwrap();
        assert!(check_prefix(&out) >= last, "{}", from.describe());
    }
}

/// Copies a directory tree (a replica) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The keys of a replica's chain of `DB_NAME`, sorted.
async fn chain_keys(dir: &Path) -> Vec<String> {
    let mut keys: Vec<String> = sink(dir)
        .list(Some(ChainKeys::new(DB_NAME).prefix()))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    keys.sort();
    keys
}

/// What a restore reaches at each point: transaction, checksum and the counter's last id (or
/// the error).
async fn states(dir: &Path, points: &[RestorePoint]) -> Vec<Result<(u64, String, i64), String>> {
    states_with(dir, points, None).await
}

/// [`states`] of an encrypted replica.
async fn states_with(
    dir: &Path,
    points: &[RestorePoint],
    decryptor: Option<DynDecryptor>,
) -> Vec<Result<(u64, String, i64), String>> {
    let mut out = Vec::new();
    for point in points {
        let out_dir = tempfile::tempdir().unwrap();
        let path = out_dir.path().join("restored.db");
        out.push(
            match rebuild(&sink(dir), DB_NAME, *point, decryptor.clone(), &path).await {
                Ok(r) => Ok((r.txid, r.checksum, check_prefix(&path))),
                Err(e) => Err(e.to_string()),
            },
        );
    }
    out
}

/// Instants spread over the commit log from `from` (and the latest state).
fn instants(commits: &[Logged], from: DateTime<Utc>, n: i64) -> Vec<RestorePoint> {
    let first = from.timestamp_micros();
    let last = commits.last().unwrap().end_us;
    let mut points: Vec<RestorePoint> = (0..n)
        .map(|i| {
            RestorePoint::Time(time_us(
                first + (last - first) * i / (n - 1) + (i * 7919) % 3000,
            ))
        })
        .collect();
    points.push(RestorePoint::Latest);
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_commit_time_and_survives_a_crash_between_its_steps() {
    use kars_backup_sqlite::replicate::{CompactOptions, compact};
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("replica");
    let (commits, _) = replicate_for(tmp.path(), &dest, options(), Duration::from_secs(3)).await;
    let before = tmp.path().join("before");
    copy_tree(&dest, &before);
    let window = catalog::window(&sink(&dest), DB_NAME).await.unwrap();
    let points = instants(&commits, window.from.unwrap(), 30);
    let expected = states(&dest, &points).await;
    assert!(expected.iter().all(Result::is_ok), "{expected:?}");

    let mut o = CompactOptions::default();
    o.span = Duration::from_secs(1);
    o.min_age = Duration::ZERO;
    let later = Utc::now() + chrono::Duration::hours(1);
    let report = compact(&sink(&dest), DB_NAME, &o, later).await.unwrap();
    assert!(!report.written.is_empty(), "{report:?}");
    assert!(
        report.segments_after * 2 < report.segments_before,
        "{} segments became {}",
        report.segments_before,
        report.segments_after
    );
    let generations = catalog::generations(&sink(&dest), &ChainKeys::new(DB_NAME))
        .await
        .unwrap();
    let stored: usize = generations.iter().map(|g| g.segments.len()).sum();
    assert_eq!(stored, report.segments_after);
    assert_eq!(states(&dest, &points).await, expected, "after compaction");
    // A second run finds nothing to do.
    let again = compact(&sink(&dest), DB_NAME, &o, later).await.unwrap();
    assert!(
        again.written.is_empty() && again.covered_deleted.is_empty(),
        "{again:?}"
    );

    // A crash after the first step: compacted segments stored, the sources still there.
    let crashed = tmp.path().join("crashed");
    copy_tree(&before, &crashed);
    for w in &report.written {
        let to = crashed.join(&w.key);
        std::fs::copy(dest.join(&w.key), &to).unwrap();
    }
    assert_eq!(
        states(&crashed, &points).await,
        expected,
        "compacted and sources"
    );
    // …and in the middle of the deletions.
    for w in &report.written {
        for key in w.replaces.iter().step_by(2) {
            std::fs::remove_file(crashed.join(key)).unwrap();
        }
    }
    assert_eq!(
        states(&crashed, &points).await,
        expected,
        "half the sources deleted"
    );
    // The next run deletes what the compacted segments cover and ends where the first did.
    let finish = compact(&sink(&crashed), DB_NAME, &o, later).await.unwrap();
    assert!(!finish.covered_deleted.is_empty(), "{finish:?}");
    assert!(finish.written.is_empty(), "{finish:?}");
    assert_eq!(chain_keys(&crashed).await, chain_keys(&dest).await);
    assert_eq!(states(&crashed, &points).await, expected, "finished");

    // The replicator compacts its destination itself (at start, then every span).
    let live = tmp.path().join("live");
    copy_tree(&before, &live);
    let mut with_compaction = options();
    with_compaction.compaction = Some(o.clone());
    let (stop, handle) = spawn_replicator(&tmp.path().join(DB_NAME), &live, with_compaction);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    let generations = catalog::generations(&sink(&live), &ChainKeys::new(DB_NAME))
        .await
        .unwrap();
    let stored: usize = generations.iter().map(|g| g.segments.len()).sum();
    assert!(
        stored * 2 < report.segments_before,
        "the replicator left {stored} of {} segments",
        report.segments_before
    );
    assert_eq!(
        states(&live, &points[..points.len() - 1]).await,
        expected[..points.len() - 1]
    );

    // A damaged source stops its run before anything is deleted.
    let damaged = tmp.path().join("damaged");
    copy_tree(&before, &damaged);
    let victim = &report.written[0].replaces[1];
    let mut bytes = std::fs::read(damaged.join(victim)).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(damaged.join(victim), bytes).unwrap();
    let err = compact(&sink(&damaged), DB_NAME, &o, later)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(victim.as_str()), "{err}");
    for key in &report.written[0].replaces {
        assert!(damaged.join(key).exists(), "{key} was deleted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_exactly_what_the_window_needs() {
    use kars_backup_sqlite::replicate::{KeepReason, prune};
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("replica");
    let db = tmp.path().join(DB_NAME);
    let log = tmp.path().join("commits.log");
    let mut o = options();
    o.snapshot_interval = Duration::from_millis(700);
    // The writer truncates the WAL whenever no replicator holds it: the second run starts a
    // new generation.
    let writer = start_writer(&db, &log, &["--rate", "300", "--truncate-every", "40"]);
    let (stop, handle) = spawn_replicator(&db, &dest, o.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (stop, handle) = spawn_replicator(&db, &dest, o);
    tokio::time::sleep(Duration::from_secs(2)).await;
    writer.kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    let commits = read_log(&log);
    let keys = ChainKeys::new(DB_NAME);
    let generations = catalog::generations(&sink(&dest), &keys).await.unwrap();
    assert!(generations.len() >= 2, "{generations:?}");
    // The first run's generation (a reset at its start may have begun another one first).
    let at = generations[..generations.len() - 1]
        .iter()
        .position(|g| g.snapshots.len() >= 3)
        .unwrap_or_else(|| panic!("no generation with 3 snapshots: {generations:?}"));
    let old = &generations[at];
    // Another database's chain and the lease are never touched.
    let other = dest.join(".kars-chains/sqlite/other.db/generations/g/snapshots/x.snap");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, b"other").unwrap();
    std::fs::write(dest.join(keys.lease()), b"{}").unwrap();

    // The window starts between the old generation's second and third snapshots.
    let base = &old.snapshots[1];
    let start = base.time + (old.snapshots[2].time - base.time) / 2;
    let now = Utc::now();
    let window = (now - start).to_std().unwrap();
    let mut points: Vec<RestorePoint> = (0..20)
        .map(|i| RestorePoint::Time(start + (now - start) * i / 19))
        .collect();
    points.push(RestorePoint::Latest);
    let expected = states(&dest, &points).await;
    assert!(expected.iter().all(Result::is_ok), "{expected:?}");
    let all = chain_keys(&dest).await;

    let dry = prune(&sink(&dest), DB_NAME, window, now, true)
        .await
        .unwrap();
    assert_eq!(chain_keys(&dest).await, all, "a dry run deleted something");
    let report = prune(&sink(&dest), DB_NAME, window, now, false)
        .await
        .unwrap();
    assert_eq!(dry.plan, report.plan);
    assert_eq!(report.plan.base.as_deref(), Some(base.key.as_str()));
    // Exactly the keys before the base: the older snapshot and the segments it alone needed.
    let mut gone: Vec<String> = old
        .segments
        .iter()
        .filter(|s| s.last <= base.txid)
        .map(|s| s.key.clone())
        .collect();
    gone.push(old.snapshots[0].key.clone());
    for g in &generations[..at] {
        gone.extend(g.snapshots.iter().map(|s| s.key.clone()));
        gone.extend(g.segments.iter().map(|s| s.key.clone()));
    }
    assert!(!gone.is_empty());
    let mut deleted = report.plan.delete.clone();
    deleted.sort();
    gone.sort();
    assert_eq!(deleted, gone);
    let left = chain_keys(&dest).await;
    let mut kept: Vec<String> = report.plan.keep.iter().map(|k| k.key.clone()).collect();
    kept.push(keys.lease());
    kept.sort();
    assert_eq!(left, kept);
    assert!(
        report
            .plan
            .keep
            .iter()
            .any(|k| k.reason == KeepReason::WindowBase)
    );
    assert!(other.exists(), "another database's chain was touched");
    assert_eq!(
        report.deleted_bytes + report.kept_bytes,
        dry.deleted_bytes + dry.kept_bytes
    );

    // Every instant of the window restores as before; the window now starts at the base.
    assert_eq!(states(&dest, &points).await, expected);
    let window_now = catalog::window(&sink(&dest), DB_NAME).await.unwrap();
    assert_eq!(window_now.from, Some(base.time));
    assert_eq!(window_now.generations, generations.len() - at);
    assert_eq!(window_now.size_bytes, report.kept_bytes);
    assert!(window_now.to.unwrap() >= time_us(commits.last().unwrap().begin_us));
    let err = states(&dest, &[RestorePoint::Time(old.snapshots[0].time)]).await;
    assert!(
        err[0].as_ref().is_err_and(|e| e.contains("window starts")),
        "{err:?}"
    );

    // Again with the same window: nothing more to delete.
    let again = prune(&sink(&dest), DB_NAME, window, now, false)
        .await
        .unwrap();
    assert!(again.plan.delete.is_empty(), "{:?}", again.plan.delete);

    // A replicator keeping a window of a second: the older generations go, the latest state
    // stays restorable.
    std::fs::remove_file(dest.join(keys.lease())).unwrap();
    let mut o = options();
    o.pitr_window = Some(Duration::from_secs(1));
    let newest = generations.last().unwrap().id.clone();
    let (stop, handle) = spawn_replicator(&db, &dest, o);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    let left = catalog::generations(&sink(&dest), &keys).await.unwrap();
    assert!(
        left.iter().all(|g| g.id >= newest),
        "{:?}",
        left.iter().map(|g| &g.id).collect::<Vec<_>>()
    );
    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    assert!(check_prefix(&out) >= commits.last().unwrap().id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_what_is_held_in_memory_is_streamed_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join(DB_NAME);
    let dest = tmp.path().join("replica");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL);",
    )
    .unwrap();
    let (stop, handle) = spawn_replicator(&db, &dest, options());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let small = |conn: &rusqlite::Connection, n: i64| {
        for _ in 0..n {
            conn.execute("INSERT INTO t (b) VALUES (randomblob(100))", [])
                .unwrap();
        }
    };
    small(&conn, 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_big = Utc::now();
    // About 12 MiB of pages in one transaction: more than the capture holds in memory.
    conn.execute_batch(
        "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t (b) SELECT randomblob(4000) FROM n; COMMIT;",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    small(&conn, 20);
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    let facts = |path: &Path| -> (i64, i64, String) {
        let c = rusqlite::Connection::open(path).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        let (n, bytes): (i64, i64) = c
            .query_row(
                "SELECT count(*), coalesce(sum(length(b)), 0) FROM t",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (n, bytes, ok)
    };
    let (out, _keep) = restore_to(&dest, RestorePoint::Latest, None).await.unwrap();
    assert_eq!(
        facts(&out),
        (3040, 20 * 100 + 3000 * 4000 + 20 * 100, "ok".into())
    );
    assert_eq!(facts(&out).0, facts(&db).0);
    let (out, _keep) = restore_to(&dest, RestorePoint::Time(before_big), None)
        .await
        .unwrap();
    assert_eq!(facts(&out), (20, 2000, "ok".into()));
    // The big transaction (the 21st) is one commit of one segment, stored whole.
    let generations = catalog::generations(&sink(&dest), &ChainKeys::new(DB_NAME))
        .await
        .unwrap();
    assert!(
        generations[0]
            .segments
            .iter()
            .any(|s| (s.first..=s.last).contains(&21) && s.size > 10 << 20),
        "{:?}",
        generations[0].segments
    );
}

/// The application, in this process: one connection open all along (as a server holds it, so
/// that a replicator's exit does not checkpoint the WAL away) that never checkpoints itself,
/// committing the rows [`check_prefix`] expects and logging each commit.
struct App {
    conn: rusqlite::Connection,
    log: Vec<Logged>,
}

impl App {
    fn open(db: &Path) -> App {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        let _: String = conn
            .query_row("PRAGMA journal_mode=wal", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint=0;
             CREATE TABLE counter (id INTEGER PRIMARY KEY, at TEXT NOT NULL);
             CREATE TABLE payload (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .unwrap();
        App {
            conn,
            log: Vec::new(),
        }
    }

    fn now_us() -> i64 {
        Utc::now().timestamp_micros()
    }

    /// Commits `n` transactions back to back.
    fn commit(&mut self, n: usize) {
        for _ in 0..n {
            let id = self.log.last().map_or(1, |l| l.id + 1);
            let begin_us = Self::now_us();
            let tx = self.conn.transaction().unwrap();
            tx.execute("INSERT INTO counter VALUES (?1, 'x')", [id])
                .unwrap();
            tx.execute(
                "INSERT INTO payload VALUES (?1, ?2)",
                rusqlite::params![id, vec![0x5au8; 1000]],
            )
            .unwrap();
            tx.commit().unwrap();
            self.log.push(Logged {
                id,
                begin_us,
                end_us: Self::now_us(),
            });
        }
    }

    /// Commits about 100 transactions a second for `d`.
    async fn commit_for(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.commit(1);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn last(&self) -> i64 {
        self.log.last().map_or(0, |l| l.id)
    }
}

/// The generations stored at `dest`, oldest first.
async fn generation_ids(dest: &Path) -> Vec<String> {
    catalog::generations(&sink(dest), &ChainKeys::new(DB_NAME))
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect()
}

/// A directory with an age identity (its recipient and keys returned) and the [`App`] on
/// `DB_NAME` there, with 20 commits; the replica goes to `replica` there.
fn encrypted_app() -> (tempfile::TempDir, String, DynDecryptor, App) {
    let tmp = tempfile::tempdir().unwrap();
    let identity = tmp.path().join("key.txt");
    let recipient = kars_backup_encrypt::generate_identity_file(&identity).unwrap();
    let keys: DynDecryptor = Arc::new(
        kars_backup_encrypt::DecryptionKeys::new()
            .with_identity_file(&identity)
            .unwrap(),
    );
    let mut app = App::open(&tmp.path().join(DB_NAME));
    app.commit(20);
    (tmp, recipient, keys, app)
}

/// The encrypting test replicator, which never checkpoints (the WAL keeps its cycle).
fn start_encrypted(db: &Path, dest: &Path, recipient: &str) -> Proc {
    start_replicator_with(
        db,
        dest,
        &["--checkpoint-pages", "1000000", "--encrypt-to", recipient],
    )
}

/// The latest state of an encrypted replica is exactly the app's commits, and every
/// generation restores at its end.
async fn assert_exact(dest: &Path, keys: &DynDecryptor, app: &App) {
    let (out, _keep) = restore_to(dest, RestorePoint::Latest, Some(keys.clone()))
        .await
        .unwrap();
    assert_eq!(check_prefix(&out), app.last());
    for g in catalog::generations(&sink(dest), &ChainKeys::new(DB_NAME))
        .await
        .unwrap()
    {
        let (out, _keep) = restore_to(
            dest,
            RestorePoint::Time(g.end().unwrap()),
            Some(keys.clone()),
        )
        .await
        .unwrap();
        check_prefix(&out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_chain_continues_after_sigterm_and_sigkill() {
    let (tmp, recipient, keys, mut app) = encrypted_app();
    let (db, dest) = (tmp.path().join(DB_NAME), tmp.path().join("replica"));

    let replicator = start_encrypted(&db, &dest, &recipient);
    app.commit_for(Duration::from_millis(1500)).await;
    let first_run = (app.log[25].end_us, app.last());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(replicator.term().success());
    let generations = generation_ids(&dest).await;
    assert_eq!(generations.len(), 1, "{generations:?}");
    // Instants of the first run, restored now and again after the restarts.
    let before: Vec<i64> = (0..6)
        .map(|i| first_run.0 + i * 150_000 + (i * 7919) % 1000)
        .collect();
    let points: Vec<RestorePoint> = before
        .iter()
        .map(|&t| RestorePoint::Time(time_us(t)))
        .collect();
    let expected = states_with(&dest, &points, Some(keys.clone())).await;
    assert!(expected.iter().all(Result::is_ok), "{expected:?}");
    assert_exact(&dest, &keys, &app).await;

    // Stopped: the app goes on; SIGTERM's restart continues the chain with these commits.
    app.commit(30);
    let replicator = start_encrypted(&db, &dest, &recipient);
    app.commit_for(Duration::from_millis(1200)).await;
    let second_run = app.log.last().unwrap().end_us;
    // SIGKILL in the middle of commits, uploads and the resume record's writes, at random
    // points: every restart continues the same generation.
    replicator.kill9();
    let mut rng = Lcg::new();
    for trial in 0..6 {
        app.commit(10);
        let replicator = start_encrypted(&db, &dest, &recipient);
        app.commit_for(Duration::from_millis(100 + rng.below(600)))
            .await;
        replicator.kill9();
        assert_eq!(generation_ids(&dest).await, generations, "trial {trial}");
    }
    app.commit(30);
    let replicator = start_encrypted(&db, &dest, &recipient);
    app.commit_for(Duration::from_millis(1200)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(replicator.term().success());

    assert_eq!(
        generation_ids(&dest).await,
        generations,
        "one generation all along"
    );
    assert_exact(&dest, &keys, &app).await;
    assert_eq!(
        states_with(&dest, &points, Some(keys.clone())).await,
        expected
    );
    let third_run = app.log.last().unwrap().end_us;
    let after: Vec<i64> = (1..=4)
        .flat_map(|i| [second_run - i * 200_000, third_run - i * 200_000])
        .collect();
    assert_instants(&dest, Some(keys.clone()), &app.log, &after).await;
    assert_instants(&dest, Some(keys), &app.log, &before).await;
}

/// The resume record beside the database (one per set of destinations).
fn resume_record(db: &Path) -> PathBuf {
    let dir = db.parent().unwrap();
    let prefix = format!("{DB_NAME}-kars-resume-");
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".json")
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_record_that_does_not_match_starts_a_new_generation() {
    let (tmp, recipient, keys, mut app) = encrypted_app();
    let (db, dest) = (tmp.path().join(DB_NAME), tmp.path().join("replica"));
    // Commits while stopped, then a run of the replicator.
    let run = async |app: &mut App| {
        app.commit(5);
        let replicator = start_encrypted(&db, &dest, &recipient);
        app.commit_for(Duration::from_millis(700)).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(replicator.term().success());
    };
    run(&mut app).await;
    let record = resume_record(&db);
    let old = std::fs::read(&record).unwrap();
    let text = String::from_utf8(old.clone()).unwrap();
    assert!(
        !text.contains("age1") && !text.contains("AGE-SECRET-KEY"),
        "no key material: {text}"
    );
    run(&mut app).await;
    assert_eq!(generation_ids(&dest).await.len(), 1, "resumed");

    // The destination is newer than the record (an older copy of it).
    std::fs::write(&record, &old).unwrap();
    run(&mut app).await;
    assert_eq!(generation_ids(&dest).await.len(), 2);
    assert_exact(&dest, &keys, &app).await;

    // No record.
    std::fs::remove_file(&record).unwrap();
    run(&mut app).await;
    assert_eq!(generation_ids(&dest).await.len(), 3);
    assert_exact(&dest, &keys, &app).await;

    // Another chain's record (another database's file name).
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(doc["chain"], ChainKeys::new(DB_NAME).prefix());
    doc["chain"] = ChainKeys::new("other.db").prefix().into();
    std::fs::write(&record, doc.to_string()).unwrap();
    run(&mut app).await;
    assert_eq!(generation_ids(&dest).await.len(), 4);
    assert_exact(&dest, &keys, &app).await;

    // A record whose keys match but whose end does not (a changed checksum): the database is
    // checked against it before the chain is continued.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let last = doc["sealed"].as_array_mut().unwrap().last_mut().unwrap();
    last["checksum"] = serde_json::json!(last["checksum"].as_u64().unwrap() ^ 1);
    std::fs::write(&record, doc.to_string()).unwrap();
    run(&mut app).await;
    assert_eq!(generation_ids(&dest).await.len(), 5);
    assert_exact(&dest, &keys, &app).await;

    // And a matching one continues again.
    run(&mut app).await;
    assert_eq!(generation_ids(&dest).await.len(), 5);
    assert_exact(&dest, &keys, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_chain_at_two_destinations_continues_only_where_both_end_alike() {
    let (tmp, recipient, keys, mut app) = encrypted_app();
    let db = tmp.path().join(DB_NAME);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut o = options();
    o.checkpoint_pages = 1_000_000;
    o.encryptor = kars_backup_encrypt::encryptor(&[recipient], None).unwrap();
    // Commits while stopped, then a run of the replicator to both.
    let run = async |app: &mut App| -> ReplicationStatus {
        app.commit(5);
        let r = Replicator::new(&db, o.clone(), vec![sink(&a), sink(&b)]);
        let stop = CancellationToken::new();
        let task = tokio::spawn(r.run(stop.clone()));
        app.commit_for(Duration::from_millis(800)).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        stop.cancel();
        task.await.unwrap().unwrap()
    };
    let first = run(&mut app).await;
    assert_eq!(first.generations_started, 1, "{first:?}");
    let second = run(&mut app).await;
    assert_eq!(second.generations_started, 0, "{second:?}");
    let resumed = second.resumed.clone().unwrap();
    assert_eq!(Some(&resumed.generation), first.generation.as_ref());
    assert_eq!(resumed.txid, first.captured_txid);
    for d in &second.destinations {
        assert_eq!(d.shipped_txid, second.captured_txid, "{second:?}");
    }
    for dest in [&a, &b] {
        assert_eq!(generation_ids(dest).await.len(), 1);
        assert_exact(dest, &keys, &app).await;
    }

    // b is behind a (its newest segment never arrived): a new generation at both.
    let generations = catalog::generations(&sink(&b), &ChainKeys::new(DB_NAME))
        .await
        .unwrap();
    let newest = &generations[0].segments.last().unwrap().key;
    std::fs::remove_file(b.join(newest)).unwrap();
    let third = run(&mut app).await;
    assert_eq!(third.generations_started, 1, "{third:?}");
    for dest in [&a, &b] {
        assert_eq!(generation_ids(dest).await.len(), 2);
        assert_exact(dest, &keys, &app).await;
    }
}
