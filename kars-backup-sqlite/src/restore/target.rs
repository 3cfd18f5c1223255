//! The restore target and the names beside it: whether it is one file or a volume
//! ([`Layout`]), the staged databases, side-file names (`-wal`, `-shm`, `-journal`) and the
//! unused names that keep the previous data (`<db>.pre-restore-<time>`,
//! `<dir>/.kars-pre-restore-<time>/`).

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::volume::{self, SIDE_SUFFIXES};

/// Whether a target is one database file or a directory of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One database file.
    File,
    /// A directory (a volume).
    Volume,
}

/// A staged database: its name (as in the manifest) and its file in the staging directory.
#[derive(Debug, Clone)]
pub(crate) struct StagedDatabase {
    pub(super) name: String,
    pub(super) path: PathBuf,
}

/// `path` with `suffix` appended to its file name (`a.db` + `-wal`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// A name that nothing uses yet: `base`, else `base-1`, `base-2`, … (checking the side files too).
pub(super) fn unused_path(base: PathBuf) -> PathBuf {
    let taken = |p: &Path| {
        std::fs::symlink_metadata(p).is_ok()
            || SIDE_SUFFIXES
                .iter()
                .any(|s| std::fs::symlink_metadata(with_suffix(p, s)).is_ok())
    };
    let mut candidate = base.clone();
    let mut n = 1;
    while taken(&candidate) {
        candidate = with_suffix(&base, &format!("-{n}"));
        n += 1;
    }
    candidate
}

/// The directory a path is in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn timestamp() -> String {
    Utc::now().format("%Y%m%dT%H%M%S").to_string()
}

/// A new, unused name for the previous database of `target`: `<db>.pre-restore-<UTC time>`.
pub(super) fn new_kept_file(target: &Path) -> PathBuf {
    unused_path(with_suffix(
        target,
        &format!("{}{}", volume::KEPT_FILE_INFIX, timestamp()),
    ))
}

/// A new, unused name for a volume's previous content: `<dir>/.kars-pre-restore-<UTC time>`.
pub(super) fn new_kept_dir(volume_dir: &Path) -> PathBuf {
    unused_path(volume_dir.join(format!("{}{}", volume::KEPT_VOLUME_PREFIX, timestamp())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_append_to_the_file_name() {
        assert_eq!(
            with_suffix(Path::new("/d/a.db"), "-wal"),
            PathBuf::from("/d/a.db-wal")
        );
    }

    #[test]
    fn unused_paths_skip_taken_names() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("a.db.pre-restore-x");
        assert_eq!(unused_path(base.clone()), base);
        std::fs::write(with_suffix(&base, "-wal"), b"").unwrap();
        assert_eq!(unused_path(base.clone()), with_suffix(&base, "-1"));
    }
}
