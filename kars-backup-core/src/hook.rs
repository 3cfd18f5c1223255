//! Hook commands (stop and start the application, health checks) that cannot hang a restore.
//!
//! A hook runs as `sh -c COMMAND` in a process group of its own, with its standard input closed
//! and its output written to a private log file that is streamed into this process's log
//! (`tracing`, target `kars_backup_core::hook`) while it runs. The tool waits for the hook's
//! process to **exit**, never for its output to close: a start command that leaves the
//! application running in the background (`nohup node server.js &`) ends the hook, and the
//! application keeps running after the hook and after the tool (its output goes on into the log
//! file, which is then kept and named in the log). A hook that runs longer than its timeout, or
//! that is running when the restore is interrupted, has its whole process group killed (SIGTERM,
//! then SIGKILL after [`KILL_GRACE`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use kars_backup_core::hook::{Hook, run_hook};
//! let hook = Hook::new("start", "echo started", Duration::from_secs(10));
//! let ran = run_hook(&hook, &[], &Default::default()).await.unwrap();
//! assert_eq!(ran.output, ["started"]);
//! let failing = Hook::new("health-check", "exit 3", Duration::from_secs(10));
//! let err = run_hook(&failing, &[], &Default::default()).await.unwrap_err();
//! assert_eq!(err.to_string(), "hook `health-check` failed: `exit 3` exited with status 3 and printed nothing");
//! # }
//! ```

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::holders;

/// How long a killed hook's processes get between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// How many of its last output lines a failed hook's error shows.
const TAIL_LINES: usize = 5;

/// The longest output line passed on to the log.
const MAX_LINE: usize = 4096;

/// One hook command.
#[derive(Debug, Clone)]
pub struct Hook {
    /// Which hook (`stop`, `start`, `health-check`): names it in logs and errors.
    pub name: String,
    /// The command, run with `sh -c`.
    pub command: String,
    /// How long it may run before its process group is killed.
    pub timeout: Duration,
}

impl Hook {
    /// A hook named `name` running `command` for at most `timeout`.
    pub fn new(name: impl Into<String>, command: impl Into<String>, timeout: Duration) -> Self {
        Hook {
            name: name.into(),
            command: command.into(),
            timeout,
        }
    }
}

/// What a hook that exited successfully left behind.
#[derive(Debug, Clone, Default)]
pub struct HookRun {
    /// Its last output lines (stdout and stderr, as written).
    pub output: Vec<String>,
    /// Processes it started that still write to its log (a backgrounded application).
    pub left_running: Vec<holders::Holder>,
    /// The log file, kept while such processes hold it.
    pub log_kept_at: Option<PathBuf>,
}

/// Runs a hook and waits for its process to exit (see the module's documentation).
///
/// `env` is added to the hook's environment. Cancelling `cancel` kills the hook's process group
/// and returns [`Error::Interrupted`].
///
/// # Errors
/// [`Error::HookFailed`] when the command cannot start, exits with a failure, or runs past its
/// timeout; [`Error::Interrupted`] when cancelled.
pub async fn run_hook(
    hook: &Hook,
    env: &[(&str, String)],
    cancel: &CancellationToken,
) -> Result<HookRun> {
    // The command may carry secrets from the environment: named at debug level only.
    tracing::debug!(hook = %hook.name, command = %hook.command, "hook command");
    tracing::info!(hook = %hook.name, timeout_secs = hook.timeout.as_secs(), "running hook");
    let failed = |reason: String| Error::HookFailed {
        hook: hook.name.clone(),
        reason,
    };
    let log = tempfile::Builder::new()
        .prefix(&format!("kars-backup-{}-hook-", hook.name))
        .suffix(".log")
        .tempfile()
        .map_err(|e| failed(format!("could not create its log file: {e}")))?;
    let (log_file, log_path) = log
        .keep()
        .map_err(|e| failed(format!("could not create its log file: {}", e.error)))?;
    let stdout = log_file
        .try_clone()
        .map_err(|e| failed(format!("could not open its log file: {e}")))?;
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&hook.command)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(log_file));
    for (k, v) in env {
        command.env(k, v);
    }
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&log_path);
            return Err(failed(format!(
                "could not run `sh -c {}`: {e}",
                hook.command
            )));
        }
    };
    let stop_tail = CancellationToken::new();
    let tail = tokio::spawn(tail_log(
        log_path.clone(),
        hook.name.clone(),
        stop_tail.clone(),
    ));

    let outcome = tokio::select! {
        status = child.wait() => Outcome::Exited(status),
        () = tokio::time::sleep(hook.timeout) => Outcome::TimedOut,
        () = cancel.cancelled() => Outcome::Cancelled,
    };
    if matches!(outcome, Outcome::TimedOut | Outcome::Cancelled) {
        kill_group(&mut child).await;
    }
    stop_tail.cancel();
    let output = tail.await.unwrap_or_default();
    let left_running = left_running(&log_path);
    let log_kept_at = if left_running.is_empty() {
        let _ = std::fs::remove_file(&log_path);
        None
    } else {
        tracing::info!(
            hook = %hook.name,
            processes = %left_running.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            log = %log_path.display(),
            "the hook left processes running; their output goes to the hook's log file"
        );
        Some(log_path)
    };
    let printed = |output: &[String]| {
        if output.is_empty() {
            "printed nothing".to_string()
        } else {
            format!("printed: {}", output.join(" | "))
        }
    };
    match outcome {
        Outcome::Exited(Ok(status)) if status.success() => Ok(HookRun {
            output,
            left_running,
            log_kept_at,
        }),
        Outcome::Exited(Ok(status)) => Err(failed(format!(
            "`{}` {} and {}",
            hook.command,
            describe_status(status),
            printed(&output)
        ))),
        Outcome::Exited(Err(e)) => Err(failed(format!(
            "waiting for `{}` failed: {e}",
            hook.command
        ))),
        Outcome::TimedOut => Err(failed(format!(
            "`{}` did not finish within {}; its process group was killed (raise the hook timeout if it needs longer); it {}",
            hook.command,
            human(hook.timeout),
            printed(&output)
        ))),
        Outcome::Cancelled => Err(Error::Interrupted {
            during: format!("the {} hook (its process group was killed)", hook.name),
        }),
    }
}

enum Outcome {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Cancelled,
}

/// `exited with status 3`, `was killed by signal 9`.
fn describe_status(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    format!("ended with {status}")
}

/// `5m`, `90s`, `1h 30m`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, 0) => format!("{}ms", d.as_millis()),
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// Kills the hook's process group: SIGTERM, then SIGKILL to whatever of the group is still
/// there after [`KILL_GRACE`].
async fn kill_group(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        use rustix::process::{Signal, kill_process_group, test_kill_process_group};
        let _ = kill_process_group(pid, Signal::TERM);
        let deadline = tokio::time::Instant::now() + KILL_GRACE;
        loop {
            // Reap the hook's shell, so that only live members keep the group alive.
            let _ = child.try_wait();
            if test_kill_process_group(pid).is_err() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = kill_process_group(pid, Signal::KILL);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = child.kill().await;
}

/// Processes still holding the hook's log file open.
fn left_running(log: &Path) -> Vec<holders::Holder> {
    let log = holders::canonical(log);
    holders::scan(&|p| p == log.as_path()).holders
}

/// Streams the hook's log file into `tracing` until `stop`, then once more to the end; returns
/// its last lines.
async fn tail_log(path: PathBuf, hook: String, stop: CancellationToken) -> Vec<String> {
    let mut tail = Tail {
        hook,
        offset: 0,
        pending: Vec::new(),
        last: VecDeque::new(),
    };
    loop {
        let stopping = stop.is_cancelled();
        tail.read_new(&path);
        if stopping {
            break;
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    tail.flush_pending();
    tail.last.into_iter().collect()
}

struct Tail {
    hook: String,
    offset: u64,
    pending: Vec<u8>,
    last: VecDeque<String>,
}

impl Tail {
    fn read_new(&mut self, path: &Path) {
        let Ok(mut file) = std::fs::File::open(path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        // Whatever a runaway hook writes, one read takes at most 1 MiB.
        let Ok(n) = (&mut file).take(1 << 20).read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.pending.extend_from_slice(&buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if self.pending.len() > MAX_LINE {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }

    fn flush_pending(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }

    fn emit(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
        let line = line.trim_end_matches('\r').to_string();
        if line.trim().is_empty() {
            return;
        }
        tracing::info!(hook = %self.hook, "{line}");
        if self.last.len() == TAIL_LINES {
            self.last.pop_front();
        }
        self.last.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn hook(cmd: &str, timeout_ms: u64) -> Hook {
        Hook::new("test", cmd, Duration::from_millis(timeout_ms))
    }

    #[tokio::test]
    async fn output_is_kept_and_failures_name_status_and_output() {
        let ok = run_hook(
            &hook("echo one; echo two >&2", 10_000),
            &[],
            &Default::default(),
        )
        .await
        .unwrap();
        assert_eq!(ok.output, ["one", "two"]);
        assert!(ok.left_running.is_empty());
        assert!(ok.log_kept_at.is_none());
        let err = run_hook(
            &hook("echo why >&2; exit 4", 10_000),
            &[],
            &Default::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "hook `test` failed: `echo why >&2; exit 4` exited with status 4 and printed: why"
        );
    }

    #[tokio::test]
    async fn the_environment_reaches_the_hook() {
        let ok = run_hook(
            &hook("echo \"$KARS_BACKUP_TARGET\"", 10_000),
            &[("KARS_BACKUP_TARGET", "/data/assets.db".into())],
            &Default::default(),
        )
        .await
        .unwrap();
        assert_eq!(ok.output, ["/data/assets.db"]);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_backgrounded_child_does_not_hold_the_hook_and_keeps_running() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let started = Instant::now();
        // Like `nohup node server.js &` without a terminal: the child keeps the hook's output.
        let ran = run_hook(
            &hook(
                &format!(
                    "nohup sh -c 'echo app up; echo $$ > {}; exec sleep 30' &",
                    pidfile.display()
                ),
                20_000,
            ),
            &[],
            &Default::default(),
        )
        .await
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: u32 = wait_for_file(&pidfile).trim().parse().unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(
            ran.left_running.iter().any(|h| h.pid == pid),
            "{:?}",
            ran.left_running
        );
        let log = ran
            .log_kept_at
            .expect("the log is kept while the child writes to it");
        assert!(log.exists());
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        let _ = std::fs::remove_file(log);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_hook_past_its_timeout_has_its_group_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let started = Instant::now();
        let err = run_hook(
            &hook(
                &format!(
                    "sh -c 'echo $$ > {}; exec sleep 60' & wait",
                    pidfile.display()
                ),
                500,
            ),
            &[],
            &Default::default(),
        )
        .await
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(
            err.to_string().contains("did not finish within 500ms"),
            "{err}"
        );
        let pid = wait_for_file(&pidfile).trim().to_string();
        // The background child in the hook's group was killed too.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !is_zombie(&pid)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(&pid),
            "pid {pid} survived"
        );
    }

    #[tokio::test]
    async fn cancelling_kills_the_hook() {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.cancel();
        });
        let started = Instant::now();
        let err = run_hook(&hook("sleep 60", 60_000), &[], &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Interrupted { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    fn is_zombie(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    fn wait_for_file(path: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = std::fs::read_to_string(path) {
                if s.ends_with('\n') {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never written",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
