//! Safe mode: the payload is loaded into a new staging database, verified there, then renamed
//! into the target's place in one transaction, the previous database kept as
//! `<db>_pre_restore_<time>` and renamed back on any failure.

use async_trait::async_trait;
use kars_backup_core::{
    InUsePolicy, IntegrityLevel, PayloadReader, StageContext, StagedRestore, VerifyPlan,
    VerifyReport,
};
use tokio_postgres::Client;

use super::admin::{
    admin_connect, create_database, database_exists, locale_of, rename_databases, server_num,
    timestamp, unused_name,
};
use super::load::{LoadOptions, load, staging_session_options};
use super::payload::{Payload, PayloadKind};
use crate::amcheck::heapallindexed;
use crate::conn::ConnInfo;
use crate::database::Database;
use crate::error::{Error, Result};
use crate::loaded::LoadedCounts;
use crate::options::PgRestoreOptions;
use crate::sessions;
use crate::tools;
use crate::verify::verify_database;

/// A restored copy in its own staging database, waiting to be renamed into the target's place.
#[derive(Debug)]
pub(crate) struct SafeStaged {
    target: ConnInfo,
    staging: String,
    existed: bool,
    kept: Option<String>,
    /// The live database was renamed to `kept`.
    moved_live: bool,
    /// The staging database carries the target's name.
    installed: bool,
    tables: Vec<String>,
    /// Row counts the server reported while loading.
    loaded: LoadedCounts,
    /// What the swap does about the application's sessions.
    in_use: InUsePolicy,
    /// The connection that holds the advisory lock on the staging database's name while this
    /// restore lives (the next run drops staging databases whose lock is free).
    lock: Client,
}

pub(crate) async fn stage_safe(
    db: &Database,
    opts: &PgRestoreOptions,
    checks: Option<IntegrityLevel>,
    payload: PayloadReader,
    context: &StageContext,
) -> Result<SafeStaged> {
    let target = db.conn.clone();
    let label = target.redacted();
    let (admin, _) = admin_connect(&target).await?;
    let num = server_num(&admin, &label).await?;
    let major = tools::major_of_num(num);
    let existed = database_exists(&admin, target.dbname(), &label).await?;
    if existed && !opts.tables.is_empty() {
        return Err(Error::Unsupported(format!(
            "a selective restore (--table) into the existing database {} replaces those tables in place: use --mode in-place (one transaction), or restore into a new database",
            target.dbname()
        )));
    }
    let payload = Payload::open(payload, &context.archive_name).await?;
    if payload.kind == PayloadKind::Plain && !opts.tables.is_empty() {
        return Err(Error::Unsupported(format!(
            "{} is a plain SQL dump: a selective restore (--table) needs a custom or directory backup",
            context.archive_name
        )));
    }
    let staging = unused_name(
        &admin,
        target.dbname(),
        &format!("{}{}", sessions::STAGING_INFIX, timestamp()),
        &label,
    )
    .await?;
    sessions::lock_staging(&admin, &staging, &label).await?;
    let locale = locale_of(
        &admin,
        context.manifest.as_ref(),
        existed.then_some(target.dbname()),
    )
    .await;
    create_database(
        &admin,
        &staging,
        locale,
        existed.then_some(target.dbname()),
        &label,
    )
    .await?;
    tracing::info!(staging = %staging, kind = ?payload.kind, "staging database created; loading");
    let work = db.work_dir_tempdir("kars-pgrestore-")?;
    let o = LoadOptions {
        jobs: opts.jobs,
        tables: opts.tables.clone(),
        clean: false,
        session_options: Some(staging_session_options(major)),
        freeze_copies: true,
        early_checks: checks.and_then(heapallindexed),
        ..LoadOptions::default()
    };
    let staging_conn = target.with_dbname(&staging);
    let loaded = load(
        payload,
        &staging_conn,
        &db.tools,
        major,
        &o,
        work.path(),
        &context.archive_name,
    )
    .await;
    drop(work);
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            if let Err(d) = sessions::drop_database(&admin, &staging, &label).await {
                tracing::warn!(error = %d, "the staging database could not be dropped");
            }
            return Err(e);
        }
    };
    Ok(SafeStaged {
        loaded,
        target,
        staging,
        existed,
        kept: None,
        moved_live: false,
        installed: false,
        tables: opts.tables.clone(),
        in_use: context.in_use,
        lock: admin,
    })
}

#[async_trait]
impl StagedRestore for SafeStaged {
    fn describe(&self) -> String {
        self.target.with_dbname(&self.staging).redacted()
    }

    async fn verify(
        &mut self,
        plan: &VerifyPlan,
        context: &StageContext,
    ) -> kars_backup_core::Result<VerifyReport> {
        let conn = self.target.with_dbname(&self.staging);
        verify_database(
            &conn,
            plan,
            context.manifest.as_ref(),
            &self.tables,
            &self.loaded,
        )
        .await
        .map_err(|e| e.into_core(&self.describe()))
    }

    async fn swap_in(&mut self) -> kars_backup_core::Result<()> {
        let label = self.target.redacted();
        let terminate = self.in_use == InUsePolicy::TerminateSessions;
        let result = async {
            let (mut admin, _) = admin_connect(&self.target).await?;
            let live = self.target.dbname().to_string();
            let kept = if self.existed && database_exists(&admin, &live, &label).await? {
                Some(
                    unused_name(
                        &admin,
                        &live,
                        &format!("{}{}", sessions::KEPT_INFIX, timestamp()),
                        &label,
                    )
                    .await?,
                )
            } else {
                None
            };
            let mut renames = Vec::new();
            if let Some(kept) = &kept {
                renames.push((live.as_str(), kept.as_str()));
            }
            renames.push((self.staging.as_str(), live.as_str()));
            rename_databases(&mut admin, &renames, terminate, &label).await?;
            self.moved_live = kept.is_some();
            self.kept = kept;
            self.installed = true;
            tracing::info!(database = %live, kept = ?self.kept, "restored database swapped in");
            Ok::<(), Error>(())
        }
        .await;
        result.map_err(|e| e.into_core(&label))
    }

    async fn roll_back(&mut self) -> kars_backup_core::Result<()> {
        let label = self.target.redacted();
        let result = async {
            let (mut admin, _) = admin_connect(&self.target).await?;
            let live = self.target.dbname().to_string();
            let mut renames = Vec::new();
            if self.installed {
                renames.push((live.as_str(), self.staging.as_str()));
            }
            if self.moved_live {
                let kept = self.kept.as_deref().expect("kept when moved");
                renames.push((kept, live.as_str()));
            }
            // The restored database's sessions (the application, started on it and stopped
            // again) must not keep the previous one from coming back.
            rename_databases(&mut admin, &renames, true, &label).await?;
            self.installed = false;
            self.moved_live = false;
            self.kept = None;
            tracing::info!(database = %live, "rolled back to the previous database");
            Ok::<(), Error>(())
        }
        .await;
        result.map_err(|e| e.into_core(&label))
    }

    async fn finish(self: Box<Self>) -> kars_backup_core::Result<Option<String>> {
        Ok(self.kept.clone())
    }

    async fn discard(self: Box<Self>) -> kars_backup_core::Result<()> {
        if self.installed {
            return Ok(());
        }
        let label = self.target.redacted();
        // Through the connection that holds the staging database's lock.
        sessions::drop_database(&self.lock, &self.staging, &label)
            .await
            .map_err(|e| e.into_core(&label))
    }
}
