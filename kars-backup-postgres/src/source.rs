//! [`PostgresSource`]: one PostgreSQL database as a [`DatabaseSource`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_trait::async_trait;
use kars_backup_core::holders::Scan;
use kars_backup_core::{
    DatabaseInfo, DatabaseSource, DynProgress, InUsePolicy, PayloadFormat, PayloadReader,
    PayloadWriter, PreviousCopy, SnapshotInfo, StageContext, StagedRestore,
};

use crate::conn::ConnInfo;
use crate::dump;
use crate::error::{Error, Result};
use crate::metadata::{self, Selection};
use crate::restore;
use crate::sessions;
use crate::tools::Tools;

/// The engine name of this source.
pub const ENGINE: &str = "postgres";
/// The runbook's archive name prefix (`kars-postgres-YYYYmmdd-HHMMSS.sql.gz`).
pub const DEFAULT_NAME_PREFIX: &str = "kars-postgres";

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

/// One PostgreSQL database, reached by a `postgres://` URL.
///
/// - **Backup**: a `REPEATABLE READ` transaction exports a snapshot; `pg_dump --snapshot` dumps
///   exactly that snapshot while the same transaction reads the table list, exact row counts,
///   database size and server version for the manifest. `pg_dump`'s output streams into the
///   pipeline; a failed or killed `pg_dump` fails the backup (nothing is listed) with its standard
///   error in the message. `pg_dump` must be at least the server's major version (checked first).
/// - **Restore** ([`RestoreMode::Safe`]): into a new database `<db>_kars_staging_<time>`, verified
///   (amcheck or catalog checks, row counts against the manifest, test queries), then renamed into
///   place; the previous database stays as `<db>_pre_restore_<time>`.
/// - Passwords reach `pg_dump`, `pg_restore` and `psql` only through `PGPASSWORD`; every URL shown
///   or stored is redacted.
///
/// ```
/// use kars_backup_core::DatabaseSource;
/// use kars_backup_postgres::{DumpFormat, PostgresSource};
///
/// let source = PostgresSource::from_url("postgres://kars:secret@db.internal:5432/assets")
///     .unwrap()
///     .with_format(DumpFormat::Custom);
/// assert_eq!(source.describe(), "postgres://kars@db.internal:5432/assets");
/// assert_eq!(source.payload_format().extension, "dump");
/// ```
#[derive(Debug, Clone)]
pub struct PostgresSource {
    conn: ConnInfo,
    tools: Tools,
    format: DumpFormat,
    dump: DumpOptions,
    restore: PgRestoreOptions,
    work_dir: Option<PathBuf>,
    restore_checks: Option<kars_backup_core::IntegrityLevel>,
}

impl PostgresSource {
    /// A source for a `postgres://` (or `postgresql://`) URL or a `key=value` connection string.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`].
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(PostgresSource {
            conn: ConnInfo::parse(url)?,
            tools: Tools::default(),
            format: DumpFormat::default(),
            dump: DumpOptions::default(),
            restore: PgRestoreOptions::default(),
            work_dir: None,
            restore_checks: None,
        })
    }

    /// A source for `DATABASE_URL`, as the runbook's scripts use.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when it is unset or not a PostgreSQL URL.
    pub fn from_env() -> Result<Self> {
        let url = std::env::var("DATABASE_URL").map_err(|_| Error::InvalidUrl {
            url: "$DATABASE_URL".into(),
            reason: "DATABASE_URL is not set".into(),
        })?;
        Self::from_url(&url)
    }

    /// Whether a string looks like a PostgreSQL URL (`postgres://`, `postgresql://`).
    pub fn is_postgres_url(s: &str) -> bool {
        s.starts_with("postgres://") || s.starts_with("postgresql://")
    }

    /// The dump format (default [`DumpFormat::Plain`]).
    pub fn with_format(mut self, format: DumpFormat) -> Self {
        self.format = format;
        self
    }

    /// Parallel jobs for directory dumps and for restores of custom and directory backups.
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.dump.jobs = Some(jobs);
        self.restore.jobs = jobs;
        self
    }

    /// What the dump includes.
    pub fn with_dump_options(mut self, options: DumpOptions) -> Self {
        self.dump = options;
        self
    }

    /// How restores into this database run.
    /// (A `bin_dir` given there takes the programs from that directory.)
    pub fn with_restore_options(mut self, options: PgRestoreOptions) -> Self {
        if let Some(dir) = &options.bin_dir {
            self.tools.bin_dir = Some(dir.clone());
        }
        self.restore = options;
        self
    }

    /// The integrity level the restore's verification will use. Knowing it, a staging database
    /// loaded in parallel has each loaded table's B-tree indexes checked with amcheck as soon as
    /// they are built, on the loading connections (filling the gaps between index builds), and
    /// the verification does not check them again. Without it, every check waits for the
    /// verification.
    pub fn with_restore_checks(mut self, level: kars_backup_core::IntegrityLevel) -> Self {
        self.restore_checks = Some(level);
        self
    }

    pub(crate) fn restore_checks(&self) -> Option<kars_backup_core::IntegrityLevel> {
        self.restore_checks
    }

    /// Takes `pg_dump`, `pg_restore` and `psql` from this directory (instead of the Debian
    /// directory of the server's version, or `PATH`).
    pub fn with_pg_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tools.bin_dir = Some(dir.into());
        self
    }

    /// Puts temporary files (directory dumps, spooled archives) in `dir` instead of the system's
    /// temporary directory.
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// The same server and credentials, another database (a scratch target for `verify`).
    pub fn with_database(&self, name: &str) -> Self {
        let mut s = self.clone();
        s.conn = self.conn.with_dbname(name);
        s
    }

    /// The connection.
    pub fn conn(&self) -> &ConnInfo {
        &self.conn
    }

    /// The dump format.
    pub fn format(&self) -> DumpFormat {
        self.format
    }

    /// The dump options.
    pub fn dump_options(&self) -> &DumpOptions {
        &self.dump
    }

    /// The restore options.
    pub fn restore_options(&self) -> &PgRestoreOptions {
        &self.restore
    }

    pub(crate) fn tools(&self) -> &Tools {
        &self.tools
    }

    pub(crate) fn work_dir_tempdir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        let dir = self.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&dir)
            .map_err(|e| Error::io("create a temporary directory in", &dir, e))
    }

    /// The pg binary directory, if set.
    pub fn pg_bin_dir(&self) -> Option<&Path> {
        self.tools.bin_dir.as_deref()
    }

    fn core_error(&self, e: Error) -> kars_backup_core::Error {
        e.into_core(&self.describe())
    }
}

#[async_trait]
impl DatabaseSource for PostgresSource {
    fn engine(&self) -> &str {
        ENGINE
    }

    /// `postgres://user@host:port/db`, never with the password.
    fn describe(&self) -> String {
        self.conn.redacted()
    }

    fn payload_format(&self) -> PayloadFormat {
        let (extension, compressed) = match self.format {
            DumpFormat::Plain => ("sql", false),
            DumpFormat::Custom => ("dump", true),
            DumpFormat::Directory => ("dir.tar", true),
        };
        PayloadFormat {
            extension: extension.into(),
            compressed,
        }
    }

    fn default_name_prefix(&self) -> &str {
        DEFAULT_NAME_PREFIX
    }

    async fn inspect(&self) -> kars_backup_core::Result<Vec<DatabaseInfo>> {
        let result = async {
            let target = self.conn.redacted();
            let client = self.conn.connect().await?;
            let version = metadata::server_version(&client, &target).await?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await
                .map_err(|e| Error::query("start a transaction", &target, &e))?;
            let selection = Selection {
                include: self.dump.tables.clone(),
                exclude: self.dump.exclude_tables.clone(),
            };
            let tables = metadata::list_tables(&client, &selection, &target).await?;
            let counted = metadata::count_rows(&client, &tables, &target).await?;
            let info = metadata::database_info(&client, &version, counted, &target).await?;
            let _ = client.batch_execute("COMMIT").await;
            Ok::<_, Error>(vec![info])
        }
        .await;
        result.map_err(|e| self.core_error(e))
    }

    async fn exists(&self) -> kars_backup_core::Result<bool> {
        let result = async {
            let (admin, _) = restore::admin_connect(&self.conn).await?;
            restore::database_exists(&admin, self.conn.dbname(), &self.conn.redacted()).await
        }
        .await;
        result.map_err(|e| self.core_error(e))
    }

    async fn write_payload(
        &self,
        out: PayloadWriter,
        progress: DynProgress,
    ) -> kars_backup_core::Result<SnapshotInfo> {
        use tracing::Instrument;
        let span = tracing::info_span!("pg_dump", database = %self.describe());
        dump::write_payload(self, out, progress)
            .instrument(span)
            .await
            .map_err(|e| self.core_error(e))
    }

    async fn stage_restore(
        &self,
        payload: PayloadReader,
        context: &StageContext,
    ) -> kars_backup_core::Result<Box<dyn StagedRestore>> {
        restore::stage(self, payload, context)
            .await
            .map_err(|e| self.core_error(e))
    }

    /// The client sessions on the target database (from `pg_stat_activity`), other than this
    /// process's; none when the database does not exist.
    async fn in_use(&self) -> kars_backup_core::Result<Scan> {
        async {
            let (admin, _) = restore::admin_connect(&self.conn).await?;
            sessions::sessions_on(&admin, self.conn.dbname(), &self.conn.redacted()).await
        }
        .await
        .map_err(|e| self.core_error(e))
    }

    fn in_use_remedies(&self) -> String {
        sessions::remedies()
    }

    fn check_in_use_policy(&self, policy: InUsePolicy) -> kars_backup_core::Result<()> {
        match (policy, self.restore_options().mode) {
            (InUsePolicy::Live, RestoreMode::Safe) => Err(kars_backup_core::Error::InvalidInput(
                "--live restores PostgreSQL in place (one transaction the application's sessions stay connected through): add --mode in-place; in safe mode use --terminate-connections, or stop the application".into(),
            )),
            _ => Ok(()),
        }
    }

    async fn clean_leftovers(&self) -> kars_backup_core::Result<Vec<String>> {
        async {
            let (admin, _) = restore::admin_connect(&self.conn).await?;
            sessions::clean_leftovers(&admin, self.conn.dbname(), &self.conn.redacted()).await
        }
        .await
        .map_err(|e| self.core_error(e))
    }

    async fn previous_copies(&self) -> kars_backup_core::Result<Vec<PreviousCopy>> {
        async {
            let (admin, _) = restore::admin_connect(&self.conn).await?;
            sessions::previous_copies(&admin, self.conn.dbname(), &self.conn.redacted()).await
        }
        .await
        .map_err(|e| self.core_error(e))
    }

    async fn remove_previous(&self, copy: &PreviousCopy) -> kars_backup_core::Result<()> {
        async {
            let (admin, _) = restore::admin_connect(&self.conn).await?;
            sessions::drop_database(&admin, &copy.name, &self.conn.redacted()).await
        }
        .await
        .map_err(|e| self.core_error(e))
    }
}
