//! [`PostgresSource`]: one PostgreSQL database as a [`DatabaseSource`].

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kars_backup_core::holders::Scan;
use kars_backup_core::{
    DatabaseInfo, DatabaseSource, DynProgress, InUsePolicy, IntegrityLevel, PayloadFormat,
    PayloadReader, PayloadWriter, PreviousCopy, SnapshotInfo, StageContext, StagedRestore,
};

use crate::conn::ConnInfo;
use crate::database::Database;
use crate::dump;
use crate::error::{Error, Result};
use crate::metadata::{self, Selection};
use crate::options::{DumpFormat, DumpOptions, PgRestoreOptions, RestoreMode};
use crate::restore;
use crate::sessions;
use crate::tools::Tools;

/// The engine name of this source.
pub const ENGINE: &str = "postgres";
/// The runbook's archive name prefix (`kars-postgres-YYYYmmdd-HHMMSS.sql.gz`).
pub const DEFAULT_NAME_PREFIX: &str = "kars-postgres";

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
    db: Database,
    format: DumpFormat,
    dump: DumpOptions,
    restore: PgRestoreOptions,
    restore_checks: Option<IntegrityLevel>,
}

impl PostgresSource {
    /// A source for a `postgres://` (or `postgresql://`) URL or a `key=value` connection string.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`].
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(PostgresSource {
            db: Database {
                conn: ConnInfo::parse(url)?,
                tools: Tools::default(),
                work_dir: None,
            },
            format: DumpFormat::default(),
            dump: DumpOptions::default(),
            restore: PgRestoreOptions::default(),
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
            self.db.tools.bin_dir = Some(dir.clone());
        }
        self.restore = options;
        self
    }

    /// The integrity level the restore's verification will use. Knowing it, a staging database
    /// loaded in parallel has each loaded table's B-tree indexes checked with amcheck as soon as
    /// they are built, on the loading connections (filling the gaps between index builds), and
    /// the verification does not check them again. Without it, every check waits for the
    /// verification.
    pub fn with_restore_checks(mut self, level: IntegrityLevel) -> Self {
        self.restore_checks = Some(level);
        self
    }

    /// Takes `pg_dump`, `pg_restore` and `psql` from this directory (instead of the Debian
    /// directory of the server's version, or `PATH`).
    pub fn with_pg_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.db.tools.bin_dir = Some(dir.into());
        self
    }

    /// Puts temporary files (directory dumps, spooled archives) in `dir` instead of the system's
    /// temporary directory.
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.db.work_dir = Some(dir.into());
        self
    }

    /// The same server and credentials, another database (a scratch target for `verify`).
    pub fn with_database(&self, name: &str) -> Self {
        let mut s = self.clone();
        s.db.conn = self.db.conn.with_dbname(name);
        s
    }

    /// The connection.
    pub fn conn(&self) -> &ConnInfo {
        &self.db.conn
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

    /// The pg binary directory, if set.
    pub fn pg_bin_dir(&self) -> Option<&Path> {
        self.db.tools.bin_dir.as_deref()
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
        self.db.conn.redacted()
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
            let target = self.db.conn.redacted();
            let client = self.db.conn.connect().await?;
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
            let (admin, _) = restore::admin_connect(&self.db.conn).await?;
            restore::database_exists(&admin, self.db.conn.dbname(), &self.db.conn.redacted()).await
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
        dump::write_payload(&self.db, self.format, &self.dump, out, progress)
            .instrument(span)
            .await
            .map_err(|e| self.core_error(e))
    }

    async fn stage_restore(
        &self,
        payload: PayloadReader,
        context: &StageContext,
    ) -> kars_backup_core::Result<Box<dyn StagedRestore>> {
        if context
            .manifest
            .as_ref()
            .is_some_and(|m| m.physical.is_some())
        {
            return Err(self.core_error(Error::Unsupported(format!(
                "{} is a physical base backup of a whole cluster, not a dump: restore it into a new data directory with `kars-backup restore --physical --pgdata NEWDIR`",
                context.archive_name
            ))));
        }
        restore::stage(
            &self.db,
            &self.restore,
            self.restore_checks,
            payload,
            context,
        )
        .await
        .map_err(|e| self.core_error(e))
    }

    /// The client sessions on the target database (from `pg_stat_activity`), other than this
    /// process's; none when the database does not exist.
    async fn in_use(&self) -> kars_backup_core::Result<Scan> {
        async {
            let (admin, _) = restore::admin_connect(&self.db.conn).await?;
            sessions::sessions_on(&admin, self.db.conn.dbname(), &self.db.conn.redacted()).await
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
            let (admin, _) = restore::admin_connect(&self.db.conn).await?;
            sessions::clean_leftovers(&admin, self.db.conn.dbname(), &self.db.conn.redacted()).await
        }
        .await
        .map_err(|e| self.core_error(e))
    }

    async fn previous_copies(&self) -> kars_backup_core::Result<Vec<PreviousCopy>> {
        async {
            let (admin, _) = restore::admin_connect(&self.db.conn).await?;
            sessions::previous_copies(&admin, self.db.conn.dbname(), &self.db.conn.redacted()).await
        }
        .await
        .map_err(|e| self.core_error(e))
    }

    async fn remove_previous(&self, copy: &PreviousCopy) -> kars_backup_core::Result<()> {
        async {
            let (admin, _) = restore::admin_connect(&self.db.conn).await?;
            sessions::drop_database(&admin, &copy.name, &self.db.conn.redacted()).await
        }
        .await
        .map_err(|e| self.core_error(e))
    }
}
