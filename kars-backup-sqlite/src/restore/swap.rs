//! The swap: the staged data replaces the live data in steps that each leave a complete database
//! at every database path, and that are written to a journal first, so a restore killed at any
//! point (SIGKILL, power loss) leaves the old or the new database in place, never none and never a
//! mix of one database with another's `-wal`, and the next run can finish the rollback.
//!
//! # File mode
//! 1. The live database is *settled* ([`settle`]): its `-wal` is checkpointed into the file (or a
//!    hot `-journal` rolled back), so the file alone is the whole database.
//! 2. Side files still there (an empty `-wal`, a `-shm`) are moved aside.
//! 3. The live file gets a second name, `<db>.pre-restore-<UTC time>` (a hard link; a copy where
//!    the file system has none): the previous database is kept.
//! 4. The staged file is renamed over the live path (one atomic rename).
//!
//! # Volume mode
//! The same per top-level entry of the directory, whose previous content goes into
//! `<dir>/.kars-pre-restore-<UTC time>/`: first every entry that the backup does not replace
//! (side files among them) is moved aside, then each file of the backup replaces its live twin
//! (hard link into the kept directory, atomic rename) or is moved in. The directory itself is
//! never renamed (it may be a mount point).
//!
//! # Rollback
//! The steps are undone in reverse: a replaced file is renamed back over the path from its kept
//! name (the restored database being settled first), moved entries come back, installed ones go.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::journal::{Step, Swap, rename, sync_dir, write_journal};
use super::live::write_into;
use super::staging::{JOURNAL_FILE, settle};
use super::target::{new_kept_dir, new_kept_file, parent_dir, with_suffix};
use crate::archive;
use crate::error::{Error, Result};
use crate::volume::{self, SIDE_SUFFIXES};

/// Gives `live` the second name `kept`: a hard link, or a synced copy where links fail.
fn keep_a_name(live: &Path, kept: &Path) -> Result<()> {
    match fs::hard_link(live, kept) {
        Ok(()) => Ok(()),
        Err(link_error) => {
            tracing::debug!(error = %link_error, "no hard link; copying the previous database instead");
            fs::copy(live, kept)
                .and_then(|_| fs::File::open(kept)?.sync_all())
                .map_err(|e| Error::io("copy the previous database to", kept, e))
        }
    }
}

/// Whether two paths are the same file (one inode under two names).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

/// Gives the restored file the previous file's permissions and owner, or 0600.
fn apply_original_attributes(staged: &Path, original: Option<&fs::Metadata>) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match original {
            Some(meta) => {
                archive::set_mode(staged, meta.mode() & 0o7777)?;
                archive::set_owner(staged, Some((meta.uid(), meta.gid())));
            }
            None => archive::set_mode(staged, 0o600)?,
        }
    }
    #[cfg(not(unix))]
    let _ = (staged, original);
    Ok(())
}

/// File mode (see the module's documentation).
pub(crate) fn swap_file(target: &Path, staged: &Path, staging: &Path) -> (Swap, Result<()>) {
    let mut swap = Swap::new(staging.join(JOURNAL_FILE));
    let result = swap_file_steps(target, staged, &mut swap);
    (swap, result)
}

fn swap_file_steps(target: &Path, staged: &Path, swap: &mut Swap) -> Result<()> {
    let dir = parent_dir(target);
    let original = match fs::metadata(target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read metadata of", target, e)),
    };
    if original.is_some() {
        settle(target)?;
    }
    let kept = new_kept_file(target);
    swap.record(Step::Begin {
        target: target.to_path_buf(),
        kept: kept.clone(),
    })?;
    for suffix in SIDE_SUFFIXES {
        let side = with_suffix(target, suffix);
        if fs::symlink_metadata(&side).is_ok() {
            if original.is_none() {
                tracing::warn!(file = %side.display(), "stale SQLite side file without its database moved aside");
            }
            let to = with_suffix(&kept, suffix);
            swap.record(Step::Moved {
                from: side.clone(),
                to: to.clone(),
            })?;
            rename(&side, &to)?;
        }
    }
    apply_original_attributes(staged, original.as_ref())?;
    if original.is_some() {
        swap.record(Step::Replaced {
            live: target.to_path_buf(),
            kept: kept.clone(),
            staged: staged.to_path_buf(),
        })?;
        keep_a_name(target, &kept)?;
        swap.kept = Some(kept);
    } else {
        swap.record(Step::Installed {
            live: target.to_path_buf(),
            staged: staged.to_path_buf(),
        })?;
    }
    rename(staged, target)?;
    sync_dir(&dir)?;
    swap.record(Step::Swapped)
}

/// Volume mode (see the module's documentation). `staging` holds the extracted entries.
pub(crate) fn swap_volume(target: &Path, staging: &Path) -> (Swap, Result<()>) {
    let mut swap = Swap::new(staging.join(JOURNAL_FILE));
    let result = swap_volume_steps(target, staging, &mut swap);
    (swap, result)
}

fn swap_volume_steps(target: &Path, staging: &Path, swap: &mut Swap) -> Result<()> {
    settle_databases(target)?;
    let live = top_level_entries(target)?;
    let staged = top_level_entries(staging)?;
    let kept = new_kept_dir(target);
    swap.record(Step::Begin {
        target: target.to_path_buf(),
        kept: kept.clone(),
    })?;
    fs::create_dir(&kept).map_err(|e| Error::io("create directory", &kept, e))?;
    archive::set_mode(&kept, 0o700)?;
    swap.kept_dir_created = Some(kept.clone());
    let is_file = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_file());
    // Replaced one by one: a regular file in both.
    let replaceable =
        |name: &std::ffi::OsString| is_file(&target.join(name)) && is_file(&staging.join(name));
    // First everything that is not replaced file by file moves aside (side files among them), so
    // that no restored database ever sits beside a previous one's -wal.
    for name in live.iter().filter(|n| !replaceable(n)) {
        let (from, to) = (target.join(name), kept.join(name));
        swap.record(Step::Moved {
            from: from.clone(),
            to: to.clone(),
        })?;
        rename(&from, &to)?;
    }
    for name in &staged {
        let (live_path, staged_path) = (target.join(name), staging.join(name));
        if replaceable(name) {
            let kept_path = kept.join(name);
            swap.record(Step::Replaced {
                live: live_path.clone(),
                kept: kept_path.clone(),
                staged: staged_path.clone(),
            })?;
            keep_a_name(&live_path, &kept_path)?;
        } else {
            swap.record(Step::Installed {
                live: live_path.clone(),
                staged: staged_path.clone(),
            })?;
        }
        rename(&staged_path, &live_path)?;
    }
    sync_dir(&kept)?;
    sync_dir(target)?;
    if live.is_empty() {
        let _ = fs::remove_dir(&kept);
        swap.kept_dir_created = None;
    } else {
        swap.kept = Some(kept);
    }
    swap.record(Step::Swapped)
}

/// Settles every database of a volume (see [`settle`]).
fn settle_databases(dir: &Path) -> Result<()> {
    volume::walk(dir, &mut |item| {
        if let volume::Item::Database { path, .. } = item {
            settle(path)?;
        }
        Ok(())
    })
}

/// Undoes the steps of a swap, newest first (online after a failure, or by the next run after a
/// kill: the steps then come from the journal and may include one that was recorded but not
/// done).
pub(crate) fn roll_back(swap: &mut Swap) -> Result<()> {
    if let Some(journal) = &swap.journal
        && journal.parent().is_some_and(Path::exists)
        && swap.changed_anything()
    {
        write_journal(journal, &Step::RollingBack)?;
    }
    let mut touched_dirs: Vec<PathBuf> = Vec::new();
    while let Some(step) = swap.steps.last().cloned() {
        match &step {
            Step::Replaced { live, kept, .. } => {
                if kept.exists() {
                    if same_file(live, kept) {
                        // The staged file never replaced it: drop the second name.
                        fs::remove_file(kept).map_err(|e| Error::io("remove", kept, e))?;
                    } else {
                        // The restored database may have been opened since: settle it, so its
                        // -wal goes before the previous database comes back.
                        settle_or_drop_side_files(live);
                        rename(kept, live)?;
                    }
                }
                touched_dirs.push(parent_dir(live));
            }
            Step::Installed { live, .. } => {
                if fs::symlink_metadata(live).is_ok() {
                    remove_entry(live)?;
                }
                for suffix in SIDE_SUFFIXES {
                    let _ = fs::remove_file(with_suffix(live, suffix));
                }
                touched_dirs.push(parent_dir(live));
            }
            Step::Moved { from, to } => {
                if fs::symlink_metadata(to).is_ok() && fs::symlink_metadata(from).is_err() {
                    rename(to, from)?;
                }
                touched_dirs.push(parent_dir(from));
            }
            Step::WroteLive { live, kept, .. } => {
                if kept.exists() {
                    write_into(live, kept)?;
                }
            }
            Step::Begin { .. } | Step::Swapped | Step::RollingBack | Step::RolledBack => {}
        }
        swap.steps.pop();
    }
    if let Some(kept) = swap.kept_dir_created.take() {
        let _ = fs::remove_dir(&kept);
    }
    swap.kept = None;
    touched_dirs.sort();
    touched_dirs.dedup();
    for dir in touched_dirs {
        sync_dir(&dir)?;
    }
    if let Some(journal) = &swap.journal
        && journal.parent().is_some_and(Path::exists)
    {
        write_journal(journal, &Step::RolledBack)?;
    }
    Ok(())
}

/// Settles a database about to be dropped or replaced; if it cannot be (it is busy or damaged),
/// its side files are removed anyway, since the previous database must not meet them.
fn settle_or_drop_side_files(db: &Path) {
    if let Err(e) = settle(db) {
        tracing::warn!(db = %db.display(), error = %e, "the restored database could not be settled; removing its side files");
        for suffix in SIDE_SUFFIXES {
            let _ = fs::remove_file(with_suffix(db, suffix));
        }
    }
}

fn remove_entry(path: &Path) -> Result<()> {
    let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    let removed = if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    removed.map_err(|e| Error::io("remove", path, e))
}

/// The names in a directory, sorted, without kars-backup's artefacts.
pub(crate) fn top_level_entries(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(|e| Error::io("read directory", dir, e))?;
    names.retain(|n| !volume::is_artefact(n));
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::journal::read_journal;

    #[test]
    fn a_file_swap_rolls_back_to_the_same_inode() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("a.db");
        fs::write(&live, b"old").unwrap();
        let staging = dir.path().join(".kars-restore-x");
        fs::create_dir(&staging).unwrap();
        let staged = staging.join("a.db");
        fs::write(&staged, b"new").unwrap();
        fs::write(with_suffix(&live, "-shm"), b"").unwrap();
        let before = fs::metadata(&live).unwrap();
        let (mut swap, result) = swap_file(&live, &staged, &staging);
        result.unwrap();
        assert_eq!(fs::read(&live).unwrap(), b"new");
        let kept = swap.kept.clone().unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"old");
        assert!(!with_suffix(&live, "-shm").exists());
        assert_eq!(
            read_journal(&staging.join(JOURNAL_FILE)).unwrap().last(),
            Some(&Step::Swapped)
        );
        roll_back(&mut swap).unwrap();
        assert_eq!(fs::read(&live).unwrap(), b"old");
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(fs::metadata(&live).unwrap().ino(), before.ino());
        }
        assert!(!kept.exists());
        // The stale -shm was settled away before the swap (SQLite rebuilds it).
        assert!(!with_suffix(&live, "-shm").exists());
    }
}
