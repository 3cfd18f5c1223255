//! Databases by URL: [`source_from_url`] (`sqlite:///…`, a plain path, a directory, or
//! `postgres://…`) next to storage's `sink_from_url`, and the options a job opens its source
//! with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kars_backup_core::{BackupEntry, DynDatabaseSource, IntegrityLevel};
use kars_backup_postgres::physical::PhysicalSource;
use kars_backup_postgres::{DumpFormat, DumpOptions, PostgresSource};
use kars_backup_sqlite::SqliteSource;

use crate::error::{Error, Result};

/// Whether a database URL is a PostgreSQL one (`postgres://`, `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    PostgresSource::is_postgres_url(url)
}

/// The database at `url` — `sqlite:///abs/path.db`, `sqlite://rel`, `sqlite:rel`, a plain path
/// (an SQLite file, or a directory in volume mode), or `postgres://user:password@host/db` —
/// with default options.
///
/// # Errors
/// An unsupported scheme, an empty path, a PostgreSQL URL that does not parse (its password
/// left out of the message).
pub fn source_from_url(url: &str) -> Result<DynDatabaseSource> {
    SourceOptions::default().open(url)
}

/// How a job reads its database: the snapshot's integrity check and directory (SQLite), the
/// `pg_dump` options (PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOptions {
    /// SQLite: the integrity check of the snapshot recorded in the manifest (default: quick).
    pub integrity: IntegrityLevel,
    /// SQLite: the directory of the temporary snapshot file (default: the system's).
    pub snapshot_dir: Option<PathBuf>,
    /// PostgreSQL: what `pg_dump` writes and includes, or a physical base backup
    /// ([`DumpOptions::physical`]).
    pub postgres: DumpOptions,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            integrity: IntegrityLevel::Quick,
            snapshot_dir: None,
            postgres: DumpOptions::default(),
        }
    }
}

impl SourceOptions {
    /// The database at `url` (see [`source_from_url`]) with these options.
    ///
    /// # Errors
    /// As [`source_from_url`]; a parallel dump in a format other than directory.
    pub fn open(&self, url: &str) -> Result<DynDatabaseSource> {
        if self.postgres.physical {
            return Ok(Arc::new(physical_source(url, &self.postgres)?));
        }
        if is_postgres_url(url) {
            return Ok(Arc::new(postgres_dump_source(url, &self.postgres)?));
        }
        let mut source = sqlite_source(url)?.with_integrity(self.integrity);
        if let Some(dir) = &self.snapshot_dir {
            source = source.with_snapshot_dir(dir.clone());
        }
        Ok(Arc::new(source))
    }
}

/// The SQLite path of a database URL: `sqlite:///abs`, `sqlite://rel`, `sqlite:rel` or a path.
///
/// # Errors
/// A PostgreSQL URL, another scheme, or no path.
pub fn sqlite_path(url: &str) -> Result<PathBuf> {
    use kars_backup_core::Error as CoreError;
    if is_postgres_url(url) {
        return Err(CoreError::InvalidInput(
            "this command takes an SQLite database here, not a PostgreSQL URL".into(),
        )
        .into());
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        return Err(CoreError::InvalidInput(format!("--db {url:?} names no database file")).into());
    }
    if let Some((scheme, _)) = path.split_once("://") {
        return Err(CoreError::InvalidInput(format!(
            "unsupported database URL scheme {scheme:?}; use sqlite:///path/to/file.db or a plain path"
        ))
        .into());
    }
    Ok(PathBuf::from(path))
}

/// The SQLite database at a URL or path.
///
/// # Errors
/// As [`sqlite_path`].
pub fn sqlite_source(url: &str) -> Result<SqliteSource> {
    Ok(SqliteSource::new(sqlite_path(url)?))
}

/// The PostgreSQL database at `url`, its programs taken from `bin_dir` when given (the password
/// stays out of every message).
///
/// # Errors
/// A URL that does not parse.
pub fn postgres_source(url: &str, bin_dir: Option<&Path>) -> Result<PostgresSource> {
    let mut source = PostgresSource::from_url(url)
        .map_err(|e| e.into_core(&kars_backup_postgres::redact_url(url)))?;
    if let Some(dir) = bin_dir {
        source = source.with_pg_bin_dir(dir);
    }
    Ok(source)
}

/// The PostgreSQL database at `url` with the dump options: format, jobs, table selection.
///
/// # Errors
/// As [`postgres_source`]; more than one job in a format other than directory.
pub fn postgres_dump_source(url: &str, pg: &DumpOptions) -> Result<PostgresSource> {
    let jobs = pg.jobs();
    let format = pg.format();
    if jobs > 1 && format != DumpFormat::Directory {
        return Err(Error::usage(format!(
            "--jobs {jobs} needs --format directory (pg_dump dumps in parallel only in that format)"
        )));
    }
    Ok(postgres_source(url, pg.bin_dir.as_deref())?
        .with_format(format)
        .with_jobs(jobs)
        .with_dump_options(DumpOptions {
            format: Some(format),
            jobs: Some(jobs),
            ..pg.clone()
        }))
}

/// The PostgreSQL cluster at `url` for a physical base backup, its programs from
/// `pg.bin_dir`.
///
/// # Errors
/// A URL that is not PostgreSQL's or does not parse; dump options (format, jobs, tables, …),
/// which a base backup of the whole cluster cannot honour.
pub fn physical_source(url: &str, pg: &DumpOptions) -> Result<PhysicalSource> {
    if !is_postgres_url(url) {
        return Err(Error::usage(
            "--physical backs up PostgreSQL clusters: give a postgres:// URL",
        ));
    }
    let only_bin_dir = DumpOptions {
        bin_dir: pg.bin_dir.clone(),
        physical: pg.physical,
        ..DumpOptions::default()
    };
    if *pg != only_bin_dir {
        return Err(Error::usage(
            "--physical takes a base backup of the whole cluster: the dump options (--format, --jobs, --table, --exclude-table, --schema-only, --data-only) do not apply",
        ));
    }
    let mut source = PhysicalSource::from_url(url)
        .map_err(|e| e.into_core(&kars_backup_postgres::redact_url(url)))?;
    if let Some(dir) = &pg.bin_dir {
        source = source.with_pg_bin_dir(dir);
    }
    Ok(source)
}

/// Whether a backup is a PostgreSQL one: its manifest says so, or (runbook archives) its name
/// ends like a dump (`.sql.gz`, `.sql`, `.dump`, `.dir.tar`).
pub fn is_postgres_backup(entry: &BackupEntry) -> bool {
    match &entry.manifest {
        Some(m) => m.engine == kars_backup_postgres::ENGINE,
        None => matches!(
            entry.name.base_extension(),
            "sql" | "sql.gz" | "sql.zst" | "dump" | "dir.tar"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            sqlite_path("sqlite:///a/b.db").unwrap(),
            PathBuf::from("/a/b.db")
        );
        assert_eq!(
            sqlite_path("sqlite:rel.db").unwrap(),
            PathBuf::from("rel.db")
        );
        assert_eq!(sqlite_path("plain.db").unwrap(), PathBuf::from("plain.db"));
        assert!(sqlite_path("mysql://x/y").is_err());
        assert!(sqlite_path("sqlite://").is_err());
        assert!(source_from_url("postgres://u:secret@localhost/db").is_ok());
        let err = source_from_url("postgres://u:secret@[/db")
            .err()
            .map(|e| e.to_string());
        assert!(!err.unwrap_or_default().contains("secret"));
        let parallel_plain = SourceOptions {
            postgres: DumpOptions {
                jobs: Some(4),
                format: Some(DumpFormat::Plain),
                ..DumpOptions::default()
            },
            ..SourceOptions::default()
        };
        assert!(matches!(
            parallel_plain.open("postgres://localhost/db"),
            Err(Error::Usage(_))
        ));
    }
}
