//! Verification of a job's backups in scratch targets: the scratch settings with the one merge
//! rule, and [`verify`] with retries and fallbacks.

use kars_backup_core::DynProgress;
use kars_backup_core::checks::Checks;
use kars_backup_core::merge::merge;
use kars_backup_core::recovery::{
    AttemptOptions, AttemptsFailed, Candidates, Recovered, verify_with_fallback,
};

use crate::job::Job;
use crate::scratch::{Scratch, ScratchOptions};

/// Where PostgreSQL backups are verified: `flags` (`--scratch-db`, `--jobs`, `--pg-bin-dir`)
/// win over the job's `[job.verify] scratch-db` and `[job.postgres] bin-dir`.
pub fn scratch_options(job: Option<&Job>, flags: &ScratchOptions) -> ScratchOptions {
    merge(flags.clone(), job.map(|j| j.scratch.clone()))
}

/// Verifies the first candidate that works in a scratch target of `scratch`, with `checks`,
/// retrying transient failures and trying other copies (no live database is touched).
///
/// # Errors
/// [`AttemptsFailed`] with every attempt and the last error.
pub async fn verify(
    candidates: &Candidates,
    scratch: &Scratch,
    checks: &Checks,
    attempts: &AttemptOptions,
    progress: DynProgress,
) -> std::result::Result<Recovered, AttemptsFailed> {
    verify_with_fallback(candidates, scratch, checks, attempts, progress).await
}
