//! `--live`: the verified staged data is written into the live database through SQLite's online
//! backup API, for applications that cannot be stopped. The application's own connections stay
//! valid and see the restored data at their next read (SQLite notices the changed file); its
//! writes go on. The previous content is first copied aside the same way (one consistent
//! snapshot), so a rollback writes it back.
//!
//! The write is one SQLite transaction on the live database (under its rollback journal or WAL),
//! so a kill in the middle leaves the old content. The staged copy is first given the live
//! database's journal mode and page size (SQLite copies the header verbatim into a rollback-journal
//! database, and refuses another page size into a WAL one), so the application's database stays
//! in the mode it was in.
//!
//! In volume mode every database of the backup that the volume has is written this way and the
//! other databases of the backup are moved in; the volume's other files are left as they are.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::journal::{Step, Swap, rename, sync_dir};
use super::staging::{JOURNAL_FILE, settle};
use super::target::{StagedDatabase, new_kept_dir, new_kept_file, parent_dir};
use crate::archive;
use crate::error::{Error, Result};
use crate::inspect;
use crate::snapshot;

/// How long a live write waits for the application's transactions to let go.
pub(crate) const LIVE_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// File mode: keeps the live database's content as `<db>.pre-restore-<time>`, then writes the
/// staged database into it.
pub(crate) fn write_file(target: &Path, staged: &Path, staging: &Path) -> (Swap, Result<()>) {
    let mut swap = Swap::new(staging.join(JOURNAL_FILE));
    let result = (|| {
        let kept = new_kept_file(target);
        swap.record(Step::Begin {
            target: target.to_path_buf(),
            kept: kept.clone(),
        })?;
        write_one(target, staged, kept, &mut swap)?;
        swap.record(Step::Swapped)
    })();
    (swap, result)
}

/// Volume mode: each database of the backup that the volume has is written live (its previous
/// content kept in `.kars-pre-restore-<time>/`), the backup's other databases are moved in.
pub(crate) fn write_volume(
    target: &Path,
    databases: &[StagedDatabase],
    staging: &Path,
) -> (Swap, Result<()>) {
    let mut swap = Swap::new(staging.join(JOURNAL_FILE));
    let result = (|| {
        let kept_dir = new_kept_dir(target);
        swap.record(Step::Begin {
            target: target.to_path_buf(),
            kept: kept_dir.clone(),
        })?;
        fs::create_dir(&kept_dir).map_err(|e| Error::io("create directory", &kept_dir, e))?;
        archive::set_mode(&kept_dir, 0o700)?;
        swap.kept_dir_created = Some(kept_dir.clone());
        let mut kept_any = false;
        for db in databases {
            let rel = db
                .path
                .strip_prefix(staging)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| PathBuf::from(&db.name));
            let live = target.join(&rel);
            if inspect::has_sqlite_header(&live).unwrap_or(false) {
                let kept = kept_dir.join(&rel);
                if let Some(parent) = kept.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io("create directory", parent, e))?;
                }
                write_one(&live, &db.path, kept, &mut swap)?;
                kept_any = true;
            } else {
                if let Some(parent) = live.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io("create directory", parent, e))?;
                }
                swap.record(Step::Installed {
                    live: live.clone(),
                    staged: db.path.clone(),
                })?;
                archive::set_mode(&db.path, 0o600)?;
                rename(&db.path, &live)?;
                sync_dir(&parent_dir(&live))?;
            }
        }
        if kept_any {
            swap.kept = Some(kept_dir);
        } else {
            let _ = fs::remove_dir(&kept_dir);
            swap.kept_dir_created = None;
        }
        swap.record(Step::Swapped)
    })();
    (swap, result)
}

fn write_one(live: &Path, staged: &Path, kept: PathBuf, swap: &mut Swap) -> Result<()> {
    swap.record(Step::WroteLive {
        live: live.to_path_buf(),
        kept: kept.clone(),
        staged: staged.to_path_buf(),
    })?;
    keep_copy(live, &kept)?;
    match_live_format(staged, live)?;
    write_into(live, staged)?;
    swap.kept.get_or_insert(kept);
    tracing::info!(db = %live.display(), "restored data written into the live database");
    Ok(())
}

/// Copies the live database into a new file `kept` (one consistent snapshot, mode 0600).
fn keep_copy(live: &Path, kept: &Path) -> Result<()> {
    let dir = parent_dir(kept);
    let temp = snapshot::snapshot_database(live, &dir, LIVE_LOCK_TIMEOUT)?;
    archive::set_mode(&temp, 0o600)?;
    temp.persist(kept)
        .map_err(|e| Error::io("keep the previous database as", kept, e.error))?;
    sync_dir(&dir)
}

/// Overwrites the live database `live` with the content of the database file `from`, through
/// the online backup API (one transaction on `live`; other connections may stay open).
///
/// # Errors
/// [`Error::Busy`] when the application's transactions held the database for
/// [`LIVE_LOCK_TIMEOUT`]; [`Error::Sqlite`] otherwise.
pub(crate) fn write_into(live: &Path, from: &Path) -> Result<()> {
    let source = inspect::open_private(from)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut target =
        Connection::open_with_flags(live, flags).map_err(|e| Error::sqlite("open", live, e))?;
    snapshot::copy_all_pages(
        &source,
        &mut target,
        live,
        "write the restored data into",
        LIVE_LOCK_TIMEOUT,
    )?;
    target
        .close()
        .map_err(|(_, e)| Error::sqlite("close", live, e))
}

/// Gives the private staged file the live database's page size and journal mode (WAL or a
/// rollback journal), so writing it into the live one keeps the live one's format.
fn match_live_format(staged: &Path, live: &Path) -> Result<()> {
    let (live_wal, live_page) = header_format(live)?;
    let (staged_wal, staged_page) = header_format(staged)?;
    if live_wal == staged_wal && live_page == staged_page {
        return Ok(());
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(staged, flags).map_err(|e| Error::sqlite("open", staged, e))?;
    let convert = |sql: &str| {
        conn.execute_batch(sql)
            .map_err(|e| Error::sqlite("convert the staged copy of", staged, e))
    };
    if live_page != staged_page {
        convert(&format!(
            "PRAGMA journal_mode = DELETE; PRAGMA page_size = {live_page}; VACUUM;"
        ))?;
    }
    convert(if live_wal {
        "PRAGMA journal_mode = WAL;"
    } else {
        "PRAGMA journal_mode = DELETE;"
    })?;
    conn.close()
        .map_err(|(_, e)| Error::sqlite("close", staged, e))?;
    settle(staged)?;
    tracing::debug!(staged = %staged.display(), wal = live_wal, page_size = live_page, "staged copy given the live database's format");
    Ok(())
}

/// (WAL mode, page size) from a database file's header.
fn header_format(db: &Path) -> Result<(bool, u32)> {
    use std::io::Read;
    let mut header = [0u8; 20];
    fs::File::open(db)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| Error::io("read the header of", db, e))?;
    let page = u16::from_be_bytes([header[16], header[17]]);
    let page = if page == 1 { 65_536 } else { u32::from(page) };
    Ok((header[18] == 2 || header[19] == 2, page))
}
