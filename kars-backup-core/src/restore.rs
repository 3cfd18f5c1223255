//! Restore and verify: staging → checksum → verification → stop hook → in-use check → swap →
//! start hook → health check, rolling back on any failure or interruption.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backup::duration_secs;
use crate::error::{Error, Result};
use crate::hook::{Hook, run_hook};
use crate::pipeline::DownloadCheck;
use crate::progress::DynProgress;
use crate::repository::{BackupEntry, EntryKind, Repository};
use crate::source::{DatabaseSource, InUsePolicy, StageContext, StagedRestore};
use crate::verify::{VerifyPlan, VerifyReport};

/// Shell commands run around the swap, like the runbook's `docker-compose down` / `up -d`.
///
/// Each runs as `sh -c COMMAND` in a process group of its own (see [`crate::hook`]): the restore
/// waits for the command to exit, never for output that background children keep open, and
/// kills the group when the command runs past its timeout.
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
    /// How many failed health checks (after the start period) roll the restore back.
    #[serde(default = "default_attempts")]
    pub health_check_attempts: u32,
    /// Seconds between health-check attempts.
    #[serde(default = "default_interval")]
    pub health_check_interval_secs: u64,
    /// Seconds after the start during which failed health checks do not count (Docker's
    /// `--start-period`): the application is still starting.
    #[serde(default)]
    pub health_check_start_period_secs: u64,
    /// Seconds one health-check attempt may run before it counts as failed.
    #[serde(default = "default_health_timeout")]
    pub health_check_timeout_secs: u64,
    /// Seconds the stop and start commands may run before their process group is killed and
    /// the restore fails (and rolls back).
    #[serde(default = "default_hook_timeout")]
    pub timeout_secs: u64,
}

fn default_attempts() -> u32 {
    5
}

fn default_interval() -> u64 {
    2
}

fn default_health_timeout() -> u64 {
    30
}

fn default_hook_timeout() -> u64 {
    300
}

impl Default for RestoreHooks {
    fn default() -> Self {
        RestoreHooks {
            stop: None,
            start: None,
            health_check: None,
            health_check_attempts: default_attempts(),
            health_check_interval_secs: default_interval(),
            health_check_start_period_secs: 0,
            health_check_timeout_secs: default_health_timeout(),
            timeout_secs: default_hook_timeout(),
        }
    }
}

/// Options of a restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Checks run against the staging copy before it replaces the live database.
    pub plan: VerifyPlan,
    /// Commands around the swap.
    pub hooks: RestoreHooks,
    /// The caller confirmed that the live database may be replaced. Without it, a restore over
    /// an existing database fails with [`Error::NotConfirmed`].
    pub confirmed: bool,
    /// What to do about processes that have the target open (default: refuse).
    pub in_use: InUsePolicy,
    /// How many previous copies of the target (`<db>.pre-restore-<time>` …) to keep after a
    /// successful restore, the one it just made included; older ones are removed. 0 removes
    /// that one too once the health check passed. Default 1.
    pub keep_previous: u32,
    /// Cancelling it interrupts the restore: whatever phase it is in stops, and everything is
    /// rolled back as for a failure ([`Error::Interrupted`]).
    pub cancel: CancellationToken,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            plan: VerifyPlan::default(),
            hooks: RestoreHooks::default(),
            confirmed: false,
            in_use: InUsePolicy::Refuse,
            keep_previous: 1,
            cancel: CancellationToken::new(),
        }
    }
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
    /// Older previous copies removed after the restore (`keep_previous`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_removed: Vec<String>,
    /// What an interrupted earlier restore had left behind and this one cleaned up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers_removed: Vec<String>,
    /// The steps taken, in order.
    pub steps: Vec<String>,
    /// Wall time.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
}

/// Restores a backup into `target`, safely.
///
/// The live database is changed only after the staging copy passed the checksum and the
/// verification plan, and is put back as it was when the swap, the start hook or the health check
/// fails, or when [`RestoreOptions::cancel`] is cancelled before the health check passed. A
/// target that other processes have open is refused ([`Error::InUse`]) unless
/// [`RestoreOptions::in_use`] says otherwise; it is checked before the download (when there is
/// no stop hook) and again right before the swap (after the stop hook, which may not have
/// stopped everything).
///
/// # Errors
/// [`Error::NotConfirmed`], [`Error::InUse`], [`Error::ChecksumMismatch`],
/// [`Error::VerificationFailed`], [`Error::HookFailed`], [`Error::Interrupted`],
/// [`Error::RolledBack`] and the source's and sink's errors.
pub async fn restore(
    repo: &Repository,
    entry: &BackupEntry,
    target: &dyn DatabaseSource,
    options: &RestoreOptions,
    progress: DynProgress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    check_engine(entry, target)?;
    let span = tracing::info_span!("restore", backup = %entry.name, target = %target.describe());
    let _enter = span.enter();
    let mut check = None;
    let done = restore_staged(&entry.name.to_string(), target, options, |cancel| {
        let check = &mut check;
        async move {
            let (staged, context, c) =
                stage(repo, entry, target, options.in_use, &cancel, progress).await?;
            *check = Some(c);
            Ok((staged, context))
        }
    })
    .await?;
    let check = check.ok_or_else(|| Error::generic("restore", "the download was not checked"))?;
    Ok(RestoreReport {
        backup: entry.name.to_string(),
        destination: repo.describe(),
        kind: entry.kind,
        target: target.describe(),
        sha256: check.stored.sha256,
        checksum_verified: entry.manifest.is_some(),
        verification: done.verification,
        previous_kept_at: done.previous_kept_at,
        previous_removed: done.previous_removed,
        leftovers_removed: done.leftovers_removed,
        steps: done.steps,
        duration: started.elapsed(),
    })
}

/// What [`restore_staged`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StagedRestoreOutcome {
    /// The verification of the staging copy.
    pub verification: VerifyReport,
    /// Where the previous database was kept.
    pub previous_kept_at: Option<String>,
    /// Older previous copies removed.
    pub previous_removed: Vec<String>,
    /// What an interrupted earlier restore had left behind and this one cleaned up.
    pub leftovers_removed: Vec<String>,
    /// The steps taken, in order (the staging's first).
    pub steps: Vec<String>,
}

/// The safe restore around a staging copy that `stage` makes (from a backup's archive in
/// [`restore`]; from a replication chain in the SQLite source): confirmation, leftovers of
/// interrupted restores, the in-use check, then verification → stop hook → in-use check → swap
/// → start hook → health check, rolling back on any failure or interruption. `what` names the
/// backup or state restored, for messages; `stage` gets the cancellation token.
///
/// # Errors
/// As [`restore`], and `stage`'s errors.
pub async fn restore_staged<F, Fut>(
    what: &str,
    target: &dyn DatabaseSource,
    options: &RestoreOptions,
    stage: F,
) -> Result<StagedRestoreOutcome>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(Box<dyn StagedRestore>, StageContext)>>,
{
    target.check_in_use_policy(options.in_use)?;
    if target.exists().await? && !options.confirmed {
        return Err(Error::NotConfirmed(format!(
            "restoring {what} replaces the existing database {}; confirm it (CLI: type yes, or pass --yes)",
            target.describe()
        )));
    }
    let cancel = &options.cancel;
    let hooks = Hooks::new(&options.hooks, target);
    let mut steps = Vec::new();
    let leftovers_removed = target.clean_leftovers().await?;
    for l in &leftovers_removed {
        tracing::warn!(leftover = %l, "cleaned up after an interrupted restore");
        steps.push(format!("cleaned up after an interrupted restore: {l}"));
    }
    if options.in_use == InUsePolicy::Refuse && hooks.stop.is_none() {
        // Fail before the download rather than after it.
        refuse_if_in_use(target, false).await?;
    }
    if cancel.is_cancelled() {
        return Err(interrupted("the start of the restore"));
    }

    let (mut staged, context) = stage(cancel.clone()).await?;
    steps.push(staged.staged_step());
    let verified = tokio::select! {
        r = staged.verify(&options.plan, &context) => r,
        () = cancel.cancelled() => Err(interrupted("the verification of the staging copy")),
    };
    let verification = match verified {
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
    steps.push(match verification.checks.len() {
        1 => "verified: 1 check passed".to_string(),
        n => format!("verified: {n} checks passed"),
    });
    tracing::info!(checks = verification.checks.len(), "staging copy verified");

    // Stop the application, and make sure nothing has the target open any more.
    let before_swap = async {
        if let Some(stop) = &hooks.stop {
            run_hook(stop, &hooks.env, cancel).await?;
        }
        if options.in_use == InUsePolicy::Refuse {
            refuse_if_in_use(target, hooks.stop.is_some()).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = before_swap {
        let _ = staged.discard().await;
        if hooks.stop.is_none() {
            return Err(e);
        }
        let restarted = hooks.restart().await;
        return Err(Error::RolledBack {
            cause: Box::new(e),
            rollback: format!("nothing was swapped; {restarted}"),
        });
    }
    if hooks.stop.is_some() {
        steps.push("application stopped".into());
    }
    if let Err(e) = staged.swap_in().await {
        let rollback = staged.roll_back().await;
        let _ = staged.discard().await;
        let restarted = hooks.restart().await;
        return Err(Error::RolledBack {
            cause: Box::new(e),
            rollback: format!("{}; {restarted}", describe_rollback(&rollback)),
        });
    }
    steps.push(staged.swap_step(&target.describe()));
    tracing::info!("staging copy swapped in");

    let after_swap = async {
        if cancel.is_cancelled() {
            return Err(interrupted("the swap"));
        }
        if let Some(start) = &hooks.start {
            run_hook(start, &hooks.env, cancel).await?;
        }
        if let Some(health) = &hooks.health {
            hooks.health_check(health, cancel).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = after_swap {
        tracing::info!("the restore failed after the swap; rolling back");
        if let Some(stop) = &hooks.stop {
            // The rollback runs to its end: a second signal does not cut it short.
            if let Err(e) = run_hook(stop, &hooks.env, &CancellationToken::new()).await {
                tracing::warn!(error = %e, "the stop hook failed during the rollback");
            }
        }
        let rollback = staged.roll_back().await;
        let _ = staged.discard().await;
        let restarted = hooks.restart().await;
        return Err(Error::RolledBack {
            cause: Box::new(e),
            rollback: format!("{}; {restarted}", describe_rollback(&rollback)),
        });
    }
    if hooks.start.is_some() {
        steps.push("application started".into());
    }
    if hooks.health.is_some() {
        steps.push("health check passed".into());
    }
    let mut previous_kept_at = staged.finish().await?;
    if let Some(p) = &previous_kept_at {
        steps.push(format!("previous data kept at {p}"));
    }
    let previous_removed = remove_old_previous_copies(target, options.keep_previous).await;
    for removed in &previous_removed {
        steps.push(format!("removed the previous copy {removed}"));
        if previous_kept_at.as_deref() == Some(removed.as_str()) {
            previous_kept_at = None;
        }
    }
    tracing::info!("restore complete");
    Ok(StagedRestoreOutcome {
        verification,
        previous_kept_at,
        previous_removed,
        leftovers_removed,
        steps,
    })
}

fn interrupted(during: &str) -> Error {
    Error::Interrupted {
        during: during.to_string(),
    }
}

/// How long holders found by the in-use check get to let go (a process or session that is just
/// closing the database) before the restore is refused.
const IN_USE_GRACE: Duration = Duration::from_secs(1);

/// Fails with [`Error::InUse`] when other processes have the target open (and still have after
/// [`IN_USE_GRACE`]).
async fn refuse_if_in_use(target: &dyn DatabaseSource, after_stop_hook: bool) -> Result<()> {
    let deadline = Instant::now() + IN_USE_GRACE;
    let mut scan = target.in_use().await?;
    while !scan.holders.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        scan = target.in_use().await?;
    }
    if !scan.supported {
        tracing::warn!(target = %target.describe(), "cannot tell whether other processes have the target open on this platform; make sure the application is stopped");
        return Ok(());
    }
    if scan.holders.is_empty() {
        if scan.unreadable > 0 {
            tracing::warn!(
                unreadable = scan.unreadable,
                "the open files of some processes could not be read (run as root or as the application's user to check them)"
            );
        }
        return Ok(());
    }
    let hint = if after_stop_hook {
        format!(
            "the stop command ran but they still have it open: make the stop command stop them; or {}",
            target.in_use_remedies()
        )
    } else {
        target.in_use_remedies()
    };
    Err(Error::InUse {
        target: target.describe(),
        holders: scan.describe(),
        hint: format!("{hint}; the live database was not changed"),
    })
}

/// Removes the previous copies beyond the newest `keep`; returns their names.
async fn remove_old_previous_copies(target: &dyn DatabaseSource, keep: u32) -> Vec<String> {
    let copies = match target.previous_copies().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the previous copies of the target");
            return Vec::new();
        }
    };
    let mut removed = Vec::new();
    for copy in copies.iter().skip(keep as usize) {
        match target.remove_previous(copy).await {
            Ok(()) => {
                tracing::info!(copy = %copy.name, bytes = copy.size_bytes, "removed a previous copy");
                removed.push(copy.name.clone());
            }
            Err(e) => {
                tracing::warn!(copy = %copy.name, error = %e, "cannot remove a previous copy")
            }
        }
    }
    removed
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
    let never = CancellationToken::new();
    let (staged, context, check) =
        stage(repo, entry, scratch, InUsePolicy::Refuse, &never, progress).await?;
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
        previous_removed: Vec::new(),
        leftovers_removed: Vec::new(),
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
    in_use: InUsePolicy,
    cancel: &CancellationToken,
    progress: DynProgress,
) -> Result<(Box<dyn StagedRestore>, StageContext, DownloadCheck)> {
    let context = StageContext {
        archive_name: entry.name.to_string(),
        manifest: entry.manifest.clone(),
        in_use,
    };
    let (reader, check) = repo.open_payload(entry, progress.clone()).await?;
    let staged = target
        .stage_restore(reader.with_cancel(cancel.clone()), &context)
        .await;
    progress.finish();
    let check = check.await.map_err(|e| Error::generic("download", e));
    if cancel.is_cancelled() {
        // Whatever the source made of the failed read, the cause is the interruption.
        if let Ok(s) = staged {
            let _ = s.discard().await;
        }
        return Err(interrupted("the download and staging"));
    }
    let check = check?;
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

fn describe_rollback(r: &Result<()>) -> String {
    match r {
        Ok(()) => "the previous database is back in place".into(),
        Err(e) => format!("ROLLBACK FAILED, check the target by hand: {e}"),
    }
}

/// The hooks of one restore, with the environment they run in.
struct Hooks<'a> {
    options: &'a RestoreHooks,
    stop: Option<Hook>,
    start: Option<Hook>,
    health: Option<Hook>,
    env: Vec<(&'static str, String)>,
}

impl<'a> Hooks<'a> {
    fn new(options: &'a RestoreHooks, target: &dyn DatabaseSource) -> Self {
        let timeout = Duration::from_secs(options.timeout_secs.max(1));
        let hook = |name: &str, cmd: &Option<String>, timeout| {
            cmd.as_ref().map(|c| Hook::new(name, c.clone(), timeout))
        };
        Hooks {
            options,
            stop: hook("stop", &options.stop, timeout),
            start: hook("start", &options.start, timeout),
            health: hook(
                "health-check",
                &options.health_check,
                Duration::from_secs(options.health_check_timeout_secs.max(1)),
            ),
            env: vec![("KARS_BACKUP_TARGET", target.describe())],
        }
    }

    /// Starts the application again after a failure (never cut short by a cancellation).
    async fn restart(&self) -> String {
        match &self.start {
            None => "no start hook".into(),
            Some(start) => match run_hook(start, &self.env, &CancellationToken::new()).await {
                Ok(_) => "application started again".into(),
                Err(e) => format!("restarting the application failed too: {e}"),
            },
        }
    }

    /// Runs the health check until it passes, or until it failed `attempts` times after the
    /// start period. Failures before the verdict are progress, not warnings.
    async fn health_check(&self, health: &Hook, cancel: &CancellationToken) -> Result<()> {
        let o = self.options;
        let attempts = o.health_check_attempts.max(1);
        let start_period = Duration::from_secs(o.health_check_start_period_secs);
        let started = Instant::now();
        let mut failures = 0;
        loop {
            match run_hook(health, &self.env, cancel).await {
                Ok(_) => {
                    tracing::info!(failed_before = failures, "the application is healthy");
                    return Ok(());
                }
                Err(e @ Error::Interrupted { .. }) => return Err(e),
                Err(e) => {
                    if started.elapsed() < start_period {
                        tracing::info!(
                            reason = %e,
                            "waiting for the application (start period, {}s left)",
                            (start_period - started.elapsed()).as_secs()
                        );
                    } else {
                        failures += 1;
                        if failures >= attempts {
                            return Err(Error::HookFailed {
                                hook: "health-check".into(),
                                reason: format!(
                                    "the application was not healthy after {attempts} attempts; the last one: {}",
                                    hook_reason(&e)
                                ),
                            });
                        }
                        tracing::info!(
                            reason = %e,
                            "waiting for the application, attempt {failures}/{attempts}"
                        );
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(o.health_check_interval_secs)) => {}
                () = cancel.cancelled() => return Err(interrupted("the health check")),
            }
        }
    }
}

/// A hook error's reason without the `hook … failed:` prefix.
fn hook_reason(e: &Error) -> String {
    match e {
        Error::HookFailed { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}
