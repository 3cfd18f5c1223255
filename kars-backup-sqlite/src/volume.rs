//! Walking a volume (a directory holding databases and other files), in name order.
//!
//! Databases are recognised by their header, not their name. Left out: symbolic links and special
//! files (with a warning), `-wal`/`-shm`/`-journal` files of a database beside them (the snapshot
//! already holds their committed content), and kars-backup's own restore leftovers
//! (`.kars-restore-*`, `.kars-pre-restore-*`, `.kars-snapshot-*`, `*.pre-restore-*`).

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::inspect;

/// The prefix of staging directories.
pub(crate) const STAGING_PREFIX: &str = ".kars-restore-";
/// The prefix of the directory that keeps a volume's previous content after a restore.
pub(crate) const KEPT_VOLUME_PREFIX: &str = ".kars-pre-restore-";
/// The prefix of snapshot files.
pub(crate) const SNAPSHOT_PREFIX: &str = ".kars-snapshot-";
/// The infix of a database file kept aside by a restore.
pub(crate) const KEPT_FILE_INFIX: &str = ".pre-restore-";
/// The files SQLite keeps beside a database.
pub(crate) const SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// One thing found in a volume.
#[derive(Debug)]
pub(crate) enum Item<'a> {
    /// A directory (visited before its content).
    Dir { rel: &'a Path, meta: &'a Metadata },
    /// A regular file that is not a database.
    File {
        rel: &'a Path,
        path: &'a Path,
        meta: &'a Metadata,
    },
    /// An SQLite database file.
    Database {
        rel: &'a Path,
        path: &'a Path,
        meta: &'a Metadata,
    },
}

/// Whether a file name is one of kars-backup's own artefacts, never backed up or swapped.
pub(crate) fn is_artefact(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with(STAGING_PREFIX)
        || name.starts_with(KEPT_VOLUME_PREFIX)
        || name.starts_with(SNAPSHOT_PREFIX)
        || name.contains(KEPT_FILE_INFIX)
}

/// Whether `path` is a `-wal`, `-shm` or `-journal` file whose database exists beside it.
pub(crate) fn is_side_file(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    SIDE_SUFFIXES.iter().any(|suffix| {
        name.strip_suffix(suffix)
            .filter(|base| !base.is_empty())
            .is_some_and(|base| path.with_file_name(base).is_file())
    })
}

/// Visits everything under `root` in name order, depth first, a directory before its content.
///
/// # Errors
/// [`Error::Io`] naming a directory that cannot be read; the visitor's errors.
pub(crate) fn walk(root: &Path, visit: &mut dyn FnMut(Item<'_>) -> Result<()>) -> Result<()> {
    walk_dir(root, Path::new(""), visit)
}

fn walk_dir(
    root: &Path,
    rel_dir: &Path,
    visit: &mut dyn FnMut(Item<'_>) -> Result<()>,
) -> Result<()> {
    let dir = root.join(rel_dir);
    let mut entries = fs::read_dir(&dir)
        .and_then(|rd| rd.collect::<io::Result<Vec<_>>>())
        .map_err(|e| Error::io("read directory", &dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let path = entry.path();
        let rel = rel_dir.join(&name);
        if is_artefact(&name) {
            tracing::debug!(path = %path.display(), "kars-backup artefact left out");
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
            Err(e) => return Err(Error::io("read metadata of", &path, e)),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            tracing::warn!(path = %path.display(), "symbolic link left out of the backup");
        } else if kind.is_dir() {
            visit(Item::Dir {
                rel: &rel,
                meta: &meta,
            })?;
            walk_dir(root, &rel, visit)?;
        } else if !kind.is_file() {
            tracing::warn!(path = %path.display(), "special file (socket, FIFO, device) left out of the backup");
        } else if is_side_file(&path) {
            tracing::debug!(path = %path.display(), "SQLite side file left out (the snapshot holds its content)");
        } else if meta.len() > 0 && inspect::has_sqlite_header(&path)? {
            visit(Item::Database {
                rel: &rel,
                path: &path,
                meta: &meta,
            })?;
        } else {
            visit(Item::File {
                rel: &rel,
                path: &path,
                meta: &meta,
            })?;
        }
    }
    Ok(())
}

/// The name of a database in a volume: its relative path with `/` separators.
pub(crate) fn database_name(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the directory has anything but kars-backup artefacts in it.
pub(crate) fn has_content(dir: &Path) -> Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("read directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        if !is_artefact(&entry.file_name()) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artefacts_are_recognised() {
        assert!(is_artefact(OsStr::new(".kars-restore-abc")));
        assert!(is_artefact(OsStr::new(".kars-pre-restore-20240101T000000")));
        assert!(is_artefact(OsStr::new(
            "assets.db.pre-restore-20240101T000000-wal"
        )));
        assert!(!is_artefact(OsStr::new("assets.db")));
    }

    #[test]
    fn side_files_need_their_database() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.db"), b"x").unwrap();
        assert!(is_side_file(&dir.path().join("a.db-wal")));
        assert!(is_side_file(&dir.path().join("a.db-journal")));
        assert!(!is_side_file(&dir.path().join("b.db-wal")));
        assert!(!is_side_file(&dir.path().join("-wal")));
    }

    #[test]
    fn names_use_slashes() {
        assert_eq!(database_name(Path::new("sub/x.db")), "sub/x.db");
    }
}
