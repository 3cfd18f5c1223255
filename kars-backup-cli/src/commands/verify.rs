//! `kars-backup verify`.

use kars_backup::core::recovery::Candidates;
use kars_backup::job::replicate::Replica;
use kars_backup::job::{Reading, Scratch, ScratchOptions};
use kars_backup::postgres::physical::PhysicalRestoreReport;

use crate::args::VerifyArgs;
use crate::commands::shared::{config_job, physical_options, pick, replica};
use crate::{exit, progress, render};

pub(crate) async fn run(a: VerifyArgs) -> anyhow::Result<u8> {
    if a.physical.physical {
        let report = physical(&a).await?;
        if a.read.json {
            render::print_json(&serde_json::json!({ "ok": true, "verify": report }))?;
        } else {
            print!("{}", render::physical_restore(&report));
            println!(
                "Backup {} in {} is good.",
                report.backup, report.destination
            );
        }
        return Ok(exit::OK);
    }
    // `--config`: destinations, checks, keys and scratch server of a config job.
    let job = config_job(&a.read.job)?;
    let reading = Reading::new(job.as_ref(), &a.read.from, &a.read.checks, &a.read.decrypt)?;
    let scratch = kars_backup::job::verify::scratch_options(job.as_ref(), &a.pg);
    if let Some(replica) = replica(&a.read, &reading, false).await? {
        return verify_replica(&a, &reading, &replica, scratch).await;
    }
    let origins = reading.origins()?;
    let candidates = Candidates::find(&origins, &pick(&a.read.which)?).await?;
    // Usage errors in the check flags show before anything is restored.
    a.read.checks.checks(a.read.integrity.unwrap_or_default())?;
    let checks = reading.checks(&a.read.checks, a.read.integrity)?;
    let scratch = Scratch::new(scratch, "kars-verify-")?;
    let result = kars_backup::job::verify::verify(
        &candidates,
        &scratch,
        &checks,
        &a.read.retry.attempts(),
        progress::for_terminal(a.read.json),
    )
    .await;
    let recovered = match result {
        Ok(r) => r,
        Err(failed) => {
            return render::attempts_failed(failed, &candidates.unavailable, a.read.json);
        }
    };
    let report = &recovered.report;
    if a.read.json {
        render::print_json(&serde_json::json!({
            "ok": true,
            "verify": report,
            "attempts": recovered.attempts,
            "unavailable": candidates.unavailable,
        }))?;
    } else {
        println!(
            "Backup {} in {} is good:",
            report.backup, report.destination
        );
        println!(
            "  checksum: {}",
            render::checksum(report.checksum_verified, &report.sha256)
        );
        print!("{}", render::verification(&report.verification));
        print!(
            "{}",
            render::attempts(&recovered.attempts, &candidates.unavailable)
        );
    }
    Ok(exit::OK)
}

/// `verify --physical`: the base backup and its WAL replayed into a scratch data directory,
/// verified, and removed.
async fn physical(a: &VerifyArgs) -> anyhow::Result<PhysicalRestoreReport> {
    let bin_dir = a.pg.pg_bin_dir.clone();
    let (reading, mut options) =
        physical_options(&a.physical, &a.read, bin_dir, Some("verify"), false)?;
    // SIGINT/SIGTERM stop the scratch server and remove the scratch copy.
    let signals = kars_backup::schedule::ShutdownSignals::install()?;
    options.cancel = signals.graceful();
    let progress = progress::for_terminal(a.read.json);
    Ok(kars_backup::job::physical::verify_physical(&reading, &options, progress).await?)
}

/// `verify --to-time` (or `--latest` of a replica): the replica rebuilt at that instant in a
/// scratch file, its chain and the verification plan checked.
async fn verify_replica(
    a: &VerifyArgs,
    reading: &Reading,
    replica: &Replica,
    scratch: ScratchOptions,
) -> anyhow::Result<u8> {
    a.read.checks.checks(a.read.integrity.unwrap_or_default())?;
    let checks = reading.checks(&a.read.checks, a.read.integrity)?;
    let scratch = Scratch::new(scratch, "kars-verify-")?;
    let report =
        kars_backup::job::verify::verify_replica(replica, reading, &scratch, &checks).await?;
    if a.read.json {
        render::print_json(&serde_json::json!({ "ok": true, "verify": report }))?;
    } else {
        let at = report.to_time.map_or_else(
            || " (its latest replicated state)".to_string(),
            |t| format!(" as of {}", t.to_rfc3339()),
        );
        println!(
            "Replica {} in {} is good{at}:",
            report.database, report.destination
        );
        print!("{}", render::replica_rebuild(&report.rebuild));
        print!("{}", render::verification(&report.verification));
    }
    Ok(exit::OK)
}
