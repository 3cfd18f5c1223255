//! Prune on real destinations — local disk and the S3 emulator (moto, started by
//! `scripts/services.sh`) — with foreign files and runbook archives present.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use kars_backup_core::compress::Compression;
use kars_backup_core::manifest::{ArchiveInfo, MANIFEST_FORMAT_VERSION, Manifest, PayloadInfo};
use kars_backup_core::{
    BackupJob, BackupName, BackupOptions, DynBackupSink, KeepRules, PruneOptions, Repository,
    SinkExt, prune,
};
use kars_backup_sqlite::SqliteSource;
use kars_backup_storage::LocalSink;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 31, 3, 0, 0).unwrap()
}

/// Stores a committed backup taken at `t` (a tiny archive and its manifest).
async fn committed(sink: &DynBackupSink, t: DateTime<Utc>) -> String {
    let name = BackupName::new("asset-data", t, "tar.gz").unwrap();
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        name: name.to_string(),
        run_id: "prune-test".into(),
        created_at: t,
        completed_at: t,
        tool_version: "test".into(),
        engine: "sqlite".into(),
        source: "/data/assets.db".into(),
        host: "test".into(),
        version_label: None,
        databases: vec![],
        payload: PayloadInfo {
            format: "tar".into(),
            size_bytes: 4,
        },
        archive: ArchiveInfo {
            compression: Compression::None,
            sha256: "00".repeat(32),
            blake3: None,
            size_bytes: 4,
            encryption: None,
        },
        tiers: vec!["daily".into()],
        physical: None,
    };
    sink.put_bytes(&name.to_string(), Bytes::from_static(b"data"))
        .await
        .unwrap();
    sink.put_bytes(&name.manifest_name(), Bytes::from(manifest.to_json()))
        .await
        .unwrap();
    name.to_string()
}

/// 120 daily backups, foreign files and a runbook archive; the runbook policy is applied; a
/// sibling prefix (`sibling`) must not be touched by a prune of `sink`.
async fn prune_keeps_the_plan_and_the_foreign_files(sink: DynBackupSink, sibling: DynBackupSink) {
    let repo = Repository::new(sink.clone());
    for d in 0..120 {
        committed(&sink, now() - Duration::days(d) - Duration::hours(1)).await;
    }
    let foreign = [
        "notes/operator.txt",
        "README.md",
        "asset-data-latest.tar.gz",
    ];
    for f in foreign {
        sink.put_bytes(f, Bytes::from_static(b"keep me"))
            .await
            .unwrap();
    }
    sink.put_bytes(
        "asset-data-20200101-020000.tar.gz",
        Bytes::from_static(b"runbook"),
    )
    .await
    .unwrap();
    let sibling_backup = committed(&sibling, now() - Duration::days(500)).await;

    let options = PruneOptions {
        now: now(),
        ..PruneOptions::default()
    };
    let report = prune(&repo, &KeepRules::runbook(), &options).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // 7 days; weeks and months that add older backups: the exact set is the policy's.
    let mut kept: Vec<String> = report.keep.iter().map(|k| k.item.name.clone()).collect();
    kept.sort();
    assert_eq!(report.deleted.len() + kept.len(), 120);
    assert!(kept.len() >= 7 + 3, "{kept:?}");
    let mut listed: Vec<String> = repo
        .list()
        .await
        .unwrap()
        .committed()
        .map(|e| e.name.to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, kept);
    for f in foreign {
        assert_eq!(sink.get_bytes(f).await.unwrap().as_ref(), b"keep me", "{f}");
        assert!(
            report.left_alone.iter().any(|l| l.name == f),
            "{f} reported"
        );
    }
    assert!(sink.head("asset-data-20200101-020000.tar.gz").await.is_ok());
    assert!(
        sibling.head(&sibling_backup).await.is_ok(),
        "the sibling prefix is untouched"
    );
    let again = prune(&repo, &KeepRules::runbook(), &options).await.unwrap();
    assert!(again.deleted.is_empty(), "planning again deletes nothing");

    // A real backup, then keep only it.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let report = BackupJob::new(
        Arc::new(SqliteSource::new(&db)),
        vec![repo.clone()],
        BackupOptions {
            // Plaintext on purpose (also to the S3 emulator): this test is about pruning.
            plaintext: kars_backup_core::PlaintextPolicy::Anywhere,
            ..BackupOptions::default()
        },
    )
    .run()
    .await
    .unwrap();
    let last_one: KeepRules = "last=1".parse().unwrap();
    prune(&repo, &last_one, &PruneOptions::default())
        .await
        .unwrap();
    let listing = repo.list().await.unwrap();
    let left: Vec<String> = listing.committed().map(|e| e.name.to_string()).collect();
    assert_eq!(left, vec![report.manifest.name.clone()]);
    assert_eq!(listing.foreign.len(), foreign.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let sink: DynBackupSink = Arc::new(LocalSink::new(dir.path().join("kars")).unwrap());
    let sibling: DynBackupSink = Arc::new(LocalSink::new(dir.path().join("kars-old")).unwrap());
    prune_keeps_the_plan_and_the_foreign_files(sink, sibling).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_on_the_s3_emulator() {
    let run = kars_backup_core::new_run_id();
    let (Some(kars), Some(old)) = (
        kars_backup_tests::emulator_s3(&format!("prune-{run}/kars")),
        kars_backup_tests::emulator_s3(&format!("prune-{run}/kars-old")),
    ) else {
        return;
    };
    prune_keeps_the_plan_and_the_foreign_files(kars, old).await;
}
