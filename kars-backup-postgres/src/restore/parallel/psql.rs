//! The sequential parts of the load: the pre-data `psql` fed as the dump is read, and the
//! deferred post-data run in the dump's order at the end.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::setup::ParallelLoad;
use crate::error::{Error, Result};
use crate::tools;
use kars_backup_core::TaskError;

/// Runs `psql` on `input` (header first, then the file's contents when given).
pub(crate) async fn run_psql(
    load: &ParallelLoad<'_>,
    header: &[u8],
    file: Option<&Path>,
    what: &'static str,
) -> Result<()> {
    let mut cmd = (load.psql)()?;
    let mut child = tools::spawn("psql", &mut cmd)?;
    let stderr = tools::collect_stderr(child.stderr.take());
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::Task(TaskError::new(what, "no standard input")))?;
    let fed = async {
        stdin.write_all(header).await?;
        if let Some(f) = file {
            let mut f = tokio::fs::File::open(f).await?;
            tokio::io::copy(&mut f, &mut stdin).await?;
        }
        stdin.shutdown().await
    }
    .await;
    drop(stdin);
    let waited = tools::wait_checked("psql", child, stderr).await;
    waited?;
    fed.map_err(|e| Error::io("write to psql", what, e))?;
    Ok(())
}

/// A `psql` that receives the pre-data as it is read.
pub(crate) struct PrePsql {
    pub(crate) child: tokio::process::Child,
    pub(crate) stdin: Option<tokio::process::ChildStdin>,
    pub(crate) stderr: tokio::task::JoinHandle<Vec<u8>>,
    pub(crate) broken: bool,
}

impl PrePsql {
    pub(crate) fn start(load: &ParallelLoad<'_>) -> Result<Self> {
        let mut cmd = (load.psql)()?;
        let mut child = tools::spawn("psql", &mut cmd)?;
        let stderr = tools::collect_stderr(child.stderr.take());
        let stdin = child.stdin.take();
        Ok(PrePsql {
            child,
            stdin,
            stderr,
            broken: false,
        })
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        if let Some(s) = &mut self.stdin
            && s.write_all(bytes).await.is_err()
        {
            // psql stopped: its exit status tells why.
            self.broken = true;
        }
    }

    pub(crate) async fn finish(mut self) -> Result<()> {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.shutdown().await;
        }
        tools::wait_checked("psql", self.child, self.stderr).await?;
        Ok(())
    }
}
