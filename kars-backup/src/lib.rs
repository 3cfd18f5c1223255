//! kars-backup: back up and restore databases safely, as a library.
//!
//! One dependency for services: it re-exports the kars-backup crates behind features, so a
//! service compiles only what it uses.
//!
//! | feature | module | what |
//! |---|---|---|
//! | (always) | [`core`] | traits, manifests, the pipeline, backup and restore jobs |
//! | `sqlite` (default) | [`sqlite`] | consistent snapshots of live SQLite databases, staged restore |
//! | `storage` (default) | [`storage`] | destinations: local disk; one URL entry point |
//! | `testing` | [`core::testing`] | in-memory sink and the sink conformance suite |
//!
//! ```no_run
//! use std::sync::Arc;
//! use kars_backup::core::{BackupJob, BackupOptions, Repository};
//!
//! # #[tokio::main] async fn main() -> kars_backup::core::Result<()> {
//! let source = Arc::new(kars_backup::sqlite::SqliteSource::new("/app/data/assets.db"));
//! let local = Repository::new(kars_backup::storage::sink_from_url("file:///var/backups/kars")?);
//! let report = BackupJob::new(source, vec![local], BackupOptions::default()).run().await?;
//! println!("backup {} committed", report.manifest.name);
//! # Ok(()) }
//! ```

pub use kars_backup_core as core;
#[cfg(feature = "sqlite")]
pub use kars_backup_sqlite as sqlite;
#[cfg(feature = "storage")]
pub use kars_backup_storage as storage;

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
