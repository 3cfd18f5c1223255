//! Staging: the archive is extracted into a private `.kars-restore-*` directory beside the target,
//! owned (locked) by the restore for its whole life, and the database(s) in it are found.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kars_backup_core::{DatabaseInfo, Manifest, PayloadReader};
use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;

use super::target::{Layout, StagedDatabase, with_suffix};
use crate::archive::{self, ExtractOptions};
use crate::error::{Error, Result};
use crate::inspect;
use crate::volume::{self, SIDE_SUFFIXES, STAGING_PREFIX};

/// The file in a staging directory that its restore keeps locked while it runs: who owns it.
pub(crate) const OWNER_FILE: &str = ".kars-restore-owner";
/// The file in a staging directory that records each step of the swap (see `swap.rs`).
pub(crate) const JOURNAL_FILE: &str = ".kars-restore-journal";

/// The suffix a staging directory gets right before it is removed (`.kars-restore-x7Yz9Q` →
/// `.kars-restore-x7Yz9Q.removing`): whatever a kill leaves of it, the next run knows that its
/// restore was done with it, even when its owner file or journal is gone already.
pub(crate) const REMOVING_SUFFIX: &str = ".removing";

/// A staging directory with its owner lock held.
#[derive(Debug)]
pub(crate) struct Staging {
    pub(crate) dir: TempDir,
    /// Locked (exclusively) until the restore ends, even if this process is killed: the lock
    /// goes with the process, which is how the next run tells a leftover from a running restore.
    pub(crate) _owner: fs::File,
}

impl Staging {
    /// Removes the directory (see [`remove_staging_dir`]); the owner lock goes with it.
    pub(crate) fn remove(mut self) -> Result<()> {
        self.dir.disable_cleanup(true);
        remove_staging_dir(self.dir.path())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // On error paths too, in the same kill-safe way (a no-op after `remove`).
        self.dir.disable_cleanup(true);
        let _ = remove_staging_dir(self.dir.path());
    }
}

/// Whether a staging directory was being removed ([`REMOVING_SUFFIX`]).
pub(crate) fn is_removing(dir: &Path) -> bool {
    dir.to_string_lossy().ends_with(REMOVING_SUFFIX)
}

/// Removes a staging directory, or what is left of one: first renamed to `<name>.removing`, so
/// that a kill while its files go leaves a directory the next run knows to be finished with,
/// never one that lost its owner file or journal and looks like a restore just starting or one
/// that never swapped. What is gone already is fine (the next run may be removing it too).
pub(crate) fn remove_staging_dir(dir: &Path) -> Result<()> {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let removing = if is_removing(dir) {
        dir.to_path_buf()
    } else {
        let to = with_suffix(dir, REMOVING_SUFFIX);
        match fs::rename(dir, &to) {
            Ok(()) => to,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(Error::io("rename", dir, e)),
        }
    };
    match fs::remove_dir_all(&removing) {
        Err(e) if !gone(&e) => Err(Error::io("remove", &removing, e)),
        _ => Ok(()),
    }
}

/// Creates the staging directory in `base` (mode 0700) with its owner file locked.
pub(crate) fn create_staging(base: &Path, target: &Path) -> Result<Staging> {
    let dir = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(base)
        .map_err(|e| Error::io("create a staging directory in", base, e))?;
    archive::set_mode(dir.path(), 0o700)?;
    let owner_path = dir.path().join(OWNER_FILE);
    let mut owner =
        fs::File::create(&owner_path).map_err(|e| Error::io("create", &owner_path, e))?;
    owner
        .try_lock()
        .map_err(|e| Error::io("lock", &owner_path, io::Error::other(e.to_string())))?;
    let line = serde_json::json!({
        "pid": std::process::id(),
        "target": target.display().to_string(),
        "started": chrono::Utc::now().to_rfc3339(),
    });
    writeln!(owner, "{line}").map_err(|e| Error::io("write", &owner_path, e))?;
    Ok(Staging { dir, _owner: owner })
}

/// Extracts `payload` into a new staging directory in `base` and finds the database(s).
pub(crate) fn extract_and_find(
    target: &Path,
    layout: Layout,
    base: &Path,
    payload: PayloadReader,
    archive_name: &str,
    manifest: Option<&Manifest>,
) -> Result<(Staging, Vec<StagedDatabase>)> {
    let staging = create_staging(base, target)?;
    let dir = staging.dir.path();
    let options = ExtractOptions {
        preserve_owner: layout == Layout::Volume,
    };
    let extracted = archive::extract_safely(payload, dir, archive_name, options, |rel| {
        // Our own artefacts (a runbook `tar` of a volume may hold them) are not restored.
        rel.components()
            .next()
            .is_some_and(|first| volume::is_artefact(first.as_os_str()))
    })?;
    tracing::info!(staging = %dir.display(), files = extracted.files.len(), bytes = extracted.bytes, "archive extracted");
    let databases = match layout {
        Layout::File => {
            let (rel, name) =
                choose_database(&extracted.files, dir, target, manifest, archive_name)?;
            vec![StagedDatabase {
                name,
                path: dir.join(rel),
            }]
        }
        Layout::Volume => staged_databases(&extracted.files, dir)?,
    };
    for db in &databases {
        // A runbook archive taken with `tar` from a live volume may hold `-wal` or `-journal`
        // files: let SQLite apply (or roll back) them, so the staged file is self-contained.
        if settle(&db.path)? {
            tracing::info!(db = %db.path.display(), "applied the -wal/-journal file found in the archive");
        }
    }
    Ok((staging, databases))
}

/// Picks the entry to restore into a database file: the manifest's database, else the entry named
/// like the target, else the only SQLite file.
fn choose_database(
    files: &[PathBuf],
    staging: &Path,
    target: &Path,
    manifest: Option<&Manifest>,
    archive_name: &str,
) -> Result<(PathBuf, String)> {
    let target_name = target.file_name().map(|n| n.to_string_lossy().into_owned());
    let named_like_target =
        |rel: &Path| rel.file_name().map(|n| n.to_string_lossy().into_owned()) == target_name;
    let no_database = |reason: String| Error::NoDatabase {
        archive: archive_name.to_string(),
        reason,
    };
    let ambiguous = |candidates: Vec<String>| Error::AmbiguousDatabase {
        archive: archive_name.to_string(),
        target: target.to_path_buf(),
        candidates,
    };
    let chosen = match manifest
        .map(|m| m.databases.as_slice())
        .filter(|d| !d.is_empty())
    {
        Some(dbs) => {
            let db = match dbs {
                [only] => only,
                many => {
                    let matching: Vec<&DatabaseInfo> = many
                        .iter()
                        .filter(|d| named_like_target(Path::new(&d.name)))
                        .collect();
                    match matching.as_slice() {
                        [one] => *one,
                        _ => return Err(ambiguous(many.iter().map(|d| d.name.clone()).collect())),
                    }
                }
            };
            let rel = archive::safe_relative_path(&db.name)
                .ok()
                .flatten()
                .filter(|rel| files.contains(rel))
                .ok_or_else(|| {
                    no_database(format!(
                        "its manifest lists the database {:?} but the archive has no such file",
                        db.name
                    ))
                })?;
            (rel, db.name.clone())
        }
        None => {
            choose_without_manifest(files, staging, &named_like_target, &no_database, &ambiguous)?
        }
    };
    let path = staging.join(&chosen.0);
    if fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > 0 && !inspect::has_sqlite_header(&path)?
    {
        return Err(no_database(format!(
            "its entry {} is not an SQLite database",
            chosen.1
        )));
    }
    Ok(chosen)
}

fn choose_without_manifest(
    files: &[PathBuf],
    staging: &Path,
    named_like_target: &dyn Fn(&Path) -> bool,
    no_database: &dyn Fn(String) -> Error,
    ambiguous: &dyn Fn(Vec<String>) -> Error,
) -> Result<(PathBuf, String)> {
    let mut named: Vec<&PathBuf> = files.iter().filter(|f| named_like_target(f)).collect();
    if named.len() > 1 {
        // Prefer the top level (`./assets.db` over `old/assets.db`).
        named.retain(|f| f.components().count() == 1);
    }
    match named.as_slice() {
        [one] => return Ok(((*one).clone(), volume::database_name(one))),
        [] => {}
        many => {
            return Err(ambiguous(
                many.iter().map(|f| volume::database_name(f)).collect(),
            ));
        }
    }
    let databases = staged_databases(files, staging)?;
    match databases.as_slice() {
        [one] => Ok((PathBuf::from(&one.name), one.name.clone())),
        [] => {
            let mut listed: Vec<String> = files
                .iter()
                .take(10)
                .map(|f| volume::database_name(f))
                .collect();
            if files.len() > 10 {
                listed.push(format!("… {} more", files.len() - 10));
            }
            Err(no_database(format!(
                "it holds no SQLite database (entries: {})",
                if listed.is_empty() {
                    "none".to_string()
                } else {
                    listed.join(", ")
                }
            )))
        }
        many => Err(ambiguous(many.iter().map(|d| d.name.clone()).collect())),
    }
}

/// Every SQLite database among the extracted files (side files excluded).
fn staged_databases(files: &[PathBuf], staging: &Path) -> Result<Vec<StagedDatabase>> {
    let mut out = Vec::new();
    for rel in files {
        let path = staging.join(rel);
        if volume::is_side_file(&path) {
            continue;
        }
        if inspect::has_sqlite_header(&path)? {
            out.push(StagedDatabase {
                name: volume::database_name(rel),
                path,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Makes a database file self-contained: SQLite applies its `-wal` (checkpointed into the file)
/// or rolls back a hot `-journal`, and the side files are removed. No content changes: it is what
/// the next connection would do anyway. Returns whether there was anything to do.
///
/// Used on staged files, and on a live database right before it is swapped out or back, so that
/// a database file never sits next to another database's `-wal` (which SQLite would apply to it)
/// and every rename leaves a complete database at the path.
///
/// # Errors
/// [`Error::Sqlite`] when the database cannot be opened or checkpointed (another process holds
/// it), [`Error::Busy`] when a side file with content is still there afterwards.
pub(crate) fn settle(db: &Path) -> Result<bool> {
    let side = |suffix: &str| with_suffix(db, suffix);
    let has_journal = ["-wal", "-journal"]
        .iter()
        .any(|s| fs::metadata(side(s)).is_ok_and(|m| m.len() > 0));
    if has_journal {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(db, flags).map_err(|e| Error::sqlite("open", db, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| Error::sqlite("configure", db, e))?;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
            .map_err(|e| Error::sqlite("apply the -wal/-journal of", db, e))?;
        remove_cold_journal(&conn, db)?;
        conn.close()
            .map_err(|(_, e)| Error::sqlite("close", db, e))?;
    }
    let mut left = false;
    for suffix in SIDE_SUFFIXES {
        let path = side(suffix);
        match fs::metadata(&path) {
            Ok(m) if m.len() > 0 && suffix != "-shm" => left = true,
            Ok(_) => fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?,
            Err(_) => {}
        }
    }
    if left {
        return Err(Error::Busy {
            path: db.to_path_buf(),
            seconds: 5,
        });
    }
    Ok(has_journal)
}

/// Removes a rollback journal that SQLite does not count as hot. An application killed inside a
/// transaction before its commit began leaves a `-journal` whose header is still zero (SQLite
/// writes the header's magic only when it syncs the journal for the commit); the database file
/// was not changed yet, readers ignore such a journal and leave it in place. It is removed while
/// this connection holds an EXCLUSIVE lock, so no other connection can be inside the write
/// transaction that would own it.
fn remove_cold_journal(conn: &Connection, db: &Path) -> Result<()> {
    let journal = with_suffix(db, "-journal");
    if !journal_is_cold(&journal) {
        return Ok(());
    }
    conn.execute_batch("BEGIN EXCLUSIVE")
        .map_err(|e| Error::sqlite("lock", db, e))?;
    let removed = if journal_is_cold(&journal) {
        fs::remove_file(&journal).map_err(|e| Error::io("remove", &journal, e))
    } else {
        Ok(())
    };
    conn.execute_batch("COMMIT")
        .map_err(|e| Error::sqlite("unlock", db, e))?;
    if removed.is_ok() {
        tracing::debug!(journal = %journal.display(), "removed a rollback journal of a transaction that never committed");
    }
    removed
}

/// True for a `-journal` with content whose first byte is zero: SQLite's own test for a journal
/// that is not hot (`hasHotJournal`).
fn journal_is_cold(journal: &Path) -> bool {
    use std::io::Read;
    let mut first = [0u8; 1];
    fs::File::open(journal).is_ok_and(|mut f| matches!(f.read(&mut first), Ok(1)) && first[0] == 0)
}

/// Creates `dir` and its missing ancestors; returns the ones it created, outermost first.
pub(crate) fn create_missing_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    for d in &missing {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                remove_created_dirs(&missing);
                return Err(Error::io("create directory", d, e));
            }
        }
    }
    Ok(missing)
}

/// Removes directories made by [`create_missing_dirs`], innermost first, if they are empty.
pub(crate) fn remove_created_dirs(dirs: &[PathBuf]) {
    for d in dirs.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_removes_the_journal_of_a_transaction_killed_before_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        drop(conn);
        // What a killed writer leaves: a journal with a zeroed header and page images after it.
        let mut journal = vec![0u8; 28];
        journal.extend_from_slice(&[0xab; 4096]);
        fs::write(with_suffix(&db, "-journal"), &journal).unwrap();
        assert!(settle(&db).unwrap(), "there was a journal");
        assert!(!with_suffix(&db, "-journal").exists());
        let conn = Connection::open(&db).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn missing_dirs_are_created_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        let created = create_missing_dirs(&deep).unwrap();
        assert_eq!(created.len(), 3);
        assert!(deep.is_dir());
        remove_created_dirs(&created);
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn the_owner_file_is_locked_while_the_staging_lives() {
        let dir = tempfile::tempdir().unwrap();
        let staging = create_staging(dir.path(), &dir.path().join("a.db")).unwrap();
        let owner = staging.dir.path().join(OWNER_FILE);
        let other = fs::File::open(&owner).unwrap();
        assert!(other.try_lock().is_err(), "held by the staging");
        let text = fs::read_to_string(&owner).unwrap();
        assert!(
            text.contains(&format!("\"pid\":{}", std::process::id())),
            "{text}"
        );
        drop(staging);
        assert!(!owner.exists());
    }

    #[test]
    fn a_removed_staging_directory_leaves_nothing_under_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let staging = create_staging(dir.path(), &dir.path().join("a.db")).unwrap();
        fs::create_dir(staging.dir.path().join("sub")).unwrap();
        fs::write(staging.dir.path().join("sub/a.db"), b"x").unwrap();
        let path = staging.dir.path().to_path_buf();
        staging.remove().unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // Gone already is fine.
        remove_staging_dir(&path).unwrap();
    }
}
