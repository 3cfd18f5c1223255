//! What a killed restore leaves, found and tidied by the next one: `.kars-restore-*` staging
//! directories whose owner lock is free (their restore is gone), a swap its journal shows was
//! cut off in the middle (rolled back to the previous data), what is left of a staging directory
//! that its restore was removing (`.kars-restore-*.removing`), and a previous copy that is only a
//! second name of the live file (a kill between the hard link and the rename).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::journal::{Step, from_journal, read_journal};
use super::previous;
use super::staging::{self, JOURNAL_FILE, OWNER_FILE};
use super::swap::{roll_back, same_file};
use super::target::{Layout, parent_dir};
use crate::error::{Error, Result};
use crate::volume::STAGING_PREFIX;

/// A staging directory without an owner file younger than this may be a restore that is just
/// starting.
const UNOWNED_GRACE: Duration = Duration::from_secs(60);

/// How far a dead restore got, from its journal.
#[derive(Debug, PartialEq, Eq)]
enum Reached {
    /// It changed nothing at the target.
    NothingChanged,
    /// Its swap was complete (and not rolled back).
    Swapped,
    /// It had rolled back completely.
    RolledBack,
    /// It stopped in the middle of the swap or of the rollback.
    Partial,
}

fn reached(steps: &[Step]) -> Reached {
    let changed = steps.iter().any(|s| {
        matches!(
            s,
            Step::Moved { .. }
                | Step::Replaced { .. }
                | Step::Installed { .. }
                | Step::WroteLive { .. }
        )
    });
    match steps.last() {
        Some(Step::RolledBack) => Reached::RolledBack,
        _ if steps.contains(&Step::RollingBack) => Reached::Partial,
        Some(Step::Swapped) => Reached::Swapped,
        _ if changed => Reached::Partial,
        _ => Reached::NothingChanged,
    }
}

/// Finds and tidies the leftovers of dead restores of `target` (see the module's documentation).
/// `holders` says who has the target open: a half-done swap is only rolled back when nobody has.
///
/// # Errors
/// [`Error::RestoreRunning`] when another live restore of the same target is under way;
/// [`Error::HalfSwapped`] when a half-done swap cannot be rolled back because the target is in
/// use; file-system errors.
pub(crate) fn clean(
    target: &Path,
    layout: Layout,
    holders: &dyn Fn() -> kars_backup_core::holders::Scan,
) -> Result<Vec<String>> {
    let base = match layout {
        Layout::File => parent_dir(target),
        Layout::Volume => target.to_path_buf(),
    };
    let Ok(entries) = fs::read_dir(&base) else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    let mut stagings: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    stagings.sort();
    for staging in stagings {
        if staging::is_removing(&staging) {
            if let Some(line) = remains_removed(&staging) {
                tracing::warn!("{line}");
                done.push(line);
            }
            continue;
        }
        let owner_path = staging.join(OWNER_FILE);
        let owner_text = fs::read_to_string(&owner_path).unwrap_or_default();
        let owner: serde_json::Value = serde_json::from_str(owner_text.trim()).unwrap_or_default();
        let owner_target = owner["target"].as_str().map(Path::new);
        match fs::File::open(&owner_path) {
            Ok(f) => {
                if f.try_lock().is_err() {
                    if owner_target == Some(target) {
                        return Err(Error::RestoreRunning {
                            target: target.to_path_buf(),
                            pid: owner["pid"].as_u64().unwrap_or(0),
                        });
                    }
                    continue; // another target's restore, still running
                }
            }
            Err(_) => {
                let age = fs::metadata(&staging)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or_default();
                if age < UNOWNED_GRACE {
                    continue;
                }
            }
        }
        let who = match (owner["pid"].as_u64(), owner["started"].as_str()) {
            (Some(pid), Some(started)) => format!("pid {pid}, started {started}"),
            _ => "its owner is unknown".to_string(),
        };
        let journal = staging.join(JOURNAL_FILE);
        let steps = read_journal(&journal)?;
        let kept = steps.iter().find_map(|s| match s {
            Step::Begin { kept, .. } => Some(kept.display().to_string()),
            _ => None,
        });
        let swapped_target = steps.iter().find_map(|s| match s {
            Step::Begin { target, .. } => Some(target.clone()),
            _ => None,
        });
        let outcome = match reached(&steps) {
            Reached::NothingChanged => format!(
                "removed {} of a restore that ended before its swap ({who})",
                staging.display()
            ),
            Reached::RolledBack => format!(
                "removed {} of a restore that had rolled back ({who})",
                staging.display()
            ),
            Reached::Swapped => format!(
                "removed {} of a restore that ended after its swap ({who}): the restored data is in place{}",
                staging.display(),
                kept.as_deref()
                    .filter(|k| Path::new(k).exists())
                    .map(|k| format!(", the previous data at {k}"))
                    .unwrap_or_default()
            ),
            Reached::Partial => {
                let swapped_target = swapped_target.unwrap_or_else(|| target.to_path_buf());
                if swapped_target != target {
                    continue; // another target's: its own next restore repairs it
                }
                let only_live_writes = steps.iter().all(|s| {
                    !matches!(
                        s,
                        Step::Moved { .. } | Step::Replaced { .. } | Step::Installed { .. }
                    )
                });
                if !only_live_writes {
                    let scan = holders();
                    if !scan.holders.is_empty() {
                        return Err(Error::HalfSwapped {
                            target: target.to_path_buf(),
                            holders: scan.describe(),
                        });
                    }
                }
                let mut undo = from_journal(&journal, steps);
                roll_back(&mut undo)?;
                format!(
                    "a restore was cut off in the middle of its swap ({who}): rolled back, the previous data of {} is back",
                    target.display()
                )
            }
        };
        staging::remove_staging_dir(&staging)?;
        tracing::warn!("{outcome}");
        done.push(outcome);
    }
    if layout == Layout::File {
        // A kill between the hard link and the rename leaves a "previous copy" that is the live
        // file itself under a second name.
        for copy in previous::list(target, layout)? {
            if same_file(Path::new(&copy.name), target) {
                fs::remove_file(&copy.name).map_err(|e| Error::io("remove", &copy.name, e))?;
                let line = format!(
                    "removed {}, a second name of the live database left by an interrupted restore",
                    copy.name
                );
                tracing::warn!("{line}");
                done.push(line);
            }
        }
    }
    Ok(done)
}

/// Removes what a restore killed while removing its staging directory left of it (it was done
/// with it: its outcome is final); says so, unless its restore is still at it or it cannot go.
fn remains_removed(staging: &Path) -> Option<String> {
    let owner = fs::File::open(staging.join(OWNER_FILE));
    if owner.is_ok_and(|f| f.try_lock().is_err()) {
        return None; // its restore is alive and removing it
    }
    match staging::remove_staging_dir(staging) {
        Ok(()) => Some(format!(
            "removed {}, what was left of the staging directory of a restore that ended while removing it",
            staging.display()
        )),
        Err(e) => {
            tracing::warn!(error = %e, "the remains of a staging directory could not be removed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_restore_killed_while_removing_its_staging_left_is_removed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.db");
        fs::write(&target, b"restored").unwrap();
        // Its owner file and journal are gone already: only the name says it was being removed.
        let remains = dir.path().join(".kars-restore-AbC123.removing");
        fs::create_dir_all(remains.join("sub")).unwrap();
        fs::write(remains.join("sub/a.db"), b"x").unwrap();
        // One whose restore is still removing it (its owner file locked) is left to it.
        let busy = dir.path().join(".kars-restore-DeF456.removing");
        fs::create_dir(&busy).unwrap();
        let owner = fs::File::create(busy.join(OWNER_FILE)).unwrap();
        owner.try_lock().unwrap();
        let done = clean(
            &target,
            Layout::File,
            &kars_backup_core::holders::Scan::default,
        )
        .unwrap();
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(
            done[0].contains(&remains.display().to_string())
                && done[0].contains("ended while removing it"),
            "{done:?}"
        );
        assert!(!remains.exists());
        assert!(busy.exists());
        assert_eq!(fs::read(&target).unwrap(), b"restored");
    }

    #[test]
    fn the_journal_tells_how_far_a_restore_got() {
        let moved = Step::Moved {
            from: "/a".into(),
            to: "/b".into(),
        };
        let begin = Step::Begin {
            target: "/t".into(),
            kept: "/k".into(),
        };
        assert_eq!(reached(&[]), Reached::NothingChanged);
        assert_eq!(
            reached(std::slice::from_ref(&begin)),
            Reached::NothingChanged
        );
        assert_eq!(reached(&[begin.clone(), moved.clone()]), Reached::Partial);
        assert_eq!(
            reached(&[begin.clone(), moved.clone(), Step::Swapped]),
            Reached::Swapped
        );
        assert_eq!(
            reached(&[
                begin.clone(),
                moved.clone(),
                Step::Swapped,
                Step::RollingBack
            ]),
            Reached::Partial
        );
        assert_eq!(
            reached(&[
                begin,
                moved,
                Step::Swapped,
                Step::RollingBack,
                Step::RolledBack
            ]),
            Reached::RolledBack
        );
    }
}
