//! `kars-backup verify`.

use kars_backup_core::recovery::{Candidates, verify_with_fallback};

use crate::args::VerifyArgs;
use crate::{exit, progress, render, resolve};

pub(crate) async fn run(a: VerifyArgs) -> anyhow::Result<u8> {
    // `--config`: destinations, checks, keys and scratch server of a config job.
    let job = super::jobs::check_job(&a)?;
    let origins = job
        .as_ref()
        .map_or(&a.decrypt, |j| &j.decrypt)
        .apply_all(resolve::origins(job.as_ref().map_or(&a.from, |j| &j.from))?)?;
    let candidates = Candidates::find(&origins, &resolve::pick(&a.which)).await?;
    let first = candidates
        .first()
        .expect("find returns at least one backup");
    a.checks.plan(a.integrity, first.time)?;
    let scratch_dir = tempfile::Builder::new().prefix("kars-verify-").tempdir()?;
    let scratch = resolve::Scratch::new(job.as_ref().map_or(&a.pg, |j| &j.pg), scratch_dir.path());
    let job_verify = job.as_ref().and_then(|j| j.verify.as_ref());
    let plan = |e: &kars_backup_core::BackupEntry| match job_verify {
        Some(checks) => Ok(checks.plan(e.time())),
        None => a
            .checks
            .plan(a.integrity, e.time())
            .map_err(resolve::core_error),
    };
    let result = verify_with_fallback(
        &candidates,
        &|e| scratch.make(e),
        &plan,
        &a.retry.attempts(),
        progress::for_terminal(a.json),
    )
    .await;
    let recovered = match result {
        Ok(r) => r,
        Err(failed) => return render::attempts_failed(failed, &candidates.unavailable, a.json),
    };
    let report = &recovered.report;
    if a.json {
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
