//! kars-backup jobs: everything a run of the `kars-backup` command means, as a library.
//!
//! A [`Job`] is a database, its destinations with their tiers and retention, the archive's
//! compression and encryption, the verification plan, the restore's hooks and settings,
//! notifications and a schedule. Build it from a configuration file's `[[job]]`
//! ([`Job::from_config`]) or from code ([`Job::builder`]), then:
//!
//! - [`Job::backup`]: storage-tier routing, the backup, the prune of every destination that
//!   took it ([`BackupRun`]);
//! - [`restore`]: [`Reading`] (where backups are read, with which keys and checks),
//!   [`RestorePlan`] (hooks, in-use policy, previous copies, PostgreSQL options; a flag wins
//!   over the file, which wins over the default), [`restore::restore`] and
//!   [`Job::restore_latest`] (the newest backup, with fallback, in one call);
//! - [`verify`] and [`drill`]: verification in [`Scratch`] targets (a directory per SQLite
//!   attempt, a temporary database on a scratch server per PostgreSQL one);
//! - [`wal`]: the PostgreSQL WAL archive beside the base backups: [`wal::prune`] (retention,
//!   then the WAL the oldest kept base backup does not need) and [`wal::check_wal`] (gaps from
//!   every retained base backup, the archive's age);
//! - [`replicate`]: continuous SQLite replication ([`replicate::Replication`]), the replicas
//!   a destination holds ([`replicate::windows`]: what instants each can restore, from listings
//!   only) and restores of a replica to an instant or its latest state
//!   ([`replicate::ReplicaRestore`]); [`verify::verify_replica`] and [`drill::drill_replica`]
//!   check one at an instant, [`status::ReplicaStatus`] measures its lag;
//! - [`replication_service`]: a job's `[job.replicate]` under the daemon
//!   ([`replication_service::ReplicationService`]: restarts with backoff, metrics, alerts);
//! - [`status`]: freshness of each destination against the RPO, last drill, keys;
//! - [`runner`]: the scheduler's [`JobRunner`], [`Job::scheduled`], [`scheduler_for`] a
//!   configuration or [`scheduler_of`] jobs built from code (state,
//!   notifications, metrics textfiles), [`run_once`];
//! - [`source_from_url`]: a database by URL (`sqlite:///…`, a path, `postgres://…`), next to
//!   storage's `sink_from_url`.
//!
//! Option types are defined once, in the crate that owns each concept, and merged by one rule
//! ([`kars_backup_core::merge`]): `[job.hooks]`/`--stop-cmd` are core's
//! [`HookOptions`](kars_backup_core::settings::HookOptions), `[job.restore]`/`--keep-previous`
//! core's [`RestoreSettings`](kars_backup_core::settings::RestoreSettings), `[job.postgres]`/
//! `--format` postgres' [`DumpOptions`](kars_backup_postgres::DumpOptions), `--identity`
//! encrypt's [`DecryptOptions`](kars_backup_encrypt::DecryptOptions), `--scratch-db` this
//! crate's [`ScratchOptions`].
//!
//! ```
//! use kars_backup_job::{Destination, Job, SourceOptions};
//! use kars_backup_core::KeepRules;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> kars_backup_job::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let db = dir.path().join("assets.db");
//! # std::fs::write(&db, b"").unwrap();
//! let job = Job::builder("nightly")
//!     .source_url(db.display().to_string(), SourceOptions::default())
//!     .destination(
//!         Destination::new(dir.path().join("backups").display().to_string())?
//!             .with_retention("daily=7,weekly=4".parse::<KeepRules>().unwrap()),
//!     )
//!     .build()?;
//! let run = job.backup("run-1", kars_backup_core::progress::no_progress()).await?;
//! assert!(run.all_succeeded());
//! assert_eq!(run.prunes.len(), 1);
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | what |
//! |---|---|
//! | `clap` | `clap::Args` on the option types (this crate's and the ones it re-exports from core, postgres and encrypt), for command-line front ends |

mod backup;
mod config;
pub mod drill;
mod error;
mod job;
pub mod physical;
pub mod replicate;
pub mod replication_service;
pub mod restore;
pub mod runner;
mod scratch;
mod source;
pub mod status;
pub mod verify;
pub mod wal;

pub use backup::BackupRun;
pub use config::{load_config, one_job, select_jobs, state_dir};
pub use error::{Error, Result, error_text};
pub use job::{
    Destination, Encryption, Job, JobBuilder, JobSchedule, find_backup, origins, repository, sinks,
};
pub use restore::{Reading, RestorePlan};
pub use runner::{JobRunner, OneShot, run_once, scheduled_jobs, scheduler_for, scheduler_of};
pub use scratch::{Scratch, ScratchOptions, scratch_source};
pub use source::{
    SourceOptions, is_postgres_backup, is_postgres_url, physical_source, postgres_dump_source,
    postgres_source, source_from_url, sqlite_path, sqlite_source,
};
