//! Restores and verifications that survive bad copies and bad backups.
//!
//! - [`Candidates::find`] looks at several destinations ([`Origin`]s) at once: the newest committed
//!   backup across all of them (or a named one) comes first, then the older ones; identical copies
//!   (same name and SHA-256) are one candidate whose local copies are read first.
//! - [`recover`] restores (or verifies, see [`Recovery`]) the candidates in order and reports
//!   every [`Attempt`]:
//!   - a **transient** failure (storage or network error, a database connection refused or reset:
//!     [`Error::is_transient`]) retries the same copy, with exponential backoff, up to
//!     [`AttemptOptions::retries`] times;
//!   - a copy that fails its **checksum** (or cannot be read) makes the next copy of the same
//!     backup be tried;
//!   - a backup that fails **verification** (integrity, row counts, test queries, a corrupt
//!     archive, or every copy failing its checksum) makes the next older backup be tried, only
//!     with [`AttemptOptions::fallback`] and at most [`AttemptOptions::max_backups`] backups;
//!   - anything else (usage errors, a failure after the swap that was rolled back, a failing hook,
//!     a database error) stops at once.
//!
//! A failed restore attempt never changes the live database: [`crate::restore()`] discards its
//! staging copy before the swap, so after every failed attempt the target is as it was.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use std::sync::Arc;
//! use kars_backup_core::recovery::{Candidates, Origin, Pick};
//! use kars_backup_core::testing::InMemorySink;
//! let origins = vec![
//!     Origin::new("/var/backups/kars", Arc::new(InMemorySink::new())),
//!     Origin::new("s3://kars/prod", Arc::new(InMemorySink::new())),
//! ];
//! assert!(origins[0].local && !origins[1].local);
//! let err = Candidates::find(&origins, &Pick::Latest).await.unwrap_err();
//! assert!(err.to_string().contains("no committed backup"), "{err}");
//! # }
//! ```

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::checks::{PlanSource, ScratchTargets};
use crate::error::{Error, ErrorCategory, Result};
use crate::progress::DynProgress;
use crate::repository::{BackupEntry, EntryKind, Repository};
use crate::restore::{RestoreOptions, RestoreReport, restore, verify_backup};
use crate::sink::DynBackupSink;
use crate::source::DatabaseSource;
use crate::verify::VerifyPlan;

/// One destination to restore from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// How it is named in reports (a redacted URL).
    pub label: String,
    /// The backups there.
    pub repo: Repository,
    /// A local directory: among identical copies, local ones are read first.
    pub local: bool,
}

impl Origin {
    /// An origin over a sink. `label` names it in reports (give a redacted URL); the origin
    /// counts as local when the label is a plain path or a `file://` URL.
    pub fn new(label: impl Into<String>, sink: DynBackupSink) -> Self {
        let label = label.into();
        Origin {
            local: is_local_label(&label),
            label,
            repo: Repository::new(sink),
        }
    }

    /// An origin labelled with the sink's own description ([`crate::BackupSink::describe`]).
    pub fn of_sink(sink: DynBackupSink) -> Self {
        Origin::new(sink.describe(), sink)
    }

    /// Overrides whether the origin counts as local.
    pub fn with_local(mut self, local: bool) -> Self {
        self.local = local;
        self
    }
}

/// Whether a destination URL names a local directory: `file://…` or a plain path.
///
/// ```
/// use kars_backup_core::recovery::is_local_label;
/// assert!(is_local_label("/var/backups/kars") && is_local_label("file:///var/backups"));
/// assert!(!is_local_label("s3://bucket/kars") && !is_local_label("git+file:///srv/b.git"));
/// ```
pub fn is_local_label(label: &str) -> bool {
    label.starts_with("file://") || !label.contains("://")
}

/// Which backup a restore starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// The newest committed backup across all origins.
    Latest,
    /// A backup by name (also a runbook archive without manifest).
    Named(String),
}

/// One copy of a backup, at one origin.
#[derive(Debug, Clone)]
pub struct BackupCopy {
    /// The origin's label.
    pub origin: String,
    /// The origin's repository.
    pub repo: Repository,
    /// Whether the origin is local.
    pub local: bool,
    /// The backup there.
    pub entry: BackupEntry,
}

/// One backup with its copies, in the order they are tried (local first, then as the origins
/// were given).
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The backup's name.
    pub name: String,
    /// Its time (the manifest's snapshot time, else the time in the name).
    pub time: DateTime<Utc>,
    /// The archive's SHA-256 in the manifest (none for runbook archives).
    pub sha256: Option<String>,
    /// Its copies.
    pub copies: Vec<BackupCopy>,
}

impl Candidate {
    /// The first copy's entry (every candidate has at least one copy).
    pub fn entry(&self) -> &BackupEntry {
        &self.copies[0].entry
    }
}

/// The backups a restore may use, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// The chosen backup first (the newest, or the named one), then older committed ones, newest
    /// first.
    pub backups: Vec<Candidate>,
    /// Origins that could not be listed; the others were used.
    pub unavailable: Vec<Unavailable>,
}

/// An origin that could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailable {
    /// The origin's label.
    pub destination: String,
    /// Why.
    pub error: String,
}

impl Candidates {
    /// Lists every origin and orders what a restore may use.
    ///
    /// An origin that cannot be listed is skipped (and named in [`Candidates::unavailable`]) as
    /// long as another one can be.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no committed backup (or none of that name); the listing
    /// error when no origin can be listed; [`Error::InvalidInput`] without origins.
    pub async fn find(origins: &[Origin], pick: &Pick) -> Result<Candidates> {
        if origins.is_empty() {
            return Err(Error::InvalidInput(
                "no destination to restore from; give at least one".into(),
            ));
        }
        let listings = futures::future::join_all(origins.iter().map(|o| o.repo.list())).await;
        let mut listed = Vec::new();
        let mut unavailable = Vec::new();
        let mut first_error = None;
        for (origin, listing) in origins.iter().zip(listings) {
            match listing {
                Ok(l) => listed.push((origin, l)),
                Err(e) => {
                    tracing::warn!(destination = %origin.label, error = %e, "cannot list destination; using the others");
                    unavailable.push(Unavailable {
                        destination: origin.label.clone(),
                        error: e.to_string(),
                    });
                    first_error.get_or_insert(e);
                }
            }
        }
        if listed.is_empty() {
            return Err(first_error.expect("at least one origin failed"));
        }
        let labels = || {
            origins
                .iter()
                .map(|o| o.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };

        let mut chosen: Vec<Candidate> = Vec::new();
        let mut older: Vec<Candidate> = Vec::new();
        match pick {
            Pick::Latest => {
                for (origin, listing) in &listed {
                    for e in listing.committed() {
                        add_copy(&mut older, origin, e);
                    }
                }
                if older.is_empty() {
                    let runbook: usize = listed
                        .iter()
                        .map(|(_, l)| {
                            l.entries
                                .iter()
                                .filter(|e| e.kind == EntryKind::Runbook)
                                .count()
                        })
                        .sum();
                    let hint = if runbook > 0 {
                        format!(
                            "; {runbook} runbook archive(s) without manifest are there: restore one by name with --backup"
                        )
                    } else {
                        String::new()
                    };
                    return Err(Error::NotFound {
                        what: format!("no committed backup in {}{hint}", labels()),
                    });
                }
            }
            Pick::Named(name) => {
                let mut errors = Vec::new();
                for (origin, listing) in &listed {
                    match listing.find(name) {
                        Some(e) => add_copy(&mut chosen, origin, e),
                        // Not recognised by the listing: ask the destination itself, for its
                        // own error message.
                        None => match origin.repo.find(name).await {
                            Ok(e) => add_copy(&mut chosen, origin, &e),
                            Err(e) => errors.push(e),
                        },
                    }
                }
                let Some(first) = chosen.first() else {
                    // One destination: its own error; several: not found in any of them.
                    return Err(match errors.into_iter().next() {
                        Some(e) if origins.len() == 1 => e,
                        _ => Error::NotFound {
                            what: format!("backup {name} in {}", labels()),
                        },
                    });
                };
                let key = (first.time, first.name.clone());
                for (origin, listing) in &listed {
                    for e in listing
                        .committed()
                        .filter(|e| (e.time(), e.name.to_string()) < key)
                    {
                        add_copy(&mut older, origin, e);
                    }
                }
            }
        }
        older.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
        let mut backups = chosen;
        backups.extend(older);
        for c in &mut backups {
            // Stable: local copies first, otherwise in the order the origins were given.
            c.copies.sort_by_key(|copy| !copy.local);
        }
        Ok(Candidates {
            backups,
            unavailable,
        })
    }

    /// The backup tried first.
    pub fn first(&self) -> Option<&Candidate> {
        self.backups.first()
    }
}

fn add_copy(groups: &mut Vec<Candidate>, origin: &Origin, entry: &BackupEntry) {
    let name = entry.name.to_string();
    let sha256 = entry.manifest.as_ref().map(|m| m.archive.sha256.clone());
    let copy = BackupCopy {
        origin: origin.label.clone(),
        repo: origin.repo.clone(),
        local: origin.local,
        entry: entry.clone(),
    };
    match groups
        .iter_mut()
        .find(|c| c.name == name && c.sha256 == sha256)
    {
        Some(c) => c.copies.push(copy),
        None => groups.push(Candidate {
            name,
            time: entry.time(),
            sha256,
            copies: vec![copy],
        }),
    }
}

/// How hard a restore, verification or drill tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOptions {
    /// When a backup fails verification (every copy's checksum, integrity, row counts, test
    /// queries), try the next older committed backup.
    pub fallback: bool,
    /// With `fallback`, at most this many different backups are tried (copies and retries of the
    /// same backup do not count).
    pub max_backups: usize,
    /// A transient failure of a copy is retried this many times before it counts as failed.
    pub retries: u32,
    /// The wait before the first retry; doubled for each further one (at most 30 s).
    pub backoff: Duration,
}

impl Default for AttemptOptions {
    fn default() -> Self {
        AttemptOptions {
            fallback: false,
            max_backups: 3,
            retries: 2,
            backoff: Duration::from_secs(1),
        }
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptOutcome {
    /// The backup was restored (or verified).
    Succeeded,
    /// A transient failure; the same copy was tried again.
    Retried,
    /// The attempt failed; the next copy or backup (if any) was tried.
    Failed,
}

/// One try of one copy of one backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The backup's name.
    pub backup: String,
    /// The origin the copy was read from.
    pub destination: String,
    /// 1 for the first try of this copy, 2 for its first retry, …
    pub try_number: u32,
    /// What became of it.
    pub outcome: AttemptOutcome,
    /// The failure's category (`verification`, `storage`, …), if it failed.
    pub category: Option<String>,
    /// The failure, if it failed.
    pub error: Option<String>,
    /// Wall time of the attempt in seconds.
    pub seconds: f64,
}

/// A restore or verification that succeeded, with every attempt it took.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    /// The successful attempt's report.
    pub report: RestoreReport,
    /// Every attempt, in order; the last one succeeded.
    pub attempts: Vec<Attempt>,
}

/// Every attempt failed (or one failed in a way that stops the restore).
#[derive(Debug, thiserror::Error)]
#[error("{error}{}", after(.attempts))]
pub struct AttemptsFailed {
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// The last attempt's error; its category says what failed.
    #[source]
    pub error: Error,
}

fn after(attempts: &[Attempt]) -> String {
    if attempts.len() > 1 {
        format!(" (the last of {} attempts)", attempts.len())
    } else {
        String::new()
    }
}

/// What a recovery does with the candidate that works: restore it into a live target, or
/// verify it in a scratch target.
#[derive(Clone, Copy)]
pub enum Recovery<'a> {
    /// Restore into `target`, safely (see [`crate::restore()`]); `options.plan` is replaced by
    /// the plan source given to [`recover`].
    Restore {
        /// The database to restore into.
        target: &'a dyn DatabaseSource,
        /// Confirmation, hooks, in-use policy, cancellation.
        options: &'a RestoreOptions,
    },
    /// Verify in a scratch target made by `scratch` (see [`crate::verify_backup()`]): no live
    /// database is touched.
    Verify {
        /// Makes a new scratch target for each attempt.
        scratch: &'a dyn ScratchTargets,
    },
}

impl std::fmt::Debug for Recovery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::Restore { target, .. } => f
                .debug_struct("Restore")
                .field("target", &target.describe())
                .finish_non_exhaustive(),
            Recovery::Verify { .. } => f.write_str("Verify"),
        }
    }
}

/// Restores or verifies (see [`Recovery`]) the first candidate that works, retrying transient
/// failures, trying other copies and, with [`AttemptOptions::fallback`], older backups. `plan`
/// gives each backup's verification plan: a [`VerifyPlan`] for the same checks everywhere,
/// [`Checks`](crate::checks::Checks) for time-dependent ones.
///
/// ```no_run
/// # async fn f(candidates: kars_backup_core::recovery::Candidates, target: &dyn kars_backup_core::DatabaseSource) {
/// use kars_backup_core::recovery::{AttemptOptions, Recovery, recover};
/// use kars_backup_core::{NoProgress, RestoreOptions, VerifyPlan};
/// let options = RestoreOptions { confirmed: true, ..Default::default() };
/// let recovered = recover(
///     &candidates,
///     Recovery::Restore { target, options: &options },
///     &VerifyPlan::default(),
///     &AttemptOptions::default(),
///     std::sync::Arc::new(NoProgress),
/// )
/// .await;
/// # }
/// ```
///
/// # Errors
/// [`AttemptsFailed`] with every attempt and the last error.
pub async fn recover(
    candidates: &Candidates,
    what: Recovery<'_>,
    plan: &dyn PlanSource,
    attempts: &AttemptOptions,
    progress: DynProgress,
) -> std::result::Result<Recovered, AttemptsFailed> {
    run(candidates, &what, plan, attempts, progress).await
}

/// What to do after a failed attempt (once its retries are used up).
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Another copy of the same backup may work.
    Copy,
    /// The backup itself is bad: an older one may work.
    Backup,
    /// Nothing else will work better; stop.
    Stop,
}

fn next_step(e: &Error) -> Next {
    match e {
        Error::ChecksumMismatch { .. } => Next::Copy,
        Error::VerificationFailed(_) | Error::InvalidArchive { .. } => Next::Backup,
        Error::RolledBack { .. } | Error::NotConfirmed(_) | Error::HookFailed { .. } => Next::Stop,
        e if e.category() == ErrorCategory::Storage => Next::Copy,
        _ => Next::Stop,
    }
}

async fn run(
    candidates: &Candidates,
    mode: &Recovery<'_>,
    plan: &dyn PlanSource,
    options: &AttemptOptions,
    progress: DynProgress,
) -> std::result::Result<Recovered, AttemptsFailed> {
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut last_error = None;
    let backups = if options.fallback {
        options.max_backups.max(1)
    } else {
        1
    };
    let tried_backups = candidates.backups.len().min(backups);
    'backups: for (backup_index, candidate) in candidates.backups.iter().take(backups).enumerate() {
        for (copy_index, copy) in candidate.copies.iter().enumerate() {
            let plan = match plan.plan_for(&copy.entry) {
                Ok(p) => p,
                Err(error) => return Err(AttemptsFailed { attempts, error }),
            };
            let mut try_number = 0;
            loop {
                try_number += 1;
                let started = Instant::now();
                let result = once(mode, copy, plan.clone(), progress.clone()).await;
                let seconds = started.elapsed().as_secs_f64();
                let error = match result {
                    Ok(mut report) => {
                        report.destination = copy.origin.clone();
                        attempts.push(Attempt {
                            backup: candidate.name.clone(),
                            destination: copy.origin.clone(),
                            try_number,
                            outcome: AttemptOutcome::Succeeded,
                            category: None,
                            error: None,
                            seconds,
                        });
                        return Ok(Recovered { report, attempts });
                    }
                    Err(e) => e,
                };
                let retry = error.is_transient() && try_number <= options.retries;
                let next = next_step(&error);
                let more_backups = backup_index + 1 < tried_backups;
                let more_copies = copy_index + 1 < candidate.copies.len();
                let follows = match next {
                    _ if retry => Some("retrying the same copy"),
                    Next::Copy if more_copies => Some("trying the next copy"),
                    Next::Copy | Next::Backup if more_backups => Some("trying an older backup"),
                    _ => None,
                };
                if let Some(follows) = follows {
                    tracing::warn!(
                        backup = %candidate.name,
                        destination = %copy.origin,
                        try_number,
                        error = %error,
                        "attempt failed; {follows}"
                    );
                } else {
                    // The error ends the run and is reported as its result: not a second time.
                    tracing::info!(backup = %candidate.name, destination = %copy.origin, try_number, "attempt failed");
                }
                attempts.push(Attempt {
                    backup: candidate.name.clone(),
                    destination: copy.origin.clone(),
                    try_number,
                    outcome: if retry {
                        AttemptOutcome::Retried
                    } else {
                        AttemptOutcome::Failed
                    },
                    category: Some(error.category().as_str().to_string()),
                    error: Some(error.to_string()),
                    seconds,
                });
                if retry {
                    let factor = 1u32 << (try_number - 1).min(5);
                    let wait = (options.backoff * factor).min(Duration::from_secs(30));
                    let cancel = match mode {
                        Recovery::Restore { options, .. } => options.cancel.clone(),
                        _ => CancellationToken::new(),
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = cancel.cancelled() => {
                            let error = Error::Interrupted { during: "the wait before a retry".into() };
                            return Err(AttemptsFailed { attempts, error });
                        }
                    }
                    continue;
                }
                match next {
                    Next::Copy => {
                        last_error = Some(error);
                        break;
                    }
                    Next::Backup => {
                        last_error = Some(error);
                        continue 'backups;
                    }
                    Next::Stop => return Err(AttemptsFailed { attempts, error }),
                }
            }
        }
    }
    let error = last_error.unwrap_or_else(|| Error::NotFound {
        what: "no backup to try".into(),
    });
    Err(AttemptsFailed { attempts, error })
}

async fn once(
    mode: &Recovery<'_>,
    copy: &BackupCopy,
    plan: VerifyPlan,
    progress: DynProgress,
) -> Result<RestoreReport> {
    match mode {
        Recovery::Restore { target, options } => {
            let options = RestoreOptions {
                plan,
                ..(*options).clone()
            };
            restore(&copy.repo, &copy.entry, *target, &options, progress).await
        }
        Recovery::Verify { scratch } => {
            let scratch = scratch.scratch_for(&copy.entry)?;
            verify_backup(&copy.repo, &copy.entry, scratch.as_ref(), &plan, progress).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lead_to_the_right_next_step() {
        let checksum = Error::ChecksumMismatch {
            name: "a".into(),
            expected: "x".into(),
            actual: "y".into(),
            expected_size: 1,
            actual_size: 1,
        };
        assert_eq!(next_step(&checksum), Next::Copy);
        assert_eq!(next_step(&Error::NotFound { what: "a".into() }), Next::Copy);
        assert_eq!(
            next_step(&Error::VerificationFailed("counts".into())),
            Next::Backup
        );
        assert_eq!(next_step(&Error::InvalidInput("engine".into())), Next::Stop);
        let rolled_back = Error::RolledBack {
            cause: Box::new(Error::HookFailed {
                hook: "health-check".into(),
                reason: "exit 1".into(),
            }),
            rollback: "back in place".into(),
        };
        assert_eq!(next_step(&rolled_back), Next::Stop);
        assert!(!Error::VerificationFailed("x".into()).is_transient());
        let reset = Error::generic(
            "s3",
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"),
        );
        assert!(reset.is_transient());
        let refused = Error::source(
            "postgres",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        );
        assert!(refused.is_transient());
        assert!(!Error::source("postgres", "syntax error").is_transient());
    }

    #[test]
    fn local_labels() {
        assert!(is_local_label("backups"));
        assert!(is_local_label("file:///tmp/x"));
        assert!(!is_local_label("az://c/p?account=a"));
        assert!(!is_local_label("gs://b/p"));
    }
}
