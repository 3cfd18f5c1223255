//! Hostile and damaged archives: nothing is written outside the staging directory and the live
//! database is never touched.

use std::sync::Arc;

use bytes::Bytes;
use kars_backup_core::testing::InMemorySink;
use kars_backup_core::{BackupReport, Error, Repository, SinkExt};
use kars_backup_sqlite::SqliteSource;
use kars_backup_sqlite::sample::{SampleSize, create_kars_database};
use tar::{EntryType, Header};

use crate::common::*;

/// A header whose name (and link name) bytes are written as given, bypassing the tar crate's
/// own path checks.
fn raw_header(name: &str, kind: EntryType, size: u64, link: Option<&str>) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    {
        let old = header.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_cksum();
    header
}

/// A gzipped tar with a valid database entry `./assets.db` and then `evil`.
fn archive_with(db: &[u8], evil: Header, evil_data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(
            &raw_header("./assets.db", EntryType::Regular, db.len() as u64, None),
            db,
        )
        .unwrap();
    builder.append(&evil, evil_data).unwrap();
    gzip(&builder.into_inner().unwrap())
}

struct Fixture {
    root: tempfile::TempDir,
    live: std::path::PathBuf,
    live_bytes: Vec<u8>,
    db_bytes: Vec<u8>,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src.db");
    create_kars_database(&src, SampleSize::for_bytes(100_000)).unwrap();
    let db_bytes = std::fs::read(&src).unwrap();
    std::fs::remove_file(&src).unwrap();
    let live_dir = root.path().join("live");
    std::fs::create_dir(&live_dir).unwrap();
    let live = live_dir.join("assets.db");
    let conn = rich_database(&live, "delete");
    drop(conn);
    let live_bytes = std::fs::read(&live).unwrap();
    Fixture {
        root,
        live,
        live_bytes,
        db_bytes,
    }
}

impl Fixture {
    /// Restores the runbook archive `data` and expects an `InvalidArchive` error.
    async fn expect_invalid(&self, name: &str, data: Vec<u8>, reason_contains: &str) {
        let (repo, sink) = repo();
        put_runbook_archive(&sink, name, data).await;
        let err = restore_named(&repo, name, &SqliteSource::new(&self.live), &confirmed())
            .await
            .unwrap_err();
        match &err {
            Error::InvalidArchive { name: n, reason } => {
                assert_eq!(n, name);
                assert!(reason.contains(reason_contains), "{reason}");
            }
            other => panic!("{name}: expected InvalidArchive, got {other}"),
        }
        self.assert_untouched();
    }

    fn assert_untouched(&self) {
        assert_eq!(std::fs::read(&self.live).unwrap(), self.live_bytes);
        let live_dir = self.live.parent().unwrap();
        let names: Vec<_> = std::fs::read_dir(live_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["assets.db"],
            "nothing else beside the live database"
        );
        let mut root_names: Vec<_> = std::fs::read_dir(self.root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        root_names.sort();
        assert_eq!(
            root_names,
            ["live"],
            "nothing written above the target directory"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_directory_entries_are_refused() {
    let f = fixture();
    let evil = raw_header("../evil", EntryType::Regular, 4, None);
    f.expect_invalid(
        "asset-data-20240101-000000.tar.gz",
        archive_with(&f.db_bytes, evil, b"evil"),
        "..",
    )
    .await;
    let evil = raw_header("./sub/../../../evil", EntryType::Regular, 4, None);
    f.expect_invalid(
        "asset-data-20240101-000001.tar.gz",
        archive_with(&f.db_bytes, evil, b"evil"),
        "..",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_entries_are_refused() {
    let f = fixture();
    let target = f.root.path().join("abs-evil");
    let evil = raw_header(target.to_str().unwrap(), EntryType::Regular, 4, None);
    f.expect_invalid(
        "asset-data-20240102-000000.tar.gz",
        archive_with(&f.db_bytes, evil, b"evil"),
        "absolute",
    )
    .await;
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_devices_are_refused() {
    let f = fixture();
    let symlink = raw_header("passwd", EntryType::Symlink, 0, Some("/etc/passwd"));
    f.expect_invalid(
        "asset-data-20240103-000000.tar.gz",
        archive_with(&f.db_bytes, symlink, b""),
        "symbolic link",
    )
    .await;
    let hardlink = raw_header("again.db", EntryType::Link, 0, Some("assets.db"));
    f.expect_invalid(
        "asset-data-20240103-000001.tar.gz",
        archive_with(&f.db_bytes, hardlink, b""),
        "hard link",
    )
    .await;
    let device = raw_header("null", EntryType::Char, 0, None);
    f.expect_invalid(
        "asset-data-20240103-000002.tar.gz",
        archive_with(&f.db_bytes, device, b""),
        "device",
    )
    .await;
    let fifo = raw_header("pipe", EntryType::Fifo, 0, None);
    f.expect_invalid(
        "asset-data-20240103-000003.tar.gz",
        archive_with(&f.db_bytes, fifo, b""),
        "FIFO",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_archives_are_refused() {
    let f = fixture();
    // A real archive, truncated.
    let good = {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append(
                &raw_header(
                    "./assets.db",
                    EntryType::Regular,
                    f.db_bytes.len() as u64,
                    None,
                ),
                &f.db_bytes[..],
            )
            .unwrap();
        gzip(&builder.into_inner().unwrap())
    };
    let truncated = good[..good.len() / 2].to_vec();
    f.expect_invalid("asset-data-20240104-000000.tar.gz", truncated, "")
        .await;
    // A tar (uncompressed) cut at an entry boundary: no end-of-archive marker.
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(
            &raw_header(
                "./assets.db",
                EntryType::Regular,
                f.db_bytes.len() as u64,
                None,
            ),
            &f.db_bytes[..],
        )
        .unwrap();
    let mut tar_bytes = builder.into_inner().unwrap();
    tar_bytes.truncate(512 + f.db_bytes.len().div_ceil(512) * 512);
    f.expect_invalid(
        "asset-data-20240104-000001.tar.gz",
        gzip(&tar_bytes),
        "truncated",
    )
    .await;
    // Not a tar at all, with and without gzip.
    let text = b"this is not a tar archive\n".repeat(100);
    f.expect_invalid("asset-data-20240104-000002.tar.gz", text.clone(), "tar")
        .await;
    f.expect_invalid("asset-data-20240104-000003.tar.gz", gzip(&text), "tar")
        .await;
    // An empty file.
    f.expect_invalid("asset-data-20240104-000004.tar.gz", Vec::new(), "")
        .await;
    // A valid tar without any database.
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(
            &raw_header("./notes.txt", EntryType::Regular, 5, None),
            &b"hello"[..],
        )
        .unwrap();
    f.expect_invalid(
        "asset-data-20240104-000005.tar.gz",
        gzip(&builder.into_inner().unwrap()),
        "no SQLite database",
    )
    .await;
}

/// A committed backup of the demo KARS database in a fresh in-memory repository.
async fn committed_backup() -> (Repository, Arc<InMemorySink>, BackupReport) {
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("assets.db");
    create_kars_database(&src, SampleSize::demo()).unwrap();
    let (repo, sink) = repo();
    let report = backup(SqliteSource::new(&src), &repo).await;
    (repo, sink, report)
}

/// Flips one bit in the middle of the stored object `name`.
async fn flip_a_byte(sink: &InMemorySink, name: &str) {
    let mut bytes = sink.get_bytes(name).await.unwrap().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    sink.put_bytes(name, Bytes::from(bytes)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_committed_backup_is_a_checksum_mismatch() {
    let f = fixture();
    let (repo, sink, report) = committed_backup().await;
    let name = report.manifest.name.clone();
    flip_a_byte(&sink, &name).await;
    let err = restore_named(&repo, &name, &SqliteSource::new(&f.live), &confirmed())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    f.assert_untouched();
}

/// Manifests written before kars-backup recorded a BLAKE3 hold only the SHA-256: their archives
/// still restore (checked with the SHA-256), and a flipped byte is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_whose_manifest_has_only_a_sha256_is_checked_with_it() {
    let f = fixture();
    let (repo, sink, report) = committed_backup().await;
    let name = report.manifest.name.clone();
    assert!(
        report.manifest.archive.blake3.is_some(),
        "new manifests record BLAKE3"
    );
    let meta = format!("{name}.meta");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&sink.get_bytes(&meta).await.unwrap()).unwrap();
    manifest["archive"]
        .as_object_mut()
        .unwrap()
        .remove("blake3");
    sink.put_bytes(&meta, Bytes::from(serde_json::to_vec(&manifest).unwrap()))
        .await
        .unwrap();
    restore_named(&repo, &name, &SqliteSource::new(&f.live), &confirmed())
        .await
        .unwrap();

    flip_a_byte(&sink, &name).await;
    let err = restore_named(&repo, &name, &SqliteSource::new(&f.live), &confirmed())
        .await
        .unwrap_err();
    match err {
        Error::ChecksumMismatch { expected, .. } => {
            assert_eq!(
                expected, report.manifest.archive.sha256,
                "checked with the SHA-256"
            )
        }
        other => panic!("{other}"),
    }
}
