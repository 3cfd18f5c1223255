//! Verification of a job's backups in scratch targets: the scratch settings with the one merge
//! rule, [`verify`] with retries and fallbacks, and [`verify_replica`] for a replicated SQLite
//! database at an instant.

use kars_backup_core::DynProgress;
use kars_backup_core::checks::Checks;
use kars_backup_core::merge::merge;
use kars_backup_core::recovery::{
    AttemptOptions, AttemptsFailed, Candidates, Recovered, Recovery, recover,
};

use chrono::{DateTime, Utc};
use kars_backup_core::{DatabaseSource, InUsePolicy, StageContext, TableInfo, VerifyReport};
use kars_backup_sqlite::SqliteSource;
use kars_backup_sqlite::replicate::{RebuildReport, RestorePoint, rebuild};

use crate::error::Result;
use crate::job::Job;
use crate::replicate::{Replica, decryptor};
use crate::restore::Reading;
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

/// What [`verify_replica`] rebuilt and found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaVerifyReport {
    /// The replicated database's name.
    pub database: String,
    /// The destination (redacted).
    pub destination: String,
    /// The instant asked for (`None`: the latest state).
    pub to_time: Option<DateTime<Utc>>,
    /// The rebuild: generation, snapshot, segments read, the transaction and the observed time
    /// of the state reached, its checksum (every segment's checksums verified on the way).
    pub rebuild: RebuildReport,
    /// Every table of the rebuilt database with its row count.
    pub tables: Vec<TableInfo>,
    /// The verification plan's checks (integrity, minimum row counts, test queries).
    pub verification: VerifyReport,
    /// Where it was rebuilt (removed afterwards).
    pub scratch: String,
    /// Wall time in seconds, download included.
    pub seconds: f64,
}

/// Rebuilds `replica` (at its point) into a new file of `scratch`, verifying the chain's
/// checksums on the way, then runs `checks`' plan at the replica's instant against it
/// (integrity, minimum row counts, test queries; row counts are reported, there is no
/// manifest to compare them with) and removes it.
///
/// # Errors
/// A missing or damaged snapshot or segment, a gap or a checksum that does not follow
/// ([`kars_backup_core::Error::InvalidArchive`] naming the key); failed checks
/// ([`kars_backup_core::Error::VerificationFailed`]); storage and decryption errors.
pub async fn verify_replica(
    replica: &Replica,
    reading: &Reading,
    scratch: &Scratch,
    checks: &Checks,
) -> Result<ReplicaVerifyReport> {
    let started = std::time::Instant::now();
    let target = SqliteSource::new(scratch.attempt_dir()?.join(replica.name()));
    let decryptor = decryptor(reading)?;
    let mut rebuilt = None;
    let mut staged = target
        .stage_built(InUsePolicy::default(), |path| {
            let rebuilt = &mut rebuilt;
            async move {
                let sink = replica.repository().sink();
                let point = replica.point();
                *rebuilt = Some(rebuild(sink, replica.name(), point, decryptor, &path).await?);
                Ok(())
            }
        })
        .await?;
    let plan = kars_backup_core::VerifyPlan {
        check_counts: false,
        ..checks.plan_at(replica.instant())
    };
    let context = StageContext {
        archive_name: replica.describe(),
        manifest: None,
        in_use: InUsePolicy::default(),
    };
    let path = staged.describe();
    let verified = staged.verify(&plan, &context).await;
    let tables = SqliteSource::new(&path).inspect().await;
    let _ = staged.discard().await;
    let mut verification = verified?;
    let tables: Vec<TableInfo> = tables?.into_iter().flat_map(|d| d.tables).collect();
    verification.push(
        format!("row counts of {}", replica.name()),
        true,
        tables
            .iter()
            .map(|t| format!("{} {}", t.name, t.rows))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if !verification.passed() {
        return Err(kars_backup_core::Error::VerificationFailed(verification.failures()).into());
    }
    let rebuild = rebuilt
        .ok_or_else(|| kars_backup_core::Error::generic("verify", "the rebuild did not report"))?;
    Ok(ReplicaVerifyReport {
        database: replica.name().to_string(),
        destination: replica.repository().describe(),
        to_time: match replica.point() {
            RestorePoint::Time(t) => Some(t),
            RestorePoint::Latest => None,
        },
        rebuild,
        tables,
        verification,
        scratch: path,
        seconds: started.elapsed().as_secs_f64(),
    })
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
