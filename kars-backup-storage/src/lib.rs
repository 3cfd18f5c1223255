//! Storage destinations of kars-backup, behind one URL entry point.
//!
//! - [`LocalSink`]: a local directory (`file:///var/backups/kars` or a plain path), private and
//!   written atomically.
//! - [`ObjectStoreSink`] (feature `object-store`, implied by `s3` and `azure`): any
//!   [`object_store::ObjectStore`] as a sink, with streaming multipart uploads in bounded memory.
//! - [`s3::S3Builder`] (feature `s3`): S3 and S3-compatible stores, `s3://bucket/prefix`.
//! - [`azure::AzureBuilder`] (feature `azure`): Azure Blob Storage, `az://container/prefix`.
//! - [`gcs::GcsSink`] (feature `gcs`): Google Cloud Storage over the JSON API, `gs://bucket/prefix`.
//! - [`git_lfs::GitLfsSink`] (feature `git-lfs`): a git repository with LFS tracking, pushed to a
//!   remote, `git+file:///srv/backups.git`.
//! - [`TransferOptions`]: part sizes and concurrency of uploads and of parallel ranged downloads
//!   ([`ranged`]), per destination, from the URL's query or the configuration file.
//! - [`copy_backup`]: copies a committed backup between destinations, checksum-verified,
//!   manifest last.
//! - [`sink_from_url`]: turns a destination URL into a [`kars_backup_core::DynBackupSink`].
//!
//! | feature | destinations | URL |
//! |---|---|---|
//! | (always) | local directory | `file:///dir`, `/dir` |
//! | `s3` | Amazon S3, MinIO, Ceph, moto, SeaweedFS | `s3://bucket/prefix?endpoint=…&region=…&allow_http=true` |
//! | `azure` | Azure Blob Storage, Azurite | `az://container/prefix?account=…&emulator=true`, `https://ACCOUNT.blob.core.windows.net/container/prefix` |
//! | `gcs` | Google Cloud Storage, fake-gcs-server | `gs://bucket/prefix?endpoint=…` (or `STORAGE_EMULATOR_HOST`) |
//! | `git-lfs` | a git remote with Git LFS | `git+file:///srv/backups.git?branch=main&path=kars` |
//!
//! Every object-store URL also takes the [`TransferOptions`] as query parameters:
//! `upload_part_size`, `upload_concurrency`, `download_part_size`, `download_concurrency`
//! (e.g. `s3://b/p?download_part_size=16MiB&download_concurrency=4`).
//!
//! Credentials come from each cloud's standard environment variables, never from the URL, and
//! never appear in [`kars_backup_core::BackupSink::describe`] or in errors.
//!
//! ```
//! # fn main() -> kars_backup_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let sink = kars_backup_storage::sink_from_url(&format!("file://{}", dir.path().display()))?;
//! assert!(sink.describe().starts_with("file://"));
//! # Ok(()) }
//! ```

#[cfg(any(feature = "s3", feature = "azure", feature = "gcs"))]
#[macro_use]
mod setters;

#[cfg(feature = "azure")]
pub mod azure;
mod bucket_url;
mod copy;
#[cfg(feature = "gcs")]
pub mod gcs;
#[cfg(feature = "git-lfs")]
pub mod git_lfs;
pub mod local;
#[cfg(feature = "object-store")]
mod object_store_sink;
pub mod ranged;
mod redact;
#[cfg(any(feature = "s3", feature = "azure"))]
mod retry;
#[cfg(feature = "s3")]
pub mod s3;
pub mod transfer;
mod url;

pub use copy::{CopyOptions, CopyReport, copy_backup};
pub use local::LocalSink;
#[cfg(feature = "object-store")]
pub use object_store_sink::{DEFAULT_MAX_CONCURRENCY, DEFAULT_PART_SIZE, ObjectStoreSink};
pub use ranged::RangedSink;
pub use redact::redact;
#[cfg(any(feature = "s3", feature = "azure"))]
pub use retry::default_retry;
pub use transfer::{ByteSize, RangedPlan, TransferOptions};
pub use url::{Destination, sink_from_url};

/// object_store, re-exported for users of [`ObjectStoreSink`].
#[cfg(feature = "object-store")]
pub use object_store;
