//! Turns command-line strings into library objects: sources, repositories, backups.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kars_backup_core::{BackupEntry, DynDatabaseSource, Error, Repository};
use kars_backup_sqlite::SqliteSource;

use crate::args::Which;

/// The SQLite path of a `--db` value: `sqlite:///abs`, `sqlite://rel`, `sqlite:rel` or a path.
pub(crate) fn sqlite_path(db: &str) -> anyhow::Result<PathBuf> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        return Err(Error::InvalidInput(
            "PostgreSQL databases are not supported by this build yet; give an SQLite file or directory".into(),
        )
        .into());
    }
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .unwrap_or(db);
    if path.is_empty() {
        return Err(Error::InvalidInput(format!("--db {db:?} names no database file")).into());
    }
    if let Some((scheme, _)) = path.split_once("://") {
        return Err(Error::InvalidInput(format!(
            "unsupported database URL scheme {scheme:?}; use sqlite:///path/to/file.db or a plain path"
        ))
        .into());
    }
    Ok(PathBuf::from(path))
}

/// An SQLite source for a `--db` value.
pub(crate) fn sqlite_source(db: &str) -> anyhow::Result<SqliteSource> {
    Ok(SqliteSource::new(sqlite_path(db)?))
}

/// A repository for a destination URL.
pub(crate) fn repository(dest: &str) -> anyhow::Result<Repository> {
    let sink = kars_backup_storage::sink_from_url(dest).with_context(|| {
        format!(
            "cannot open destination {}",
            kars_backup_storage::redact(dest)
        )
    })?;
    Ok(Repository::new(sink))
}

/// The backup chosen by `--latest` or `--backup NAME`.
pub(crate) async fn backup(repo: &Repository, which: &Which) -> anyhow::Result<BackupEntry> {
    if let Some(name) = &which.backup {
        return Ok(repo.find(name).await?);
    }
    let listing = repo.list().await?;
    match listing.latest() {
        Some(e) => Ok(e.clone()),
        None => {
            let runbook = listing
                .entries
                .iter()
                .filter(|e| e.kind == kars_backup_core::EntryKind::Runbook)
                .count();
            let hint = if runbook > 0 {
                format!(
                    "; {runbook} runbook archive(s) without manifest are there: restore one by name with --backup"
                )
            } else {
                String::new()
            };
            Err(Error::NotFound {
                what: format!("no committed backup in {}{hint}", repo.describe()),
            }
            .into())
        }
    }
}

/// Wraps a source for the library.
pub(crate) fn shared(source: SqliteSource) -> DynDatabaseSource {
    Arc::new(source)
}

/// A scratch target inside `dir` for verifying `entry`: a file named like the backed-up database,
/// or a directory for volume backups.
pub(crate) fn scratch_source(
    entry: &BackupEntry,
    dir: &std::path::Path,
) -> anyhow::Result<SqliteSource> {
    let volume = entry
        .manifest
        .as_ref()
        .is_some_and(kars_backup_sqlite::is_volume_manifest);
    if volume {
        Ok(SqliteSource::new_volume(dir.join("volume")))
    } else {
        let name = entry
            .manifest
            .as_ref()
            .and_then(|m| m.databases.first())
            .map(|d| d.name.clone())
            .unwrap_or_else(|| "restored.db".to_string());
        let file = std::path::Path::new(&name)
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "restored.db".into());
        Ok(SqliteSource::new(dir.join(file)))
    }
}
