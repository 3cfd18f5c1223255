//! `kars-backup drill`.

use kars_backup::core::drill::DrillOutcome;
use kars_backup::job::drill::drill_options;
use kars_backup::job::{Reading, Scratch};

use crate::args::DrillArgs;
use crate::commands::shared::{config_job, pick};
use crate::commands::verify;
use crate::{exit, progress, render};

pub(crate) async fn run(a: DrillArgs) -> anyhow::Result<u8> {
    if a.verify.physical.physical {
        return physical(a).await;
    }
    let v = &a.verify.read;
    // `--config`: destinations, checks, scratch server and targets of a config job.
    let job = config_job(&v.job)?;
    let reading = Reading::new(job.as_ref(), &v.from, &v.checks, &v.decrypt)?;
    let scratch = kars_backup::job::verify::scratch_options(job.as_ref(), &a.verify.pg);
    let origins = reading.origins()?;
    // Usage errors in the checks show before the drill starts.
    v.checks.checks(v.integrity.unwrap_or_default())?;
    let checks = reading.checks(&v.checks, v.integrity)?;
    let scratch = Scratch::new(scratch, "kars-drill-")?;
    let options = drill_options(
        job.as_ref(),
        a.rto,
        v.checks.rpo,
        v.retry.attempts(),
        !a.no_store,
    );
    let report = kars_backup::job::drill::drill(
        &origins,
        &pick(&v.which)?,
        &scratch,
        &checks,
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

/// `drill --physical`: `verify --physical`, timed against the RTO (default 1h).
async fn physical(a: DrillArgs) -> anyhow::Result<u8> {
    let report = verify::physical(&a.verify, "drill").await?;
    let rto = a.rto.unwrap_or_else(|| chrono::Duration::hours(1));
    let took = chrono::Duration::from_std(report.duration).unwrap_or(chrono::Duration::MAX);
    let met = took <= rto;
    if a.verify.read.json {
        render::print_json(&serde_json::json!({
            "ok": met,
            "exit_code": if met { exit::OK } else { exit::RPO_MISSED },
            "drill": report,
            "rto": { "target_secs": rto.num_seconds(), "met": met },
        }))?;
    } else {
        print!("{}", render::physical_restore(&report));
        println!(
            "Drill {}: a verified, promoted copy of the cluster in {:.1}s (RTO {}: {})",
            if met { "passed" } else { "MISSED ITS TARGET" },
            report.duration.as_secs_f64(),
            render::duration(rto.num_seconds()),
            if met { "met" } else { "MISSED" }
        );
    }
    Ok(if met { exit::OK } else { exit::RPO_MISSED })
}
