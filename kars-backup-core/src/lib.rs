//! The vocabulary and orchestration of kars-backup.
//!
//! - [`DatabaseSource`]: one database (SQLite file, PostgreSQL database, yours) that writes a
//!   consistent snapshot as a payload and restores a payload into a verified staging copy.
//! - [`BackupSink`]: one place that stores bytes under keys (local disk, S3, yours).
//! - [`Repository`]: a sink seen as a store of backups: names, the manifest-last commit protocol,
//!   listing of committed backups only, checksum-verified reads, copies between destinations
//!   ([`Repository::copy_to`]); [`layout`]: every key it writes or reserves at a destination.
//! - [`BackupJob`], [`restore()`], [`verify_backup()`]: the jobs.
//! - [`recovery`]: restores from several destinations with retries and fallbacks;
//!   [`drill`]: restore drills with measured RTO and RPO.
//! - [`Manifest`], [`BackupName`], [`RetentionPolicy`], [`VerifyPlan`], [`Progress`].
//! - [`hook`]: hook commands that cannot hang a restore; [`holders`]: which processes have a
//!   file open.
//! - [`preset::CheckPreset`]: named sets of verification queries (`kars`).
//! - [`PlaintextPolicy`]: unencrypted archives stay on this host unless the caller opts out.
//! - [`pipeline`]: the streaming stages (compression on its own threads, encryption, SHA-256,
//!   byte counts); [`encrypt`]: the [`Encryptor`]/[`Decryptor`] interface (age and OpenPGP live
//!   in `kars-backup-encrypt`).
//!
//! | feature | what it adds |
//! |---|---|
//! | `testing` | [`testing::InMemorySink`], the public sink and source conformance suites, [`fault::FaultySink`] |
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> kars_backup_core::Result<()> {
//! use std::sync::Arc;
//! use kars_backup_core::{Repository, testing::InMemorySink};
//! let repo = Repository::new(Arc::new(InMemorySink::new()));
//! assert!(repo.list().await?.latest().is_none());
//! # Ok(()) }
//! ```

pub mod backup;
pub mod checks;
pub mod compress;
pub mod copy;
pub mod drill;
pub mod encrypt;
pub mod error;
#[cfg(feature = "testing")]
pub mod fault;
pub mod holders;
pub mod hook;
pub mod layout;
mod lock;
pub mod manifest;
pub mod merge;
pub mod name;
pub mod objective;
pub mod pipeline;
pub mod plaintext;
pub mod preset;
pub mod progress;
pub mod prune;
pub mod recovery;
pub mod repository;
pub mod restore;
pub mod retention;
mod run;
pub mod settings;
pub mod sink;
mod sized_gzip;
pub mod source;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tier;
pub mod verify;
pub mod write_behind;

pub use backup::{BackupJob, BackupOptions, BackupReport, DestinationOutcome};
pub use compress::Compression;
pub use copy::{CopyOptions, CopyReport};
pub use encrypt::{
    Decryptor, DynDecryptor, DynEncryptor, EncryptionInfo, EncryptionScheme, Encryptor,
    RecipientInfo, Sealed,
};
pub use error::{Error, ErrorCategory, IoError, Result, TaskError};
pub use manifest::{DatabaseInfo, Manifest, PhysicalInfo, TableInfo};
pub use name::BackupName;
pub use pipeline::{PayloadReader, PayloadWriter};
pub use plaintext::PlaintextPolicy;
pub use progress::{DynProgress, NoProgress, Progress};
pub use prune::{PruneOptions, PruneReport, prune};
pub use repository::{BackupEntry, EntryKind, Listing, Repository};
pub use restore::{
    RestoreHooks, RestoreOptions, RestoreReport, StagedRestoreOutcome, restore, restore_staged,
    verify_backup,
};
pub use retention::{KeepRules, KeepWithin, RetentionPlan, RetentionPolicy};
pub use run::{host_label, new_run_id};
pub use sink::{BackupSink, ByteStream, DynBackupSink, ObjectMeta, SinkExt, Upload};
pub use source::{
    DatabaseSource, DynDatabaseSource, InUsePolicy, PayloadFormat, PreviousCopy, SnapshotInfo,
    StageContext, StagedRestore, engine_name,
};
pub use tier::{Placement, Tier, TierOptions, TierRules, Tiering};
/// The token that interrupts a restore ([`RestoreOptions::cancel`]).
pub use tokio_util::sync::CancellationToken;
pub use verify::{IntegrityLevel, VerifyPlan, VerifyReport};
