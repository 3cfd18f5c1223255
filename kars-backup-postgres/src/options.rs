//! How a source dumps and restores: [`DumpFormat`], [`DumpOptions`], [`RestoreMode`],
//! [`PgRestoreOptions`].

use std::fmt;
use std::path::PathBuf;
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

/// What `pg_dump` writes and includes, as the operator gives it: the configuration file's
/// `[job.postgres]` (serde) and the `backup` flags (`clap` feature) are this one type.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "PostgreSQL"))]
pub struct DumpOptions {
    /// pg_dump format: plain (`.sql.gz`, the runbook's), custom (`.dump`, selective and parallel
    /// restore) or directory (parallel dump, `.dir.tar`). Default: plain, or directory with
    /// more than one job.
    #[serde(default, deserialize_with = "opt_from_str")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "FORMAT"))]
    pub format: Option<DumpFormat>,

    /// Parallel pg_dump jobs (directory format).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub jobs: Option<usize>,

    /// Dump only tables matching this pg_dump pattern; repeatable.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long = "table", value_name = "PATTERN"))]
    pub tables: Vec<String>,

    /// Do not dump tables matching this pattern; repeatable.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long = "exclude-table", value_name = "PATTERN"))]
    pub exclude_tables: Vec<String>,

    /// Dump only the definitions, no data.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "data_only"))]
    pub schema_only: bool,

    /// Dump only the data, no definitions.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long))]
    pub data_only: bool,

    /// Directory of pg_dump/pg_restore/psql (default: the server version's Debian directory,
    /// else PATH).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long = "pg-bin-dir", value_name = "DIR"))]
    pub bin_dir: Option<PathBuf>,

    /// A physical base backup of the whole cluster (`pg_basebackup`, fast checkpoint, with its
    /// backup manifest) instead of a dump; the WAL comes from the cluster's WAL archive
    /// (`archive_command`). Restore it with `restore --physical`. The other dump options do
    /// not apply.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long))]
    pub physical: bool,
}

impl DumpOptions {
    /// The parallel jobs (at least 1).
    pub fn jobs(&self) -> usize {
        self.jobs.unwrap_or(1).max(1)
    }

    /// The format: the one given, else directory for parallel dumps, else plain.
    pub fn format(&self) -> DumpFormat {
        self.format.unwrap_or(if self.jobs() > 1 {
            DumpFormat::Directory
        } else {
            DumpFormat::Plain
        })
    }
}

fn opt_from_str<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

/// How a payload is restored; the `restore` flags (`clap` feature) are this type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "PostgreSQL"))]
pub struct PgRestoreOptions {
    /// safe: restore into a staging database, verify, swap in by renaming (the previous database
    /// is kept as <db>_pre_restore_<time>); in-place: replace the live database's schemas in one
    /// transaction, as the runbook does.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "MODE", default_value = "safe")
    )]
    pub mode: RestoreMode,
    /// Parallel jobs: loading connections for a plain dump (default: one per CPU, up to 4), or
    /// pg_restore --jobs for custom and directory backups (default 1).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)
    )]
    pub jobs: usize,
    /// Restore only this table (custom and directory backups); repeatable.
    #[cfg_attr(feature = "clap", arg(long = "table", value_name = "NAME"))]
    pub tables: Vec<String>,
    /// With --table in place: drop and recreate the tables (pg_restore --clean --if-exists)
    /// instead of emptying and refilling them.
    #[cfg_attr(feature = "clap", arg(long))]
    pub clean: bool,
    /// Directory of pg_restore/psql (default: the --config job's `[job.postgres] bin-dir`, else
    /// the server version's Debian directory, else PATH).
    #[cfg_attr(feature = "clap", arg(long = "pg-bin-dir", value_name = "DIR"))]
    pub bin_dir: Option<PathBuf>,
}
