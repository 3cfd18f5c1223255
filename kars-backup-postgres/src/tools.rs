//! The PostgreSQL client programs: finding them, checking their version, running them with the
//! connection in their environment and the end of their standard error in errors.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use crate::conn::ConnInfo;
use crate::error::{Error, Result};

/// How much of a program's standard error is kept for messages.
const STDERR_TAIL: usize = 4000;

/// Where the client programs are: an explicit directory, else the Debian directory of the
/// server's major version, else `PATH`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tools {
    pub(crate) bin_dir: Option<PathBuf>,
}

impl Tools {
    /// The path of a program (`pg_dump`) for a server of major version `server_major`.
    pub(crate) fn find(&self, tool: &str, server_major: Option<u32>) -> Result<PathBuf> {
        let mut looked = Vec::new();
        if let Some(dir) = &self.bin_dir {
            let p = dir.join(tool);
            if is_executable(&p) {
                return Ok(p);
            }
            looked.push(p.display().to_string());
        } else {
            if let Some(major) = server_major {
                let p = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{tool}"));
                if is_executable(&p) {
                    return Ok(p);
                }
            }
            if let Some(path) = std::env::var_os("PATH") {
                for dir in std::env::split_paths(&path) {
                    let p = dir.join(tool);
                    if is_executable(&p) {
                        return Ok(p);
                    }
                }
            }
            looked.push("PATH".into());
        }
        Err(Error::ToolMissing {
            tool: tool.to_string(),
            looked: format!("looked in {}", looked.join(", ")),
            major: server_major
                .map(|m| m.to_string())
                .unwrap_or_else(|| "<version>".into()),
        })
    }

    /// `pg_dump` for this server, checked to be at least the server's major version.
    pub(crate) async fn pg_dump_for(
        &self,
        server_version: &str,
        server_version_num: u32,
    ) -> Result<(PathBuf, String)> {
        let server_major = major_of_num(server_version_num);
        let path = self.find("pg_dump", Some(server_major))?;
        let version = tool_version(&path).await?;
        let tool_major = parse_major(&version).ok_or_else(|| Error::ToolFailed {
            tool: "pg_dump --version".into(),
            status: "unexpected output".into(),
            stderr: version.clone(),
        })?;
        if tool_major < server_major {
            return Err(Error::VersionMismatch {
                tool: "pg_dump".into(),
                tool_version: version,
                path: path.display().to_string(),
                server_version: server_version.to_string(),
                server_major,
            });
        }
        Ok((path, version))
    }
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    p.is_file()
}

/// The major version of `server_version_num` (150004 → 15; 90624 → 9).
pub(crate) fn major_of_num(num: u32) -> u32 {
    num / 10_000
}

/// `pg_dump (PostgreSQL) 15.4 (Debian 15.4-1)` → `15.4`.
pub(crate) async fn tool_version(path: &Path) -> Result<String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io("run", path, e))?;
    if !out.status.success() {
        return Err(Error::ToolFailed {
            tool: format!("{} --version", path.display()),
            status: describe_status(out.status),
            stderr: tail(&out.stderr),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or(text.trim())
        .to_string();
    Ok(version)
}

/// The major version of a version string (`15.4` → 15, `9.6.24` → 9, `16beta1` → 16).
pub(crate) fn parse_major(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// A command for a client program, connected through the environment like `conn`.
pub(crate) fn command(path: &Path, conn: &ConnInfo) -> Command {
    let mut cmd = Command::new(path);
    for (k, v) in conn.child_env() {
        cmd.env(k, v);
    }
    // Settings that would redirect the programs elsewhere than `conn` says.
    for k in ["PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGHOSTADDR"] {
        cmd.env_remove(k);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Collects the end of a child's standard error in the background.
pub(crate) fn collect_stderr(stderr: Option<ChildStderr>) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut kept: Vec<u8> = Vec::new();
        let Some(mut stderr) = stderr else {
            return kept;
        };
        let mut buf = vec![0u8; 8192];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 4 * STDERR_TAIL {
                        let cut = kept.len() - STDERR_TAIL;
                        kept.drain(..cut);
                    }
                }
            }
        }
        kept
    })
}

/// The last lines of a program's output, on one line.
pub(crate) fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(8);
    let mut s = lines[start..].join(" | ");
    if s.len() > STDERR_TAIL {
        let mut cut = s.len() - STDERR_TAIL;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s = format!("…{}", &s[cut..]);
    }
    if s.is_empty() {
        "no error output".into()
    } else {
        s
    }
}

/// `exit status 1`, `killed by signal 9 (SIGKILL)`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                9 => " (SIGKILL)",
                15 => " (SIGTERM)",
                6 => " (SIGABRT)",
                11 => " (SIGSEGV)",
                2 => " (SIGINT)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(c) => format!("exit status {c}"),
        None => status.to_string(),
    }
}

/// Waits for a child and its collected standard error; a failure becomes [`Error::ToolFailed`].
pub(crate) async fn wait_checked(
    tool: &str,
    mut child: Child,
    stderr: JoinHandle<Vec<u8>>,
) -> Result<Vec<u8>> {
    let status = child.wait().await.map_err(|e| Error::ToolFailed {
        tool: tool.to_string(),
        status: "could not wait for it".into(),
        stderr: e.to_string(),
    })?;
    let err = stderr.await.unwrap_or_default();
    if status.success() {
        Ok(err)
    } else {
        Err(Error::ToolFailed {
            tool: tool.to_string(),
            status: describe_status(status),
            stderr: tail(&err),
        })
    }
}

/// Streams a started program's standard output into the payload, showing each piece to
/// `inspect` first; kills the program when reading or writing fails. The caller waits for the
/// program and ends the payload.
pub(crate) async fn pipe_stdout(
    tool: &str,
    child: &mut Child,
    out: &mut kars_backup_core::PayloadWriter,
    mut inspect: impl FnMut(&[u8]),
) -> Result<()> {
    let mut stdout = child.stdout.take().ok_or_else(|| Error::ToolFailed {
        tool: tool.to_string(),
        status: "no standard output".into(),
        stderr: String::new(),
    })?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => {
                let _ = child.kill().await;
                return Err(Error::ToolFailed {
                    tool: tool.to_string(),
                    status: "reading its output failed".into(),
                    stderr: e.to_string(),
                });
            }
        };
        inspect(&buf[..n]);
        if let Err(e) = out.write_all(&buf[..n]).await {
            let _ = child.kill().await;
            return Err(Error::Pipeline(e));
        }
    }
}

/// Spawns a command, naming the program when it cannot start.
pub(crate) fn spawn(tool: &str, cmd: &mut Command) -> Result<Child> {
    cmd.spawn().map_err(|e| Error::ToolFailed {
        tool: tool.to_string(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_major("15.4"), Some(15));
        assert_eq!(parse_major("9.6.24"), Some(9));
        assert_eq!(parse_major("16beta1"), Some(16));
        assert_eq!(major_of_num(150004), 15);
        assert_eq!(major_of_num(90624), 9);
    }

    #[test]
    fn tails_keep_the_last_lines() {
        let t = tail(b"a\nb\n\nc\n");
        assert_eq!(t, "a | b | c");
        assert_eq!(tail(b""), "no error output");
    }
}
