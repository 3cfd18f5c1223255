//! [`BackupSink`]: one place that stores bytes under keys.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::tier::Placement;

/// A stream of bytes read from a sink.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A shared, type-erased sink.
pub type DynBackupSink = Arc<dyn BackupSink>;

/// What a sink knows about one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key, relative to the sink's root, with `/` separators.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written, if the backend knows.
    pub last_modified: Option<DateTime<Utc>>,
}

/// Options of [`BackupSink::put`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PutOptions {
    /// Fail with [`Error::AlreadyExists`] if the key exists (best effort on backends without
    /// conditional writes).
    pub if_not_exists: bool,
}

/// Options of [`BackupSink::get`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct GetOptions {
    /// Read only this byte range (`start..end`, end exclusive).
    pub range: Option<std::ops::Range<u64>>,
    /// The object's size, when the caller knows it (from a listing or a manifest). Only a hint:
    /// a sink may read a large object as parallel ranged requests when it is given (it still
    /// asks the store for the real size), and what the stream yields is the same either way.
    pub size_hint: Option<u64>,
}

impl GetOptions {
    /// Reads only `range` (`start..end`, end exclusive).
    pub fn with_range(mut self, range: std::ops::Range<u64>) -> Self {
        self.range = Some(range);
        self
    }

    /// Tells the sink the object's expected size (see [`GetOptions::size_hint`]).
    pub fn with_size_hint(mut self, size: u64) -> Self {
        self.size_hint = Some(size);
        self
    }
}

/// One place that stores bytes under keys: local disk, an object store, a git repository.
///
/// Nothing here is backup-specific; [`crate::Repository`] adds names, manifests and the commit
/// protocol on top. A downstream team adds a backend by implementing these methods and running
/// `kars_backup_core::testing::sink_conformance` against it.
///
/// # Contract
/// - **Atomic put**: an upload is invisible under its key until [`Upload::complete`] returns; an
///   aborted or dropped upload leaves nothing under the key (a previous object stays as it was).
///   Completing an upload over an existing key replaces it.
/// - **Not found**: `get`, `head` of a missing key return [`Error::NotFound`].
/// - **Delete** is idempotent: deleting a missing key is `Ok(())`.
/// - **List** returns every object whose key starts with the prefix, sorted by key, with no
///   duplicates, across any number of backend pages. A prefix ending in `/` is a directory
///   boundary; with `None` everything under the sink's root is listed. Temporary objects of
///   unfinished uploads are never listed.
/// - Keys are relative, `/`-separated, and contain no `..` component or leading `/`.
/// - **Placement**: [`BackupSink::placement`] says whether the bytes stay on this host. Only a
///   sink that does (a local directory) returns [`Placement::Local`]; the default,
///   [`Placement::Cloud`], makes the sink off-site, where backups and copies refuse to store an
///   unencrypted archive unless the caller opts out (see [`crate::PlaintextPolicy`]).
#[async_trait]
pub trait BackupSink: Send + Sync + Debug + 'static {
    /// A human description with secrets redacted (e.g. `s3://bucket/prefix`).
    fn describe(&self) -> String;

    /// Where the stored bytes live: [`Placement::Local`] only for storage on this host (a local
    /// directory, memory). The default is [`Placement::Cloud`] (off-site), the safe assumption
    /// for a sink that does not say: an unencrypted archive is then refused by default.
    fn placement(&self) -> Placement {
        Placement::Cloud
    }

    /// Starts an upload of `key`; bytes go in with [`Upload::put_part`].
    async fn put(&self, key: &str, options: PutOptions) -> Result<Box<dyn Upload>>;

    /// Reads an object as a stream.
    async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream>;

    /// Describes one object.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Lists the objects under a prefix, sorted by key.
    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>>;

    /// Deletes an object; a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
}

/// An upload in progress. Nothing is visible until [`Upload::complete`].
///
/// Dropping an upload without completing it must not leave a visible object; implementations
/// should clean up in `abort` and, as far as possible, on drop.
#[async_trait]
pub trait Upload: Send + Debug {
    /// Appends bytes. Parts may have any size; the sink buffers as its backend needs.
    async fn put_part(&mut self, data: Bytes) -> Result<()>;

    /// Makes the object visible under its key and returns its description.
    async fn complete(self: Box<Self>) -> Result<ObjectMeta>;

    /// Cancels the upload; nothing remains.
    async fn abort(self: Box<Self>) -> Result<()>;
}

macro_rules! forward_sink {
    ($ty:ty) => {
        #[async_trait]
        impl<T: BackupSink + ?Sized> BackupSink for $ty {
            fn describe(&self) -> String {
                (**self).describe()
            }
            fn placement(&self) -> Placement {
                (**self).placement()
            }
            async fn put(&self, key: &str, options: PutOptions) -> Result<Box<dyn Upload>> {
                (**self).put(key, options).await
            }
            async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream> {
                (**self).get(key, options).await
            }
            async fn head(&self, key: &str) -> Result<ObjectMeta> {
                (**self).head(key).await
            }
            async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
                (**self).list(prefix).await
            }
            async fn delete(&self, key: &str) -> Result<()> {
                (**self).delete(key).await
            }
        }
    };
}

forward_sink!(Arc<T>);
forward_sink!(Box<T>);

/// Conveniences over any [`BackupSink`]; implemented for all sinks, never by hand.
#[async_trait]
pub trait SinkExt: BackupSink {
    /// Stores `data` under `key` in one upload.
    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<ObjectMeta> {
        let mut upload = self.put(key, PutOptions::default()).await?;
        if !data.is_empty() {
            if let Err(e) = upload.put_part(data).await {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        upload.complete().await
    }

    /// Reads a whole object into memory. Only for small objects such as manifests.
    async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let mut stream = self.get(key, GetOptions::default()).await?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }
}

impl<T: BackupSink + ?Sized> SinkExt for T {}

/// Checks that a key is relative, `/`-separated and free of `..`, for sinks to call.
///
/// # Errors
/// [`Error::InvalidInput`] naming the key.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::InvalidInput(format!(
            "invalid storage key {key:?}: keys are relative, '/'-separated paths without empty, '.' or '..' parts"
        )));
    }
    Ok(())
}
