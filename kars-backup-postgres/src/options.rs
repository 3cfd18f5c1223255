//! How a source dumps and restores: [`DumpFormat`], [`DumpOptions`], [`RestoreMode`],
//! [`PgRestoreOptions`].

use std::fmt;
use std::str::FromStr;

/// The format `pg_dump` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DumpFormat {
    /// Plain SQL, the runbook's default; the pipeline compresses it (`.sql.gz`).
    #[default]
    Plain,
    /// `pg_dump -Fc`: compressed already, stored as is (`.dump`); restores selectively and in
    /// parallel.
    Custom,
    /// `pg_dump -Fd --jobs N` (parallel dump), packed into a tar (`.dir.tar`); restores in
    /// parallel.
    Directory,
}

impl fmt::Display for DumpFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DumpFormat::Plain => "plain",
            DumpFormat::Custom => "custom",
            DumpFormat::Directory => "directory",
        })
    }
}

impl FromStr for DumpFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "plain" | "p" | "sql" => Ok(DumpFormat::Plain),
            "custom" | "c" | "dump" => Ok(DumpFormat::Custom),
            "directory" | "d" | "dir" => Ok(DumpFormat::Directory),
            _ => Err(format!(
                "unknown format {s:?}: use plain, custom or directory"
            )),
        }
    }
}

/// How a restore replaces the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreMode {
    /// Into a new staging database, verified, then swapped in by renaming databases; the previous
    /// database is kept as `<db>_pre_restore_<time>` and renamed back on any failure.
    #[default]
    Safe,
    /// As the runbook does: into the live database (user schemas dropped and recreated), in one
    /// transaction that also checks the row counts, so a failed import changes nothing. A
    /// committed import cannot be rolled back.
    InPlace,
}

impl FromStr for RestoreMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "safe" => Ok(RestoreMode::Safe),
            "in-place" | "inplace" => Ok(RestoreMode::InPlace),
            _ => Err(format!("unknown restore mode {s:?}: use safe or in-place")),
        }
    }
}

/// What `pg_dump` includes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpOptions {
    /// Parallel jobs of a directory-format dump.
    pub jobs: usize,
    /// Only these tables (`pg_dump --table` patterns).
    pub tables: Vec<String>,
    /// Not these tables (`pg_dump --exclude-table` patterns).
    pub exclude_tables: Vec<String>,
    /// Definitions only.
    pub schema_only: bool,
    /// Data only.
    pub data_only: bool,
}

/// How a payload is restored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgRestoreOptions {
    /// Safe (staging database and swap) or in place.
    pub mode: RestoreMode,
    /// Parallel `pg_restore` jobs (custom and directory backups).
    pub jobs: usize,
    /// Only these tables (`pg_restore --table`; custom and directory backups).
    pub tables: Vec<String>,
    /// `--clean --if-exists` for a selective in-place restore: drop the selected tables first.
    pub clean: bool,
}
