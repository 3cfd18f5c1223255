//! kars-backup: back up and restore databases safely, as a library.
//!
//! One dependency for services: it re-exports the kars-backup crates behind features, so a
//! service compiles only what it uses.
//!
//! | feature | module | what |
//! |---|---|---|
//! | (always) | [`core`] | traits, manifests, the pipeline, backup and restore jobs |
//! | `sqlite` (default) | [`sqlite`] | consistent snapshots of live SQLite databases, staged restore |
//! | `postgres` | `postgres` | PostgreSQL: pg_dump with same-snapshot metadata, staged restore with database swap; physical base backups and restores to an instant (`postgres::physical`); the WAL archive (`postgres::wal`: archive_command, restore_command, streaming, the chain's gaps) |
//! | `storage` (default) | [`storage`] | destinations: local disk; one URL entry point |
//! | `s3` | [`storage`]`::s3` | Amazon S3 and S3-compatible stores (`s3://bucket/prefix`) |
//! | `gcs` | [`storage`]`::gcs` | Google Cloud Storage (`gs://bucket/prefix`) |
//! | `azure` | [`storage`]`::azure` | Azure Blob Storage (`az://container/prefix`) |
//! | `git-lfs` | [`storage`]`::git_lfs` | a git remote with Git LFS (`git+file:///srv/backups.git`) |
//! | `encrypt` | `encrypt` | age and OpenPGP encryption of archives, decryption keys (gpg keyring) |
//! | `config` | `config` | the configuration file: jobs in TOML, line:column errors, redaction |
//! | `schedule` | `schedule` | cron schedules, job locks, catch-up state, the scheduler loop |
//! | `notify` | `notify` | webhooks, commands, healthcheck pings, Prometheus metrics |
//! | `job` | `job` | a job from the config or from code: backup (tiers, prune), restore, verify, drill, status, the scheduler's runner (brings all of the above) |
//! | `clap` | | `clap::Args` on the option types, for command-line front ends |
//! | `testing` | [`core::testing`] | in-memory sink and the sink conformance suite |
//!
//! Guides by task (operators, library users, backend authors) are in the repository's `docs/`
//! (`docs/README.md` is the index); the job layer's is `docs/library/job-layer.md`.
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

#[cfg(feature = "config")]
pub use kars_backup_config as config;
pub use kars_backup_core as core;
#[cfg(feature = "encrypt")]
pub use kars_backup_encrypt as encrypt;
#[cfg(feature = "job")]
pub use kars_backup_job as job;
#[cfg(feature = "notify")]
pub use kars_backup_notify as notify;
#[cfg(feature = "postgres")]
pub use kars_backup_postgres as postgres;
#[cfg(feature = "schedule")]
pub use kars_backup_schedule as schedule;
#[cfg(feature = "sqlite")]
pub use kars_backup_sqlite as sqlite;
#[cfg(feature = "storage")]
pub use kars_backup_storage as storage;

/// The Rust examples of the README and of every page under `docs/`, compiled as doc tests so
/// they stay true (they use the job layer). `kars-backup-cli/tests/docs_snippets.rs` checks that
/// every page is listed here, and checks the pages' commands and TOML.
#[cfg(all(doctest, feature = "job"))]
#[doc = include_str!("../../README.md")]
#[doc = include_str!("../../docs/README.md")]
#[doc = include_str!("../../docs/development.md")]
#[doc = include_str!("../../docs/performance.md")]
#[doc = include_str!("../../docs/operators/backup.md")]
#[doc = include_str!("../../docs/operators/config-and-daemon.md")]
#[doc = include_str!("../../docs/operators/drills.md")]
#[doc = include_str!("../../docs/operators/encryption.md")]
#[doc = include_str!("../../docs/operators/exit-codes.md")]
#[doc = include_str!("../../docs/operators/postgresql.md")]
#[doc = include_str!("../../docs/operators/replication.md")]
#[doc = include_str!("../../docs/operators/restore.md")]
#[doc = include_str!("../../docs/operators/retention.md")]
#[doc = include_str!("../../docs/operators/storage.md")]
#[doc = include_str!("../../docs/operators/wal-archive.md")]
#[doc = include_str!("../../docs/library/custom-source.md")]
#[doc = include_str!("../../docs/library/embedding.md")]
#[doc = include_str!("../../docs/library/job-layer.md")]
struct DocsExamples;

/// The sink guide's Rust examples (they run the conformance suite of feature `testing`).
#[cfg(all(doctest, feature = "job", feature = "testing"))]
#[doc = include_str!("../../docs/backends/implementing-a-sink.md")]
struct SinkGuideExamples;
