//! Helpers of the restore tests that drive the binary with hooks and signals: sample databases
//! told apart by a fingerprint, a running `kars-backup` whose log lines can be waited for,
//! signals, seeded randomness, and the processes and files a restore may leave behind.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
pub(crate) use rustix::process::Signal;

use super::{bin, ok_json, run, s};

/// A demo database of about `size_mb` MB, made by `kars-backup demo-db`.
pub(crate) fn demo_db(path: &Path, size_mb: u64) {
    let o = bin()
        .args([
            "demo-db",
            "--path",
            &s(path),
            "--size-mb",
            &size_mb.to_string(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "demo-db: {}", super::text(&o));
}

/// Adds the table `marker` holding `label` to the database, which tells it apart in
/// [`fingerprint`].
pub(crate) fn mark(conn: &rusqlite::Connection, label: &str) {
    conn.execute_batch("CREATE TABLE marker (label TEXT NOT NULL)")
        .unwrap();
    conn.execute("INSERT INTO marker (label) VALUES (?1)", [label])
        .unwrap();
}

/// Backs `db` up to `store` with the binary; returns the backup's name.
pub(crate) fn backup(db: &Path, store: &Path) -> String {
    let doc = ok_json(run(&[
        "backup",
        "--db",
        &s(db),
        "--to",
        &s(store),
        "--json",
    ]));
    doc["backup"].as_str().unwrap().to_string()
}

/// `path` with `suffix` appended to its file name (`a.db` + `-wal`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// What an application opening `db` would see, without touching it: the file and its
/// `-wal`/`-journal` are copied aside and opened there. `Err` when there is no database at the
/// path or `PRAGMA integrity_check` fails; else the `marker` labels and every table's row count.
pub(crate) fn fingerprint(db: &Path) -> Result<String, String> {
    if !db.is_file() {
        return Err(format!("there is no database at {}", db.display()));
    }
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("db");
    std::fs::copy(db, &copy).map_err(|e| format!("copy {}: {e}", db.display()))?;
    for suffix in ["-wal", "-journal"] {
        let side = with_suffix(db, suffix);
        if side.exists() {
            std::fs::copy(&side, with_suffix(&copy, suffix))
                .map_err(|e| format!("copy {}: {e}", side.display()))?;
        }
    }
    let conn = rusqlite::Connection::open(&copy).map_err(|e| e.to_string())?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("integrity_check of {}: {e}", db.display()))?;
    if check != "ok" {
        return Err(format!("integrity_check of {}: {check}", db.display()));
    }
    let marker: Option<String> = conn
        .query_row("SELECT group_concat(label, ',') FROM marker", [], |r| {
            r.get(0)
        })
        .map_err(|e| format!("marker of {}: {e}", db.display()))?;
    let mut out = format!("marker={}", marker.unwrap_or_default());
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in tables {
        let rows: i64 = conn
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })
            .unwrap();
        out.push_str(&format!(" {table}={rows}"));
    }
    Ok(out)
}

/// The names in `dir` that start with `prefix`, sorted.
fn names_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// A backup of the "new" database and the "old" one that restores start from (its last
/// transaction still in its `-wal`, which a restore has to settle and must never leave beside
/// the restored file), told apart by their [`fingerprint`]s.
pub(crate) struct Sample {
    dir: tempfile::TempDir,
    /// The destination holding the backup.
    pub(crate) store: PathBuf,
    live: PathBuf,
    /// The old database's fingerprint.
    pub(crate) old: String,
    /// The new database's fingerprint.
    pub(crate) new: String,
}

impl Sample {
    /// Demo databases of about `size_mb` MB.
    pub(crate) fn new(size_mb: u64) -> Sample {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.db");
        demo_db(&base, size_mb);
        let new = dir.path().join("new/assets.db");
        std::fs::create_dir_all(new.parent().unwrap()).unwrap();
        std::fs::copy(&base, &new).unwrap();
        mark(&rusqlite::Connection::open(&new).unwrap(), "new");
        let store = dir.path().join("store");
        backup(&new, &store);

        let old = dir.path().join("old/assets.db");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::copy(&base, &old).unwrap();
        let conn = rusqlite::Connection::open(&old).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
            .unwrap();
        mark(&conn, "old");
        conn.execute_batch("DELETE FROM audit_logs WHERE id % 3 = 0")
            .unwrap();
        // Copied while the connection is open, the -wal still holds those changes.
        let live = dir.path().join("live.db");
        std::fs::copy(&old, &live).unwrap();
        std::fs::copy(with_suffix(&old, "-wal"), with_suffix(&live, "-wal")).unwrap();
        drop(conn);
        assert!(std::fs::metadata(with_suffix(&live, "-wal")).unwrap().len() > 0);

        let old = fingerprint(&live).unwrap();
        let new = fingerprint(&new).unwrap();
        assert_ne!(old, new);
        Sample {
            dir,
            store,
            live,
            old,
            new,
        }
    }

    /// A new directory `name` holding the old database, `assets.db`.
    pub(crate) fn trial(&self, name: &str) -> Trial {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let db = dir.join("assets.db");
        std::fs::copy(&self.live, &db).unwrap();
        std::fs::copy(with_suffix(&self.live, "-wal"), with_suffix(&db, "-wal")).unwrap();
        Trial {
            hooks_log: dir.join("hooks.log"),
            tmp: dir.join("tmp"),
            db,
            dir,
        }
    }

    /// `restore --latest --yes` of the backup into the trial's database, with `TMPDIR` (where
    /// the hooks' log files go) in the trial's `tmp`.
    pub(crate) fn restore(&self, trial: &Trial) -> Command {
        let mut c = bin();
        c.env("TMPDIR", &trial.tmp).args([
            "restore",
            "--db",
            &s(&trial.db),
            "--from",
            &s(&self.store),
            "--latest",
            "--yes",
        ]);
        c
    }

    /// Which of the two databases `db` holds; panics when it is neither, or not a complete one.
    pub(crate) fn which(&self, db: &Path) -> &'static str {
        match fingerprint(db) {
            Ok(f) if f == self.old => "old",
            Ok(f) if f == self.new => "new",
            Ok(f) => panic!(
                "{} holds a mix: {f}\n  old: {}\n  new: {}",
                db.display(),
                self.old,
                self.new
            ),
            Err(e) => panic!("{e}"),
        }
    }
}

/// One trial's directory: the live database `assets.db`, a log for hooks, and `tmp`.
pub(crate) struct Trial {
    /// The directory.
    pub(crate) dir: PathBuf,
    /// The live database.
    pub(crate) db: PathBuf,
    /// A file hooks may log to.
    pub(crate) hooks_log: PathBuf,
    /// `TMPDIR` of the restores.
    pub(crate) tmp: PathBuf,
}

impl Trial {
    /// What the hooks logged, a line each.
    pub(crate) fn hook_events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.hooks_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits (at most `grace`) for the processes that mention this trial (hooks, and what they
    /// started) to end; returns those still running.
    pub(crate) fn hooks_left_running(&self, grace: Duration) -> Vec<String> {
        let mut left = Vec::new();
        wait_until(grace, || {
            left = processes_mentioning(&self.dir);
            left.is_empty()
        });
        left
    }
}

/// The `.kars-restore-*` staging directories in `dir`.
pub(crate) fn staging_dirs(dir: &Path) -> Vec<PathBuf> {
    names_starting(dir, ".kars-restore-")
}

/// The previous copies `<db>.pre-restore-<time>` beside `db` (their side files left out).
pub(crate) fn previous_copies(db: &Path) -> Vec<PathBuf> {
    let name = db.file_name().unwrap().to_string_lossy();
    names_starting(db.parent().unwrap(), &format!("{name}.pre-restore-"))
        .into_iter()
        .filter(|p| {
            let n = p.to_string_lossy();
            !["-wal", "-shm", "-journal"].iter().any(|s| n.ends_with(s))
        })
        .collect()
}

/// The previous copies that are the live file itself under a second name (one inode).
pub(crate) fn aliases(db: &Path) -> Vec<PathBuf> {
    let Ok(live) = std::fs::metadata(db) else {
        return Vec::new();
    };
    previous_copies(db)
        .into_iter()
        .filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.dev() == live.dev() && m.ino() == live.ino())
        })
        .collect()
}

/// The files in `dir` (none when it does not exist).
pub(crate) fn files_in(dir: &Path) -> Vec<PathBuf> {
    names_starting(dir, "")
}

/// Whether `pid` is a live process (a zombie is not).
pub(crate) fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with(['Z', 'X'])
    })
}

/// The live processes whose environment mentions `needle` (the hooks of a restore whose target
/// or `TMPDIR` is below it inherit both, and so does whatever they start), as `pid N (command)`.
pub(crate) fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = s(needle).into_bytes();
    let own = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if pid != own
            && is_running(pid)
            && environ
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("pid {pid} ({})", cmdline.trim()));
        }
    }
    found
}

/// Polls `done` every 10 ms until it holds or `timeout` has passed; returns whether it held.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid written (with a newline) to `path` by a process the test started through a hook.
pub(crate) fn read_pid(path: &Path) -> u32 {
    let mut text = String::new();
    let written = wait_until(Duration::from_secs(20), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.ends_with('\n')
    });
    assert!(written, "{} was never written", path.display());
    text.trim().parse().unwrap()
}

/// Sends `signal` to `pid`; false when there is no such process.
pub(crate) fn send(pid: u32, signal: Signal) -> bool {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a positive pid");
    rustix::process::kill_process(pid, signal).is_ok()
}

/// Kills a process that a hook left running (SIGKILL) when dropped, so that a failed assertion
/// leaves nothing behind.
#[derive(Debug)]
pub(crate) struct KillOnDrop(pub(crate) u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if is_running(self.0) {
            send(self.0, Signal::KILL);
        }
    }
}

/// A random generator whose seed is printed, and taken from `KARS_TEST_SEED` when that is set,
/// so that a failed run can be repeated.
pub(crate) fn seeded_rng(test: &str) -> StdRng {
    let seed = std::env::var("KARS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{test}: seed {seed} (KARS_TEST_SEED={seed} repeats it)");
    StdRng::seed_from_u64(seed)
}

/// How a process ended: `exit 130`, `killed by signal 9`.
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// A running `kars-backup` whose standard error is read as it comes, each line with the time it
/// arrived, so that a test can wait for a phase to begin.
pub(crate) struct Watched {
    child: Child,
    status: Option<ExitStatus>,
    /// When it was started.
    pub(crate) spawned: Instant,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<()>>,
}

/// A [`Watched`] process that has exited.
pub(crate) struct Finished {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Its standard output.
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
    /// From its start to its exit (as far as the test could tell).
    pub(crate) elapsed: Duration,
}

impl Watched {
    /// Starts `cmd` with both output streams piped.
    pub(crate) fn spawn(mut cmd: Command) -> Watched {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = cmd.spawn().expect("run kars-backup");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let sink = lines.clone();
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        Watched {
            child,
            status: None,
            spawned,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the first standard-error line containing `needle` arrived.
    pub(crate) fn line_seen(&self, needle: &str) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }

    fn stderr_so_far(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the process has exited (it is reaped then, and gets no more signals).
    pub(crate) fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status.is_some()
    }

    /// Waits (polling every millisecond, at most `timeout`, else panics) until `event` gives a time;
    /// `None` when the process exited first.
    pub(crate) fn wait_for(
        &mut self,
        timeout: Duration,
        event: &dyn Fn(&Watched) -> Option<Instant>,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = event(self) {
                return Some(t);
            }
            if self.exited() {
                // Its last lines may have arrived meanwhile.
                std::thread::sleep(Duration::from_millis(50));
                return event(self);
            }
            assert!(
                Instant::now() < deadline,
                "the awaited event did not come within {timeout:?}; stderr so far:\n{}",
                self.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends `signal`; false when the process has already exited (then its pid is not ours any
    /// more).
    pub(crate) fn signal(&mut self, signal: Signal) -> bool {
        !self.exited() && send(self.child.id(), signal)
    }

    /// Waits for the exit (at most `timeout`, else kills it and panics) and for the output.
    pub(crate) fn finish(mut self, timeout: Duration) -> Finished {
        let exited = wait_until(timeout, || self.exited());
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "kars-backup did not exit within {timeout:?}; stderr:\n{}",
                self.stderr_so_far()
            );
        }
        let elapsed = self.spawned.elapsed();
        let stdout = self.stdout.take().unwrap().join().unwrap();
        self.stderr.take().unwrap().join().unwrap();
        Finished {
            status: self.status.unwrap(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: self.stderr_so_far(),
            elapsed,
        }
    }
}
