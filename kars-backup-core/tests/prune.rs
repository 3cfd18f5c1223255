//! Prune over a repository: policy applied, safety rules kept.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use kars_backup_core::compress::Compression;
use kars_backup_core::manifest::{ArchiveInfo, MANIFEST_FORMAT_VERSION, Manifest, PayloadInfo};
use kars_backup_core::prune::{LockInfo, PRUNE_LOCK};
use kars_backup_core::testing::InMemorySink;
use kars_backup_core::{
    BackupName, DynBackupSink, EntryKind, KeepRules, PruneOptions, Repository, SinkExt, prune,
};

fn manifest(name: &BackupName) -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        name: name.to_string(),
        run_id: "test".into(),
        created_at: name.time(),
        completed_at: name.time(),
        tool_version: "test".into(),
        engine: "sqlite".into(),
        source: "/data/assets.db".into(),
        host: "test".into(),
        version_label: None,
        databases: vec![],
        payload: PayloadInfo {
            format: "tar".into(),
            size_bytes: 3,
        },
        archive: ArchiveInfo {
            compression: Compression::None,
            sha256: "00".repeat(32),
            blake3: None,
            size_bytes: 3,
            encryption: None,
        },
        tiers: vec![],
        physical: None,
    }
}

async fn committed(sink: &DynBackupSink, t: DateTime<Utc>) -> BackupName {
    let name = BackupName::new("asset-data", t, "tar.gz").unwrap();
    sink.put_bytes(&name.to_string(), Bytes::from_static(b"abc"))
        .await
        .unwrap();
    sink.put_bytes(
        &name.manifest_name(),
        Bytes::from(manifest(&name).to_json()),
    )
    .await
    .unwrap();
    name
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 12, 31, 3, 0, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_policy_over_a_year_keeps_the_table_and_leaves_the_rest_alone() {
    let sink: DynBackupSink = Arc::new(InMemorySink::new());
    let repo = Repository::new(sink.clone());
    for d in 0..366 {
        committed(&sink, now() - Duration::days(d) - Duration::hours(1)).await;
    }
    // Things prune must not touch.
    sink.put_bytes("notes/README.txt", Bytes::from_static(b"x"))
        .await
        .unwrap();
    sink.put_bytes(
        "asset-data-20200101-020000.tar.gz",
        Bytes::from_static(b"runbook"),
    )
    .await
    .unwrap();
    // An orphan of a run that died (its marker is from "long ago" relative to `now` below).
    let orphan = BackupName::new("asset-data", now() - Duration::days(400), "tar.gz").unwrap();
    sink.put_bytes(&orphan.pending_name(), Bytes::from_static(b"{}"))
        .await
        .unwrap();
    sink.put_bytes(&orphan.to_string(), Bytes::from_static(b"half"))
        .await
        .unwrap();

    let options = PruneOptions {
        // The orphan marker was written just now in wall time; a grace of zero makes it old.
        orphan_grace: Duration::zero(),
        now: now(),
        ..PruneOptions::default()
    };
    let dry = prune(
        &repo,
        &KeepRules::runbook(),
        &PruneOptions {
            dry_run: true,
            ..options.clone()
        },
    )
    .await
    .unwrap();
    assert!(dry.deleted.is_empty());
    assert_eq!(
        repo.list().await.unwrap().committed().count(),
        366,
        "a dry run changes nothing"
    );

    let report = prune(&repo, &KeepRules::runbook(), &options).await.unwrap();
    assert_eq!(report.keep.len(), dry.keep.len());
    // 7 daily + weekly/monthly/yearly buckets that do not overlap the daily ones.
    let kept: Vec<String> = report.keep.iter().map(|k| k.item.name.clone()).collect();
    assert_eq!(report.deleted.len(), 366 - kept.len());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.orphans, vec![orphan.to_string()]);
    let names: Vec<&str> = report.left_alone.iter().map(|l| l.name.as_str()).collect();
    assert!(names.contains(&"notes/README.txt"), "{names:?}");
    assert!(
        names.contains(&"asset-data-20200101-020000.tar.gz"),
        "{names:?}"
    );

    let after = repo.list().await.unwrap();
    let left: Vec<String> = after.committed().map(|e| e.name.to_string()).collect();
    let mut expected = kept.clone();
    expected.sort();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    assert_eq!(left_sorted, expected);
    assert!(sink.head("notes/README.txt").await.is_ok());
    assert!(sink.head("asset-data-20200101-020000.tar.gz").await.is_ok());
    assert!(sink.head(&orphan.to_string()).await.is_err());
    assert!(sink.head(&orphan.pending_name()).await.is_err());
    assert!(sink.head(PRUNE_LOCK).await.is_err(), "the lock is released");
    assert_eq!(
        after
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Incomplete)
            .count(),
        0
    );

    // Planning again deletes nothing.
    let again = prune(&repo, &KeepRules::runbook(), &options).await.unwrap();
    assert!(again.deleted.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_backup_is_never_deleted() {
    let sink: DynBackupSink = Arc::new(InMemorySink::new());
    let repo = Repository::new(sink.clone());
    let old = committed(&sink, now() - Duration::days(100)).await;
    let report = prune(
        &repo,
        &KeepRules {
            within: Some(Duration::days(1)),
            ..KeepRules::default()
        },
        &PruneOptions {
            now: now(),
            ..PruneOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.deleted.is_empty());
    assert_eq!(repo.latest().await.unwrap().unwrap().name, old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_in_progress_stops_a_prune_and_a_prune_stops_a_backup() {
    let sink: DynBackupSink = Arc::new(InMemorySink::new());
    let repo = Repository::new(sink.clone());
    committed(&sink, now() - Duration::days(3)).await;
    let running = BackupName::new("asset-data", now(), "tar.gz").unwrap();
    let upload = repo.begin(&running, "run-1").await.unwrap();
    let err = prune(
        &repo,
        &KeepRules::runbook(),
        &PruneOptions {
            now: now(),
            ..PruneOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("in progress"), "{err}");
    assert!(
        sink.head(PRUNE_LOCK).await.is_err(),
        "the lock is released on failure"
    );
    repo.abandon(&running, Some(upload)).await;

    // A held lock: a backup backs off and leaves no marker; a second prune is refused.
    let lock = LockInfo {
        run_id: "other".into(),
        started_at: Utc::now(),
        host: "h".into(),
    };
    sink.put_bytes(PRUNE_LOCK, Bytes::from(serde_json::to_vec(&lock).unwrap()))
        .await
        .unwrap();
    let err = repo.begin(&running, "run-2").await.unwrap_err();
    assert!(err.to_string().contains("prune"), "{err}");
    assert!(sink.head(&running.pending_name()).await.is_err());
    let err = prune(&repo, &KeepRules::runbook(), &PruneOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lock"), "{err}");
    assert!(
        repo.list().await.unwrap().foreign.is_empty(),
        "the lock is not a foreign file"
    );

    // A stale lock is taken over.
    let stale = LockInfo {
        started_at: Utc::now() - Duration::hours(7),
        ..lock
    };
    sink.put_bytes(PRUNE_LOCK, Bytes::from(serde_json::to_vec(&stale).unwrap()))
        .await
        .unwrap();
    prune(&repo, &KeepRules::runbook(), &PruneOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_deletion_is_incomplete_not_a_runbook_archive() {
    let sink: DynBackupSink = Arc::new(InMemorySink::new());
    let repo = Repository::new(sink.clone());
    let name = committed(&sink, now()).await;
    // What `Repository::delete` leaves when it dies after removing the manifest.
    sink.put_bytes(
        &name.pending_name(),
        Bytes::from_static(b"{\"deleting\":true}"),
    )
    .await
    .unwrap();
    sink.delete(&name.manifest_name()).await.unwrap();
    let listing = repo.list().await.unwrap();
    assert_eq!(listing.entries[0].kind, EntryKind::Incomplete);
    assert!(listing.latest().is_none());
}
