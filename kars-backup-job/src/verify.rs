//! Verification of a job's backups in scratch targets: the scratch settings with the one merge
//! rule, and [`verify`] with retries and fallbacks.

use kars_backup_core::DynProgress;
use kars_backup_core::checks::Checks;
use kars_backup_core::merge::merge;
use kars_backup_core::recovery::{
    AttemptOptions, AttemptsFailed, Candidates, Recovered, Recovery, recover,
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
    recover(
        candidates,
        Recovery::Verify { scratch },
        checks,
        attempts,
        progress,
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::job::test_support::job;

    #[test]
    fn scratch_flags_win_over_the_job_file_which_wins_over_the_defaults() {
        let j = job(
            "postgres://u@localhost/db",
            "[job.verify]\nscratch-db = \"postgres://u@file-host/postgres\"\n[job.postgres]\nbin-dir = \"/file/bin\"\njobs = 3\n",
        );
        let flags = ScratchOptions {
            pg_bin_dir: Some("/flag/bin".into()),
            jobs: Some(4),
            ..ScratchOptions::default()
        };
        let s = scratch_options(Some(&j), &flags);
        assert_eq!(s.pg_bin_dir, Some(PathBuf::from("/flag/bin")));
        assert_eq!(s.jobs, Some(4));
        assert_eq!(
            s.scratch_db.as_deref(),
            Some("postgres://u@file-host/postgres")
        );
        let flags = ScratchOptions {
            scratch_db: Some("postgres://u@flag-host/postgres".into()),
            ..ScratchOptions::default()
        };
        let s = scratch_options(Some(&j), &flags);
        assert_eq!(
            s.scratch_db.as_deref(),
            Some("postgres://u@flag-host/postgres")
        );
        assert_eq!(s.pg_bin_dir, Some(PathBuf::from("/file/bin")));
        // `[job.postgres] jobs` are pg_dump's, not the scratch restore's
        assert_eq!(s.jobs, None);
        let none = ScratchOptions::default();
        assert_eq!(scratch_options(None, &none), none);
        assert_eq!(scratch_options(Some(&job("/tmp/a.db", "")), &none), none);
    }
}
