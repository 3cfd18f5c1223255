//! Scratch targets of verifies and drills, as a library value: [`Scratch`] makes a new
//! directory for each SQLite attempt and a new temporary database on the scratch server for
//! each PostgreSQL one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kars_backup_core::checks::ScratchTargets;
use kars_backup_core::merge::Merge;
use kars_backup_core::{BackupEntry, DynDatabaseSource, Error as CoreError};
use kars_backup_sqlite::SqliteSource;

use crate::error::into_core;
use crate::source::{is_postgres_backup, is_postgres_url, postgres_source};

/// Where PostgreSQL backups are verified: the scratch server, `pg_restore` jobs and programs.
/// The `verify` and `drill` flags (`clap` feature) are this type; a job's `[job.verify]
/// scratch-db` and `[job.postgres] bin-dir` fill what they leave unset ([`Merge`]).
#[derive(Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "PostgreSQL"))]
pub struct ScratchOptions {
    /// A PostgreSQL server (URL) where verify may create and drop a temporary database; needed
    /// for PostgreSQL backups (default: the --config job's `[job.verify] scratch-db`, else
    /// DATABASE_URL's server).
    #[cfg_attr(feature = "clap", arg(long, value_name = "URL"))]
    pub scratch_db: Option<String>,

    /// Parallel pg_restore jobs.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub jobs: Option<usize>,

    /// Directory of pg_restore/psql (default: the --config job's `[job.postgres] bin-dir`, else
    /// the server version's Debian directory, else PATH).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub pg_bin_dir: Option<PathBuf>,
}

impl fmt::Debug for ScratchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScratchOptions")
            .field(
                "scratch_db",
                &self
                    .scratch_db
                    .as_deref()
                    .map(kars_backup_postgres::redact_url),
            )
            .field("jobs", &self.jobs)
            .field("pg_bin_dir", &self.pg_bin_dir)
            .finish()
    }
}

impl Merge for ScratchOptions {
    fn merge(self, lower: Self) -> Self {
        ScratchOptions {
            scratch_db: self.scratch_db.or(lower.scratch_db),
            jobs: self.jobs.or(lower.jobs),
            pg_bin_dir: self.pg_bin_dir.or(lower.pg_bin_dir),
        }
    }
}

/// Makes scratch targets for verifies and drills: `attempt-N` directories under its own
/// temporary directory (removed when it is dropped) for SQLite backups, `kars_verify_<run>`
/// databases on the scratch server for PostgreSQL ones.
#[derive(Debug)]
pub struct Scratch {
    options: ScratchOptions,
    dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
    next: AtomicUsize,
}

impl Scratch {
    /// Scratch targets in a new temporary directory named `<prefix>…`.
    ///
    /// # Errors
    /// The temporary directory cannot be created.
    pub fn new(options: ScratchOptions, prefix: &str) -> kars_backup_core::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| CoreError::io("create directory", std::env::temp_dir(), e))?;
        Ok(Scratch {
            options,
            dir: dir.path().to_path_buf(),
            _owned: Some(dir),
            next: AtomicUsize::new(1),
        })
    }

    /// Scratch targets under `dir` (which the caller removes).
    pub fn in_dir(options: ScratchOptions, dir: impl Into<PathBuf>) -> Self {
        Scratch {
            options,
            dir: dir.into(),
            _owned: None,
            next: AtomicUsize::new(1),
        }
    }

    /// The directory SQLite attempts go under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty directory for one SQLite attempt (`attempt-N`).
    ///
    /// # Errors
    /// It cannot be created.
    pub fn attempt_dir(&self) -> kars_backup_core::Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("attempt-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| CoreError::io("create directory", &dir, e))?;
        Ok(dir)
    }

    /// A new, unused database on the scratch server (`scratch_db`, else DATABASE_URL's).
    fn postgres(&self) -> kars_backup_core::Result<kars_backup_postgres::PostgresSource> {
        let url = self.options.scratch_db.clone().or_else(|| {
            std::env::var("DATABASE_URL")
                .ok()
                .filter(|u| is_postgres_url(u))
        });
        let Some(url) = url else {
            return Err(CoreError::InvalidInput(
                "verifying a PostgreSQL backup restores it into a temporary database, and the backup's own server is not recorded (its URL is redacted): give --scratch-db postgres://user:password@host:port/postgres (a server where kars-backup may create and drop a database), or set DATABASE_URL".into(),
            ));
        };
        let source =
            postgres_source(&url, self.options.pg_bin_dir.as_deref()).map_err(into_core)?;
        let name = format!(
            "kars_verify_{}",
            kars_backup_core::new_run_id()
                .to_ascii_lowercase()
                .replace('-', "_")
        );
        Ok(source.with_database(&name).with_restore_options(
            kars_backup_postgres::PgRestoreOptions {
                jobs: self.options.jobs.unwrap_or(1).max(1),
                ..Default::default()
            },
        ))
    }
}

impl ScratchTargets for Scratch {
    fn scratch_for(&self, entry: &BackupEntry) -> kars_backup_core::Result<DynDatabaseSource> {
        if is_postgres_backup(entry) {
            return Ok(Arc::new(self.postgres()?));
        }
        Ok(Arc::new(scratch_source(entry, &self.attempt_dir()?)))
    }
}

/// A scratch target inside `dir` for verifying `entry`: a file named like the backed-up
/// database, or a directory for volume backups.
pub fn scratch_source(entry: &BackupEntry, dir: &Path) -> SqliteSource {
    let volume = entry
        .manifest
        .as_ref()
        .is_some_and(kars_backup_sqlite::is_volume_manifest);
    if volume {
        return SqliteSource::new_volume(dir.join("volume"));
    }
    let name = entry
        .manifest
        .as_ref()
        .and_then(|m| m.databases.first())
        .map(|d| d.name.clone())
        .unwrap_or_else(|| "restored.db".to_string());
    let file = Path::new(&name)
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "restored.db".into());
    SqliteSource::new(dir.join(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kars_backup_core::merge::merge;

    #[test]
    fn scratch_flags_win_over_the_file() {
        let file = ScratchOptions {
            scratch_db: Some("postgres://file/postgres".into()),
            jobs: Some(2),
            pg_bin_dir: Some("/file/bin".into()),
        };
        let flags = ScratchOptions {
            pg_bin_dir: Some("/flag/bin".into()),
            ..ScratchOptions::default()
        };
        let m = merge(flags, Some(file));
        assert_eq!(m.scratch_db.as_deref(), Some("postgres://file/postgres"));
        assert_eq!(m.jobs, Some(2));
        assert_eq!(m.pg_bin_dir, Some(PathBuf::from("/flag/bin")));
        assert_eq!(
            merge(ScratchOptions::default(), None),
            ScratchOptions::default()
        );
        let secret = ScratchOptions {
            scratch_db: Some("postgres://u:hunter2@h/db".into()),
            ..ScratchOptions::default()
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
