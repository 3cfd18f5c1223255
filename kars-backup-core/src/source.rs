//! [`DatabaseSource`]: one database that can be backed up, restored and verified.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::holders::Scan;
use crate::manifest::Manifest;
use crate::pipeline::{PayloadReader, PayloadWriter};
use crate::progress::DynProgress;
use crate::verify::{VerifyPlan, VerifyReport};

/// The plain data a source describes itself with; they live with the [`Manifest`] that stores
/// them.
pub use crate::manifest::{DatabaseInfo, PhysicalInfo, TableInfo};

/// A shared, type-erased source.
pub type DynDatabaseSource = Arc<dyn DatabaseSource>;

/// What a source's payload is, so the pipeline names and compresses it right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFormat {
    /// The payload's own file-name ending (`tar`, `sql`, `dump`).
    pub extension: String,
    /// True when the payload is compressed already (`pg_dump -Fc`): the pipeline stores it as is.
    pub compressed: bool,
}

/// The engine's proper name for people (`SQLite`, `PostgreSQL`) from its identifier
/// ([`DatabaseSource::engine`], [`Manifest::engine`](crate::Manifest::engine): `sqlite`,
/// `postgres`); an identifier it does not know is returned as it is.
pub fn engine_name(engine: &str) -> &str {
    match engine {
        "sqlite" => "SQLite",
        "postgres" | "postgresql" => "PostgreSQL",
        other => other,
    }
}

/// What a source reports about the snapshot it wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// When the snapshot was taken.
    pub taken_at: DateTime<Utc>,
    /// Each database in the payload, described from the snapshot itself.
    pub databases: Vec<DatabaseInfo>,
    /// For a physical base backup: its place in the WAL (stored as [`Manifest::physical`]).
    pub physical: Option<PhysicalInfo>,
}

/// What a restore does about processes (or database sessions) that have the target open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InUsePolicy {
    /// Refuse the restore, naming them, and leave the live database as it is (the default).
    #[default]
    Refuse,
    /// Write the verified data into the live database through the engine's own online
    /// mechanism, so the application keeps its connections and sees the restored data (SQLite:
    /// the online backup API; PostgreSQL: an in-place restore in one transaction).
    Live,
    /// End the other sessions at the swap (PostgreSQL; the application reconnects to the
    /// restored database).
    TerminateSessions,
}

impl InUsePolicy {
    /// The CLI flag that asks for this policy (for messages).
    pub fn flag(self) -> &'static str {
        match self {
            InUsePolicy::Refuse => "(default)",
            InUsePolicy::Live => "--live",
            InUsePolicy::TerminateSessions => "--terminate-connections",
        }
    }
}

/// A copy of a previous database that a restore kept (`<db>.pre-restore-<time>`,
/// `<db>_pre_restore_<time>`, `DATA_DIR/.kars-pre-restore-<time>/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousCopy {
    /// Its path or database name.
    pub name: String,
    /// When the restore that kept it ran (from its name), if known.
    pub kept_at: Option<DateTime<Utc>>,
    /// Its size in bytes (side files and directory content included).
    pub size_bytes: u64,
}

/// What the caller knows about the payload being restored.
#[derive(Debug, Clone)]
pub struct StageContext {
    /// The archive's name, for messages.
    pub archive_name: String,
    /// The manifest, when the backup has one (runbook archives do not).
    pub manifest: Option<Manifest>,
    /// What [`StagedRestore::swap_in`] does about processes that have the target open.
    pub in_use: InUsePolicy,
}

/// One database: it can describe itself, write a consistent snapshot as a payload, and restore a
/// payload into a staging target that is verified before it replaces the live database.
///
/// # Contract
/// - `write_payload` writes one **consistent** snapshot, while the database stays in use, and
///   ends the writer with `finish`; the [`SnapshotInfo`] describes that same snapshot.
/// - `stage_restore` never touches the live database: it builds a staging copy beside it. The live
///   database changes only in [`StagedRestore::swap_in`], and [`StagedRestore::roll_back`] puts it
///   back exactly as it was.
/// - A source never compresses, encrypts or hashes: the pipeline does.
#[async_trait]
pub trait DatabaseSource: Send + Sync + Debug + 'static {
    /// The engine's name (`sqlite`, `postgres`).
    fn engine(&self) -> &str;

    /// A human description with secrets redacted (a path, or a URL without password).
    fn describe(&self) -> String;

    /// The payload's format.
    fn payload_format(&self) -> PayloadFormat;

    /// The runbook's archive name prefix for this engine (`asset-data`, `kars-postgres`).
    fn default_name_prefix(&self) -> &str;

    /// Describes the live database(s): version, size, tables and row counts.
    async fn inspect(&self) -> Result<Vec<DatabaseInfo>>;

    /// Whether the restore target exists now (a restore over it is destructive).
    async fn exists(&self) -> Result<bool>;

    /// Writes a consistent snapshot into `out` and describes it.
    async fn write_payload(
        &self,
        out: PayloadWriter,
        progress: DynProgress,
    ) -> Result<SnapshotInfo>;

    /// Restores a payload into a staging target beside the live database.
    async fn stage_restore(
        &self,
        payload: PayloadReader,
        context: &StageContext,
    ) -> Result<Box<dyn StagedRestore>>;

    /// The processes (or sessions) other than this one that have the target open. The default
    /// reports that nothing could be checked ([`Scan::supported`] false).
    async fn in_use(&self) -> Result<Scan> {
        Ok(Scan::default())
    }

    /// What an operator can do when the target is in use (for the refusal's message).
    fn in_use_remedies(&self) -> String {
        "stop the application first (--stop-cmd/--start-cmd stop and start it around the swap)"
            .into()
    }

    /// Fails with a usage error when this source cannot restore under `policy`. The default
    /// supports only [`InUsePolicy::Refuse`].
    fn check_in_use_policy(&self, policy: InUsePolicy) -> Result<()> {
        match policy {
            InUsePolicy::Refuse => Ok(()),
            other => Err(Error::InvalidInput(format!(
                "{} cannot restore {} into {}",
                self.engine(),
                other.flag(),
                self.describe()
            ))),
        }
    }

    /// Finds what an interrupted or killed earlier restore of this target left behind (staging
    /// copies, half-done swaps), repairs and removes it, and says what it did, one line each.
    /// Leftovers of a restore that is still running are left alone. The default finds nothing.
    async fn clean_leftovers(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// The previous copies that restores kept of this target, newest first. The default has none.
    async fn previous_copies(&self) -> Result<Vec<PreviousCopy>> {
        Ok(Vec::new())
    }

    /// Removes one previous copy (one returned by [`previous_copies`](Self::previous_copies)).
    async fn remove_previous(&self, copy: &PreviousCopy) -> Result<()> {
        Err(Error::InvalidInput(format!(
            "{} cannot remove the previous copy {}",
            self.engine(),
            copy.name
        )))
    }
}

/// A restored copy waiting to replace the live database.
///
/// The orchestration is: [`verify`](Self::verify) → [`swap_in`](Self::swap_in) → (on failure)
/// [`roll_back`](Self::roll_back) → [`finish`](Self::finish) or [`discard`](Self::discard).
#[async_trait]
pub trait StagedRestore: Send + Debug {
    /// Where the staging copy is.
    fn describe(&self) -> String;

    /// Runs the verification plan against the staging copy.
    async fn verify(&mut self, plan: &VerifyPlan, context: &StageContext) -> Result<VerifyReport>;

    /// Replaces the live database with the staging copy, keeping the old one for rollback.
    async fn swap_in(&mut self) -> Result<()>;

    /// After `swap_in`: puts the old database back exactly as it was.
    async fn roll_back(&mut self) -> Result<()>;

    /// The step line for the staging (`staged at …`), as the restore report shows it.
    fn staged_step(&self) -> String {
        format!("staged at {}", self.describe())
    }

    /// The step line for the swap (`swapped into …`), as the restore report shows it.
    fn swap_step(&self, target: &str) -> String {
        format!("swapped into {target}")
    }

    /// Ends a successful restore; returns where the previous database was kept, if anywhere.
    async fn finish(self: Box<Self>) -> Result<Option<String>>;

    /// Removes the staging copy (a restore that is abandoned before or after a rollback).
    async fn discard(self: Box<Self>) -> Result<()>;
}
