//! Staged restore: extract into a private staging directory beside the target, verify there,
//! swap in with steps that keep the previous database and leave a complete database at the path
//! at every moment, and roll back exactly.
//!
//! - [`target`]: the target's layout (file or volume) and the names beside it.
//! - [`staging`]: the `.kars-restore-*` directory (locked by its restore) and the extraction.
//! - [`checks`]: the verification of the staged databases.
//! - [`swap`]: the journaled, kill-safe swap and its rollback (file and volume mode);
//!   [`journal`]: its steps, written before they are done.
//! - [`live`]: `--live`, writing into a database the application keeps open.
//! - [`leftovers`]: what a killed restore left, tidied by the next one.
//! - [`previous`]: the previous copies kept by restores.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kars_backup_core::holders::{self, Scan};
use kars_backup_core::{
    InUsePolicy, Manifest, PayloadReader, StageContext, StagedRestore, VerifyPlan, VerifyReport,
};

use crate::error::{Error, Result};
use crate::volume::{self, SIDE_SUFFIXES};
use kars_backup_core::TaskError;

mod checks;
mod journal;
pub(crate) mod leftovers;
mod live;
pub(crate) mod previous;
mod staging;
mod swap;
mod target;

use journal::Swap;
use staging::Staging;
pub(crate) use target::Layout;
use target::{StagedDatabase, parent_dir, with_suffix};

/// A restore waiting in its staging directory.
#[derive(Debug)]
pub(crate) struct SqliteStaged {
    target: PathBuf,
    layout: Layout,
    staging: Option<Staging>,
    databases: Vec<StagedDatabase>,
    created_dirs: Vec<PathBuf>,
    swap: Swap,
    in_use: InUsePolicy,
    /// The swap wrote into the live database(s) (`--live`) instead of renaming.
    wrote_live: bool,
}

/// Runs blocking work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(TaskError::new(what, e.to_string())))
}

/// Extracts `payload` into a new staging directory beside `target` and finds the database(s).
///
/// # Errors
/// Archive errors ([`Error::UnsafeEntry`], [`Error::CorruptArchive`], [`Error::NoDatabase`],
/// [`Error::AmbiguousDatabase`]) and file-system errors. Nothing is left behind on error.
pub(crate) async fn stage(
    target: PathBuf,
    layout: Layout,
    payload: PayloadReader,
    context: &StageContext,
) -> Result<SqliteStaged> {
    let archive_name = context.archive_name.clone();
    let manifest = context.manifest.clone();
    let in_use = context.in_use;
    blocking("the restore staging", move || {
        stage_blocking(
            target,
            layout,
            payload,
            &archive_name,
            manifest.as_ref(),
            in_use,
        )
    })
    .await?
}

fn stage_blocking(
    target: PathBuf,
    layout: Layout,
    payload: PayloadReader,
    archive_name: &str,
    manifest: Option<&Manifest>,
    in_use: InUsePolicy,
) -> Result<SqliteStaged> {
    let base = match layout {
        Layout::File => parent_dir(&target),
        Layout::Volume => target.clone(),
    };
    let created_dirs = staging::create_missing_dirs(&base)?;
    let result = staging::extract_and_find(&target, layout, &base, payload, archive_name, manifest);
    match result {
        Ok((staging, databases)) => Ok(SqliteStaged {
            target,
            layout,
            staging: Some(staging),
            databases,
            created_dirs,
            swap: Swap::default(),
            in_use,
            wrote_live: false,
        }),
        Err(e) => {
            staging::remove_created_dirs(&created_dirs);
            Err(e)
        }
    }
}

/// Stages a database file that `build` writes (given its path in a new staging directory beside
/// `target`), for a restore that does not come from an archive (a replication chain's rebuild).
///
/// # Errors
/// File-system errors and `build`'s. Nothing is left behind on error.
pub(crate) async fn stage_built<F, Fut>(
    target: PathBuf,
    in_use: InUsePolicy,
    build: F,
) -> Result<SqliteStaged>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let base = parent_dir(&target);
    let (created_dirs, staging) = {
        let (base, target) = (base.clone(), target.clone());
        blocking("the restore staging", move || {
            let created = staging::create_missing_dirs(&base)?;
            match staging::create_staging(&base, &target) {
                Ok(s) => Ok((created, s)),
                Err(e) => {
                    staging::remove_created_dirs(&created);
                    Err(e)
                }
            }
        })
        .await??
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "database.db".into());
    let path = staging.dir.path().join(&name);
    match build(path.clone()).await {
        Ok(()) => Ok(SqliteStaged {
            target,
            layout: Layout::File,
            staging: Some(staging),
            databases: vec![StagedDatabase { name, path }],
            created_dirs,
            swap: Swap::default(),
            in_use,
            wrote_live: false,
        }),
        Err(e) => {
            let _ = blocking("removing the staging directory", move || {
                let _ = staging.remove();
                staging::remove_created_dirs(&created_dirs);
            })
            .await;
            Err(e)
        }
    }
}

/// The processes other than this one that have `target` open: the database file and its side
/// files, or (volume) anything in the directory but kars-backup's own artefacts.
pub(crate) fn holders_of(target: &Path, layout: Layout) -> Scan {
    let target = holders::canonical(target);
    match layout {
        Layout::File => {
            let paths: Vec<PathBuf> = std::iter::once(target.clone())
                .chain(SIDE_SUFFIXES.iter().map(|s| with_suffix(&target, s)))
                .collect();
            holders::scan(&|p| paths.iter().any(|q| q == p))
        }
        Layout::Volume => holders::scan(&|p| {
            p.strip_prefix(&target).is_ok_and(|rel| {
                rel.components()
                    .next()
                    .is_some_and(|first| !volume::is_artefact(first.as_os_str()))
            })
        }),
    }
}

impl SqliteStaged {
    fn staging_path(&self) -> Option<PathBuf> {
        self.staging.as_ref().map(|s| s.dir.path().to_path_buf())
    }

    fn core_error(&self, e: Error) -> kars_backup_core::Error {
        e.into_core(&self.target.display().to_string())
    }

    /// Removes the staging directory (its owner lock goes with it).
    async fn remove_staging(&mut self) -> Result<()> {
        if let Some(staging) = self.staging.take() {
            blocking("removing the staging directory", move || staging.remove()).await??;
        }
        Ok(())
    }
}

#[async_trait]
impl StagedRestore for SqliteStaged {
    fn describe(&self) -> String {
        match (self.layout, self.databases.first()) {
            (Layout::File, Some(db)) => db.path.display().to_string(),
            _ => self
                .staging_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| self.target.display().to_string()),
        }
    }

    fn swap_step(&self, target: &str) -> String {
        if self.wrote_live {
            format!(
                "written into the live database {target} through SQLite's online backup API (its connections stayed open)"
            )
        } else {
            format!("swapped into {target}")
        }
    }

    async fn verify(
        &mut self,
        plan: &VerifyPlan,
        context: &StageContext,
    ) -> kars_backup_core::Result<VerifyReport> {
        let databases = self.databases.clone();
        let plan = plan.clone();
        let manifest = context.manifest.clone();
        blocking("the verification", move || {
            checks::verify_blocking(&databases, &plan, manifest.as_ref())
        })
        .await
        .map_err(|e| self.core_error(e))
    }

    async fn swap_in(&mut self) -> kars_backup_core::Result<()> {
        let target = self.target.clone();
        let layout = self.layout;
        let Some(staging) = self.staging_path() else {
            return Err(self.core_error(Error::NoDatabase {
                archive: target.display().to_string(),
                reason: "nothing is staged".into(),
            }));
        };
        let databases = self.databases.clone();
        let live = self.in_use == InUsePolicy::Live;
        let live_target_exists = match layout {
            Layout::File => target.exists(),
            Layout::Volume => true,
        };
        let wrote_live = live && live_target_exists;
        let (swap, result) = blocking("the swap", move || match (layout, wrote_live) {
            (Layout::File, false) => match databases.first() {
                Some(db) => swap::swap_file(&target, &db.path, &staging),
                None => (Swap::default(), Err(nothing_staged(&target))),
            },
            (Layout::File, true) => match databases.first() {
                Some(db) => live::write_file(&target, &db.path, &staging),
                None => (Swap::default(), Err(nothing_staged(&target))),
            },
            (Layout::Volume, false) => swap::swap_volume(&target, &staging),
            (Layout::Volume, true) => live::write_volume(&target, &databases, &staging),
        })
        .await
        .map_err(|e| self.core_error(e))?;
        self.swap = swap;
        self.wrote_live = wrote_live;
        if result.is_ok() {
            tracing::info!(target = %self.target.display(), kept = ?self.swap.kept, live = wrote_live, "restored data swapped in");
        }
        result.map_err(|e| self.core_error(e))
    }

    async fn roll_back(&mut self) -> kars_backup_core::Result<()> {
        let mut swap = std::mem::take(&mut self.swap);
        let (swap, result) = blocking("the rollback", move || {
            let result = swap::roll_back(&mut swap);
            (swap, result)
        })
        .await
        .map_err(|e| self.core_error(e))?;
        self.swap = swap;
        if result.is_ok() {
            tracing::info!(target = %self.target.display(), "rolled back to the previous data");
        }
        result.map_err(|e| self.core_error(e))
    }

    async fn finish(mut self: Box<Self>) -> kars_backup_core::Result<Option<String>> {
        let kept = self.swap.kept.as_ref().map(|p| p.display().to_string());
        if let Err(e) = self.remove_staging().await {
            tracing::warn!(error = %e, "the staging directory could not be removed");
        }
        Ok(kept)
    }

    async fn discard(mut self: Box<Self>) -> kars_backup_core::Result<()> {
        let result = self.remove_staging().await;
        if !self.swap.changed_anything() {
            let created = std::mem::take(&mut self.created_dirs);
            let _ = blocking("removing created directories", move || {
                staging::remove_created_dirs(&created)
            })
            .await;
        }
        result.map_err(|e| self.core_error(e))
    }
}

fn nothing_staged(target: &Path) -> Error {
    Error::NoDatabase {
        archive: target.display().to_string(),
        reason: "nothing is staged".into(),
    }
}
