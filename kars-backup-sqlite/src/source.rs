//! [`SqliteSource`]: an SQLite database file, or a directory (volume) of them, as a
//! [`DatabaseSource`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use kars_backup_core::holders::{Scan, redact_command};
use kars_backup_core::verify::IntegrityLevel;
use kars_backup_core::{
    DatabaseInfo, DatabaseSource, DynProgress, InUsePolicy, PayloadFormat, PayloadReader,
    PayloadWriter, PreviousCopy, SnapshotInfo, StageContext, StagedRestore,
};

use crate::error::{Error, Result};
use crate::inspect;
use crate::restore::{self, Layout};
use crate::snapshot::{self, SnapshotConfig};
use crate::volume::{self, Item};
use kars_backup_core::TaskError;

/// The engine name of this source.
pub const ENGINE: &str = "sqlite";
/// The runbook's archive name prefix for SQLite (`asset-data-YYYYmmdd-HHMMSS.tar.gz`).
pub const DEFAULT_NAME_PREFIX: &str = "asset-data";
/// How long a snapshot waits for other connections' locks unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the path is one database file or a directory of databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SourceMode {
    /// A directory is a volume, anything else a database file (decided at each use).
    #[default]
    Auto,
    /// One database file.
    File,
    /// A directory of databases and other files, like the runbook's `/data` volume.
    Volume,
}

/// An SQLite database file, or a directory (a volume) holding databases and other files.
///
/// - **Backup** takes a consistent snapshot of each database with SQLite's online backup API
///   (never a raw copy of a live file) into a private temporary file, and streams it as a tar
///   entry named like the database (`assets.db`), so `tar xzf archive && sqlite3 assets.db` works.
///   Row counts and the integrity check in the manifest come from that same snapshot.
/// - **Restore** extracts into a staging directory beside the target, verifies there, and swaps
///   in with renames that keep the previous database (see [`StagedRestore`]).
///
/// ```
/// use kars_backup_core::verify::IntegrityLevel;
/// use kars_backup_sqlite::SqliteSource;
///
/// let source = SqliteSource::from_url("sqlite:///app/data/assets.db")
///     .unwrap()
///     .with_integrity(IntegrityLevel::Full)
///     .with_snapshot_dir("/var/tmp");
/// assert_eq!(source.path().to_str(), Some("/app/data/assets.db"));
/// ```
#[derive(Debug, Clone)]
pub struct SqliteSource {
    path: PathBuf,
    mode: SourceMode,
    snapshot_dir: Option<PathBuf>,
    integrity: IntegrityLevel,
    lock_timeout: Duration,
}

impl SqliteSource {
    /// A source for the database file or volume directory at `path` ([`SourceMode::Auto`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteSource {
            path: path.into(),
            mode: SourceMode::Auto,
            snapshot_dir: None,
            integrity: IntegrityLevel::Quick,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// A source for the volume directory at `path` (useful when it does not exist yet, as the
    /// target of a restore).
    pub fn new_volume(path: impl Into<PathBuf>) -> Self {
        Self::new(path).with_mode(SourceMode::Volume)
    }

    /// A source from `sqlite:///abs/path`, `sqlite:relative/path` or a plain path. A trailing `/`
    /// means a volume directory.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for another scheme, a host, or an empty path.
    pub fn from_url(url: &str) -> Result<Self> {
        // A URL of another kind may carry a password (`postgres://user:secret@…`).
        let invalid = |reason: &str| Error::InvalidUrl {
            url: redact_command(url),
            reason: reason.to_string(),
        };
        let path = if let Some(rest) = url.strip_prefix("sqlite://") {
            if !rest.starts_with('/') {
                return Err(invalid(
                    "use sqlite:///absolute/path (three slashes) or sqlite:relative/path",
                ));
            }
            percent_decode(rest).ok_or_else(|| invalid("bad percent-encoding"))?
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            percent_decode(rest).ok_or_else(|| invalid("bad percent-encoding"))?
        } else if url.contains("://") {
            return Err(invalid("not an sqlite:// URL"));
        } else {
            url.to_string()
        };
        if path.is_empty() {
            return Err(invalid("the path is empty"));
        }
        let source = Self::new(&path);
        Ok(if path.ends_with('/') {
            source.with_mode(SourceMode::Volume)
        } else {
            source
        })
    }

    /// Makes snapshot files in `dir` instead of the system's temporary directory. Choose a disk
    /// with room for the largest database.
    pub fn with_snapshot_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.snapshot_dir = Some(dir.into());
        self
    }

    /// The integrity check run on each snapshot and by [`DatabaseSource::inspect`] (default
    /// [`IntegrityLevel::Quick`]).
    pub fn with_integrity(mut self, level: IntegrityLevel) -> Self {
        self.integrity = level;
        self
    }

    /// How long a snapshot waits for other connections' locks (default
    /// [`DEFAULT_LOCK_TIMEOUT`]).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Treats the path as a file or a volume instead of deciding by what is there.
    pub fn with_mode(mut self, mode: SourceMode) -> Self {
        self.mode = mode;
        self
    }

    /// Stages a database file that `build` writes at the path it is given (in a staging
    /// directory beside the target), for [`kars_backup_core::restore_staged`]: a restore whose
    /// data does not come from an archive (a replication chain's rebuild). File targets only.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a volume target; file-system errors and `build`'s.
    pub async fn stage_built<F, Fut>(
        &self,
        in_use: InUsePolicy,
        build: F,
    ) -> kars_backup_core::Result<Box<dyn StagedRestore>>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        if self.is_volume() {
            return Err(self.core_error(Error::InvalidUrl {
                url: self.path.display().to_string(),
                reason: "a replicated database restores into a database file, not a directory"
                    .into(),
            }));
        }
        let staged = restore::stage_built(self.path.clone(), in_use, build)
            .await
            .map_err(|e| self.core_error(e))?;
        Ok(Box::new(staged))
    }

    /// The database file or volume directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configured mode.
    pub fn mode(&self) -> SourceMode {
        self.mode
    }

    /// Whether the path is (now) treated as a volume directory.
    pub fn is_volume(&self) -> bool {
        self.layout() == Layout::Volume
    }

    fn layout(&self) -> Layout {
        match self.mode {
            SourceMode::File => Layout::File,
            SourceMode::Volume => Layout::Volume,
            SourceMode::Auto if self.path.is_dir() => Layout::Volume,
            SourceMode::Auto => Layout::File,
        }
    }

    fn snapshot_config(&self) -> SnapshotConfig {
        SnapshotConfig {
            dir: self.snapshot_dir.clone().unwrap_or_else(std::env::temp_dir),
            integrity: self.integrity,
            lock_timeout: self.lock_timeout,
        }
    }

    fn core_error(&self, e: Error) -> kars_backup_core::Error {
        e.into_core(&self.describe())
    }

    /// Runs blocking work on tokio's blocking threads, converting errors.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> kars_backup_core::Result<T> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Task(TaskError::new(what, e.to_string())))
            .and_then(|r| r)
            .map_err(|e| self.core_error(e))
    }
}

/// Whether a manifest describes a volume backup (a directory of databases and files) rather than
/// the backup of one database file: its source ends with `/`, or it does not hold exactly one
/// top-level database.
pub fn is_volume_manifest(manifest: &kars_backup_core::Manifest) -> bool {
    manifest.engine == ENGINE
        && (manifest.source.ends_with('/')
            || manifest.databases.len() != 1
            || manifest.databases.iter().any(|d| d.name.contains('/')))
}

/// Describes every database of a volume, live and read-only.
fn inspect_volume(root: &Path, level: IntegrityLevel) -> Result<Vec<DatabaseInfo>> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io("read directory", root, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "read directory",
            root,
            std::io::Error::other("not a directory"),
        ));
    }
    let mut out = Vec::new();
    volume::walk(root, &mut |item| {
        if let Item::Database { rel, path, .. } = item {
            out.push(inspect::describe_live(
                path,
                &volume::database_name(rel),
                level,
            )?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The database's name in a manifest: its file name.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[async_trait]
impl DatabaseSource for SqliteSource {
    fn engine(&self) -> &str {
        ENGINE
    }

    /// The path; a volume's ends with `/` (so [`SqliteSource::from_url`] reads it back as a
    /// volume, and [`is_volume_manifest`] recognises its backups).
    fn describe(&self) -> String {
        let path = self.path.display().to_string();
        if self.is_volume() && !path.ends_with('/') {
            format!("{path}/")
        } else {
            path
        }
    }

    fn payload_format(&self) -> PayloadFormat {
        PayloadFormat {
            extension: "tar".into(),
            compressed: false,
        }
    }

    fn default_name_prefix(&self) -> &str {
        DEFAULT_NAME_PREFIX
    }

    async fn inspect(&self) -> kars_backup_core::Result<Vec<DatabaseInfo>> {
        let path = self.path.clone();
        let level = self.integrity;
        match self.layout() {
            Layout::File => {
                self.blocking("inspect", move || {
                    inspect::describe_live(&path, &file_name(&path), level).map(|d| vec![d])
                })
                .await
            }
            Layout::Volume => {
                self.blocking("inspect", move || inspect_volume(&path, level))
                    .await
            }
        }
    }

    async fn exists(&self) -> kars_backup_core::Result<bool> {
        let path = self.path.clone();
        match self.layout() {
            Layout::File => Ok(tokio::fs::symlink_metadata(&path).await.is_ok()),
            Layout::Volume => {
                self.blocking("exists", move || volume::has_content(&path))
                    .await
            }
        }
    }

    async fn write_payload(
        &self,
        out: PayloadWriter,
        progress: DynProgress,
    ) -> kars_backup_core::Result<SnapshotInfo> {
        let path = self.path.clone();
        let config = self.snapshot_config();
        let layout = self.layout();
        let span = tracing::info_span!("sqlite_snapshot", path = %path.display());
        self.blocking("the snapshot", move || {
            let _entered = span.enter();
            match layout {
                Layout::File => snapshot::write_file_payload(&path, &config, out, &progress),
                Layout::Volume => snapshot::write_volume_payload(&path, &config, out, &progress),
            }
        })
        .await
    }

    async fn stage_restore(
        &self,
        payload: PayloadReader,
        context: &StageContext,
    ) -> kars_backup_core::Result<Box<dyn StagedRestore>> {
        let staged = restore::stage(self.path.clone(), self.layout(), payload, context)
            .await
            .map_err(|e| self.core_error(e))?;
        Ok(Box::new(staged))
    }

    /// On Linux, every process that has the database, its `-wal`, `-shm` or `-journal` open
    /// (volume: any file in the directory), from `/proc/*/fd`.
    async fn in_use(&self) -> kars_backup_core::Result<Scan> {
        let path = self.path.clone();
        let layout = self.layout();
        self.blocking("the in-use check", move || {
            Ok(restore::holders_of(&path, layout))
        })
        .await
    }

    fn in_use_remedies(&self) -> String {
        "stop the application first (--stop-cmd/--start-cmd stop and start it around the swap), or restore into the running application's database with --live (SQLite's online backup API; the application keeps its connections)".into()
    }

    fn check_in_use_policy(&self, policy: InUsePolicy) -> kars_backup_core::Result<()> {
        match policy {
            InUsePolicy::Refuse | InUsePolicy::Live => Ok(()),
            InUsePolicy::TerminateSessions => Err(kars_backup_core::Error::InvalidInput(format!(
                "--terminate-connections is for PostgreSQL; kars-backup does not kill the processes that have {} open: stop them with --stop-cmd, or restore with --live",
                self.describe()
            ))),
        }
    }

    async fn clean_leftovers(&self) -> kars_backup_core::Result<Vec<String>> {
        let path = self.path.clone();
        let layout = self.layout();
        self.blocking("looking for leftovers", move || {
            restore::leftovers::clean(&path, layout, &|| restore::holders_of(&path, layout))
        })
        .await
    }

    async fn previous_copies(&self) -> kars_backup_core::Result<Vec<PreviousCopy>> {
        let path = self.path.clone();
        let layout = self.layout();
        self.blocking("listing previous copies", move || {
            restore::previous::list(&path, layout)
        })
        .await
    }

    async fn remove_previous(&self, copy: &PreviousCopy) -> kars_backup_core::Result<()> {
        let copy = copy.clone();
        let layout = self.layout();
        self.blocking("removing a previous copy", move || {
            restore::previous::remove(&copy, layout)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_parse() {
        let s = SqliteSource::from_url("sqlite:///app/data/assets.db").unwrap();
        assert_eq!(s.path(), Path::new("/app/data/assets.db"));
        assert_eq!(s.mode(), SourceMode::Auto);
        let s = SqliteSource::from_url("sqlite:///data/").unwrap();
        assert_eq!(s.mode(), SourceMode::Volume);
        let s = SqliteSource::from_url("sqlite:rel/a%20b.db").unwrap();
        assert_eq!(s.path(), Path::new("rel/a b.db"));
        let s = SqliteSource::from_url("/plain/path.db").unwrap();
        assert_eq!(s.path(), Path::new("/plain/path.db"));
        assert!(SqliteSource::from_url("postgres://host/db").is_err());
        assert!(SqliteSource::from_url("sqlite://host/db").is_err());
        assert!(SqliteSource::from_url("sqlite:").is_err());
    }

    #[test]
    fn the_source_describes_itself() {
        let s = SqliteSource::new("/app/data/assets.db");
        assert_eq!(s.engine(), "sqlite");
        assert_eq!(s.default_name_prefix(), "asset-data");
        assert_eq!(s.describe(), "/app/data/assets.db");
        assert_eq!(SqliteSource::new_volume("/data").describe(), "/data/");
        assert_eq!(
            s.payload_format(),
            PayloadFormat {
                extension: "tar".into(),
                compressed: false
            }
        );
    }
}
