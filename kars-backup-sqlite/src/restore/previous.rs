//! The previous copies that restores keep: `<db>.pre-restore-<UTC time>` files (with any side
//! files) beside a database file, `.kars-pre-restore-<UTC time>/` directories in a volume.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use kars_backup_core::PreviousCopy;

use super::target::{Layout, parent_dir, with_suffix};
use crate::error::{Error, Result};
use crate::volume::{KEPT_FILE_INFIX, KEPT_VOLUME_PREFIX, SIDE_SUFFIXES};

/// The previous copies of `target`, newest first.
pub(crate) fn list(target: &Path, layout: Layout) -> Result<Vec<PreviousCopy>> {
    let (dir, prefix) = match layout {
        Layout::File => {
            let Some(name) = target.file_name() else {
                return Ok(Vec::new());
            };
            (
                parent_dir(target),
                format!("{}{KEPT_FILE_INFIX}", name.to_string_lossy()),
            )
        }
        Layout::Volume => (target.to_path_buf(), KEPT_VOLUME_PREFIX.to_string()),
    };
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", &dir, e)),
    };
    let mut copies: Vec<(DateTime<Utc>, String, PreviousCopy)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if SIDE_SUFFIXES.iter().any(|s| rest.ends_with(s)) {
            continue; // a kept database's side file, counted with it
        }
        let path = entry.path();
        let kept_at = parse_time(rest);
        let size_bytes = match layout {
            Layout::File => SIDE_SUFFIXES
                .iter()
                .map(|s| with_suffix(&path, s))
                .chain(std::iter::once(path.clone()))
                .filter_map(|p| fs::metadata(p).ok())
                .map(|m| m.len())
                .sum(),
            Layout::Volume => tree_size(&path),
        };
        copies.push((
            kept_at.unwrap_or(DateTime::<Utc>::MIN_UTC),
            name,
            PreviousCopy {
                name: path.display().to_string(),
                kept_at,
                size_bytes,
            },
        ));
    }
    // Newest first; a `-1` suffix was made later in the same second.
    copies.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    Ok(copies.into_iter().map(|(_, _, c)| c).collect())
}

/// Removes one previous copy (a file with its side files, or a kept directory).
pub(crate) fn remove(copy: &PreviousCopy, layout: Layout) -> Result<()> {
    let path = PathBuf::from(&copy.name);
    match layout {
        Layout::File => {
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            for s in SIDE_SUFFIXES {
                let _ = fs::remove_file(with_suffix(&path, s));
            }
        }
        Layout::Volume => {
            fs::remove_dir_all(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
    }
    Ok(())
}

/// The time in a kept name's tail: `20261205T101500` or `20261205T101500-2`.
fn parse_time(tail: &str) -> Option<DateTime<Utc>> {
    let stamp = tail.get(..15)?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_listed_newest_first_with_their_side_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("assets.db");
        fs::write(&db, b"live").unwrap();
        let old = dir.path().join("assets.db.pre-restore-20261201T000000");
        let new = dir.path().join("assets.db.pre-restore-20261205T101500");
        let newer = dir.path().join("assets.db.pre-restore-20261205T101500-1");
        fs::write(&old, b"1").unwrap();
        fs::write(with_suffix(&old, "-wal"), b"22").unwrap();
        fs::write(&new, b"333").unwrap();
        fs::write(&newer, b"4444").unwrap();
        fs::write(
            dir.path().join("other.db.pre-restore-20261205T101500"),
            b"x",
        )
        .unwrap();
        let copies = list(&db, Layout::File).unwrap();
        let names: Vec<_> = copies.iter().map(|c| PathBuf::from(&c.name)).collect();
        assert_eq!(names, [newer.clone(), new, old.clone()]);
        assert_eq!(copies[2].size_bytes, 3);
        assert_eq!(
            copies[1].kept_at.unwrap().to_rfc3339(),
            "2026-12-05T10:15:00+00:00"
        );
        remove(&copies[2], Layout::File).unwrap();
        assert!(!old.exists() && !with_suffix(&old, "-wal").exists());
        assert!(newer.exists());
    }
}
