//! The options and report of a copy of a committed backup between repositories
//! ([`Repository::copy_to`](crate::Repository::copy_to)), which uses the same commit protocol
//! as a backup: the archive is streamed and checksum-verified against its manifest while it is
//! copied, the manifest is written last.

use serde::{Deserialize, Serialize};

use crate::plaintext::PlaintextPolicy;

/// What [`Repository::copy_to`](crate::Repository::copy_to) did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CopyReport {
    /// The backup's name.
    pub backup: String,
    /// Source (redacted).
    pub from: String,
    /// Destination (redacted).
    pub to: String,
    /// Archive bytes copied (0 when the destination had it already).
    pub bytes: u64,
    /// True when the destination already held this backup with the same checksum.
    pub already_present: bool,
}

/// Options of [`Repository::copy_to`](crate::Repository::copy_to).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CopyOptions {
    /// Where an unencrypted backup may be copied: by default only to a local destination (a copy
    /// cannot encrypt: the archive and its checksum are copied as they are).
    #[serde(default)]
    pub plaintext: PlaintextPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::repository::{BackupEntry, Repository};
    use std::sync::Arc;

    use bytes::Bytes;
    use sha2::{Digest, Sha256};

    use crate::compress::Compression;
    use crate::manifest::{ArchiveInfo, MANIFEST_FORMAT_VERSION, Manifest, PayloadInfo};
    use crate::name::BackupName;
    use crate::sink::SinkExt;
    use crate::testing::InMemorySink;
    use crate::tier::Placement;

    async fn committed(repo: &Repository) -> BackupEntry {
        // A tiny committed backup written through the repository's commit protocol.
        let name: BackupName = "asset-data-20241218-020000.tar.gz".parse().unwrap();
        let data = Bytes::from_static(b"archive bytes");
        let mut up = repo.begin(&name, "run").await.unwrap();
        up.put_part(data.clone()).await.unwrap();
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            name: name.to_string(),
            run_id: "run".into(),
            created_at: chrono::Utc::now(),
            completed_at: chrono::Utc::now(),
            tool_version: "0".into(),
            engine: "sqlite".into(),
            source: "x".into(),
            host: "h".into(),
            version_label: None,
            databases: Vec::new(),
            payload: PayloadInfo {
                format: "tar".into(),
                size_bytes: 13,
            },
            archive: ArchiveInfo {
                compression: Compression::None,
                sha256: hex::encode(Sha256::digest(&data)),
                blake3: None,
                size_bytes: 13,
                encryption: None,
            },
            tiers: Vec::new(),
            physical: None,
        };
        repo.commit(up, &manifest).await.unwrap();
        repo.latest().await.unwrap().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_and_is_idempotent_and_refuses_corrupt_sources() {
        let a = Repository::new(Arc::new(InMemorySink::new()));
        let b = Repository::new(Arc::new(InMemorySink::new()));
        let entry = committed(&a).await;
        let options = CopyOptions::default();
        let r = a.copy_to(&entry, &b, &options).await.unwrap();
        assert_eq!(r.bytes, 13);
        assert_eq!(b.latest().await.unwrap().unwrap().name, entry.name);
        assert!(
            a.copy_to(&entry, &b, &options)
                .await
                .unwrap()
                .already_present
        );

        // Corrupt the source's archive: the copy fails and nothing is committed.
        a.sink()
            .put_bytes(
                &entry.name.to_string(),
                Bytes::from_static(b"tampered!!!!!"),
            )
            .await
            .unwrap();
        let c = Repository::new(Arc::new(InMemorySink::new()));
        let err = a.copy_to(&entry, &c, &options).await.unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
        assert!(c.sink().list(None).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unencrypted_backup_is_copied_off_site_only_when_allowed() {
        let a = Repository::new(Arc::new(InMemorySink::new()));
        let cloud = Repository::new(Arc::new(
            InMemorySink::new().with_placement(Placement::Cloud),
        ));
        let entry = committed(&a).await;
        let err = a
            .copy_to(&entry, &cloud, &CopyOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PlaintextRefused { .. }), "{err}");
        assert!(
            cloud.sink().list(None).await.unwrap().is_empty(),
            "nothing is written before the refusal"
        );
        let allowed = CopyOptions {
            plaintext: PlaintextPolicy::Anywhere,
        };
        let r = a.copy_to(&entry, &cloud, &allowed).await.unwrap();
        assert_eq!(r.bytes, 13);
        assert_eq!(cloud.latest().await.unwrap().unwrap().name, entry.name);
    }
}
