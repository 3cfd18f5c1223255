//! [`ObjectStoreSink`]: any [`object_store::ObjectStore`] as a [`BackupSink`].
//!
//! Uploads stream: bytes are buffered up to one part (8 MiB by default); an object smaller than
//! that is written with one `PUT`, a larger one as a multipart upload with at most
//! `max_concurrency` parts in flight, so memory stays near `(max_concurrency + 2) × part_size`
//! whatever the archive's size. A multipart upload is invisible until it completes (S3
//! `CompleteMultipartUpload`, Azure `Put Block List`), is aborted on failure, on
//! [`Upload::abort`] and (in the background) when dropped. Retries with backoff are
//! object_store's [`object_store::RetryConfig`], set by the backend builders.
//!
//! Downloads of large objects whose size the caller hints (restores, copies, read-back checks)
//! are parallel ranged GETs delivered in order ([`crate::ranged`]), with part size and
//! concurrency from [`TransferOptions`] (chosen from the object's size unless set).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use kars_backup_core::sink::{GetOptions, PutOptions, validate_key};
use kars_backup_core::{BackupSink, ByteStream, Error, ObjectMeta, Result, Upload};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::ranged::get_in_parts;
use crate::transfer::TransferOptions;

/// Default size of one multipart part (S3 needs at least 5 MiB for all but the last).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// Default number of parts uploaded at the same time by one upload.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;

/// Any [`ObjectStore`] under a key prefix, as a [`BackupSink`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kars_backup_core::Result<()> {
/// use std::sync::Arc;
/// use kars_backup_core::SinkExt;
/// use kars_backup_storage::ObjectStoreSink;
/// let store = Arc::new(object_store::memory::InMemory::new());
/// let sink = ObjectStoreSink::new(store, "memory://")?.with_prefix("backups/kars")?;
/// sink.put_bytes("a.txt", bytes::Bytes::from_static(b"hi")).await?;
/// assert_eq!(sink.get_bytes("a.txt").await?.as_ref(), b"hi");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    root: Option<Path>,
    description: String,
    part_size: usize,
    max_concurrency: usize,
    transfer: TransferOptions,
}

impl fmt::Debug for ObjectStoreSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreSink")
            .field("description", &self.description)
            .field("part_size", &self.part_size)
            .field("max_concurrency", &self.max_concurrency)
            .field("transfer", &self.transfer)
            .finish_non_exhaustive()
    }
}

impl ObjectStoreSink {
    /// A sink over the whole store. `description` is what [`BackupSink::describe`] returns: it
    /// must carry no secret (e.g. `s3://bucket`).
    ///
    /// # Errors
    /// None today; fallible for symmetry with the builders.
    pub fn new(store: Arc<dyn ObjectStore>, description: impl Into<String>) -> Result<Self> {
        Ok(ObjectStoreSink {
            store,
            root: None,
            description: description.into(),
            part_size: DEFAULT_PART_SIZE,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            transfer: TransferOptions::default(),
        })
    }

    /// Keeps every key under `prefix` (a directory: `kars` never sees `kars-old/…`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a prefix with empty, `.` or `..` parts.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() {
            self.root = None;
            return Ok(self);
        }
        validate_key(trimmed)?;
        self.root = Some(parse_path(trimmed)?);
        self.description = if self.description.ends_with("://") {
            format!("{}{trimmed}", self.description)
        } else {
            format!("{}/{trimmed}", self.description.trim_end_matches('/'))
        };
        Ok(self)
    }

    /// Size of each part of a multipart upload (at least 5 MiB for S3).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    /// How many parts of one upload are sent at the same time.
    pub fn with_max_concurrency(mut self, parts: usize) -> Self {
        self.max_concurrency = parts.max(1);
        self
    }

    /// Part sizes and concurrency of uploads and ranged downloads; the upload options that are
    /// set replace [`Self::with_part_size`] and [`Self::with_max_concurrency`].
    pub fn with_transfer(mut self, transfer: TransferOptions) -> Self {
        if let Some(p) = transfer.upload_part_size {
            self = self.with_part_size(usize::try_from(p.bytes()).unwrap_or(usize::MAX));
        }
        if let Some(n) = transfer.upload_concurrency {
            self = self.with_max_concurrency(n);
        }
        self.transfer = transfer;
        self
    }

    /// The transfer options (what is not set is chosen automatically).
    pub fn transfer(&self) -> &TransferOptions {
        &self.transfer
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn location(&self, key: &str) -> Result<Path> {
        validate_key(key)?;
        match &self.root {
            Some(root) => parse_path(&format!("{root}/{key}")),
            None => parse_path(key),
        }
    }

    fn what(&self, key: &str) -> String {
        if self.description.ends_with('/') {
            format!("{}{key}", self.description)
        } else {
            format!("{}/{key}", self.description)
        }
    }

    fn map_err(&self, key: &str, e: object_store::Error) -> Error {
        map_store_error(&self.description, &self.what(key), e)
    }
}

fn parse_path(p: &str) -> Result<Path> {
    Path::parse(p).map_err(|e| Error::InvalidInput(format!("invalid object path {p:?}: {e}")))
}

pub(crate) fn map_store_error(description: &str, what: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound {
            what: what.to_string(),
        },
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            Error::AlreadyExists {
                what: what.to_string(),
            }
        }
        object_store::Error::InvalidPath { source } => {
            Error::InvalidInput(format!("invalid object path for {what}: {source}"))
        }
        other => Error::generic(description.to_string(), other),
    }
}

struct ObjectStoreUpload {
    sink: ObjectStoreSink,
    location: Path,
    key: String,
    /// Bytes held before the multipart upload starts (less than one part).
    pending: Vec<Bytes>,
    pending_len: usize,
    writer: Option<WriteMultipart>,
    size: u64,
    if_not_exists: bool,
    failed: bool,
}

impl fmt::Debug for ObjectStoreUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreUpload")
            .field("key", &self.key)
            .field("size", &self.size)
            .field("multipart", &self.writer.is_some())
            .finish_non_exhaustive()
    }
}

impl ObjectStoreUpload {
    async fn abort_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.abort().await {
                tracing::warn!(destination = %self.sink.description, key = %self.key, error = %e, "could not abort a multipart upload; the store's lifecycle rules must remove its parts");
            }
        }
    }

    async fn start_multipart(&mut self) -> Result<()> {
        let upload = self
            .sink
            .store
            .put_multipart(&self.location)
            .await
            .map_err(|e| self.sink.map_err(&self.key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.sink.part_size);
        for b in self.pending.drain(..) {
            w.put(b);
        }
        self.pending_len = 0;
        self.writer = Some(w);
        Ok(())
    }

    async fn finish(&mut self) -> Result<ObjectMeta> {
        if self.failed {
            return Err(Error::generic(
                self.sink.description.clone(),
                format!("upload of {} failed earlier; start a new one", self.key),
            ));
        }
        if self.if_not_exists {
            match self.sink.store.head(&self.location).await {
                Ok(_) => {
                    self.abort_writer().await;
                    return Err(Error::AlreadyExists {
                        what: self.sink.what(&self.key),
                    });
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    self.abort_writer().await;
                    return Err(self.sink.map_err(&self.key, e));
                }
            }
        }
        match self.writer.take() {
            // `finish` aborts the multipart upload itself when a part or the completion fails.
            Some(w) => w
                .finish()
                .await
                .map_err(|e| self.sink.map_err(&self.key, e))?,
            None => {
                let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
                self.sink
                    .store
                    .put(&self.location, payload)
                    .await
                    .map_err(|e| self.sink.map_err(&self.key, e))?
            }
        };
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            last_modified: Some(chrono::Utc::now()),
        })
    }
}

impl Drop for ObjectStoreUpload {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            // Dropped without complete/abort: the parts are invisible, but abort the multipart
            // upload so the store keeps no orphan parts.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}

#[async_trait]
impl Upload for ObjectStoreUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        if self.failed {
            return Err(Error::generic(
                self.sink.description.clone(),
                format!("upload of {} failed earlier; start a new one", self.key),
            ));
        }
        self.size += data.len() as u64;
        if self.writer.is_none() {
            self.pending_len += data.len();
            self.pending.push(data);
            if self.pending_len < self.sink.part_size {
                return Ok(());
            }
            if let Err(e) = self.start_multipart().await {
                self.failed = true;
                return Err(e);
            }
            return Ok(());
        }
        let max = self.sink.max_concurrency;
        let w = self.writer.as_mut().expect("checked above");
        if let Err(e) = w.wait_for_capacity(max).await {
            self.failed = true;
            self.abort_writer().await;
            return Err(self.sink.map_err(&self.key, e));
        }
        w.put(data);
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        self.finish().await
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.pending.clear();
        if let Some(w) = self.writer.take() {
            w.abort()
                .await
                .map_err(|e| self.sink.map_err(&self.key, e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl BackupSink for ObjectStoreSink {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn put(&self, key: &str, options: PutOptions) -> Result<Box<dyn Upload>> {
        let location = self.location(key)?;
        Ok(Box::new(ObjectStoreUpload {
            sink: self.clone(),
            location,
            key: key.to_string(),
            pending: Vec::new(),
            pending_len: 0,
            writer: None,
            size: 0,
            if_not_exists: options.if_not_exists,
            failed: false,
        }))
    }

    async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream> {
        let location = self.location(key)?;
        let this: kars_backup_core::DynBackupSink = Arc::new(self.clone());
        if let Some(s) = get_in_parts(this, key, &options, &self.transfer).await? {
            return Ok(s);
        }
        let mut opts = object_store::GetOptions::default();
        if let Some(r) = options.range {
            if r.start >= r.end {
                // An empty range: object_store refuses it; answer it here after checking existence.
                self.head(key).await?;
                return Ok(Box::pin(futures::stream::empty()));
            }
            opts.range = Some(object_store::GetRange::Bounded(r));
        }
        let result = self
            .store
            .get_opts(&location, opts)
            .await
            .map_err(|e| self.map_err(key, e))?;
        let this = self.clone();
        let key = key.to_string();
        Ok(Box::pin(
            result.into_stream().map_err(move |e| this.map_err(&key, e)),
        ))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let location = self.location(key)?;
        let meta = self
            .store
            .head(&location)
            .await
            .map_err(|e| self.map_err(key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: meta.size,
            last_modified: Some(meta.last_modified),
        })
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.unwrap_or("");
        // object_store lists by whole path segments: list the directory part of the prefix and
        // filter on the rest.
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let dir = dir.trim_matches('/');
        let list_path = match (&self.root, dir.is_empty()) {
            (None, true) => None,
            (None, false) => Some(parse_path(dir)?),
            (Some(root), true) => Some(root.clone()),
            (Some(root), false) => Some(parse_path(&format!("{root}/{dir}"))?),
        };
        let root = self.root.as_ref().map(|r| format!("{r}/"));
        let mut out: Vec<ObjectMeta> = self
            .store
            .list(list_path.as_ref())
            .map_err(|e| self.map_err(prefix, e))
            .try_filter_map(|m| {
                let loc = m.location.to_string();
                let key = match &root {
                    Some(r) => loc.strip_prefix(r.as_str()).map(str::to_string),
                    None => Some(loc),
                };
                let item = key.filter(|k| k.starts_with(prefix)).map(|key| ObjectMeta {
                    key,
                    size: m.size,
                    last_modified: Some(m.last_modified),
                });
                futures::future::ready(Ok(item))
            })
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let location = self.location(key)?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kars_backup_core::SinkExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_object_store_conforms() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let sink = ObjectStoreSink::new(store, "memory://")
            .unwrap()
            .with_prefix("root/kars")
            .unwrap()
            .with_part_size(5 * 1024 * 1024);
        kars_backup_core::testing::sink_conformance(&sink)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefix_is_a_directory_boundary() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let a = ObjectStoreSink::new(store.clone(), "memory://")
            .unwrap()
            .with_prefix("kars")
            .unwrap();
        let b = ObjectStoreSink::new(store, "memory://")
            .unwrap()
            .with_prefix("kars-old")
            .unwrap();
        b.put_bytes("x", Bytes::from_static(b"1")).await.unwrap();
        a.put_bytes("y", Bytes::from_static(b"2")).await.unwrap();
        let keys: Vec<_> = a
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["y"]);
        assert_eq!(a.describe(), "memory://kars");
    }
}
