//! Google Cloud Storage over the JSON API, through the `gcloud-storage` crate.
//!
//! Why not object_store: its GCS client writes through the XML API, which no emulator available
//! offline implements, so it could not be tested for real; this sink is tested in CI against
//! fake-gcs-server (see `scripts/services.sh`).
//!
//! URL: `gs://bucket/prefix`, optional `?endpoint=http://host:port`, `upload_part_size=…` (the
//! resumable-upload chunk), `download_part_size=…` and `download_concurrency=…` (parallel ranged
//! downloads, see [`TransferOptions`]). Without an endpoint,
//! `STORAGE_EMULATOR_HOST` (the variable Google's own libraries read, e.g.
//! `http://127.0.0.1:4443`) selects an emulator, anonymously; otherwise credentials come from
//! Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the gcloud user
//! credentials, or the metadata server).
//!
//! Uploads: one request for objects under one chunk; larger ones are resumable uploads sent in
//! 8 MiB chunks of unknown total size (the size is given with the last chunk), so memory stays
//! near one chunk. A chunk that fails is retried (with backoff) from the offset the service
//! confirms. The object appears only when the last chunk is accepted; an aborted or dropped
//! upload cancels its session.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::bucket_url::BucketUrl;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::Error as GcsError;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::http::resumable_upload_client::{
    ChunkSize, ResumableUploadClient, UploadStatus,
};
use kars_backup_core::sink::{GetOptions, PutOptions, validate_key};
use kars_backup_core::{BackupSink, ByteStream, Error, ObjectMeta, Result, Upload};
use tokio::sync::OnceCell;

use crate::ranged::get_in_parts;
use crate::transfer::TransferOptions;

/// Size of one resumable-upload chunk (a multiple of 256 KiB, as the API requires).
pub const CHUNK_SIZE: usize = 8 * 1024 * 1024;
const RETRIES: u32 = 5;

/// Builds a [`GcsSink`].
///
/// ```
/// use kars_backup_core::BackupSink;
/// use kars_backup_storage::gcs::GcsBuilder;
/// let sink = GcsBuilder::from_url("gs://backups/kars?endpoint=http://127.0.0.1:4443")
///     .unwrap()
///     .build()
///     .unwrap();
/// assert_eq!(sink.describe(), "gs://backups/kars");
/// ```
#[derive(Debug, Clone, Default)]
pub struct GcsBuilder {
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    chunk_size: Option<usize>,
    transfer: TransferOptions,
}

impl GcsBuilder {
    /// A builder for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        GcsBuilder {
            bucket: bucket.into(),
            ..Default::default()
        }
    }

    /// Parses `gs://bucket/prefix?endpoint=…`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for another scheme, no bucket or an unknown parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = BucketUrl::parse(url, &["gs", "gcs"])?;
        let mut b = GcsBuilder::new(parsed.bucket).with_prefix(parsed.prefix);
        for (k, v) in parsed.query {
            match k.as_str() {
                "endpoint" => b.endpoint = Some(v),
                other => b.transfer.take_query(
                    other,
                    &v,
                    "a gs:// URL",
                    "endpoint",
                    "or set STORAGE_EMULATOR_HOST; credentials come from GOOGLE_APPLICATION_CREDENTIALS",
                )?,
            }
        }
        b.check_transfer()?;
        Ok(b)
    }

    builder_setters!(prefix, endpoint);

    /// Resumable-upload chunk size, rounded up to a multiple of 256 KiB (default 8 MiB).
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        let q = 256 * 1024;
        self.chunk_size = Some(bytes.max(1).div_ceil(q) * q);
        self
    }

    /// Part sizes and concurrency: `upload_part_size` is the resumable-upload chunk (rounded up to
    /// 256 KiB), the download options choose parallel ranged downloads; a resumable upload sends
    /// one chunk at a time, so `upload_concurrency` is refused. Options set here win over the URL's.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an upload concurrency.
    pub fn with_transfer(mut self, transfer: TransferOptions) -> Result<Self> {
        self.transfer = transfer.or(self.transfer);
        self.check_transfer()?;
        Ok(self)
    }

    fn check_transfer(&mut self) -> Result<()> {
        if self.transfer.upload_concurrency.is_some_and(|n| n != 1) {
            return Err(Error::InvalidInput(
                "upload_concurrency does not apply to gs:// destinations: a resumable upload sends one chunk at a time".into(),
            ));
        }
        if let Some(p) = self.transfer.upload_part_size {
            let q = 256 * 1024;
            let bytes = usize::try_from(p.bytes()).unwrap_or(usize::MAX);
            self.chunk_size = Some(bytes.max(1).div_ceil(q) * q);
        }
        Ok(())
    }

    /// Builds the sink. No request is made; credentials are loaded by the first operation.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid prefix.
    pub fn build(self) -> Result<GcsSink> {
        let prefix = self.prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            validate_key(&prefix)?;
        }
        let endpoint = self.endpoint.or_else(|| {
            std::env::var("STORAGE_EMULATOR_HOST")
                .ok()
                .filter(|s| !s.is_empty())
                .map(|h| {
                    if h.contains("://") {
                        h
                    } else {
                        format!("http://{h}")
                    }
                })
        });
        let description = if prefix.is_empty() {
            format!("gs://{}", self.bucket)
        } else {
            format!("gs://{}/{prefix}", self.bucket)
        };
        Ok(GcsSink {
            inner: Arc::new(Inner {
                bucket: self.bucket,
                prefix,
                endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
                description,
                chunk_size: self.chunk_size.unwrap_or(CHUNK_SIZE),
                transfer: self.transfer,
                client: OnceCell::new(),
            }),
        })
    }
}

/// A Google Cloud Storage bucket (under a prefix) as a [`BackupSink`].
#[derive(Clone)]
pub struct GcsSink {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    description: String,
    chunk_size: usize,
    transfer: TransferOptions,
    client: OnceCell<Client>,
}

impl fmt::Debug for GcsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsSink")
            .field("description", &self.inner.description)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

fn status_of(e: &GcsError) -> Option<u16> {
    match e {
        GcsError::Response(r) => Some(r.code),
        GcsError::HttpClient(e) | GcsError::RawResponse(e, _) => e.status().map(|s| s.as_u16()),
        _ => None,
    }
}

fn transient(e: &GcsError) -> bool {
    match status_of(e) {
        Some(code) => matches!(code, 408 | 429 | 500..=599),
        None => matches!(e, GcsError::HttpClient(_) | GcsError::HttpMiddleware(_)),
    }
}

impl GcsSink {
    async fn client(&self) -> Result<&Client> {
        self.inner
            .client
            .get_or_try_init(|| async {
                let config = match &self.inner.endpoint {
                    Some(e) => ClientConfig {
                        storage_endpoint: e.clone(),
                        ..Default::default()
                    }
                    .anonymous(),
                    None => ClientConfig::default().with_auth().await.map_err(|e| {
                        Error::generic(
                            self.inner.description.clone(),
                            format!("cannot load Google Cloud credentials (set GOOGLE_APPLICATION_CREDENTIALS, or STORAGE_EMULATOR_HOST for an emulator): {e}"),
                        )
                    })?,
                };
                Ok(Client::new(config))
            })
            .await
    }

    fn object(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(if self.inner.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.inner.prefix)
        })
    }

    fn what(&self, key: &str) -> String {
        format!("{}/{key}", self.inner.description)
    }

    fn map_err(&self, key: &str, e: GcsError) -> Error {
        match status_of(&e) {
            Some(404) => Error::NotFound {
                what: self.what(key),
            },
            Some(412) => Error::AlreadyExists {
                what: self.what(key),
            },
            _ => Error::generic(self.inner.description.clone(), e),
        }
    }
}

/// Runs `op` again on transient failures, with backoff (200 ms doubling), at most [`RETRIES`] times.
async fn with_retry<T, F, Fut>(mut op: F) -> std::result::Result<T, GcsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, GcsError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if transient(&e) && attempt < RETRIES => {
                tracing::debug!(error = %e, attempt, "GCS request failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
            other => return other,
        }
    }
}

struct GcsUpload {
    sink: GcsSink,
    key: String,
    object: String,
    buf: BytesMut,
    /// Bytes the service has accepted so far.
    sent: u64,
    session: Option<ResumableUploadClient>,
    if_not_exists: bool,
    failed: bool,
}

impl fmt::Debug for GcsUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsUpload")
            .field("key", &self.key)
            .field("sent", &self.sent)
            .field("resumable", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl GcsUpload {
    fn request(&self) -> UploadObjectRequest {
        UploadObjectRequest {
            bucket: self.sink.inner.bucket.clone(),
            if_generation_match: self.if_not_exists.then_some(0),
            ..Default::default()
        }
    }

    fn media(&self) -> UploadType {
        let mut media = Media::new(self.object.clone());
        media.content_type = "application/octet-stream".into();
        UploadType::Simple(media)
    }

    /// Sends `data` at offset `self.sent`; `total` is `Some` for the last chunk.
    async fn send_chunk(&mut self, data: Bytes, total: Option<u64>) -> Result<()> {
        if self.session.is_none() {
            let client = self.sink.client().await?;
            let (req, media) = (self.request(), self.media());
            let session = with_retry(|| client.prepare_resumable_upload(&req, &media))
                .await
                .map_err(|e| self.sink.map_err(&self.key, e))?;
            self.session = Some(session);
        }
        let session = self.session.clone().expect("set above");
        let start = self.sent;
        let end = start + data.len() as u64; // exclusive
        let mut offset = start;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            let part = data.slice((offset - start) as usize..);
            let range = if part.is_empty() {
                ChunkSize::new(offset, offset, total)
            } else {
                ChunkSize::new(offset, end - 1, total)
            };
            let result = session.upload_multiple_chunk(part, &range).await;
            let err = match result {
                Ok(UploadStatus::Ok(_)) if total.is_some() => {
                    self.sent = end;
                    return Ok(());
                }
                Ok(UploadStatus::ResumeIncomplete(r))
                    if total.is_none() && r.last_byte + 1 >= end =>
                {
                    self.sent = end;
                    return Ok(());
                }
                Ok(other) => {
                    // Accepted less than sent: resend the rest from the confirmed offset.
                    let confirmed = match other {
                        UploadStatus::ResumeIncomplete(r) => r.last_byte + 1,
                        UploadStatus::NotStarted => 0,
                        UploadStatus::Ok(_) => {
                            return Err(Error::generic(
                                self.sink.inner.description.clone(),
                                format!(
                                    "GCS finished the upload of {} before its last chunk",
                                    self.key
                                ),
                            ));
                        }
                    };
                    if confirmed < start || confirmed > end {
                        return Err(Error::generic(
                            self.sink.inner.description.clone(),
                            format!(
                                "GCS confirmed {confirmed} bytes of {}, expected {start}..{end}",
                                self.key
                            ),
                        ));
                    }
                    offset = confirmed;
                    None
                }
                Err(e) => Some(e),
            };
            if let Some(e) = err {
                if !transient(&e) || attempt >= RETRIES {
                    return Err(self.sink.map_err(&self.key, e));
                }
                tracing::debug!(error = %e, attempt, key = %self.key, "GCS chunk failed; asking the session where to resume");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
                match session.status(None).await {
                    Ok(UploadStatus::ResumeIncomplete(r)) => offset = (r.last_byte + 1).max(start),
                    Ok(UploadStatus::NotStarted) => offset = start,
                    Ok(UploadStatus::Ok(_)) if total.is_some() => {
                        self.sent = end;
                        return Ok(());
                    }
                    _ => offset = start,
                }
                if offset > end {
                    offset = end;
                }
            } else {
                attempt += 1;
                if attempt > RETRIES * 2 {
                    return Err(Error::generic(
                        self.sink.inner.description.clone(),
                        format!(
                            "GCS keeps accepting only part of the chunks of {}",
                            self.key
                        ),
                    ));
                }
            }
        }
    }

    async fn finish(&mut self) -> Result<ObjectMeta> {
        let rest = self.buf.split().freeze();
        let total = self.sent + rest.len() as u64;
        if self.session.is_none() {
            let client = self.sink.client().await?;
            let (req, media) = (self.request(), self.media());
            with_retry(|| client.upload_object(&req, rest.clone(), &media))
                .await
                .map_err(|e| self.sink.map_err(&self.key, e))?;
        } else {
            self.send_chunk(rest, Some(total)).await?;
            self.session = None;
        }
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: total,
            last_modified: Some(chrono::Utc::now()),
        })
    }

    async fn cancel(&mut self) -> Result<()> {
        if let Some(s) = self.session.take() {
            s.cancel()
                .await
                .map_err(|e| self.sink.map_err(&self.key, e))?;
        }
        Ok(())
    }
}

impl Drop for GcsUpload {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = s.cancel().await;
                });
            }
        }
    }
}

#[async_trait]
impl Upload for GcsUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        if self.failed {
            return Err(Error::generic(
                self.sink.inner.description.clone(),
                format!("upload of {} failed earlier; start a new one", self.key),
            ));
        }
        self.buf.extend_from_slice(&data);
        let chunk = self.sink.inner.chunk_size;
        // Keep at least one byte back so the last chunk (with the total size) is never empty
        // unless the object is.
        while self.buf.len() > chunk {
            let part = self.buf.split_to(chunk).freeze();
            if let Err(e) = self.send_chunk(part, None).await {
                self.failed = true;
                let _ = self.cancel().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        if self.failed {
            return Err(Error::generic(
                self.sink.inner.description.clone(),
                format!("upload of {} failed earlier; start a new one", self.key),
            ));
        }
        match self.finish().await {
            Ok(m) => Ok(m),
            Err(e) => {
                let _ = self.cancel().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.buf.clear();
        self.cancel().await
    }
}

#[async_trait]
impl BackupSink for GcsSink {
    fn describe(&self) -> String {
        self.inner.description.clone()
    }

    async fn put(&self, key: &str, options: PutOptions) -> Result<Box<dyn Upload>> {
        let object = self.object(key)?;
        Ok(Box::new(GcsUpload {
            sink: self.clone(),
            key: key.to_string(),
            object,
            buf: BytesMut::new(),
            sent: 0,
            session: None,
            if_not_exists: options.if_not_exists,
            failed: false,
        }))
    }

    async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream> {
        let object = self.object(key)?;
        let this: kars_backup_core::DynBackupSink = Arc::new(self.clone());
        let transfer = self.inner.transfer;
        if let Some(s) = get_in_parts(this, key, &options, &transfer).await? {
            return Ok(s);
        }
        let client = self.client().await?;
        let req = GetObjectRequest {
            bucket: self.inner.bucket.clone(),
            object,
            ..Default::default()
        };
        let range = match &options.range {
            Some(r) if r.start >= r.end => {
                self.head(key).await?;
                return Ok(Box::pin(futures::stream::empty()));
            }
            Some(r) => Range(Some(r.start), Some(r.end - 1)),
            None => Range::default(),
        };
        let stream = with_retry(|| client.download_streamed_object(&req, &range))
            .await
            .map_err(|e| self.map_err(key, e))?;
        let this = self.clone();
        let key = key.to_string();
        Ok(Box::pin(stream.map_err(move |e| this.map_err(&key, e))))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let object = self.object(key)?;
        let client = self.client().await?;
        let req = GetObjectRequest {
            bucket: self.inner.bucket.clone(),
            object,
            ..Default::default()
        };
        let o = with_retry(|| client.get_object(&req))
            .await
            .map_err(|e| self.map_err(key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: o.size.max(0) as u64,
            last_modified: o
                .updated
                .and_then(|t| chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())),
        })
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let client = self.client().await?;
        let root = if self.inner.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.inner.prefix)
        };
        let full = format!("{root}{}", prefix.unwrap_or(""));
        let mut out = Vec::new();
        let mut page_token = None;
        loop {
            let req = ListObjectsRequest {
                bucket: self.inner.bucket.clone(),
                prefix: (!full.is_empty()).then(|| full.clone()),
                page_token: page_token.clone(),
                max_results: Some(1000),
                ..Default::default()
            };
            let page = with_retry(|| client.list_objects(&req))
                .await
                .map_err(|e| self.map_err(prefix.unwrap_or(""), e))?;
            for o in page.items.unwrap_or_default() {
                if let Some(key) = o.name.strip_prefix(&root) {
                    out.push(ObjectMeta {
                        key: key.to_string(),
                        size: o.size.max(0) as u64,
                        last_modified: o.updated.and_then(|t| {
                            chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())
                        }),
                    });
                }
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => page_token = Some(t),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let object = self.object(key)?;
        let client = self.client().await?;
        let req = DeleteObjectRequest {
            bucket: self.inner.bucket.clone(),
            object,
            ..Default::default()
        };
        match with_retry(|| client.delete_object(&req)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.map_err(key, e)),
        }
    }
}
