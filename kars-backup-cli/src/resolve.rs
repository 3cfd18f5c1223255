//! Turns command-line strings into library objects: sources, repositories, backups.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kars_backup_core::{BackupEntry, DynDatabaseSource, Error, Repository};
use kars_backup_sqlite::SqliteSource;

use crate::args::Which;

/// The SQLite path of a `--db` value: `sqlite:///abs`, `sqlite://rel`, `sqlite:rel` or a path.
pub(crate) fn sqlite_path(db: &str) -> anyhow::Result<PathBuf> {
    if is_postgres(db) {
        return Err(Error::InvalidInput(
            "this command takes an SQLite database here, not a PostgreSQL URL".into(),
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

/// Whether a `--db` value is a PostgreSQL URL.
pub(crate) fn is_postgres(db: &str) -> bool {
    kars_backup_postgres::PostgresSource::is_postgres_url(db)
}

/// A PostgreSQL source for a `--db` value (the password stays out of every message).
pub(crate) fn postgres_source(
    db: &str,
    pg_bin_dir: Option<&std::path::Path>,
) -> anyhow::Result<kars_backup_postgres::PostgresSource> {
    let mut source = kars_backup_postgres::PostgresSource::from_url(db)
        .map_err(|e| e.into_core(&kars_backup_postgres::redact_url(db)))?;
    if let Some(dir) = pg_bin_dir {
        source = source.with_pg_bin_dir(dir);
    }
    Ok(source)
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
/// The database at `db` (a path, `sqlite://…` or `postgres://…`) as a source, for commands that
/// look at it (`inspect`, `status --db`).
pub(crate) fn database(db: &str) -> anyhow::Result<DynDatabaseSource> {
    Ok(if is_postgres(db) {
        std::sync::Arc::new(postgres_source(db, None)?)
    } else {
        shared(sqlite_source(db)?)
    })
}

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

/// Whether a backup is a PostgreSQL one: its manifest says so, or (runbook archives) its name
/// ends like a dump (`.sql.gz`, `.sql`, `.dump`, `.dir.tar`).
pub(crate) fn is_postgres_backup(entry: &BackupEntry) -> bool {
    match &entry.manifest {
        Some(m) => m.engine == kars_backup_postgres::ENGINE,
        None => matches!(
            entry.name.base_extension(),
            "sql" | "sql.gz" | "sql.zst" | "dump" | "dir.tar"
        ),
    }
}

/// A new, unused database on the `--scratch-db` server (or DATABASE_URL's) for `verify`.
pub(crate) fn postgres_scratch(
    pg: &crate::args::PgVerifyArgs,
) -> anyhow::Result<kars_backup_postgres::PostgresSource> {
    let url = match pg.scratch_db.clone().or_else(|| {
        std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| is_postgres(u))
    }) {
        Some(u) => u,
        None => {
            return Err(crate::commands::UsageError(
                "verifying a PostgreSQL backup restores it into a temporary database, and the backup's own server is not recorded (its URL is redacted): give --scratch-db postgres://user:password@host:port/postgres (a server where kars-backup may create and drop a database), or set DATABASE_URL".into(),
            )
            .into());
        }
    };
    let source = postgres_source(&url, pg.pg_bin_dir.as_deref())?;
    let name = format!(
        "kars_verify_{}",
        kars_backup_core::new_run_id()
            .to_ascii_lowercase()
            .replace('-', "_")
    );
    let jobs = pg.jobs.unwrap_or(1).max(1);
    Ok(source
        .with_database(&name)
        .with_restore_options(kars_backup_postgres::PgRestoreOptions {
            jobs,
            ..Default::default()
        }))
}

/// The origins of `--from` values (repeatable), labelled as their sinks describe themselves
/// (redacted URLs, `file:///…` for directories).
pub(crate) fn origins(from: &[String]) -> anyhow::Result<Vec<kars_backup_core::recovery::Origin>> {
    from.iter()
        .map(|dest| {
            let sink = kars_backup_storage::sink_from_url(dest).with_context(|| {
                format!(
                    "cannot open destination {}",
                    kars_backup_storage::redact(dest)
                )
            })?;
            Ok(kars_backup_core::recovery::Origin::of_sink(sink))
        })
        .collect()
}

/// `--latest` or `--backup NAME`.
pub(crate) fn pick(which: &Which) -> kars_backup_core::recovery::Pick {
    match &which.backup {
        Some(name) => kars_backup_core::recovery::Pick::Named(name.clone()),
        None => kars_backup_core::recovery::Pick::Latest,
    }
}

/// A CLI-side error as a library error (for callbacks the library calls): the library error
/// itself when it is one, else a usage error with the message.
pub(crate) fn core_error(err: anyhow::Error) -> Error {
    match err.downcast::<Error>() {
        Ok(e) => e,
        Err(other) => Error::InvalidInput(crate::error_text(&other)),
    }
}

/// Makes scratch targets for `verify` and `drill`: a new directory under `dir` for each SQLite
/// attempt, a new temporary database on the `--scratch-db` server for each PostgreSQL one.
pub(crate) struct Scratch<'a> {
    pg: &'a crate::args::PgVerifyArgs,
    dir: &'a std::path::Path,
    next: std::sync::atomic::AtomicUsize,
}

impl<'a> Scratch<'a> {
    pub(crate) fn new(pg: &'a crate::args::PgVerifyArgs, dir: &'a std::path::Path) -> Self {
        Scratch {
            pg,
            dir,
            next: std::sync::atomic::AtomicUsize::new(1),
        }
    }

    pub(crate) fn make(
        &self,
        entry: &kars_backup_core::BackupEntry,
    ) -> kars_backup_core::Result<kars_backup_core::DynDatabaseSource> {
        if is_postgres_backup(entry) {
            let source = postgres_scratch(self.pg).map_err(core_error)?;
            return Ok(std::sync::Arc::new(source));
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.join(format!("attempt-{n}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| kars_backup_core::Error::io("create directory", &dir, e))?;
        let source = scratch_source(entry, &dir).map_err(core_error)?;
        Ok(shared(source))
    }
}
