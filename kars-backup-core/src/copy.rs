//! Copies of committed backups between repositories ([`Repository::copy_to`]), with the same
//! commit protocol as a backup: the archive is streamed and checksum-verified against its
//! manifest while it is copied, the manifest is written last.

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::Digester;
use crate::plaintext::PlaintextPolicy;
use crate::repository::{BackupEntry, EntryKind, Repository};
use crate::run::new_run_id;
use crate::sink::GetOptions;

/// What [`Repository::copy_to`] did.
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

/// Options of [`Repository::copy_to`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CopyOptions {
    /// Where an unencrypted backup may be copied: by default only to a local destination (a copy
    /// cannot encrypt: the archive and its checksum are copied as they are).
    #[serde(default)]
    pub plaintext: PlaintextPolicy,
}

impl Repository {
    /// Copies the committed backup `entry` of this repository to `to`: the archive first,
    /// streamed and checksum-verified against the manifest while copying, then the manifest
    /// last, with the same commit protocol as a backup ([`Repository::begin`],
    /// [`Repository::commit`]), so an interrupted copy is never listed as a backup at the
    /// destination. A destination that holds the same backup already is left as it is
    /// ([`CopyReport::already_present`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a backup that is not committed; [`Error::PlaintextRefused`]
    /// (before anything is read) for an unencrypted backup to an off-site destination unless
    /// `options.plaintext` allows it; [`Error::AlreadyExists`] for a different backup of the same
    /// name at `to`; [`Error::ChecksumMismatch`] when this repository's bytes differ from the
    /// manifest (nothing is committed at the destination); the sinks' errors.
    pub async fn copy_to(
        &self,
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
                    self.describe(),
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
            from: self.describe(),
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

        let mut upload = to.begin(&name, &new_run_id()).await?;
        let copied = async {
            let mut stream = self
                .sink()
                .get(&name.to_string(), GetOptions::default())
                .await?;
            let mut digester = Digester::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                digester.update(&chunk);
                upload.put_part(chunk).await?;
            }
            let stored = digester.finish();
            stored.check(
                &manifest.archive.digested(),
                format!("{name} in {}", self.describe()),
            )?;
            Ok(stored.size)
        }
        .await;
        match copied {
            Ok(size) => {
                to.commit(upload, &manifest).await?;
                report.bytes = size;
                tracing::info!(backup = %name, from = %report.from, to = %report.to, bytes = size, "backup copied");
                Ok(report)
            }
            Err(e) => {
                to.abandon(&name, Some(upload)).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
