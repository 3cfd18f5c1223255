//! `kars-backup drill`.

use kars_backup_core::drill::{DrillOptions, DrillOutcome, run_drill};
use kars_backup_core::recovery::AttemptOptions;

use crate::args::DrillArgs;
use crate::{exit, progress, render, resolve};

pub(crate) async fn run(a: DrillArgs) -> anyhow::Result<u8> {
    let v = &a.verify;
    // `--config`: destinations, checks, scratch server and targets of a config job.
    let (reading, pg) = super::jobs::check_job(v)?;
    let origins = reading.origins()?;
    // Usage errors in the checks show before the drill starts.
    v.checks.plan(v.integrity, chrono::Utc::now())?;
    let scratch_dir = tempfile::Builder::new().prefix("kars-drill-").tempdir()?;
    let scratch = resolve::Scratch::new(&pg, scratch_dir.path());
    let plan = |e: &kars_backup_core::BackupEntry| {
        reading
            .plan(&v.checks, v.integrity, e.time())
            .map_err(resolve::core_error)
    };
    let job_verify = reading.verify.as_ref();
    let options = DrillOptions {
        rto: job_verify.and_then(|c| c.rto).unwrap_or(a.rto),
        rpo: job_verify.map_or(v.checks.rpo, |c| c.rpo()),
        attempts: AttemptOptions {
            fallback: false,
            ..v.retry.attempts()
        },
        store: !a.no_store,
    };
    let report = run_drill(
        &origins,
        &resolve::pick(&v.which),
        &|e| scratch.make(e),
        &plan,
        &options,
        progress::for_terminal(v.json),
    )
    .await;
    let code = match report.outcome {
        DrillOutcome::Passed if !report.store_errors.is_empty() => exit::STORAGE,
        DrillOutcome::Passed => exit::OK,
        DrillOutcome::TargetMissed => exit::RPO_MISSED,
        DrillOutcome::Failed => match report.error_category.as_deref() {
            Some("verification") => exit::VERIFICATION,
            Some("storage") => exit::STORAGE,
            Some("source") => exit::SOURCE,
            Some("usage") => exit::USAGE,
            _ => exit::INTERNAL,
        },
    };
    if v.json {
        render::print_json(&serde_json::json!({
            "ok": code == exit::OK,
            "exit_code": code,
            "drill": report,
        }))?;
    } else {
        print!("{}", report.to_text());
        let stored = report.destinations.len() - report.store_errors.len();
        if options.store && report.error_category.as_deref() != Some("usage") && stored > 0 {
            println!("Report stored as {} (and .txt)", report.report_key);
        }
    }
    for e in &report.store_errors {
        eprintln!("error: could not store the drill report at {e}");
    }
    if let Some(e) = &report.error {
        eprintln!("error: drill failed: {e}");
    } else if report.outcome == DrillOutcome::TargetMissed {
        eprintln!(
            "error: drill missed its target: RTO {}, RPO {}",
            if report.rto.met { "met" } else { "MISSED" },
            if report.rpo.met { "met" } else { "MISSED" }
        );
    }
    Ok(code)
}
