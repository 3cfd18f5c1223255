//! Hooks that cannot hang a restore, and the refusals of a restore that would break a running
//! application, through the real binary:
//! - start commands that leave the application running in the background (`nohup … &` without
//!   redirection, `setsid`, a daemon that forks twice) end the hook at once; the application
//!   keeps running after the tool exits. Each run is captured with `Command::output()`, which
//!   waits for the output pipes to close: had anything handed them on, it would wait too.
//! - a hook that never exits is killed with its whole process group after `--hook-timeout`, and
//!   the restore rolls back (exit 3).
//! - a database another process has open is refused (exit 3, naming it); flags that do not apply
//!   to SQLite are usage errors (exit 2).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::restore::*;
use common::*;

/// How long the applications started by the hooks run: had the restore (or its output) waited
/// for them, it would take this long.
const APP_SECS: u64 = 120;

/// Far less than [`APP_SECS`], far more than a restore of a small database takes on a loaded
/// machine.
const PROMPTLY: Duration = Duration::from_secs(40);

/// Restores the sample into a fresh trial with `start_cmd` (which must write the application's
/// pid to the file it is given, and print `app up`), and checks that the restore ended promptly
/// and the application outlived it. `named`: the log names the application's pid (not so for a
/// daemon, which may still be forking when the hook has exited: the log names who holds the
/// hook's output then).
fn a_start_command_that_leaves_the_application_running(
    start_cmd: &dyn Fn(&Path) -> String,
    named: bool,
) {
    let sample = Sample::new(1);
    let trial = sample.trial("t");
    let pidfile = trial.dir.join("app.pid");
    let started = Instant::now();
    let o = sample
        .restore(&trial)
        .args(["-v", "--start-cmd", &start_cmd(&pidfile)])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let app = KillOnDrop(read_pid(&pidfile));
    let o = ok(o);
    assert!(elapsed < PROMPTLY, "took {elapsed:?}: {}", text(&o));
    assert!(
        is_running(app.0),
        "the application died with the tool: {}",
        text(&o)
    );
    assert_eq!(sample.which(&trial.db), "new");
    let err = stderr(&o);
    assert!(err.contains("the hook left processes running"), "{err}");
    assert!(!named || err.contains(&format!("pid {}", app.0)), "{err}");
    // Its output goes on into the hook's log file, which is kept (and named in the log).
    let logs = files_in(&trial.tmp);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(err.contains(&s(&logs[0])), "{err}");
    let log_says = |what: &str| {
        std::fs::read_to_string(&logs[0])
            .unwrap_or_default()
            .contains(what)
    };
    assert!(
        wait_until(Duration::from_secs(10), || log_says("app up")),
        "{}",
        logs[0].display()
    );
    drop(app);
    assert_eq!(
        trial.hooks_left_running(Duration::from_secs(10)),
        [] as [String; 0]
    );
}

/// `sh -c '…'` that writes its pid to `pidfile`, prints `app up` and runs for [`APP_SECS`].
fn app(pidfile: &Path) -> String {
    format!(
        "sh -c 'echo $$ > \"{}\"; echo app up; exec sleep {APP_SECS}'",
        s(pidfile)
    )
}

#[test]
fn nohup_in_the_background_without_redirection_does_not_hang_the_restore() {
    a_start_command_that_leaves_the_application_running(
        &|pidfile| format!("nohup {} &", app(pidfile)),
        true,
    );
}

#[test]
fn setsid_does_not_hang_the_restore() {
    a_start_command_that_leaves_the_application_running(
        &|pidfile| format!("setsid -f {}", app(pidfile)),
        true,
    );
}

/// An init-script daemon: forks, starts a new session, forks again; the parents exit at once.
/// It keeps the hook's output (a careful daemon would close it).
const DAEMON: &str = r#"case "$1" in
  start) setsid sh "$0" session "$2" & exit 0 ;;
  session) sh "$0" daemon "$2" & exit 0 ;;
  daemon) echo $$ > "$2"; echo app up; exec sleep "$3" ;;
esac
"#;

#[test]
fn a_daemon_that_forks_twice_does_not_hang_the_restore() {
    let scripts = tempfile::tempdir().unwrap();
    let daemon = scripts.path().join("daemon.sh");
    std::fs::write(&daemon, DAEMON.replace("\"$3\"", &APP_SECS.to_string())).unwrap();
    a_start_command_that_leaves_the_application_running(
        &|pidfile| format!("sh '{}' start '{}'", s(&daemon), s(pidfile)),
        false,
    );
}

#[test]
fn a_start_command_that_never_exits_is_killed_with_its_group_and_the_restore_rolls_back() {
    let sample = Sample::new(1);
    let trial = sample.trial("t");
    let stubborn = trial.dir.join("stubborn.pid");
    let once = trial.dir.join("once");
    let log = s(&trial.hooks_log);
    // The first start never ends: its shell waits for a child that ignores SIGTERM (so the group
    // needs the SIGKILL too). The start after the rollback returns at once.
    let start = format!(
        "if [ -e '{once}' ]; then echo started again >> '{log}'; exit 0; fi; touch '{once}'; \
         sh -c 'trap \"\" TERM; echo $$ > \"{stubborn}\"; while :; do sleep 1; done' & wait",
        once = s(&once),
        stubborn = s(&stubborn),
    );
    let started = Instant::now();
    let o = sample
        .restore(&trial)
        .args(["--start-cmd", &start, "--hook-timeout", "1s"])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(elapsed < PROMPTLY, "took {elapsed:?}: {}", text(&o));
    let err = stderr(&o);
    for said in [
        "did not finish within 1s; its process group was killed",
        "rolled back: the previous database is back in place",
        "application started again",
    ] {
        assert!(err.contains(said), "{said:?} missing: {err}");
    }
    assert_eq!(sample.which(&trial.db), "old");
    assert_eq!(trial.hook_events(), ["started again"]);
    let pid = read_pid(&stubborn);
    assert!(
        wait_until(Duration::from_secs(5), || !is_running(pid)),
        "the hook's child {pid} survived"
    );
    assert_eq!(
        trial.hooks_left_running(Duration::from_secs(2)),
        [] as [String; 0]
    );
    assert_eq!(staging_dirs(&trial.dir), [] as [PathBuf; 0]);
    assert_eq!(previous_copies(&trial.db), [] as [PathBuf; 0]);
}

#[test]
fn a_stop_command_that_never_exits_fails_the_restore_before_the_swap() {
    let sample = Sample::new(1);
    let trial = sample.trial("t");
    let log = s(&trial.hooks_log);
    let o = sample
        .restore(&trial)
        .args([
            "--stop-cmd",
            "exec sleep 600",
            "--start-cmd",
            &format!("echo started >> '{log}'"),
            // A bare number is seconds.
            "--hook-timeout",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    let doc = json(&o);
    assert_eq!(doc["ok"], false);
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("hook `stop` failed: `exec sleep 600` did not finish within 1s")
            && error.contains("nothing was swapped; application started again"),
        "{error}"
    );
    assert_eq!(sample.which(&trial.db), "old");
    assert_eq!(trial.hook_events(), ["started"]);
    assert_eq!(
        trial.hooks_left_running(Duration::from_secs(2)),
        [] as [String; 0]
    );
    assert_eq!(staging_dirs(&trial.dir), [] as [PathBuf; 0]);
}

/// A second process with an SQLite connection open on `db` (Python's sqlite3), until dropped.
struct Holder {
    child: std::process::Child,
}

impl Holder {
    /// `None` when python3 is missing outside CI.
    fn open(db: &Path) -> Option<Holder> {
        if !tool("python3", "python3") {
            return None;
        }
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3,sys;c=sqlite3.connect(sys.argv[1]);\
                 c.execute('SELECT count(*) FROM users').fetchone();\
                 print('ready',flush=True);sys.stdin.read()",
            )
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        Some(Holder { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Asserts a refusal because `holder` has the database open: exit 3, its pid and command line
/// named, what to do said, the live database and its directory as they were.
fn assert_refused(o: &Output, holder: &Holder, sample: &Sample, trial: &Trial) {
    assert_eq!(code(o), 3, "{}", text(o));
    let err = stderr(o);
    assert!(
        err.contains(&format!("pid {} (", holder.pid())) && err.contains("-c import sqlite3"),
        "{err}"
    );
    assert!(
        err.contains("the live database was not changed") && err.contains("--stop-cmd"),
        "{err}"
    );
    assert_eq!(sample.which(&trial.db), "old");
    assert_eq!(staging_dirs(&trial.dir), [] as [PathBuf; 0]);
    assert_eq!(previous_copies(&trial.db), [] as [PathBuf; 0]);
}

#[test]
fn a_database_another_process_has_open_is_refused_naming_it() {
    let sample = Sample::new(1);
    let trial = sample.trial("t");
    let Some(holder) = Holder::open(&trial.db) else {
        return;
    };
    let o = sample.restore(&trial).output().unwrap();
    assert_refused(&o, &holder, &sample, &trial);

    // A stop command that does not stop it: refused after it, and the start command runs again.
    let log = s(&trial.hooks_log);
    let o = sample
        .restore(&trial)
        .args([
            "--stop-cmd",
            &format!("echo stop >> '{log}'"),
            "--start-cmd",
            &format!("echo start >> '{log}'"),
        ])
        .output()
        .unwrap();
    assert_refused(&o, &holder, &sample, &trial);
    assert!(
        stderr(&o).contains("the stop command ran but they still have it open"),
        "{}",
        text(&o)
    );
    assert_eq!(trial.hook_events(), ["stop", "start"]);

    // Once it lets go, the same restore goes through.
    drop(holder);
    ok(sample.restore(&trial).output().unwrap());
    assert_eq!(sample.which(&trial.db), "new");
}

#[test]
fn terminate_connections_is_a_usage_error_for_sqlite() {
    let sample = Sample::new(1);
    let trial = sample.trial("t");
    let o = sample
        .restore(&trial)
        .arg("--terminate-connections")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        stderr(&o).contains("--terminate-connections is for PostgreSQL")
            && stderr(&o).contains("--live"),
        "{}",
        text(&o)
    );
    assert_eq!(sample.which(&trial.db), "old");
    assert_eq!(staging_dirs(&trial.dir), [] as [PathBuf; 0]);
}
