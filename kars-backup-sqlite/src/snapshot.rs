//! Consistent snapshots of a live database with SQLite's online backup API.
//!
//! The live database is opened read-only and copied, all pages in **one** backup step, into a
//! private temporary file (mode 0600). One step holds one read transaction from start to end, so
//! writers in other connections and processes can neither restart nor tear the copy: the snapshot
//! is the database as of one committed transaction, in WAL and in rollback-journal mode alike.

use std::fs::{self, Metadata};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;
use kars_backup_core::verify::IntegrityLevel;
use kars_backup_core::{DatabaseInfo, DynProgress, PayloadWriter, SnapshotInfo};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use tempfile::TempPath;

use crate::archive::ArchiveWriter;
use crate::error::{Error, Result};
use crate::inspect;
use crate::volume::{self, Item};
use kars_backup_core::TaskError;

/// The first pause after a backup step found the database busy (its busy handler already waited
/// about 5 s); it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two backup steps.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Copies the live database at `live` into a new private file in `dir`.
///
/// Waits at most about `lock_timeout` (plus one busy-handler round of about 5 s) for other
/// connections' locks (SQLite's `BUSY`/`LOCKED`), retrying with growing pauses. The returned file is deleted when the [`TempPath`] is dropped.
///
/// # Errors
/// [`Error::NotFound`] and [`Error::NotSqlite`] for a wrong path, [`Error::Busy`] when the lock
/// timeout passed, [`Error::Sqlite`] and [`Error::Io`] otherwise.
pub(crate) fn snapshot_database(
    live: &Path,
    dir: &Path,
    lock_timeout: Duration,
) -> Result<TempPath> {
    inspect::check_database_file(live)?;
    let source = inspect::open_live(live)?;
    let temp = tempfile::Builder::new()
        .prefix(".kars-snapshot-")
        .suffix(".db")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a snapshot file in", dir, e))?
        .into_temp_path();
    let mut target = open_target(&temp)?;
    copy_all_pages(&source, &mut target, live, "snapshot", lock_timeout)?;
    target
        .close()
        .map_err(|(_, e)| Error::sqlite("close snapshot", &temp, e))?;
    tracing::debug!(db = %live.display(), snapshot = %temp.display(), "snapshot taken");
    Ok(temp)
}

/// Opens the (empty) snapshot file as the backup's destination, without a journal: the file is
/// private and thrown away if anything fails.
fn open_target(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::sqlite("open snapshot", path, e))?;
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
        .map_err(|e| Error::sqlite("configure snapshot", path, e))?;
    Ok(conn)
}

/// Runs the backup in one step (`step(-1)`), retrying while the source or the target is busy or
/// locked; `live` names the database that other connections use and `action` what is done, for
/// messages.
pub(crate) fn copy_all_pages(
    source: &Connection,
    target: &mut Connection,
    live: &Path,
    action: &'static str,
    lock_timeout: Duration,
) -> Result<()> {
    inspect::wait_for_locks(target, live)?;
    let backup = Backup::new(source, target).map_err(|e| Error::sqlite(action, live, e))?;
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        inspect::wait_for_locks(source, live)?;
        match backup.step(-1) {
            Ok(StepResult::Done) => return Ok(()),
            // One step with -1 copies everything; `More` cannot normally happen, but is harmless.
            Ok(StepResult::More) => {}
            Ok(_busy_or_locked) => {
                if started.elapsed() >= lock_timeout {
                    return Err(Error::Busy {
                        path: live.to_path_buf(),
                        seconds: lock_timeout.as_secs(),
                    });
                }
                tracing::debug!(db = %live.display(), pause_ms = pause.as_millis() as u64, "database busy; retrying the snapshot");
                thread::sleep(pause);
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => return Err(Error::sqlite(action, live, e)),
        }
    }
}

/// How snapshots are taken.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotConfig {
    /// Where snapshot files are made.
    pub(crate) dir: PathBuf,
    /// The integrity check run on each snapshot.
    pub(crate) integrity: IntegrityLevel,
    /// How long to wait for other connections' locks.
    pub(crate) lock_timeout: Duration,
}

/// Writes the payload of one database file: a tar with one entry named like the file.
///
/// # Errors
/// See [`snapshot_database`]; [`Error::Io`] when the payload cannot be written.
pub(crate) fn write_file_payload(
    db: &Path,
    config: &SnapshotConfig,
    out: PayloadWriter,
    progress: &DynProgress,
) -> Result<SnapshotInfo> {
    inspect::check_database_file(db)?;
    let meta = fs::metadata(db).map_err(|e| Error::io("read metadata of", db, e))?;
    let name = db
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| Error::NotSqlite {
            path: db.to_path_buf(),
        })?;
    progress.start("snapshot", Some(meta.len()));
    let taken_at = Utc::now();
    let snapshot = snapshot_database(db, &config.dir, config.lock_timeout)?;
    progress.finish();
    let mut archive = ArchiveWriter::new(out);
    let info = archive_snapshot(
        &mut archive,
        &name,
        &snapshot,
        &meta,
        config,
        Some(progress),
    )?;
    drop(snapshot);
    finish_payload(archive, db)?;
    Ok(SnapshotInfo {
        taken_at,
        databases: vec![info],
        physical: None,
    })
}

/// Writes the payload of a volume: every database snapshotted, other files as they are.
///
/// Each database is consistent in itself; databases are snapshotted one after the other.
///
/// # Errors
/// See [`write_file_payload`]; [`Error::Io`] naming a directory that cannot be read.
pub(crate) fn write_volume_payload(
    root: &Path,
    config: &SnapshotConfig,
    out: PayloadWriter,
    progress: &DynProgress,
) -> Result<SnapshotInfo> {
    let meta = fs::metadata(root).map_err(|e| Error::io("read directory", root, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "read directory",
            root,
            std::io::Error::other("not a directory"),
        ));
    }
    progress.start("archive", None);
    let taken_at = Utc::now();
    let mut archive = ArchiveWriter::new(out);
    let mut databases = Vec::new();
    volume::walk(root, &mut |item| match item {
        Item::Dir { rel, meta, .. } => archive.append_dir(rel, meta),
        Item::File { rel, path, meta } => archive.append_file(rel, path, meta, meta.len()),
        Item::Database { rel, path, meta } => {
            let snapshot = snapshot_database(path, &config.dir, config.lock_timeout)?;
            let info = archive_snapshot(&mut archive, rel, &snapshot, meta, config, None)?;
            databases.push(info);
            Ok(())
        }
    })?;
    finish_payload(archive, root)?;
    progress.finish();
    Ok(SnapshotInfo {
        taken_at,
        databases,
        physical: None,
    })
}

/// Appends a snapshot file as `rel` (mode, owner and time of the live file `live_meta`) while
/// another thread describes it: row counts and integrity come from the same snapshot.
fn archive_snapshot<W: Write>(
    archive: &mut ArchiveWriter<W>,
    rel: &Path,
    snapshot: &Path,
    live_meta: &Metadata,
    config: &SnapshotConfig,
    progress: Option<&DynProgress>,
) -> Result<DatabaseInfo> {
    let size = fs::metadata(snapshot)
        .map_err(|e| Error::io("read metadata of", snapshot, e))?
        .len();
    let name = volume::database_name(rel);
    if let Some(p) = progress {
        p.start("archive", Some(size));
    }
    let (appended, described) = thread::scope(|scope| {
        let describer =
            scope.spawn(|| inspect::describe_private(snapshot, &name, config.integrity));
        let appended = archive.append_file(rel, snapshot, live_meta, size);
        let described = describer.join().unwrap_or_else(|_| {
            Err(Error::Task(TaskError::new(
                "the snapshot check",
                "it panicked",
            )))
        });
        (appended, described)
    });
    appended?;
    if let Some(p) = progress {
        p.finish();
    }
    described
}

/// Writes the end of the tar and ends the payload.
fn finish_payload(archive: ArchiveWriter<PayloadWriter>, label: &Path) -> Result<()> {
    let out = archive
        .finish()
        .map_err(|e| Error::io("write the archive of", label, e))?;
    out.finish_blocking()
        .map_err(|e| Error::io("write the archive of", label, e))?;
    Ok(())
}
