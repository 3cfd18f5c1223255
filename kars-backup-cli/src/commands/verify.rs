//! `kars-backup verify`.

use kars_backup_core::recovery::{Candidates, verify_with_fallback};

use crate::args::VerifyArgs;
use crate::{exit, progress, render, resolve};

pub(crate) async fn run(a: VerifyArgs) -> anyhow::Result<u8> {
    // `--config`: destinations, checks, keys and scratch server of a config job.
    let (reading, pg) = super::jobs::check_job(&a)?;
    let origins = reading.origins()?;
    let candidates = Candidates::find(&origins, &resolve::pick(&a.which)).await?;
    let first = candidates
        .first()
        .expect("find returns at least one backup");
    a.checks.plan(a.integrity, first.time)?;
    let scratch_dir = tempfile::Builder::new().prefix("kars-verify-").tempdir()?;
    let scratch = resolve::Scratch::new(&pg, scratch_dir.path());
    let plan = |e: &kars_backup_core::BackupEntry| {
        reading
            .plan(&a.checks, a.integrity, e.time())
            .map_err(resolve::core_error)
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
