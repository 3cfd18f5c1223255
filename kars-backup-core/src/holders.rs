//! Which other processes have a file open: the check that keeps a restore from replacing a
//! database under a running application, and that tells a hook's background children apart.
//!
//! On Linux the answer comes from `/proc/<pid>/fd`; processes whose descriptors cannot be read
//! (another user's, without the privilege) are counted, so a caller can say the answer is
//! incomplete. Elsewhere [`scan`] reports itself unsupported and callers fall back to what the
//! engine can probe (a lock).
//!
//! ```
//! use kars_backup_core::holders;
//! let file = tempfile::NamedTempFile::new().unwrap();
//! let path = file.path().to_path_buf();
//! // This process is never listed: it is the one asking.
//! let scan = holders::scan(&|p| p == path.as_path());
//! assert!(scan.holders.is_empty());
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

/// A process (or a database session) that has the restore target open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Its process id (for PostgreSQL, the server process of the session).
    pub pid: u32,
    /// Its command line (or, for a session, user, client and application), secrets redacted.
    pub command: String,
    /// What it has open (paths, or the database's name).
    pub holds: Vec<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// The result of looking for processes that have some files open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scan {
    /// The processes found, by pid.
    pub holders: Vec<Holder>,
    /// Processes whose open files could not be read (no permission): the answer may miss them.
    pub unreadable: usize,
    /// False where the platform has no `/proc` to read: nothing could be checked.
    pub supported: bool,
}

impl Scan {
    /// One line naming every holder: `pid 12 (node server.js), pid 40 (sqlite3 assets.db)`.
    pub fn describe(&self) -> String {
        self.holders
            .iter()
            .map(Holder::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Finds the other processes that have a file open for which `matches(path)` is true.
///
/// The paths given to `matches` are the kernel's (absolute, symbolic links resolved): compare
/// them with [`canonical`] paths. This process is never listed.
pub fn scan(matches: &dyn Fn(&Path) -> bool) -> Scan {
    #[cfg(target_os = "linux")]
    {
        let Some((found, unreadable)) = linux::open_files(matches) else {
            return Scan::default();
        };
        let holders = found
            .into_iter()
            .map(|(pid, holds)| Holder {
                pid,
                command: shown_command(&linux::command_of(pid)),
                holds,
            })
            .collect();
        Scan {
            holders,
            unreadable,
            supported: true,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = matches;
        Scan::default()
    }
}

/// `path` made absolute with its directory's symbolic links resolved, also when the file itself
/// does not exist (a `-wal` that is not there yet), as the kernel shows open files.
pub fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(absolute),
        _ => absolute,
    }
}

/// The longest command line shown.
#[cfg(target_os = "linux")]
const COMMAND_CHARS: usize = 200;

/// A process's command line as a [`Holder`] shows it: secrets redacted, at most
/// [`COMMAND_CHARS`] characters.
#[cfg(target_os = "linux")]
fn shown_command(line: &str) -> String {
    let line = redact_command(line);
    if line.chars().count() > COMMAND_CHARS {
        return line.chars().take(COMMAND_CHARS).collect::<String>() + "…";
    }
    line
}

/// A command line with the passwords of URLs (`://user:secret@`) and `password=` values hidden.
pub fn redact_command(command: &str) -> String {
    command
        .split(' ')
        .map(|word| {
            let mut w = word.to_string();
            if let Some(scheme) = w.find("://") {
                let rest = scheme + 3;
                if let Some(at) = w[rest..].find('@').map(|i| i + rest) {
                    if let Some(colon) = w[rest..at].find(':').map(|i| i + rest) {
                        w.replace_range(colon + 1..at, "***");
                    }
                }
            }
            let lower = w.to_ascii_lowercase();
            for key in ["password=", "passwd=", "pwd=", "secret=", "token="] {
                if let Some(i) = lower.find(key) {
                    let start = i + key.len();
                    let end = w[start..].find(['&', ';']).map_or(w.len(), |e| e + start);
                    w.replace_range(start..end, "***");
                    break;
                }
            }
            w
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `/proc` tells about other processes (`scan` makes holders of it).
#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fs;
    use std::path::Path;

    /// How many times the process list is read at most (see [`open_files`]).
    const MAX_LISTINGS: usize = 5;

    /// The files other processes have open for which `matches` is true, by pid, and how many
    /// processes' files could not be read; `None` without a `/proc` to read.
    pub(super) fn open_files(
        matches: &dyn Fn(&Path) -> bool,
    ) -> Option<(BTreeMap<u32, Vec<String>>, usize)> {
        let own = std::process::id();
        let mut found: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let mut unreadable = 0;
        let mut seen = BTreeSet::from([own]);
        // The list of processes is read once up front, and reading their files takes a while:
        // a process that forks and exits meanwhile (a daemon going to the background) hands its
        // files to a child that the list does not have. So the list is read again, until it
        // brings no process that was not looked at.
        for listing in 0..MAX_LISTINGS {
            let Ok(procs) = fs::read_dir("/proc") else {
                if listing == 0 {
                    return None;
                }
                break;
            };
            let new: Vec<u32> = procs
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
                .filter(|pid| seen.insert(*pid))
                .collect();
            if new.is_empty() {
                break;
            }
            for pid in new {
                match files_of(pid, matches) {
                    Ok(held) if !held.is_empty() => {
                        found.insert(pid, held);
                    }
                    Ok(_) => {}
                    Err(()) => unreadable += 1,
                }
            }
        }
        Some((found, unreadable))
    }

    /// The files of process `pid` for which `matches` is true (none when it has ended);
    /// `Err` when they cannot be read.
    fn files_of(pid: u32, matches: &dyn Fn(&Path) -> bool) -> Result<Vec<String>, ()> {
        let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            // The process ended meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(_) => return Err(()),
        };
        let mut held = Vec::new();
        for fd in fds.flatten() {
            let Ok(link) = fs::read_link(fd.path()) else {
                continue;
            };
            if link.is_absolute() && matches(&link) {
                let link = link.display().to_string();
                if !held.contains(&link) {
                    held.push(link);
                }
            }
        }
        Ok(held)
    }

    /// The command line of process `pid` as the kernel has it (`[name]` when it has none).
    pub(super) fn command_of(pid: u32) -> String {
        let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let mut line = raw
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if line.is_empty() {
            line = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| format!("[{}]", c.trim()))
                .unwrap_or_else(|_| "?".into());
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_command_lines_are_hidden() {
        assert_eq!(
            redact_command("psql postgres://kars:s3cret@db:5432/kars -c x"),
            "psql postgres://kars:***@db:5432/kars -c x"
        );
        assert_eq!(
            redact_command("app --dsn host=db password=hunter2;x"),
            "app --dsn host=db password=***;x"
        );
        assert_eq!(redact_command("node server.js"), "node server.js");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_holding_a_file_is_found_with_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("held.db");
        std::fs::write(&file, b"x").unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 3<\"$1\"; echo ready; exec sleep 30")
            .arg("holder")
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        // `exec sleep` follows the echo: wait until the child is sleep (a loaded machine may
        // not have run the exec yet).
        let cmdline = format!("/proc/{}/cmdline", child.id());
        for _ in 0..500 {
            if std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(b"sleep")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let target = canonical(&file);
        // "ready" comes before the shell replaces itself with sleep: wait for that.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let scan = loop {
            let scan = scan(&|p| p == target.as_path());
            let execed = scan
                .holders
                .first()
                .is_some_and(|h| h.command.starts_with("sleep"));
            if execed || std::time::Instant::now() > deadline {
                break scan;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(scan.supported);
        assert_eq!(scan.holders.len(), 1, "{scan:?}");
        assert_eq!(scan.holders[0].pid, child.id());
        assert!(scan.holders[0].command.starts_with("sleep 30"), "{scan:?}");
        assert_eq!(scan.holders[0].holds, [target.display().to_string()]);
        // Nobody else holds an unrelated path.
        assert!(scan_of(&dir.path().join("other")).holders.is_empty());
    }

    fn scan_of(path: &Path) -> Scan {
        let target = canonical(path);
        scan(&|p| p == target.as_path())
    }
}
