//! The sink conformance suite against real emulators started by `scripts/services.sh`
//! (moto for S3, Azurite for Azure, fake-gcs-server for GCS) and a local bare git remote for Git
//! LFS. Each test works under its own prefix, so they run in parallel in one bucket.
//!
//! Outside CI a test whose emulator is not configured prints why and passes; under `CI=true` it
//! fails.

#![cfg(any(
    feature = "s3",
    feature = "azure",
    feature = "gcs",
    feature = "git-lfs"
))]
#![allow(missing_docs)]

#[allow(unused_imports)]
use bytes::Bytes;
#[allow(unused_imports)]
use kars_backup_core::sink::PutOptions;
use kars_backup_core::testing::{ConformanceOptions, sink_conformance_with};
#[allow(unused_imports)]
use kars_backup_core::{BackupSink, SinkExt};

/// The value of a service variable; `None` (test skipped) outside CI, a panic under `CI=true`.
#[allow(dead_code)]
fn service(var: &str) -> Option<String> {
    kars_backup_core::testing::service_var(var)
}

#[allow(dead_code)]
fn unique(name: &str) -> String {
    format!("{name}-{}", kars_backup_core::new_run_id())
}

/// A plain HTTP GET to an emulator on 127.0.0.1 (no client library needed for these checks).
#[allow(dead_code)]
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let u = url::Url::parse(url).unwrap();
    let host = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap());
    let mut s = std::net::TcpStream::connect(&host).unwrap();
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[cfg(feature = "s3")]
mod s3 {
    use super::*;
    use kars_backup_storage::s3::S3Builder;

    pub(super) fn sink(prefix: &str) -> Option<kars_backup_storage::ObjectStoreSink> {
        let endpoint = service("KARS_TEST_S3_ENDPOINT")?;
        let bucket = service("KARS_TEST_S3_BUCKET")?;
        Some(
            S3Builder::new(bucket)
                .with_prefix(prefix)
                .with_endpoint(endpoint)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_credentials("test", "test")
                .build()
                .unwrap(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_conforms() {
        let Some(sink) = sink(&unique("conf")) else {
            return;
        };
        sink_conformance_with(&sink, &ConformanceOptions::default())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_from_url_round_trips() {
        let Some(endpoint) = service("KARS_TEST_S3_ENDPOINT") else {
            return;
        };
        let bucket = service("KARS_TEST_S3_BUCKET").unwrap();
        let prefix = unique("url");
        let url =
            format!("s3://{bucket}/{prefix}?endpoint={endpoint}&allow_http=true&region=us-east-1");
        let sink = S3Builder::from_url(&url)
            .unwrap()
            .with_credentials("test", "test")
            .build()
            .unwrap();
        assert_eq!(sink.describe(), format!("s3://{bucket}/{prefix}"));
        sink.put_bytes("x", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(sink.get_bytes("x").await.unwrap().as_ref(), b"1");
    }

    /// A large object comes back byte for byte through parallel ranged GETs, with the part size
    /// and concurrency given in the URL, also when parts fail mid-way and are asked for again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_ranged_download_with_url_options_and_failing_parts() {
        use kars_backup_core::fault::{FaultySink, Op};
        use kars_backup_core::sink::GetOptions;
        use std::sync::Arc;
        let Some(endpoint) = service("KARS_TEST_S3_ENDPOINT") else {
            return;
        };
        let bucket = service("KARS_TEST_S3_BUCKET").unwrap();
        let prefix = unique("ranged");
        let url = format!(
            "s3://{bucket}/{prefix}?endpoint={endpoint}&allow_http=true&region=us-east-1&download_part_size=1MiB&download_concurrency=3"
        );
        let sink = S3Builder::from_url(&url)
            .unwrap()
            .with_credentials("test", "test")
            .build()
            .unwrap();
        assert_eq!(sink.transfer().download_concurrency, Some(3));
        let len = 5 * 1024 * 1024 + 17;
        let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        sink.put_bytes("big.bin", data.clone()).await.unwrap();
        let read = |mut s: kars_backup_core::ByteStream| async move {
            use futures::StreamExt;
            let mut out = Vec::new();
            while let Some(c) = s.next().await {
                out.extend_from_slice(&c.unwrap());
            }
            out
        };
        let hinted = GetOptions::default().with_size_hint(len as u64);
        let got = read(sink.get("big.bin", hinted.clone()).await.unwrap()).await;
        assert!(got == data.as_ref(), "ranged read must be identical");

        // The same through a layer that breaks two parts mid-way: both are asked for again.
        let faulty = FaultySink::new(Arc::new(sink.clone()))
            .fail(Op::GetChunk, 3)
            .fail(Op::GetChunk, 20);
        let ranged =
            kars_backup_storage::RangedSink::new(Arc::new(faulty.clone()), *sink.transfer());
        let got = read(ranged.get("big.bin", hinted).await.unwrap()).await;
        assert!(
            got == data.as_ref(),
            "ranged read after failures must be identical"
        );
        assert!(faulty.count(Op::GetChunk) >= 20, "both faults were reached");
        assert_eq!(faulty.count(Op::Get), 6 + 2, "6 parts, 2 asked for again");
        sink.delete("big.bin").await.unwrap();
    }

    /// An aborted multipart upload leaves no upload (and no parts) in the bucket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_abort_leaves_no_multipart_upload() {
        let prefix = unique("abort");
        let Some(sink) = sink(&prefix) else {
            return;
        };
        let endpoint = std::env::var("KARS_TEST_S3_ENDPOINT").unwrap();
        let bucket = std::env::var("KARS_TEST_S3_BUCKET").unwrap();
        let mut up = sink.put("big.bin", PutOptions::default()).await.unwrap();
        for _ in 0..20 {
            up.put_part(Bytes::from(vec![7u8; 1024 * 1024]))
                .await
                .unwrap();
        }
        let uploads = || http_get(&format!("{endpoint}/{bucket}?uploads&prefix={prefix}/"));
        assert!(
            uploads().contains(&format!("{prefix}/big.bin")),
            "a multipart upload is in progress: {}",
            uploads()
        );
        up.abort().await.unwrap();
        let listing = uploads();
        assert!(
            !listing.contains(&format!("{prefix}/big.bin")),
            "no multipart upload may remain: {listing}"
        );
        assert!(sink.list(None).await.unwrap().is_empty());
    }
}

#[cfg(feature = "azure")]
mod azure {
    use super::*;
    use kars_backup_storage::azure::AzureBuilder;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn azure_conforms() {
        let Some(endpoint) = service("KARS_TEST_AZURE_ENDPOINT") else {
            return;
        };
        let container = service("KARS_TEST_AZURE_CONTAINER").unwrap();
        let url = format!(
            "az://{container}/{}?emulator=true&endpoint={endpoint}",
            unique("conf")
        );
        let sink = AzureBuilder::from_url(&url).unwrap().build().unwrap();
        sink_conformance_with(&sink, &ConformanceOptions::default())
            .await
            .unwrap();
    }
}

#[cfg(feature = "gcs")]
mod gcs {
    use super::*;
    use kars_backup_storage::gcs::GcsBuilder;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gcs_conforms() {
        let Some(endpoint) = service("KARS_TEST_GCS_ENDPOINT") else {
            return;
        };
        let bucket = service("KARS_TEST_GCS_BUCKET").unwrap();
        let sink = GcsBuilder::new(bucket)
            .with_prefix(unique("conf"))
            .with_endpoint(endpoint)
            .build()
            .unwrap();
        sink_conformance_with(&sink, &ConformanceOptions::default())
            .await
            .unwrap();
    }

    /// Uploads that span several resumable chunks, with a last chunk of every shape.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gcs_resumable_chunk_boundaries() {
        let Some(endpoint) = service("KARS_TEST_GCS_ENDPOINT") else {
            return;
        };
        let bucket = service("KARS_TEST_GCS_BUCKET").unwrap();
        let sink = GcsBuilder::new(bucket)
            .with_prefix(unique("chunks"))
            .with_endpoint(endpoint)
            .with_chunk_size(256 * 1024)
            .build()
            .unwrap();
        for size in [
            0usize,
            1,
            256 * 1024,
            256 * 1024 + 1,
            3 * 256 * 1024,
            700_001,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let key = format!("obj-{size}");
            let mut up = sink.put(&key, PutOptions::default()).await.unwrap();
            for c in data.chunks(100_000) {
                up.put_part(Bytes::copy_from_slice(c)).await.unwrap();
            }
            assert_eq!(up.complete().await.unwrap().size, size as u64);
            assert_eq!(
                sink.get_bytes(&key).await.unwrap().as_ref(),
                &data[..],
                "{size}"
            );
            assert_eq!(sink.head(&key).await.unwrap().size, size as u64);
        }
    }
}

#[cfg(feature = "git-lfs")]
mod git_lfs {
    use super::*;
    use kars_backup_storage::git_lfs::GitLfsBuilder;

    fn git_lfs_available() -> bool {
        let ok = std::process::Command::new("git")
            .args(["lfs", "version"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            service("KARS_TEST_GIT_LFS_MISSING_git-lfs_is_not_installed");
        }
        ok
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn git_lfs_conforms() {
        if !git_lfs_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("git+file://{}/remote.git?path=kars", dir.path().display());
        let sink = GitLfsBuilder::from_url(&url).unwrap().build().unwrap();
        sink_conformance_with(&sink, &ConformanceOptions::default())
            .await
            .unwrap();
        // Everything was deleted: the remote keeps no LFS object either.
        let objects = dir.path().join("remote.git/lfs/objects");
        let mut left = Vec::new();
        if objects.exists() {
            for e in walk(&objects) {
                left.push(e);
            }
        }
        assert!(left.is_empty(), "unreferenced LFS objects left: {left:?}");
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    /// A second sink (a new working copy, as another process would have) sees what the first
    /// pushed, with the real content, and a plain clone with the LFS filter gets the archive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn git_lfs_content_reaches_the_remote() {
        if !git_lfs_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("git+file://{}/r.git", dir.path().display());
        let a = GitLfsBuilder::from_url(&url).unwrap().build().unwrap();
        let data = Bytes::from(vec![42u8; 3_000_000]);
        a.put_bytes("asset-data-20241218-020000.tar.gz", data.clone())
            .await
            .unwrap();
        let b = GitLfsBuilder::from_url(&url).unwrap().build().unwrap();
        let listed = b.list(None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, data.len() as u64);
        assert_eq!(
            b.get_bytes("asset-data-20241218-020000.tar.gz")
                .await
                .unwrap(),
            data
        );
        let clone = dir.path().join("clone");
        let status = std::process::Command::new("git")
            .args([
                "-c",
                "filter.lfs.process=git-lfs filter-process",
                "-c",
                "filter.lfs.required=true",
                "clone",
                "-q",
                &format!("file://{}/r.git", dir.path().display()),
            ])
            .arg(&clone)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap();
        assert!(status.success());
        let restored = std::fs::read(clone.join("asset-data-20241218-020000.tar.gz")).unwrap();
        assert_eq!(
            restored.len(),
            data.len(),
            "the clone must hold the content, not a pointer"
        );
    }

    /// A remote that cannot take the push fails the upload and nothing is listed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn git_lfs_failed_push_commits_nothing() {
        if !git_lfs_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("r.git");
        let url = format!("git+file://{}", remote.display());
        let a = GitLfsBuilder::from_url(&url).unwrap().build().unwrap();
        a.put_bytes("first", Bytes::from_static(b"1"))
            .await
            .unwrap();
        // The remote's LFS store becomes a file: the pre-push hook cannot store objects.
        std::fs::remove_dir_all(remote.join("lfs")).unwrap();
        std::fs::write(remote.join("lfs"), b"not a directory").unwrap();
        let err = a
            .put_bytes("second", Bytes::from_static(b"2"))
            .await
            .unwrap_err();
        assert!(!err.to_string().is_empty());
        std::fs::remove_file(remote.join("lfs")).unwrap();
        let b = GitLfsBuilder::from_url(&url).unwrap().build().unwrap();
        let keys: Vec<_> = b
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            keys,
            vec!["first"],
            "the failed upload must not be on the branch"
        );
    }
}
