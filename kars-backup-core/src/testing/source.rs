//! The source conformance suite: what every [`DatabaseSource`] (SQLite, PostgreSQL, yours)
//! must do, proved against real databases that the caller's [`SourceFixture`] makes.
//!
//! [`source_conformance`] backs up through the real pipeline into an [`InMemorySink`] and checks:
//!
//! - **round trips**: backup → change → restore brings the content back (same fingerprint), into
//!   the live database and into a new one; [`verify_backup`] passes and leaves no scratch database;
//!   a restore over an existing database is refused unless confirmed;
//! - **staging isolation**: a restore that fails verification, or is cancelled during the
//!   download or after the swap, leaves the target exactly as it was (same fingerprint) and
//!   nothing beside it (same [`SourceFixture::surroundings`]; [`DatabaseSource::clean_leftovers`]
//!   finds nothing);
//! - **error categories**: another engine's backup is a usage error ([`ErrorCategory::Usage`]), a
//!   corrupt archive is a verification error ([`ErrorCategory::Verification`]), a missing backup
//!   is a storage error ([`ErrorCategory::Storage`]), a cancelled restore is
//!   [`ErrorCategory::Interrupted`]; a payload under the engine's name that is not its data is a
//!   verification error when the source can tell ([`Error::InvalidArchive`]: SQLite's tar), or a
//!   source error when the engine itself refuses it (PostgreSQL: `psql` fails on text that is
//!   not SQL) — either way the target is left as it was.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::backup::{BackupJob, BackupOptions};
use crate::error::{Error, ErrorCategory, Result};
use crate::fault::{FaultySink, Op};
use crate::manifest::TableInfo;
use crate::pipeline::{PayloadReader, PayloadWriter};
use crate::progress::{DynProgress, no_progress};
use crate::repository::{BackupEntry, Repository};
use crate::restore::{RestoreHooks, RestoreOptions, restore, verify_backup};
use crate::run::new_run_id;
use crate::sink::{BackupSink, SinkExt};
use crate::source::{
    DatabaseInfo, DatabaseSource, DynDatabaseSource, PayloadFormat, SnapshotInfo, StageContext,
    StagedRestore,
};
use crate::testing::memory::InMemorySink;
use crate::verify::VerifyPlan;

/// What the suite needs to know about an engine: how to make a database with known content,
/// change it, fingerprint it, and see what lies beside it. `Db` is the fixture's handle on one
/// database (a path, a database name).
#[async_trait]
pub trait SourceFixture: Send + Sync {
    /// The fixture's handle on one database.
    type Db: Send + Sync;

    /// Creates a database named after `name` (unique within the suite's run) holding known
    /// content, with at least one table (or the engine's equivalent) that has rows.
    async fn create(&self, name: &str) -> Result<Self::Db>;

    /// A handle on a database named after `name` that does not exist yet (a restore creates it).
    async fn absent(&self, name: &str) -> Result<Self::Db>;

    /// A source over the database (the same kind the application backs up and restores with).
    fn source(&self, db: &Self::Db) -> Result<DynDatabaseSource>;

    /// Changes the database's content (so that a restore has something to bring back).
    async fn mutate(&self, db: &Self::Db) -> Result<()>;

    /// A fingerprint of the content: equal for equal content, different after [`mutate`](Self::mutate).
    async fn fingerprint(&self, db: &Self::Db) -> Result<String>;

    /// Everything beside the database where a restore could leave something behind (files in its
    /// directory, databases on its server named after it), the database itself included, sorted.
    async fn surroundings(&self, db: &Self::Db) -> Result<Vec<String>>;

    /// A verification plan the staged copy of a database made by [`create`](Self::create) fails.
    /// The default asks for a row in a table that does not exist.
    fn failing_plan(&self) -> VerifyPlan {
        VerifyPlan {
            min_rows: vec![TableInfo {
                name: "kars_conformance_no_such_table".into(),
                rows: 1,
            }],
            ..VerifyPlan::default()
        }
    }
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Error::generic("source conformance", format!($($msg)+)));
        }
    };
}

/// Runs the source conformance suite (see the module documentation) with databases the fixture
/// makes; they are named `<engine-neutral prefix>_<check>` and left for the fixture to remove.
///
/// # Errors
/// The first contract violation, naming the check, or a failure of the fixture.
pub async fn source_conformance<F: SourceFixture>(fixture: &F) -> Result<()> {
    let suite = Suite { fixture };
    suite.round_trips().await?;
    suite.staging_isolation().await?;
    suite.error_categories().await
}

struct Suite<'a, F> {
    fixture: &'a F,
}

/// A backed-up database: its handle, its repository (in memory), the backup and its fingerprint.
struct Backed<Db> {
    db: Db,
    sink: InMemorySink,
    repo: Repository,
    entry: BackupEntry,
    fingerprint: String,
}

fn options(plan: VerifyPlan, confirmed: bool) -> RestoreOptions {
    RestoreOptions {
        plan,
        confirmed,
        ..RestoreOptions::default()
    }
}

async fn back_up(source: DynDatabaseSource, repo: &Repository) -> Result<BackupEntry> {
    let report = BackupJob::new(source, vec![repo.clone()], BackupOptions::default())
        .run()
        .await?;
    repo.find(&report.manifest.name).await
}

impl<F: SourceFixture> Suite<'_, F> {
    /// A database made, fingerprinted and backed up, then changed.
    async fn backed_up(&self, name: &str) -> Result<Backed<F::Db>> {
        let f = self.fixture;
        let db = f.create(name).await?;
        let source = f.source(&db)?;
        ensure!(
            source.exists().await?,
            "{name}: exists() of a created database must be true"
        );
        let info = source.inspect().await?;
        ensure!(
            !info.is_empty(),
            "{name}: inspect() must describe the database"
        );
        let fingerprint = f.fingerprint(&db).await?;
        let sink = InMemorySink::new();
        let repo = Repository::new(Arc::new(sink.clone()));
        let entry = back_up(source.clone(), &repo).await?;
        let engine = entry.manifest.as_ref().map(|m| m.engine.clone());
        ensure!(
            engine.as_deref() == Some(source.engine()),
            "{name}: the manifest must record the source's engine {:?}, got {engine:?}",
            source.engine()
        );
        f.mutate(&db).await?;
        ensure!(
            f.fingerprint(&db).await? != fingerprint,
            "{name}: the fixture's mutate must change the fingerprint"
        );
        Ok(Backed {
            db,
            sink,
            repo,
            entry,
            fingerprint,
        })
    }

    async fn round_trips(&self) -> Result<()> {
        let f = self.fixture;
        let b = self.backed_up("conformance_rt").await?;
        let source = f.source(&b.db)?;
        let changed = f.fingerprint(&b.db).await?;

        // Over an existing database: refused unless confirmed, then the backup's content.
        let unconfirmed = restore(
            &b.repo,
            &b.entry,
            source.as_ref(),
            &options(VerifyPlan::default(), false),
            no_progress(),
        )
        .await;
        self.expect_category(
            "an unconfirmed restore over an existing database",
            unconfirmed.map(|_| ()),
            ErrorCategory::Usage,
        )?;
        ensure!(
            f.fingerprint(&b.db).await? == changed,
            "an unconfirmed restore must not change the database"
        );
        let report = restore(
            &b.repo,
            &b.entry,
            source.as_ref(),
            &options(VerifyPlan::default(), true),
            no_progress(),
        )
        .await?;
        ensure!(
            f.fingerprint(&b.db).await? == b.fingerprint,
            "a restore over the live database must bring back the backup's content"
        );
        ensure!(
            report.checksum_verified && report.verification.passed(),
            "a restore must verify the checksum and pass the default plan: {:?}",
            report.verification
        );
        ensure!(
            !report.verification.checks.is_empty(),
            "verify must report the checks it ran (the default plan has an integrity check and row counts)"
        );

        // Into a new database.
        let new = f.absent("conformance_new").await?;
        let target = f.source(&new)?;
        ensure!(
            !target.exists().await?,
            "exists() of a database not created yet must be false"
        );
        restore(
            &b.repo,
            &b.entry,
            target.as_ref(),
            &options(VerifyPlan::default(), false),
            no_progress(),
        )
        .await?;
        ensure!(
            target.exists().await? && f.fingerprint(&new).await? == b.fingerprint,
            "a restore into a new database must create it with the backup's content"
        );

        // Verification in a scratch database leaves nothing.
        let scratch = f.absent("conformance_scratch").await?;
        let before = f.surroundings(&scratch).await?;
        let source = f.source(&scratch)?;
        let report = verify_backup(
            &b.repo,
            &b.entry,
            source.as_ref(),
            &VerifyPlan::default(),
            no_progress(),
        )
        .await?;
        ensure!(
            report.verification.passed(),
            "verify_backup must pass: {:?}",
            report.verification
        );
        ensure!(
            !source.exists().await? && f.surroundings(&scratch).await? == before,
            "verify_backup must leave no scratch database behind"
        );
        Ok(())
    }

    async fn staging_isolation(&self) -> Result<()> {
        let f = self.fixture;
        let b = self.backed_up("conformance_iso").await?;

        // A staged copy that fails verification is discarded.
        let failed = self
            .restore_isolated(&b, &b.repo, &b.entry, &options(f.failing_plan(), true))
            .await;
        self.expect_category(
            "a restore whose staged copy fails verification",
            failed,
            ErrorCategory::Verification,
        )?;

        // Cancelled during the download: a sink whose first read stalls.
        let stalled = FaultySink::new(Arc::new(b.sink.clone())).stall(
            Op::GetChunk,
            1,
            Duration::from_secs(2),
        );
        let o = options(VerifyPlan::default(), true);
        let cancel = o.cancel.clone();
        let watch = stalled.clone();
        let canceller = tokio::spawn(async move {
            while watch.count(Op::GetChunk) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let repo = Repository::new(Arc::new(stalled));
        let interrupted = self.restore_isolated(&b, &repo, &b.entry, &o).await;
        canceller.abort();
        self.expect_category(
            "a restore cancelled during the download",
            interrupted,
            ErrorCategory::Interrupted,
        )?;

        // Cancelled after the swap (while the start hook runs): rolled back. The hook waits
        // only the first time (the restart after the rollback returns at once).
        let marker =
            std::env::temp_dir().join(format!("kars-conformance-{}.started", new_run_id()));
        let mut o = options(VerifyPlan::default(), true);
        o.hooks = RestoreHooks {
            start: Some(format!(
                "m='{}'; [ -e \"$m\" ] && exit 0; touch \"$m\"; sleep 30",
                marker.display()
            )),
            ..RestoreHooks::default()
        };
        let canceller = cancel_when_exists(marker.clone(), o.cancel.clone());
        let rolled_back = self.restore_isolated(&b, &b.repo, &b.entry, &o).await;
        canceller.abort();
        let _ = std::fs::remove_file(&marker);
        self.expect_category(
            "a restore cancelled after the swap",
            rolled_back,
            ErrorCategory::Interrupted,
        )
    }

    /// Runs a restore that must fail, and checks that the target and what lies beside it are as
    /// they were, and that nothing is left to clean up.
    async fn restore_isolated(
        &self,
        b: &Backed<F::Db>,
        repo: &Repository,
        entry: &BackupEntry,
        options: &RestoreOptions,
    ) -> Result<()> {
        let f = self.fixture;
        let before = (f.fingerprint(&b.db).await?, f.surroundings(&b.db).await?);
        let source = f.source(&b.db)?;
        let result = restore(repo, entry, source.as_ref(), options, no_progress()).await;
        ensure!(result.is_err(), "the restore was expected to fail");
        let after = (f.fingerprint(&b.db).await?, f.surroundings(&b.db).await?);
        ensure!(
            after.0 == before.0,
            "a failed restore must leave the database exactly as it was ({})",
            result
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        ensure!(
            after.1 == before.1,
            "a failed restore must leave nothing beside the database: before {:?}, after {:?}",
            before.1,
            after.1
        );
        let leftovers = f.source(&b.db)?.clean_leftovers().await?;
        ensure!(
            leftovers.is_empty(),
            "after a failed restore clean_leftovers must find nothing, found {leftovers:?}"
        );
        result.map(|_| ())
    }

    async fn error_categories(&self) -> Result<()> {
        let f = self.fixture;
        let b = self.backed_up("conformance_err").await?;
        let engine = f.source(&b.db)?.engine().to_string();
        let format = f.source(&b.db)?.payload_format();

        // Another engine's backup is refused before anything is read.
        let other = Foreign {
            engine: "kars-conformance-other".into(),
            format: format.clone(),
        };
        let entry = back_up(Arc::new(other), &b.repo).await?;
        let result = self
            .restore_isolated(&b, &b.repo, &entry, &options(VerifyPlan::default(), true))
            .await;
        self.expect_category(
            "restoring another engine's backup",
            result,
            ErrorCategory::Usage,
        )?;

        // A payload under this engine's name that is not this engine's data.
        let garbage = Foreign { engine, format };
        let entry = back_up(Arc::new(garbage), &b.repo).await?;
        let result = self
            .restore_isolated(&b, &b.repo, &entry, &options(VerifyPlan::default(), true))
            .await;
        if !matches!(&result, Err(e) if e.category() == ErrorCategory::Source) {
            self.expect_category(
                "restoring a payload that is not the engine's data",
                result,
                ErrorCategory::Verification,
            )?;
        }

        // A corrupt archive: one byte changed in the middle.
        let key = b
            .entry
            .archive
            .as_ref()
            .map(|a| a.key.clone())
            .ok_or_else(|| Error::generic("source conformance", "the backup has no archive"))?;
        let mut bytes = read_all(&b.sink, &key).await?;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        b.sink.put_bytes(&key, Bytes::from(bytes)).await?;
        let result = self
            .restore_isolated(&b, &b.repo, &b.entry, &options(VerifyPlan::default(), true))
            .await;
        self.expect_category(
            "restoring a corrupt archive",
            result,
            ErrorCategory::Verification,
        )?;

        // A backup that is not there.
        let missing = b.repo.find("kars-conformance-20000101-000000.tar.gz").await;
        self.expect_category(
            "finding a backup that does not exist",
            missing.map(|_| ()),
            ErrorCategory::Storage,
        )
    }

    fn expect_category(
        &self,
        what: &str,
        result: Result<()>,
        expected: ErrorCategory,
    ) -> Result<()> {
        match result {
            Ok(()) => Err(Error::generic(
                "source conformance",
                format!("{what} must fail with a {expected} error, but it succeeded"),
            )),
            Err(e) if e.category() == expected => Ok(()),
            Err(e)
                if e.to_string()
                    .starts_with("storage backend source conformance:") =>
            {
                Err(e)
            }
            Err(e) => Err(Error::generic(
                "source conformance",
                format!(
                    "{what} must fail with a {expected} error, got a {} error: {e}",
                    e.category()
                ),
            )),
        }
    }
}

/// Cancels `cancel` once `path` exists (a hook's sign that it is running).
fn cancel_when_exists(path: PathBuf, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
    })
}

async fn read_all(sink: &InMemorySink, key: &str) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let mut stream = sink.get(key, Default::default()).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A source whose payload is not any engine's data, under the engine name it is given.
#[derive(Debug)]
struct Foreign {
    engine: String,
    format: PayloadFormat,
}

#[async_trait]
impl DatabaseSource for Foreign {
    fn engine(&self) -> &str {
        &self.engine
    }

    fn describe(&self) -> String {
        "conformance://foreign".into()
    }

    fn payload_format(&self) -> PayloadFormat {
        PayloadFormat {
            compressed: false,
            ..self.format.clone()
        }
    }

    fn default_name_prefix(&self) -> &str {
        "kars-conformance-foreign"
    }

    async fn inspect(&self) -> Result<Vec<DatabaseInfo>> {
        Ok(Vec::new())
    }

    async fn exists(&self) -> Result<bool> {
        Ok(true)
    }

    async fn write_payload(
        &self,
        mut out: PayloadWriter,
        _progress: DynProgress,
    ) -> Result<SnapshotInfo> {
        let text = b"this is not a database, just text that no engine restores\n".repeat(64);
        out.write_all(&text)
            .await
            .map_err(|e| Error::source(self.describe(), e))?;
        out.finish()
            .await
            .map_err(|e| Error::source(self.describe(), e))?;
        Ok(SnapshotInfo {
            taken_at: Utc::now(),
            databases: Vec::new(),
            physical: None,
        })
    }

    async fn stage_restore(
        &self,
        _payload: PayloadReader,
        _context: &StageContext,
    ) -> Result<Box<dyn StagedRestore>> {
        Err(Error::InvalidInput(
            "the foreign source restores nothing".into(),
        ))
    }
}
