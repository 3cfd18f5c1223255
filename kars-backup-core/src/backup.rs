//! [`BackupJob`]: one consistent snapshot, streamed once to every destination.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::compress::Compression;
use crate::encrypt::DynEncryptor;
use crate::error::{Error, Result};
use crate::manifest::{
    ArchiveInfo, MANIFEST_FORMAT_VERSION, MANIFEST_FORMAT_VERSION_ENCRYPTED, Manifest, PayloadInfo,
};
use crate::name::BackupName;
use crate::pipeline;
use crate::plaintext::PlaintextPolicy;
use crate::progress::{DynProgress, no_progress};
use crate::repository::Repository;
use crate::run::{host_label, new_run_id};
use crate::sink::Upload;
use crate::source::DynDatabaseSource;

/// Options of a backup run; the `backup` flags (`clap` feature) are this type.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct BackupOptions {
    /// Archive name prefix; the source's default (`asset-data`, `kars-postgres`) when `None`.
    #[serde(default)]
    #[cfg_attr(
        feature = "clap",
        arg(long = "prefix", help = "Archive name prefix (default: asset-data)")
    )]
    pub name_prefix: Option<String>,
    /// Compression of the payload (ignored for payloads that are compressed already).
    #[serde(default)]
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            default_value = "gzip",
            help = "Compression: gzip (default, level 6), gzip:LEVEL (1-12) or none"
        )
    )]
    pub compression: Compression,
    /// Compression threads; all cores when `None`.
    #[serde(default)]
    #[cfg_attr(
        feature = "clap",
        arg(long, help = "Compression threads (default: all cores)")
    )]
    pub threads: Option<usize>,
    /// A version label of the application, stored in the manifest.
    #[serde(default)]
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "label",
            help = "A version label of the application, stored in the manifest (e.g. `git describe`)"
        )
    )]
    pub version_label: Option<String>,
    /// The host or container label; this machine's host name when `None`.
    #[serde(default)]
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Host or container label stored in the manifest (default: KARS_BACKUP_HOST or the host name)"
        )
    )]
    pub host_label: Option<String>,
    /// Tier tags stored in the manifest.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub tiers: Vec<String>,
    /// After committing, read each destination's archive back and check its SHA-256 against
    /// the manifest; a destination whose copy differs is reported failed and its copy deleted.
    #[serde(default)]
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "After the upload, read every copy back and check its SHA-256 against the manifest"
        )
    )]
    pub verify_upload: bool,
    /// Where the archive may be stored unencrypted: by default only at local destinations, so a
    /// run without an encryptor that includes an off-site destination fails before the
    /// database is read ([`Error::PlaintextRefused`]).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub plaintext: PlaintextPolicy,
}

/// How one destination fared.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationOutcome {
    /// The destination (redacted).
    pub destination: String,
    /// `None` when the backup was committed there; the error otherwise.
    pub error: Option<String>,
}

/// The result of a backup run that committed to at least one destination.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The run's id (also in the manifest and the logs).
    pub run_id: String,
    /// The manifest written to every destination that succeeded.
    pub manifest: Manifest,
    /// Each destination's outcome, in the order given.
    pub destinations: Vec<DestinationOutcome>,
    /// Wall time of the whole run.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
}

impl BackupReport {
    /// True when every destination committed the backup.
    pub fn all_succeeded(&self) -> bool {
        self.destinations.iter().all(|d| d.error.is_none())
    }
}

pub(crate) mod duration_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Backs up one source to one or more destinations.
///
/// The database is read once; the compressed stream is uploaded to every destination at the same
/// time. A destination that fails is reported and dropped; the others still commit.
///
/// ```no_run
/// use std::sync::Arc;
/// use kars_backup_core::{BackupJob, BackupOptions, DynDatabaseSource, Repository, testing::InMemorySink};
///
/// async fn back_up(source: DynDatabaseSource) -> kars_backup_core::Result<()> {
///     let repo = Repository::new(Arc::new(InMemorySink::new()));
///     let report = BackupJob::new(source, vec![repo], BackupOptions::default()).run().await?;
///     println!("{} ({} bytes)", report.manifest.name, report.manifest.archive.size_bytes);
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct BackupJob {
    source: DynDatabaseSource,
    destinations: Vec<Repository>,
    options: BackupOptions,
    progress: DynProgress,
    run_id: String,
    encryptor: Option<DynEncryptor>,
}

impl BackupJob {
    /// A job backing up `source` to `destinations`.
    pub fn new(
        source: DynDatabaseSource,
        destinations: Vec<Repository>,
        options: BackupOptions,
    ) -> Self {
        BackupJob {
            source,
            destinations,
            options,
            progress: no_progress(),
            run_id: new_run_id(),
            encryptor: None,
        }
    }

    /// Encrypts the archive (after compression; the manifest's checksum is the ciphertext's).
    /// The archive's name gets the scheme's suffix (`.age`, `.gpg`) and the manifest records the
    /// scheme and the recipients' public identifiers.
    pub fn with_encryptor(mut self, encryptor: DynEncryptor) -> Self {
        self.encryptor = Some(encryptor);
        self
    }

    /// Reports progress to `progress`.
    pub fn with_progress(mut self, progress: DynProgress) -> Self {
        self.progress = progress;
        self
    }

    /// Uses this run id instead of a generated one.
    pub fn with_run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Runs the backup.
    ///
    /// # Errors
    /// [`Error::PlaintextRefused`] (before anything is read) for an unencrypted backup to an
    /// off-site destination under [`PlaintextPolicy::LocalOnly`]; the source's error, or the
    /// first destination's error when no destination committed.
    pub async fn run(self) -> Result<BackupReport> {
        let started = Instant::now();
        if self.destinations.is_empty() {
            return Err(Error::InvalidInput(
                "a backup needs at least one destination".into(),
            ));
        }
        let repos: Vec<&Repository> = self.destinations.iter().collect();
        self.options.plaintext.check(
            &format!("the backup of {}", self.source.describe()),
            self.encryptor.is_some(),
            &repos,
        )?;
        if self.encryptor.is_none() {
            tracing::info!(source = %self.source.describe(), "the archive is not encrypted");
        }
        let span =
            tracing::info_span!("backup", run_id = %self.run_id, source = %self.source.describe());
        let _enter = span.enter();
        let format = self.source.payload_format();
        let compression = if format.compressed {
            Compression::None
        } else {
            self.options.compression
        };
        let encryption = self.encryptor.as_ref().map(|e| e.info());
        let extension = format!(
            "{}{}{}",
            format.extension,
            compression.extension(),
            encryption.as_ref().map_or("", |e| e.scheme.extension())
        );
        let prefix = self
            .options
            .name_prefix
            .clone()
            .unwrap_or_else(|| self.source.default_name_prefix().to_string());
        let name = self
            .unused_name(BackupName::new(&prefix, Utc::now(), &extension)?)
            .await?;
        tracing::info!(backup = %name, destinations = self.destinations.len(), "backup started");

        // Open an upload at every destination.
        let mut errors: Vec<Option<String>> = vec![None; self.destinations.len()];
        let mut uploads: Vec<Option<Box<dyn Upload>>> = Vec::new();
        let begun = join_all(
            self.destinations
                .iter()
                .map(|d| d.begin(&name, &self.run_id)),
        )
        .await;
        let mut first_error = None;
        for (i, b) in begun.into_iter().enumerate() {
            match b {
                Ok(u) => uploads.push(Some(u)),
                Err(e) => {
                    tracing::error!(destination = %self.destinations[i].describe(), error = %e, "destination failed");
                    errors[i] = Some(e.to_string());
                    first_error.get_or_insert(e);
                    uploads.push(None);
                }
            }
        }
        if uploads.iter().all(Option::is_none) {
            return Err(first_error.expect("at least one destination"));
        }

        let threads = self
            .options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let (writer, stored_rx, compress_handle) = pipeline::start_compression_with(
            compression,
            threads,
            self.encryptor.clone(),
            self.progress.clone(),
        );
        let fan_out = tokio::spawn(fan_out(stored_rx, uploads));

        let taken = self
            .source
            .write_payload(writer, self.progress.clone())
            .await;
        let compressed = compress_handle
            .await
            .map_err(|e| Error::generic("compression", e))
            .and_then(|r| r.map_err(|e| Error::generic("compression", e)));
        let (uploads, upload_errors) = fan_out.await.map_err(|e| Error::generic("upload", e))?;
        let mut failed_uploads = Vec::new();
        for (i, e) in upload_errors.into_iter().enumerate() {
            if let Some(e) = e {
                tracing::error!(destination = %self.destinations[i].describe(), error = %e, "upload failed");
                errors[i] = Some(e.to_string());
                first_error.get_or_insert(e);
                failed_uploads.push(i);
            }
        }
        // A destination that failed mid-upload keeps neither archive nor `.pending` marker.
        join_all(
            failed_uploads
                .iter()
                .map(|&i| self.destinations[i].abandon(&name, None)),
        )
        .await;

        let all_failed = uploads.iter().all(Option::is_none);
        let (snapshot, summary) = match (taken, compressed) {
            (Ok(snapshot), Ok(summary)) if !all_failed => (snapshot, summary),
            (taken, compressed) => {
                let err = match (all_failed, taken, compressed) {
                    (true, _, _) => first_error
                        .take()
                        .expect("a failed destination has an error"),
                    (false, Err(e), _) => e,
                    (false, Ok(_), Err(e)) => e,
                    (false, Ok(_), Ok(_)) => unreachable!("handled above"),
                };
                self.abandon_all(&name, uploads).await;
                tracing::error!(backup = %name, error = %err, "backup failed; nothing was committed");
                return Err(err);
            }
        };

        let manifest = Manifest {
            format_version: if encryption.is_some() {
                MANIFEST_FORMAT_VERSION_ENCRYPTED
            } else {
                MANIFEST_FORMAT_VERSION
            },
            name: name.to_string(),
            run_id: self.run_id.clone(),
            created_at: snapshot.taken_at,
            completed_at: Utc::now(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            engine: self.source.engine().to_string(),
            source: self.source.describe(),
            host: self.options.host_label.clone().unwrap_or_else(host_label),
            version_label: self.options.version_label.clone(),
            databases: snapshot.databases,
            payload: PayloadInfo {
                format: format.extension.clone(),
                size_bytes: summary.payload_size,
            },
            archive: ArchiveInfo {
                compression,
                sha256: summary.stored.sha256.clone(),
                blake3: summary.stored.blake3.clone(),
                size_bytes: summary.stored.size,
                encryption,
            },
            tiers: self.options.tiers.clone(),
            physical: snapshot.physical,
        };

        let commits = join_all(uploads.into_iter().enumerate().map(|(i, u)| {
            let repo = &self.destinations[i];
            let manifest = &manifest;
            async move {
                match u {
                    Some(u) => Some(repo.commit(u, manifest).await),
                    None => None,
                }
            }
        }))
        .await;
        let commits: Vec<Option<Result<()>>> = if self.options.verify_upload {
            join_all(commits.into_iter().enumerate().map(|(i, c)| {
                let repo = &self.destinations[i];
                let manifest = &manifest;
                let name = &name;
                async move {
                    match c {
                        Some(Ok(())) => match repo.verify_stored(manifest).await {
                            Ok(()) => Some(Ok(())),
                            Err(e) => {
                                let _ = repo.delete(name).await;
                                Some(Err(e))
                            }
                        },
                        other => other,
                    }
                }
            }))
            .await
        } else {
            commits
        };
        let mut committed = 0;
        let mut last_error = None;
        for (i, c) in commits.into_iter().enumerate() {
            match c {
                Some(Ok(())) => committed += 1,
                Some(Err(e)) => {
                    tracing::error!(destination = %self.destinations[i].describe(), error = %e, "commit failed");
                    errors[i] = Some(e.to_string());
                    last_error = Some(e);
                }
                None => {}
            }
        }
        if committed == 0 {
            return Err(last_error.expect("no commit and no error"));
        }
        let report = BackupReport {
            run_id: self.run_id.clone(),
            destinations: self
                .destinations
                .iter()
                .zip(errors)
                .map(|(d, error)| DestinationOutcome {
                    destination: d.describe(),
                    error,
                })
                .collect(),
            manifest,
            duration: started.elapsed(),
        };
        tracing::info!(
            backup = %name,
            bytes = report.manifest.archive.size_bytes,
            seconds = report.duration.as_secs_f64(),
            committed,
            "backup committed"
        );
        Ok(report)
    }

    async fn unused_name(&self, mut name: BackupName) -> Result<BackupName> {
        // Repeat until every destination accepts the same name.
        loop {
            let mut changed = false;
            for d in &self.destinations {
                // A destination that cannot be asked fails (and is reported) when its upload
                // starts; it must not stop the others.
                let n = match d.unused_name(name.clone()).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(destination = %d.describe(), error = %e, "destination unreachable while choosing the backup name");
                        continue;
                    }
                };
                if n != name {
                    name = n;
                    changed = true;
                }
            }
            if !changed {
                return Ok(name);
            }
        }
    }

    async fn abandon_all(&self, name: &BackupName, uploads: Vec<Option<Box<dyn Upload>>>) {
        join_all(
            self.destinations
                .iter()
                .zip(uploads)
                .map(|(d, u)| d.abandon(name, u)),
        )
        .await;
    }
}

/// Sends every stored chunk to every live upload at once; a failing upload is aborted and dropped.
async fn fan_out(
    mut rx: mpsc::Receiver<Bytes>,
    mut uploads: Vec<Option<Box<dyn Upload>>>,
) -> (Vec<Option<Box<dyn Upload>>>, Vec<Option<Error>>) {
    let mut errors: Vec<Option<Error>> = (0..uploads.len()).map(|_| None).collect();
    while let Some(chunk) = rx.recv().await {
        let results = join_all(uploads.iter_mut().map(|slot| {
            let chunk = chunk.clone();
            async move {
                match slot {
                    Some(u) => Some(u.put_part(chunk).await),
                    None => None,
                }
            }
        }))
        .await;
        for (i, r) in results.into_iter().enumerate() {
            if let Some(Err(e)) = r {
                if let Some(u) = uploads[i].take() {
                    let _ = u.abort().await;
                }
                errors[i] = Some(e);
            }
        }
        if uploads.iter().all(Option::is_none) {
            break;
        }
    }
    (uploads, errors)
}
