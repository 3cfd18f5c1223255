//! Storage failures during backups and restores, injected with `FaultySink`, against the
//! in-memory sink, local disk and the S3 emulator (moto, started by `scripts/services.sh`).

use std::sync::Arc;

use kars_backup_core::fault::{FaultySink, Op};
use kars_backup_core::testing::InMemorySink;
use kars_backup_core::{
    BackupJob, BackupOptions, DynBackupSink, EntryKind, Repository, RestoreOptions, restore,
};
use kars_backup_sqlite::SqliteSource;
use kars_backup_storage::LocalSink;

/// A database of about `mb` MB of incompressible rows.
fn make_db(path: &std::path::Path, mb: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL);")
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..(mb * 16) {
        let data: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        tx.execute(
            "INSERT INTO blobs (id, data) VALUES (?1, ?2)",
            (i as i64, data),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn sha(path: &std::path::Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// The S3 emulator's endpoint and bucket (see [`kars_backup_core::testing::service_var`]).
fn s3_env() -> Option<(String, String)> {
    use kars_backup_core::testing::service_var;
    Some((
        service_var("KARS_TEST_S3_ENDPOINT")?,
        service_var("KARS_TEST_S3_BUCKET")?,
    ))
}

/// Restores `entry` into the SQLite file `db` (confirmed, default checks).
async fn restore_into(
    repo: &Repository,
    entry: &kars_backup_core::BackupEntry,
    db: &std::path::Path,
) -> kars_backup_core::Result<kars_backup_core::RestoreReport> {
    let options = RestoreOptions {
        confirmed: true,
        ..Default::default()
    };
    let target = SqliteSource::new(db);
    restore(
        repo,
        entry,
        &target,
        &options,
        kars_backup_core::progress::no_progress(),
    )
    .await
}

/// `dir` holds the live `assets.db` (and its journal files), nothing a restore staged.
fn assert_no_staging_left(dir: &std::path::Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "assets.db" && !n.starts_with("assets.db-"))
        .collect();
    assert!(leftovers.is_empty(), "no staging files left: {leftovers:?}");
}

/// A sink on the S3 emulator under `prefix`.
fn moto_s3(endpoint: &str, bucket: &str, prefix: &str) -> kars_backup_storage::ObjectStoreSink {
    kars_backup_storage::s3::S3Builder::new(bucket)
        .with_prefix(prefix)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_credentials("test", "test")
        .build()
        .unwrap()
}

fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// An upload to S3 that fails mid-way (the 12th part of ~20 MB) commits nothing, lists nothing,
/// and leaves no multipart upload behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_upload_failing_mid_way_leaves_nothing() {
    let Some((endpoint, bucket)) = s3_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db, 20);
    let prefix = format!("fault-{}", kars_backup_core::new_run_id());
    let s3 = moto_s3(&endpoint, &bucket, &prefix);
    let faulty = FaultySink::new(Arc::new(s3.clone())).fail(Op::PutPart, 12);
    let repo = Repository::new(Arc::new(faulty.clone()));
    let err = BackupJob::new(
        Arc::new(SqliteSource::new(&db)),
        vec![repo],
        BackupOptions {
            compression: kars_backup_core::Compression::None,
            // Plaintext to S3 on purpose: this test is about a failing upload.
            plaintext: kars_backup_core::PlaintextPolicy::Anywhere,
            ..Default::default()
        },
    )
    .run()
    .await
    .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(faulty.count(Op::PutPart) >= 12);
    let clean = Repository::new(Arc::new(s3.clone()));
    let listing = clean.list().await.unwrap();
    assert!(
        listing.entries.is_empty() && listing.foreign.is_empty(),
        "nothing may remain: {listing:?}"
    );
    // The background abort of the multipart upload has finished by the time `run` returns.
    let uploads = http_get(&format!("{endpoint}/{bucket}?uploads&prefix={prefix}/"));
    assert!(
        !uploads.contains("<UploadId>"),
        "no multipart upload may remain: {uploads}"
    );
}

/// One destination of three fails mid-upload: the others commit, the report names the failure,
/// the failed one lists nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db, 3);
    let memory = Arc::new(InMemorySink::new());
    let broken_inner = Arc::new(InMemorySink::new());
    let broken = FaultySink::new(broken_inner.clone()).fail(Op::PutPart, 2);
    let local: DynBackupSink = Arc::new(LocalSink::new(dir.path().join("local")).unwrap());
    let repos = vec![
        Repository::new(memory.clone()),
        Repository::new(Arc::new(broken)),
        Repository::new(local.clone()),
    ];
    let report = BackupJob::new(
        Arc::new(SqliteSource::new(&db)),
        repos,
        BackupOptions {
            compression: kars_backup_core::Compression::None,
            verify_upload: true,
            ..Default::default()
        },
    )
    .run()
    .await
    .unwrap();
    assert!(!report.all_succeeded());
    assert!(report.destinations[0].error.is_none());
    assert!(
        report.destinations[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("injected")),
        "{:?}",
        report.destinations
    );
    assert!(report.destinations[2].error.is_none());
    for sink in [memory as DynBackupSink, local] {
        let repo = Repository::new(sink);
        let latest = repo.latest().await.unwrap().expect("committed");
        assert_eq!(latest.name.to_string(), report.manifest.name);
        repo.verify_stored(&report.manifest).await.unwrap();
    }
    let failed = Repository::new(broken_inner).list().await.unwrap();
    assert!(failed.entries.is_empty(), "{failed:?}");
}

/// A download that fails mid-restore leaves the live database exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_failing_mid_restore_leaves_the_live_database_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db, 2);
    let store = Arc::new(InMemorySink::new());
    let report = BackupJob::new(
        Arc::new(SqliteSource::new(&db)),
        vec![Repository::new(store.clone())],
        BackupOptions::default(),
    )
    .run()
    .await
    .unwrap();
    // The live database changes after the backup.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DELETE FROM blobs WHERE id % 2 = 0; VACUUM;")
        .unwrap();
    let before = sha(&db);

    // Chunk 1 is the manifest read by `find`; chunk 3 is the archive's second.
    let faulty = FaultySink::new(store).fail(Op::GetChunk, 3);
    let repo = Repository::new(Arc::new(faulty.clone()));
    let entry = repo.find(&report.manifest.name).await.unwrap();
    assert_eq!(entry.kind, EntryKind::Committed);
    let err = restore_into(&repo, &entry, &db).await.unwrap_err();
    assert!(faulty.count(Op::GetChunk) >= 3, "the fault was reached");
    assert!(!err.to_string().is_empty());
    assert_eq!(sha(&db), before, "the live database must be untouched");
    assert_no_staging_left(dir.path());
}

/// A backup of a ~12 MB database committed to S3, read back through `RangedSink` over a
/// `FaultySink` (1 MiB parts, 4 at a time), so faults hit single ranged requests.
async fn s3_backup_for_ranged_restore(
    dir: &std::path::Path,
) -> Option<(
    kars_backup_storage::ObjectStoreSink,
    kars_backup_core::Manifest,
)> {
    let (endpoint, bucket) = s3_env()?;
    let db = dir.join("assets.db");
    make_db(&db, 12);
    let prefix = format!("ranged-{}", kars_backup_core::new_run_id());
    let s3 = moto_s3(&endpoint, &bucket, &prefix);
    let report = BackupJob::new(
        Arc::new(SqliteSource::new(&db)),
        vec![Repository::new(Arc::new(s3.clone()))],
        BackupOptions {
            compression: kars_backup_core::Compression::None,
            // A test bucket on the emulator: unencrypted on purpose (issue 19's opt-out).
            plaintext: kars_backup_core::PlaintextPolicy::Anywhere,
            ..Default::default()
        },
    )
    .run()
    .await
    .unwrap();
    assert!(report.manifest.archive.size_bytes > 8 << 20);
    Some((s3, report.manifest))
}

fn ranged_over(faulty: &FaultySink) -> Repository {
    let transfer = kars_backup_storage::TransferOptions {
        download_part_size: Some(kars_backup_storage::ByteSize(1 << 20)),
        download_concurrency: Some(4),
        ..Default::default()
    };
    Repository::new(Arc::new(kars_backup_storage::RangedSink::new(
        Arc::new(faulty.clone()),
        transfer,
    )))
}

/// Ranged parts of a restore from S3 that fail mid-way are asked for again, and the restore
/// succeeds with the backed-up data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_ranged_restore_retries_parts_that_fail_mid_way() {
    let dir = tempfile::tempdir().unwrap();
    let Some((s3, manifest)) = s3_backup_for_ranged_restore(dir.path()).await else {
        return;
    };
    // Chunk 1 is the manifest read by `find`; the others are ranged parts' bytes.
    let faulty = FaultySink::new(Arc::new(s3))
        .fail(Op::GetChunk, 4)
        .fail(Op::GetChunk, 30)
        .fail(Op::GetChunk, 31);
    let repo = ranged_over(&faulty);
    let entry = repo.find(&manifest.name).await.unwrap();
    let target = dir.path().join("restored.db");
    restore_into(&repo, &entry, &target).await.unwrap();
    let parts = manifest.archive.size_bytes.div_ceil(1 << 20) as usize;
    assert_eq!(
        faulty.count(Op::Get),
        1 + parts + 3,
        "the manifest, each part once, and one more request per failure"
    );
    let count: i64 = rusqlite::Connection::open(&target)
        .unwrap()
        .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 12 * 16);
}

/// A ranged part that keeps failing fails the restore before the live database is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_ranged_restore_failing_for_good_leaves_the_live_database_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let Some((s3, manifest)) = s3_backup_for_ranged_restore(dir.path()).await else {
        return;
    };
    let db = dir.path().join("assets.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DELETE FROM blobs WHERE id % 2 = 0; VACUUM;")
        .unwrap();
    let before = sha(&db);
    // From the archive's 6th ranged request on, every request fails.
    let mut faulty = FaultySink::new(Arc::new(s3));
    for n in 7..200 {
        faulty = faulty.fail(Op::Get, n);
    }
    let repo = ranged_over(&faulty);
    let entry = repo.find(&manifest.name).await.unwrap();
    let err = restore_into(&repo, &entry, &db).await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(faulty.count(Op::Get) >= 7, "the faults were reached");
    assert_eq!(sha(&db), before, "the live database must be untouched");
    assert_no_staging_left(dir.path());
}
