//! [`Repository`]: backup-level operations over any [`BackupSink`](crate::BackupSink).
//!
//! The commit protocol: a `<name>.pending` marker first, then the archive, then the manifest
//! `<name>.meta` **last**, then the marker is removed. A backup without a manifest does not exist:
//! only committed backups are listed as backups, used by `--latest` and counted by retention.
//! Which key is what is the [`layout`](crate::layout)'s to say. A committed backup is copied to
//! another repository with the same protocol ([`Repository::copy_to`]).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::compress::Compression;
use crate::copy::{CopyOptions, CopyReport};
use crate::encrypt::{DynDecryptor, EncryptionScheme};
use crate::error::{Error, Result};
use crate::layout::{KeyRole, classify_key};
use crate::lock::live_lock;
use crate::manifest::Manifest;
use crate::name::BackupName;
use crate::pipeline::{
    self, BackgroundHasher, Digester, DownloadCheck, DownloadOptions, PayloadReader,
};
use crate::progress::DynProgress;
use crate::run::{host_label, new_run_id};
use crate::sink::{DynBackupSink, GetOptions, ObjectMeta, PutOptions, SinkExt, Upload};
use crate::tier::Placement;

/// What a stored backup is, as far as the repository can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// Archive and manifest: a real backup.
    Committed,
    /// An archive made by the runbook's scripts: no manifest (or the runbook's text `.meta`).
    /// Restorable by name after checks, never chosen as `--latest`.
    Runbook,
    /// An archive or marker left by a run that did not finish. Never restorable.
    Incomplete,
}

/// One backup-like thing in a repository.
#[derive(Debug, Clone)]
pub struct BackupEntry {
    /// Its name.
    pub name: BackupName,
    /// What it is.
    pub kind: EntryKind,
    /// The archive object, if present.
    pub archive: Option<ObjectMeta>,
    /// The manifest, for committed backups.
    pub manifest: Option<Manifest>,
    /// Why the entry is not committed, when it is not.
    pub note: Option<String>,
    /// The `.pending` marker of a run that has not finished (or died), if present.
    pub pending: Option<ObjectMeta>,
}

impl BackupEntry {
    /// The backup's time: the manifest's snapshot time, or the time in the name.
    pub fn time(&self) -> DateTime<Utc> {
        self.manifest
            .as_ref()
            .map(|m| m.created_at)
            .unwrap_or_else(|| self.name.time())
    }

    /// Stored size in bytes.
    pub fn size(&self) -> u64 {
        self.archive.as_ref().map(|a| a.size).unwrap_or(0)
    }
}

/// Everything under a repository's prefix, sorted.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Backups, committed or not, oldest first.
    pub entries: Vec<BackupEntry>,
    /// Objects that are not backups (never touched by kars-backup).
    pub foreign: Vec<ObjectMeta>,
}

impl Listing {
    /// Committed backups, oldest first.
    pub fn committed(&self) -> impl Iterator<Item = &BackupEntry> {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::Committed)
    }

    /// The newest committed backup.
    pub fn latest(&self) -> Option<&BackupEntry> {
        self.committed().last()
    }

    /// The entry with this name.
    pub fn find(&self, name: &str) -> Option<&BackupEntry> {
        self.entries.iter().find(|e| e.name.to_string() == name)
    }
}

/// The in-progress marker's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingMarker {
    run_id: String,
    started_at: DateTime<Utc>,
    host: String,
    pid: u32,
}

/// A sink seen as a store of backups.
///
/// ```
/// # async fn demo() -> kars_backup_core::Result<()> {
/// use std::sync::Arc;
/// use kars_backup_core::{Repository, testing::InMemorySink};
/// let repo = Repository::new(Arc::new(InMemorySink::new()));
/// let listing = repo.list().await?;
/// assert!(listing.latest().is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Repository {
    sink: DynBackupSink,
    decryptor: Option<DynDecryptor>,
}

/// A repository is a view over its sink (what [`PlaintextPolicy`](crate::PlaintextPolicy)
/// checks: where the sink stores, and its description).
impl AsRef<DynBackupSink> for Repository {
    fn as_ref(&self) -> &DynBackupSink {
        &self.sink
    }
}

impl fmt::Debug for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("sink", &self.sink.describe())
            .field("decryptor", &self.decryptor)
            .finish()
    }
}

impl Repository {
    /// A repository over a sink.
    pub fn new(sink: DynBackupSink) -> Self {
        Repository {
            sink,
            decryptor: None,
        }
    }

    /// Uses these keys to read encrypted archives (restore, verify): see
    /// [`Decryptor`](crate::Decryptor) and the `kars-backup-encrypt` crate. Without them, reading
    /// an encrypted archive fails with [`Error::KeyMissing`] before anything is downloaded.
    pub fn with_decryptor(mut self, decryptor: DynDecryptor) -> Self {
        self.decryptor = Some(decryptor);
        self
    }

    /// The decryption keys given with [`Repository::with_decryptor`], if any.
    pub fn decryptor(&self) -> Option<&DynDecryptor> {
        self.decryptor.as_ref()
    }

    /// The sink underneath.
    pub fn sink(&self) -> &DynBackupSink {
        &self.sink
    }

    /// The sink's description (secrets redacted).
    pub fn describe(&self) -> String {
        self.sink.describe()
    }

    /// Whether the backups are stored on this host or off-site (the sink's
    /// [`placement`](crate::BackupSink::placement)).
    pub fn placement(&self) -> Placement {
        self.sink.placement()
    }

    /// Lists backups (committed, runbook, incomplete) and foreign objects.
    ///
    /// # Errors
    /// The sink's listing error.
    pub async fn list(&self) -> Result<Listing> {
        let objects = self.sink.list(None).await?;
        #[derive(Default)]
        struct Parts {
            archive: Option<ObjectMeta>,
            meta: Option<ObjectMeta>,
            pending: Option<ObjectMeta>,
        }
        let mut groups: BTreeMap<String, (BackupName, Parts)> = BTreeMap::new();
        let mut foreign = Vec::new();
        for obj in objects {
            let (base, role) = match classify_key(&obj.key) {
                // kars-backup's own files: neither backups nor foreign.
                KeyRole::Reserved => continue,
                KeyRole::Nested => {
                    foreign.push(obj);
                    continue;
                }
                KeyRole::Archive(b) => (b, 0),
                KeyRole::Manifest(b) => (b, 1),
                KeyRole::Pending(b) => (b, 2),
            };
            let Ok(name) = base.parse::<BackupName>() else {
                foreign.push(obj);
                continue;
            };
            let base = base.to_string();
            let entry = groups
                .entry(base)
                .or_insert_with(|| (name, Parts::default()));
            match role {
                0 => entry.1.archive = Some(obj),
                1 => entry.1.meta = Some(obj),
                _ => entry.1.pending = Some(obj),
            }
        }

        let sink = self.sink.clone();
        let mut entries: Vec<BackupEntry> = futures::stream::iter(groups.into_values())
            .map(|(name, parts)| {
                let sink = sink.clone();
                async move {
                    let key = name.manifest_name();
                    let manifest = match &parts.meta {
                        Some(_) => Some(
                            sink.get_bytes(&key)
                                .await
                                .map(|b| Manifest::from_json(&key, &b)),
                        ),
                        None => None,
                    };
                    classify(name, parts.archive, parts.pending, manifest)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        entries.sort_by(|a, b| a.time().cmp(&b.time()).then(a.name.cmp(&b.name)));
        Ok(Listing { entries, foreign })
    }

    /// Finds one backup by name.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such archive.
    pub async fn find(&self, name: &str) -> Result<BackupEntry> {
        let parsed: BackupName = name.parse()?;
        let archive = match self.sink.head(name).await {
            Ok(a) => Some(a),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let key = parsed.manifest_name();
        let manifest = match self.sink.get_bytes(&key).await {
            Ok(b) => Some(Ok(Manifest::from_json(&key, &b))),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let pending = match self.sink.head(&parsed.pending_name()).await {
            Ok(meta) => Some(meta),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if archive.is_none() && manifest.is_none() {
            return Err(Error::NotFound {
                what: format!("backup {name} in {}", self.describe()),
            });
        }
        Ok(classify(parsed, archive, pending, manifest))
    }

    /// The newest committed backup, if any.
    ///
    /// # Errors
    /// The sink's listing error.
    pub async fn latest(&self) -> Result<Option<BackupEntry>> {
        Ok(self.list().await?.latest().cloned())
    }

    /// Streams a backup's payload: checksum-verified (for committed backups), decrypted and
    /// decompressed.
    ///
    /// For an encrypted archive it returns only once the header was unwrapped with the
    /// repository's [decryptor](Repository::with_decryptor), so a missing or wrong key fails
    /// here, before anything reaches a staging target. The handle fails with
    /// [`Error::ChecksumMismatch`] when the stored bytes differ from the manifest and with
    /// [`Error::DecryptionFailed`] when the ciphertext fails authentication; the reader then
    /// sees an error instead of its end.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an incomplete backup; [`Error::KeyMissing`],
    /// [`Error::DecryptionFailed`]; the sink's errors.
    pub async fn open_payload(
        &self,
        entry: &BackupEntry,
        progress: DynProgress,
    ) -> Result<(
        PayloadReader,
        tokio::task::JoinHandle<Result<DownloadCheck>>,
    )> {
        let name = entry.name.to_string();
        if entry.kind == EntryKind::Incomplete || entry.archive.is_none() {
            return Err(Error::InvalidInput(format!(
                "backup {name} in {} is incomplete ({}); choose a committed backup (see `kars-backup list`)",
                self.describe(),
                entry.note.as_deref().unwrap_or("no archive")
            )));
        }
        let options = match &entry.manifest {
            Some(m) => DownloadOptions {
                name: name.clone(),
                compression: Some(m.archive.compression),
                encryption: m
                    .archive
                    .encryption
                    .as_ref()
                    .map(|e| (e.scheme, Some(e.clone()))),
                decryptor: self.decryptor.clone(),
                expected: Some(m.archive.digested()),
                payload_limit: Some(m.payload.size_bytes),
            },
            None => {
                // No manifest (a runbook archive, maybe encrypted by hand with age or gpg):
                // recognise encryption and codec from the content.
                let magic = self.sniff(&name).await?;
                let encryption = EncryptionScheme::detect(&magic);
                DownloadOptions {
                    name: name.clone(),
                    compression: match encryption {
                        Some(_) => None,
                        None => Some(Compression::detect(&magic)),
                    },
                    encryption: encryption.map(|s| (s, None)),
                    decryptor: self.decryptor.clone(),
                    expected: None,
                    payload_limit: None,
                }
            }
        };
        if let (Some((scheme, info)), None) = (&options.encryption, &self.decryptor) {
            return Err(Error::KeyMissing {
                name,
                reason: format!(
                    "it is encrypted with {scheme}{} and no decryption keys were given (library: Repository::with_decryptor)",
                    info.as_ref()
                        .map(|i| format!(" to {}", i.describe_recipients()))
                        .unwrap_or_default()
                ),
            });
        }
        progress.start("download", Some(entry.size()));
        let stream = self
            .sink
            .get(&name, GetOptions::default().with_size_hint(entry.size()))
            .await?;
        pipeline::open_download(stream, options, progress).await
    }

    async fn sniff(&self, name: &str) -> Result<Bytes> {
        let mut stream = self.sink.get(name, GetOptions::default()).await?;
        match stream.next().await {
            Some(chunk) => chunk,
            None => Ok(Bytes::new()),
        }
    }

    /// Picks a name not used yet in this repository: the time's name, or the next sequence.
    ///
    /// # Errors
    /// The sink's errors.
    pub async fn unused_name(&self, name: BackupName) -> Result<BackupName> {
        let mut candidate = name;
        loop {
            let archive_taken = exists(&self.sink, &candidate.to_string()).await?;
            let pending_taken = exists(&self.sink, &candidate.pending_name()).await?;
            let meta_taken = exists(&self.sink, &candidate.manifest_name()).await?;
            if !(archive_taken || pending_taken || meta_taken) {
                return Ok(candidate);
            }
            let next = candidate.sequence() + 1;
            candidate = candidate.with_sequence(next);
        }
    }

    /// Starts writing a backup: writes the `.pending` marker, then opens the archive's upload.
    ///
    /// # Errors
    /// The sink's errors; the marker is removed again if the upload cannot start.
    pub async fn begin(&self, name: &BackupName, run_id: &str) -> Result<Box<dyn Upload>> {
        let marker = PendingMarker {
            run_id: run_id.to_string(),
            started_at: Utc::now(),
            host: host_label(),
            pid: std::process::id(),
        };
        let body = serde_json::to_vec(&marker).expect("marker serialises");
        self.sink
            .put_bytes(&name.pending_name(), Bytes::from(body))
            .await?;
        // Marker first, then the lock check: a prune takes its lock first, then looks for
        // markers, so one of the two always sees the other.
        if let Some(lock) = live_lock(&self.sink).await? {
            let _ = self.sink.delete(&name.pending_name()).await;
            return Err(Error::generic(
                self.describe(),
                format!(
                    "a prune has been running here since {} (run {}); back up again when it has finished",
                    lock.started_at, lock.run_id
                ),
            ));
        }
        match self
            .sink
            .put(&name.to_string(), PutOptions::default())
            .await
        {
            Ok(u) => Ok(u),
            Err(e) => {
                let _ = self.sink.delete(&name.pending_name()).await;
                Err(e)
            }
        }
    }

    /// Finishes a backup: completes the archive upload, checks its size, writes the manifest
    /// last, then removes the marker.
    ///
    /// # Errors
    /// The sink's errors; on failure the archive is removed again and nothing is listed.
    pub async fn commit(&self, upload: Box<dyn Upload>, manifest: &Manifest) -> Result<()> {
        let name: BackupName = manifest.name.parse()?;
        let result = async {
            let meta = upload.complete().await?;
            if meta.size != manifest.archive.size_bytes {
                return Err(Error::generic(
                    self.describe(),
                    format!(
                        "stored {} bytes for {name} but the pipeline produced {}",
                        meta.size, manifest.archive.size_bytes
                    ),
                ));
            }
            self.sink
                .put_bytes(&name.manifest_name(), Bytes::from(manifest.to_json()))
                .await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                if let Err(e) = self.sink.delete(&name.pending_name()).await {
                    tracing::warn!(backup = %name, error = %e, "backup committed but its .pending marker could not be removed");
                }
                Ok(())
            }
            Err(e) => {
                let _ = self.sink.delete(&name.manifest_name()).await;
                let _ = self.sink.delete(&name.to_string()).await;
                let _ = self.sink.delete(&name.pending_name()).await;
                Err(e)
            }
        }
    }

    /// Reads a committed backup's archive back and checks its size and SHA-256 against the
    /// manifest (read-back verification after an upload).
    ///
    /// # Errors
    /// [`Error::ChecksumMismatch`] when the stored bytes differ; the sink's errors.
    pub async fn verify_stored(&self, manifest: &Manifest) -> Result<()> {
        let options = GetOptions::default().with_size_hint(manifest.archive.size_bytes);
        let mut stream = self.sink.get(&manifest.name, options).await?;
        // Hashing on its own thread overlaps with receiving.
        let expected = manifest.archive.digested();
        let mut hasher = BackgroundHasher::new(Digester::checking(Some(&expected)));
        while let Some(chunk) = stream.next().await {
            hasher.update(chunk?).await?;
        }
        hasher.finish().await?.check(
            &expected,
            format!("{} in {}", manifest.name, self.describe()),
        )
    }

    /// Abandons a backup that failed: aborts the upload and removes the marker.
    pub async fn abandon(&self, name: &BackupName, upload: Option<Box<dyn Upload>>) {
        if let Some(u) = upload {
            if let Err(e) = u.abort().await {
                tracing::warn!(backup = %name, error = %e, destination = %self.describe(), "could not abort upload");
            }
        }
        let _ = self.sink.delete(&name.to_string()).await;
        let _ = self.sink.delete(&name.pending_name()).await;
    }

    /// Deletes a backup: a `.pending` marker, the manifest (so nothing half-deleted is listed as
    /// committed), the archive, then the marker.
    ///
    /// # Errors
    /// The sink's errors.
    pub async fn delete(&self, name: &BackupName) -> Result<()> {
        // A marker first: if the deletion is interrupted after the manifest is gone, the archive
        // is an incomplete backup that prune removes later, not a "runbook archive" to keep.
        let marker = serde_json::json!({ "deleting": true, "at": Utc::now() });
        self.sink
            .put_bytes(&name.pending_name(), Bytes::from(marker.to_string()))
            .await?;
        self.sink.delete(&name.manifest_name()).await?;
        self.sink.delete(&name.to_string()).await?;
        self.sink.delete(&name.pending_name()).await
    }

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
                .get(
                    &name.to_string(),
                    GetOptions::default().with_size_hint(manifest.archive.size_bytes),
                )
                .await?;
            // Hashing on its own thread overlaps with receiving and writing.
            let expected = manifest.archive.digested();
            let mut hasher = BackgroundHasher::new(Digester::checking(Some(&expected)));
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                hasher.update(chunk.clone()).await?;
                upload.put_part(chunk).await?;
            }
            let stored = hasher.finish().await?;
            stored.check(&expected, format!("{name} in {}", self.describe()))?;
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

async fn exists(sink: &DynBackupSink, key: &str) -> Result<bool> {
    match sink.head(key).await {
        Ok(_) => Ok(true),
        Err(Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn classify(
    name: BackupName,
    archive: Option<ObjectMeta>,
    pending_marker: Option<ObjectMeta>,
    manifest: Option<Result<Result<Manifest>>>,
) -> BackupEntry {
    let pending = pending_marker.is_some();
    let mut entry = BackupEntry {
        name,
        kind: EntryKind::Incomplete,
        archive,
        manifest: None,
        note: None,
        pending: pending_marker,
    };
    match manifest {
        Some(Ok(Ok(m))) => {
            if entry.archive.is_none() {
                entry.note = Some("manifest without archive".into());
            } else if m.name != entry.name.to_string() {
                entry.note = Some(format!("manifest names another archive ({})", m.name));
            } else {
                entry.kind = EntryKind::Committed;
            }
            entry.manifest = Some(m);
        }
        Some(Ok(Err(e @ Error::UnsupportedVersion { .. }))) => {
            entry.note = Some(e.to_string());
        }
        Some(Ok(Err(_))) if !pending && entry.archive.is_some() => {
            entry.kind = EntryKind::Runbook;
            entry.note = Some("runbook archive with a text .meta; not verified".into());
        }
        Some(Ok(Err(e))) => entry.note = Some(e.to_string()),
        Some(Err(e)) => entry.note = Some(format!("manifest unreadable: {e}")),
        None if pending => {
            entry.note = Some("unfinished: the run that wrote it did not commit".into());
        }
        None if entry.archive.is_some() => {
            entry.kind = EntryKind::Runbook;
            entry.note = Some("no manifest (runbook archive); not verified".into());
        }
        None => entry.note = Some("no archive".into()),
    }
    entry
}
