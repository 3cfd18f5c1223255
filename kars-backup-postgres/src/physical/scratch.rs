//! The scratch postmaster of a physical restore: the restored data directory started on a free
//! port, reachable only through a unix socket in a private directory (trust authentication
//! there, nothing on TCP), as the data directory's OS user, with its log kept for messages.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::conn::ConnInfo;
use crate::error::{Error, Result};
use crate::physical::wal::is_segment_name;
use crate::tools;

/// The file the wrapped `restore_command` appends the names it could not fetch to.
const MISSING: &str = "wal-missing";

/// A restored cluster's private run directory and, once started, its postmaster.
#[derive(Debug)]
pub(crate) struct Scratch {
    pgdata: PathBuf,
    dir: TempDir,
    port: u16,
    run_as: Option<String>,
    child: Option<Child>,
}

/// Whether this process runs as root (PostgreSQL refuses to).
pub(crate) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Gives `path` (recursively) to `user`.
pub(crate) async fn chown(path: &Path, user: &str) -> Result<()> {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io("run chown on", path, e))?;
    if !out.status.success() {
        return Err(Error::ToolFailed {
            tool: format!("chown -R {user}: {}", path.display()),
            status: tools::describe_status(out.status),
            stderr: tools::tail(&out.stderr),
        });
    }
    Ok(())
}

impl Scratch {
    /// A private run directory for `pgdata` (socket, authentication files, log), owned by
    /// `run_as` when given.
    pub(crate) async fn prepare(pgdata: &Path, run_as: Option<&str>) -> Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix("kars-pitr-")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))?;
        let p = dir.path();
        let write = |name: &str, text: &str| {
            std::fs::write(p.join(name), text).map_err(|e| Error::io("write", p.join(name), e))
        };
        std::fs::create_dir(p.join("sock")).map_err(|e| Error::io("create", p.join("sock"), e))?;
        // Only the socket in this private directory is listened on; whoever can reach it is
        // this process or the cluster's own user.
        write("pg_hba.conf", "local all all trust\n")?;
        write("pg_ident.conf", "")?;
        write(MISSING, "")?;
        if let Some(user) = run_as {
            chown(p, user).await?;
        }
        let port = free_port()?;
        Ok(Scratch {
            pgdata: pgdata.to_path_buf(),
            dir,
            port,
            run_as: run_as.map(str::to_string),
            child: None,
        })
    }

    /// Where the wrapped `restore_command` lists what it could not fetch.
    pub(crate) fn missing_file(&self) -> PathBuf {
        self.dir.path().join(MISSING)
    }

    /// Starts `postgres` on the data directory with `settings` (`-c name=value`) on top of the
    /// private socket, port and authentication.
    pub(crate) fn start(&mut self, postgres: &Path, settings: &[(String, String)]) -> Result<()> {
        let p = self.dir.path();
        let log = std::fs::File::create(p.join("postmaster.log"))
            .map_err(|e| Error::io("create", p.join("postmaster.log"), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("open", p.join("postmaster.log"), e))?;
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(postgres);
                c
            }
            None => Command::new(postgres),
        };
        cmd.arg("-D").arg(&self.pgdata);
        let mut all: Vec<(String, String)> = vec![
            ("port".into(), self.port.to_string()),
            ("listen_addresses".into(), String::new()),
            (
                "unix_socket_directories".into(),
                p.join("sock").display().to_string(),
            ),
            (
                "hba_file".into(),
                p.join("pg_hba.conf").display().to_string(),
            ),
            (
                "ident_file".into(),
                p.join("pg_ident.conf").display().to_string(),
            ),
            ("ssl".into(), "off".into()),
            ("hot_standby".into(), "on".into()),
            ("logging_collector".into(), "off".into()),
            ("log_destination".into(), "stderr".into()),
            ("log_min_messages".into(), "warning".into()),
            ("log_line_prefix".into(), "%m [%p] ".into()),
            // The files were just extracted: one syncfs of their file system makes them durable
            // before replay, instead of an fsync per file (seconds for a small cluster).
            ("recovery_init_sync_method".into(), "syncfs".into()),
            // A segment the archive lacks is reported without the default 5 s retry wait.
            ("wal_retrieve_retry_interval".into(), "100ms".into()),
        ];
        all.extend(settings.iter().cloned());
        for (k, v) in &all {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        self.child = Some(tools::spawn("postgres", &mut cmd)?);
        Ok(())
    }

    /// A connection to database `db` as `user` through the private socket.
    pub(crate) fn conn(&self, user: &str, db: &str) -> Result<ConnInfo> {
        ConnInfo::parse(&format!(
            "host={} port={} user={} dbname={} connect_timeout=5",
            self.dir.path().join("sock").display(),
            self.port,
            quote(user),
            quote(db)
        ))
    }

    /// Runs PostgreSQL's `restore_command` for the file `name` as the server would (as its OS
    /// user, through `sh`), into a scratch file that is removed again; whether it fetched it.
    pub(crate) async fn fetches(&self, restore_command: &str, name: &str) -> bool {
        let probe = self.dir.path().join("probe");
        let command = restore_command
            .replace("%%", "\u{0}")
            .replace("%f", name)
            .replace("%p", &probe.display().to_string())
            .replace("%r", name)
            .replace('\u{0}', "%");
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .args(["--clear-groups", "--", "sh", "-c"]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.arg("-c");
                c
            }
        };
        cmd.arg(&command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let fetched = cmd.status().await.is_ok_and(|s| s.success()) && probe.exists();
        let _ = std::fs::remove_file(&probe);
        fetched
    }

    /// How the postmaster ended, if it has.
    pub(crate) fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(tools::describe_status(status))
            }
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// The whole log (it is small: the restore's own messages).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postmaster.log")).unwrap_or_default()
    }

    /// The last lines of the log, on one line.
    pub(crate) fn log_tail(&self) -> String {
        tools::tail(self.log().as_bytes())
    }

    /// The WAL segments the restore command could not fetch, in the order asked.
    pub(crate) fn missing_segments(&self) -> Vec<String> {
        std::fs::read_to_string(self.missing_file())
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| is_segment_name(l))
            .map(str::to_string)
            .collect()
    }

    /// Stops the postmaster: `fast` (clean: a shutdown checkpoint) or `immediate`; waits for it.
    pub(crate) async fn stop(&mut self, fast: bool) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let signal = if fast { "-INT" } else { "-QUIT" };
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status()
                .await;
        }
        let waited = tokio::time::timeout(Duration::from_secs(120), child.wait()).await;
        match waited {
            Ok(Ok(status)) if status.success() || !fast => Ok(()),
            Ok(Ok(status)) => Err(Error::Recovery {
                pgdata: self.pgdata.display().to_string(),
                reason: format!(
                    "the server did not stop cleanly ({}): {}",
                    tools::describe_status(status),
                    self.log_tail()
                ),
            }),
            Ok(Err(e)) => Err(Error::io("wait for", &self.pgdata, e)),
            Err(_) => {
                let _ = child.kill().await;
                Err(Error::Recovery {
                    pgdata: self.pgdata.display().to_string(),
                    reason: "the server did not stop within 120 s and was killed".into(),
                })
            }
        }
    }
}

/// A value for a `key=value` connection string.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("find a free port on", "127.0.0.1", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("find a free port on", "127.0.0.1", e))
}
