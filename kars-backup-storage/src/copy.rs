//! [`copy_backup`]: copies a committed backup from one repository to another.

use futures::StreamExt;
use kars_backup_core::sink::GetOptions;
use kars_backup_core::{BackupEntry, EntryKind, Error, PlaintextPolicy, Repository, Result};
use serde::{Deserialize, Serialize};

/// What [`copy_backup`] did.
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

/// Options of [`copy_backup`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CopyOptions {
    /// Where an unencrypted backup may be copied: by default only to a local destination (a copy
    /// cannot encrypt: the archive and its checksum are copied as they are).
    #[serde(default)]
    pub plaintext: PlaintextPolicy,
}

/// Copies a committed backup: the archive first, streamed and checksum-verified against the
/// manifest while copying, then the manifest last, with the same commit protocol as a backup
/// (so an interrupted copy is never listed as a backup at the destination).
///
/// # Errors
/// [`Error::InvalidInput`] for a backup that is not committed; [`Error::PlaintextRefused`]
/// (before anything is read) for an unencrypted backup to an off-site destination unless
/// `options.plaintext` allows it; [`Error::ChecksumMismatch`] when the source's bytes differ
/// from its manifest (nothing is committed at the destination); the sinks' errors.
pub async fn copy_backup(
    from: &Repository,
    entry: &BackupEntry,
    to: &Repository,
    options: &CopyOptions,
) -> Result<CopyReport> {
    let name = entry.name.clone();
    let manifest = match (&entry.kind, &entry.manifest) {
        (EntryKind::Committed, Some(m)) => m.clone(),
        _ => {
            return Err(Error::InvalidInput(format!(
                "{name} in {} is not a committed backup ({}); only backups with a manifest can be copied",
                from.describe(),
                entry.note.as_deref().unwrap_or("no manifest")
            )));
        }
    };
    options.plaintext.check(
        &format!("a copy of {name}"),
        manifest.archive.encryption.is_some(),
        &[to],
    )?;
    let mut report = CopyReport {
        backup: name.to_string(),
        from: from.describe(),
        to: to.describe(),
        bytes: 0,
        already_present: false,
    };
    match to.find(&name.to_string()).await {
        Ok(existing) if existing.kind == EntryKind::Committed => {
            let same = existing
                .manifest
                .as_ref()
                .is_some_and(|m| m.archive.sha256 == manifest.archive.sha256);
            if same {
                report.already_present = true;
                return Ok(report);
            }
            return Err(Error::AlreadyExists {
                what: format!(
                    "a different backup named {name} in {}; delete it first or copy another",
                    to.describe()
                ),
            });
        }
        Ok(_) | Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }

    let run_id = kars_backup_core::new_run_id();
    let mut upload = to.begin(&name, &run_id).await?;
    let result: Result<(String, u64)> = async {
        let mut stream = from
            .sink()
            .get(
                &name.to_string(),
                GetOptions::default().with_size_hint(manifest.archive.size_bytes),
            )
            .await?;
        // Hashing on its own thread overlaps with receiving and writing.
        let mut hasher = kars_backup_core::pipeline::BackgroundHasher::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(chunk.clone()).await?;
            upload.put_part(chunk).await?;
        }
        let digest = hasher.finish().await?;
        Ok((digest.sha256, digest.size))
    }
    .await;
    match result {
        Ok((sha, size))
            if sha == manifest.archive.sha256 && size == manifest.archive.size_bytes =>
        {
            to.commit(upload, &manifest).await?;
            report.bytes = size;
            tracing::info!(backup = %name, from = %report.from, to = %report.to, bytes = size, "backup copied");
            Ok(report)
        }
        Ok((sha, size)) => {
            to.abandon(&name, Some(upload)).await;
            Err(Error::ChecksumMismatch {
                name: format!("{name} in {}", from.describe()),
                expected: manifest.archive.sha256.clone(),
                actual: sha,
                expected_size: manifest.archive.size_bytes,
                actual_size: size,
            })
        }
        Err(e) => {
            to.abandon(&name, Some(upload)).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use bytes::Bytes;
    use kars_backup_core::SinkExt;
    use kars_backup_core::testing::InMemorySink;
    use sha2::{Digest, Sha256};

    async fn committed(repo: &Repository) -> BackupEntry {
        // A tiny committed backup written through the repository's commit protocol.
        let name: kars_backup_core::BackupName =
            "asset-data-20241218-020000.tar.gz".parse().unwrap();
        let data = Bytes::from_static(b"archive bytes");
        let mut up = repo.begin(&name, "run").await.unwrap();
        up.put_part(data.clone()).await.unwrap();
        let manifest = kars_backup_core::Manifest {
            format_version: kars_backup_core::manifest::MANIFEST_FORMAT_VERSION,
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
            payload: kars_backup_core::manifest::PayloadInfo {
                format: "tar".into(),
                size_bytes: 13,
            },
            archive: kars_backup_core::manifest::ArchiveInfo {
                compression: kars_backup_core::Compression::None,
                sha256: hex::encode(Sha256::digest(&data)),
                size_bytes: 13,
                encryption: None,
            },
            tiers: Vec::new(),
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
        let r = copy_backup(&a, &entry, &b, &options).await.unwrap();
        assert_eq!(r.bytes, 13);
        assert_eq!(b.latest().await.unwrap().unwrap().name, entry.name);
        assert!(
            copy_backup(&a, &entry, &b, &options)
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
        let err = copy_backup(&a, &entry, &c, &options).await.unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
        assert!(c.sink().list(None).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unencrypted_backup_is_copied_off_site_only_when_allowed() {
        use kars_backup_core::Placement;
        let a = Repository::new(Arc::new(InMemorySink::new()));
        let cloud = Repository::new(Arc::new(
            InMemorySink::new().with_placement(Placement::Cloud),
        ));
        let entry = committed(&a).await;
        let err = copy_backup(&a, &entry, &cloud, &CopyOptions::default())
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
        let r = copy_backup(&a, &entry, &cloud, &allowed).await.unwrap();
        assert_eq!(r.bytes, 13);
        assert_eq!(cloud.latest().await.unwrap().unwrap().name, entry.name);
    }
}
