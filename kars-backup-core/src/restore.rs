//! Restore and verify: staging → checksum → verification → stop hook → swap → start hook →
//! health check, rolling back on any failure.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::DownloadCheck;
use crate::progress::DynProgress;
use crate::repository::{BackupEntry, EntryKind, Repository};
use crate::source::{DatabaseSource, StageContext, StagedRestore};
use crate::verify::{VerifyPlan, VerifyReport};

/// Shell commands run around the swap, like the runbook's `docker-compose down` / `up -d`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RestoreHooks {
    /// Stops the application before the swap.
    #[serde(default)]
    pub stop: Option<String>,
    /// Starts the application after the swap (and after a rollback).
    #[serde(default)]
    pub start: Option<String>,
    /// Checks the application after the start; exit 0 means healthy.
    #[serde(default)]
    pub health_check: Option<String>,
    /// How many times the health check is tried before the restore is rolled back.
    #[serde(default = "default_attempts")]
    pub health_check_attempts: u32,
    /// Seconds between health-check attempts.
    #[serde(default = "default_interval")]
    pub health_check_interval_secs: u64,
}

fn default_attempts() -> u32 {
    5
}

fn default_interval() -> u64 {
    2
}

impl Default for RestoreHooks {
    fn default() -> Self {
        RestoreHooks {
            stop: None,
            start: None,
            health_check: None,
            health_check_attempts: default_attempts(),
            health_check_interval_secs: default_interval(),
        }
    }
}

/// Options of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Checks run against the staging copy before it replaces the live database.
    pub plan: VerifyPlan,
    /// Commands around the swap.
    pub hooks: RestoreHooks,
    /// The caller confirmed that the live database may be replaced. Without it, a restore over
    /// an existing database fails with [`Error::NotConfirmed`].
    pub confirmed: bool,
}

/// What a restore or a verification did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup used.
    pub backup: String,
    /// Where it came from.
    pub destination: String,
    /// Committed or runbook archive.
    pub kind: EntryKind,
    /// Where it went (the live database, or a scratch target for `verify`).
    pub target: String,
    /// SHA-256 of the stored bytes read, and whether a manifest vouched for it.
    pub sha256: String,
    /// True when the checksum was compared with a manifest.
    pub checksum_verified: bool,
    /// The verification's checks.
    pub verification: VerifyReport,
    /// Where the previous database was kept, after a restore over one.
    pub previous_kept_at: Option<String>,
    /// The steps taken, in order.
    pub steps: Vec<String>,
    /// Wall time.
    #[serde(with = "crate::backup::duration_secs")]
    pub duration: Duration,
}

/// Restores a backup into `target`, safely.
///
/// The live database is changed only after the staging copy passed the checksum and the
/// verification plan, and is put back as it was when the swap, the start hook or the health check
/// fails.
///
/// # Errors
/// [`Error::NotConfirmed`], [`Error::ChecksumMismatch`], [`Error::VerificationFailed`],
/// [`Error::HookFailed`], [`Error::RolledBack`] and the source's and sink's errors.
pub async fn restore(
    repo: &Repository,
    entry: &BackupEntry,
    target: &dyn DatabaseSource,
    options: &RestoreOptions,
    progress: DynProgress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    check_engine(entry, target)?;
    if target.exists().await? && !options.confirmed {
        return Err(Error::NotConfirmed(format!(
            "restoring {} replaces the existing database {}; confirm it (CLI: type yes, or pass --yes)",
            entry.name,
            target.describe()
        )));
    }
    let span = tracing::info_span!("restore", backup = %entry.name, target = %target.describe());
    let _enter = span.enter();
    let mut steps = Vec::new();
    let (mut staged, context, check) = stage(repo, entry, target, progress).await?;
    steps.push(format!("staged at {}", staged.describe()));
    let verification = match staged.verify(&options.plan, &context).await {
        Ok(r) if r.passed() => r,
        Ok(r) => {
            let _ = staged.discard().await;
            return Err(Error::VerificationFailed(format!(
                "{} (staging copy discarded; {} untouched)",
                r.failures(),
                target.describe()
            )));
        }
        Err(e) => {
            let _ = staged.discard().await;
            return Err(e);
        }
    };
    steps.push(format!(
        "verified: {} checks passed",
        verification.checks.len()
    ));
    tracing::info!(checks = verification.checks.len(), "staging copy verified");

    let hooks = &options.hooks;
    if let Some(cmd) = &hooks.stop {
        if let Err(e) = run_hook("stop", cmd, target).await {
            let _ = staged.discard().await;
            let restarted = restart(hooks, target).await;
            return Err(Error::RolledBack {
                cause: Box::new(e),
                rollback: format!("nothing was swapped; {restarted}"),
            });
        }
        steps.push("application stopped".into());
    }
    if let Err(e) = staged.swap_in().await {
        let rollback = staged.roll_back().await;
        let _ = staged.discard().await;
        let restarted = restart(hooks, target).await;
        return Err(Error::RolledBack {
            cause: Box::new(e),
            rollback: format!("{}; {restarted}", describe_rollback(&rollback)),
        });
    }
    steps.push(format!("swapped into {}", target.describe()));
    tracing::info!("staging copy swapped in");

    let after_swap = async {
        if let Some(cmd) = &hooks.start {
            run_hook("start", cmd, target).await?;
        }
        if let Some(cmd) = &hooks.health_check {
            health_check(cmd, hooks, target).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = after_swap {
        tracing::error!(error = %e, "restore failed after the swap; rolling back");
        if let Some(cmd) = &hooks.stop {
            let _ = run_hook("stop", cmd, target).await;
        }
        let rollback = staged.roll_back().await;
        let _ = staged.discard().await;
        let restarted = restart(hooks, target).await;
        return Err(Error::RolledBack {
            cause: Box::new(e),
            rollback: format!("{}; {restarted}", describe_rollback(&rollback)),
        });
    }
    if hooks.start.is_some() {
        steps.push("application started".into());
    }
    if hooks.health_check.is_some() {
        steps.push("health check passed".into());
    }
    let previous_kept_at = staged.finish().await?;
    if let Some(p) = &previous_kept_at {
        steps.push(format!("previous database kept at {p}"));
    }
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "restore complete"
    );
    Ok(RestoreReport {
        backup: entry.name.to_string(),
        destination: repo.describe(),
        kind: entry.kind,
        target: target.describe(),
        sha256: check.stored.sha256,
        checksum_verified: entry.manifest.is_some(),
        verification,
        previous_kept_at,
        steps,
        duration: started.elapsed(),
    })
}

/// Verifies a backup without touching any live database: checksum, then a restore into
/// `scratch` (a target that does not exist yet), the verification plan, and removal of the copy.
///
/// # Errors
/// [`Error::ChecksumMismatch`], [`Error::VerificationFailed`] and the source's and sink's errors.
pub async fn verify_backup(
    repo: &Repository,
    entry: &BackupEntry,
    scratch: &dyn DatabaseSource,
    plan: &VerifyPlan,
    progress: DynProgress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    check_engine(entry, scratch)?;
    if scratch.exists().await? {
        return Err(Error::InvalidInput(format!(
            "the scratch target {} exists already; verification restores only into a new target",
            scratch.describe()
        )));
    }
    let (staged, context, check) = stage(repo, entry, scratch, progress).await?;
    let mut staged = staged;
    let target = staged.describe();
    let result = staged.verify(plan, &context).await;
    let _ = staged.discard().await;
    let verification = result?;
    if !verification.passed() {
        return Err(Error::VerificationFailed(verification.failures()));
    }
    Ok(RestoreReport {
        backup: entry.name.to_string(),
        destination: repo.describe(),
        kind: entry.kind,
        target,
        sha256: check.stored.sha256,
        checksum_verified: entry.manifest.is_some(),
        verification,
        previous_kept_at: None,
        steps: vec![
            "checksum".into(),
            "scratch restore".into(),
            "verification".into(),
        ],
        duration: started.elapsed(),
    })
}

fn check_engine(entry: &BackupEntry, target: &dyn DatabaseSource) -> Result<()> {
    if let Some(m) = &entry.manifest {
        if m.engine != target.engine() {
            return Err(Error::InvalidInput(format!(
                "backup {} is a {} backup and cannot be restored into the {} database {}",
                entry.name,
                m.engine,
                target.engine(),
                target.describe()
            )));
        }
    }
    Ok(())
}

async fn stage(
    repo: &Repository,
    entry: &BackupEntry,
    target: &dyn DatabaseSource,
    progress: DynProgress,
) -> Result<(Box<dyn StagedRestore>, StageContext, DownloadCheck)> {
    let context = StageContext {
        archive_name: entry.name.to_string(),
        manifest: entry.manifest.clone(),
    };
    let (reader, check) = repo.open_payload(entry, progress.clone()).await?;
    let staged = target.stage_restore(reader, &context).await;
    progress.finish();
    let check = check.await.map_err(|e| Error::generic("download", e))?;
    match (staged, check) {
        (Ok(s), Ok(c)) => Ok((s, context, c)),
        (Ok(s), Err(e)) => {
            let _ = s.discard().await;
            Err(e)
        }
        (Err(_), Err(e @ (Error::ChecksumMismatch { .. } | Error::DecryptionFailed { .. }))) => {
            Err(e)
        }
        (Err(e), _) => Err(e),
    }
}

async fn restart(hooks: &RestoreHooks, target: &dyn DatabaseSource) -> String {
    match &hooks.start {
        None => "no start hook".into(),
        Some(cmd) => match run_hook("start", cmd, target).await {
            Ok(()) => "application started again".into(),
            Err(e) => format!("restarting the application failed too: {e}"),
        },
    }
}

fn describe_rollback(r: &Result<()>) -> String {
    match r {
        Ok(()) => "the previous database is back in place".into(),
        Err(e) => format!("ROLLBACK FAILED, check the target by hand: {e}"),
    }
}

async fn health_check(cmd: &str, hooks: &RestoreHooks, target: &dyn DatabaseSource) -> Result<()> {
    let attempts = hooks.health_check_attempts.max(1);
    let mut last = None;
    for attempt in 1..=attempts {
        match run_hook("health-check", cmd, target).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(attempt, attempts, error = %e, "health check failed");
                last = Some(e);
                if attempt < attempts {
                    tokio::time::sleep(Duration::from_secs(hooks.health_check_interval_secs)).await;
                }
            }
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Runs a hook command with `sh -c`; `KARS_BACKUP_TARGET` holds the target's description.
async fn run_hook(hook: &str, cmd: &str, target: &dyn DatabaseSource) -> Result<()> {
    tracing::info!(hook, command = cmd, "running hook");
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("KARS_BACKUP_TARGET", target.describe())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::HookFailed {
            hook: hook.to_string(),
            reason: format!("could not run `sh -c {cmd}`: {e}"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: String = stderr
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" | ");
    Err(Error::HookFailed {
        hook: hook.to_string(),
        reason: format!("`{cmd}` exited with {}: {tail}", output.status),
    })
}
