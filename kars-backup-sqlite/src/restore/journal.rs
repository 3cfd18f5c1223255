//! The swap's journal: each step is written (and synced) before it is done, so the next run
//! can finish a rollback that a killed restore left; and the file-system primitives the steps
//! rely on (renames, directory syncs).

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One step of a swap, as the journal records it (before it is done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum Step {
    /// Where the previous content goes; written first.
    Begin {
        /// The restore target.
        target: PathBuf,
        /// The kept file (file mode) or directory (volume mode).
        kept: PathBuf,
    },
    /// `from` (live) was renamed to `to` (kept).
    Moved { from: PathBuf, to: PathBuf },
    /// `live` got the second name `kept`, then `staged` was renamed over `live`.
    Replaced {
        live: PathBuf,
        kept: PathBuf,
        staged: PathBuf,
    },
    /// `staged` was renamed to `live`, where nothing was before.
    Installed { live: PathBuf, staged: PathBuf },
    /// `live` was copied to `kept`, then overwritten with `staged` through SQLite's online
    /// backup API, while other connections kept it open (`--live`).
    WroteLive {
        live: PathBuf,
        kept: PathBuf,
        staged: PathBuf,
    },
    /// Every step is done: the restored data is in place.
    Swapped,
    /// The rollback started (the steps before are being undone).
    RollingBack,
    /// The rollback is done: the previous data is back.
    RolledBack,
}

/// What `swap_in` did, so that `roll_back` can undo exactly that.
#[derive(Debug, Default)]
pub(crate) struct Swap {
    /// Steps done, in order.
    pub(crate) steps: Vec<Step>,
    /// Where the previous database (file mode) or content (volume mode) is kept.
    pub(crate) kept: Option<PathBuf>,
    /// A directory made to keep the previous content (volume mode).
    pub(crate) kept_dir_created: Option<PathBuf>,
    pub(super) journal: Option<PathBuf>,
}

impl Swap {
    pub(crate) fn new(journal: PathBuf) -> Self {
        Swap {
            journal: Some(journal),
            ..Swap::default()
        }
    }

    /// Whether anything at the target was changed.
    pub(crate) fn changed_anything(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s,
                Step::Moved { .. }
                    | Step::Replaced { .. }
                    | Step::Installed { .. }
                    | Step::WroteLive { .. }
            )
        })
    }

    /// Appends `step` to the journal (synced) before it is done, and remembers it.
    pub(crate) fn record(&mut self, step: Step) -> Result<()> {
        if let Some(journal) = &self.journal {
            write_journal(journal, &step)?;
        }
        self.steps.push(step);
        Ok(())
    }
}

/// Appends one step to a journal and syncs it.
pub(super) fn write_journal(journal: &Path, step: &Step) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal)
        .map_err(|e| Error::io("open", journal, e))?;
    let line = serde_json::to_string(step).map_err(|e| Error::io("write", journal, e.into()))?;
    writeln!(f, "{line}")
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io("write", journal, e))
}

/// Reads a journal back (a torn last line, from a kill while it was written, is dropped).
pub(crate) fn read_journal(journal: &Path) -> Result<Vec<Step>> {
    let f = match fs::File::open(journal) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("open", journal, e)),
    };
    Ok(io::BufReader::new(f)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

/// Syncs a directory, so renames in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Renames, with the path in the error.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io("rename", from, e))
}

/// A swap rebuilt from a journal, for [`roll_back`](super::swap::roll_back) by the next run.
pub(crate) fn from_journal(journal: &Path, steps: Vec<Step>) -> Swap {
    let kept_dir_created = steps.iter().find_map(|s| match s {
        Step::Begin { target, kept } if target.is_dir() => Some(kept.clone()),
        _ => None,
    });
    Swap {
        steps,
        kept: None,
        kept_dir_created,
        journal: Some(journal.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_read_back_and_drop_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("j");
        let step = Step::Moved {
            from: "/a".into(),
            to: "/b".into(),
        };
        write_journal(&journal, &step).unwrap();
        write_journal(&journal, &Step::Swapped).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap()
            .write_all(b"{\"op\":\"repl")
            .unwrap();
        assert_eq!(read_journal(&journal).unwrap(), [step, Step::Swapped]);
    }
}
