//! `kars-backup drill`.

use kars_backup::core::drill::{DrillOutcome, DrillReport};
use kars_backup::job::drill::drill_options;
use kars_backup::job::{Reading, Scratch};

use crate::args::DrillArgs;
use crate::commands::shared::{config_job, physical_options, pick, replica};
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
    if let Some(replica) = replica(v, &reading, a.random_instant).await? {
        let (report, verified) = kars_backup::job::drill::drill_replica(
            replica,
            &reading,
            &scratch,
            &checks,
            &options,
            a.random_instant,
        )
        .await;
        if let (Some(r), false) = (&verified, v.json) {
            print!("{}", render::replica_rebuild(&r.rebuild));
        }
        return finish(
            &report,
            options.store,
            v.json,
            verified.map(json).transpose()?,
        );
    }
    let origins = reading.origins()?;
    let report = kars_backup::job::drill::drill(
        &origins,
        &pick(&v.which)?,
        &scratch,
        &checks,
        &options,
        progress::for_terminal(v.json),
    )
    .await;
    finish(&report, options.store, v.json, None)
}

/// `drill --physical`: the base backup and its WAL restored into a scratch data directory (to
/// --to-time, --latest or --random-instant), verified, timed, its report stored like every
/// drill's.
async fn physical(a: DrillArgs) -> anyhow::Result<u8> {
    let v = &a.verify;
    let (reading, mut options) = physical_options(
        &v.physical,
        &v.read,
        v.pg.pg_bin_dir.clone(),
        Some("drill"),
        a.random_instant,
    )?;
    let checks = reading.checks(&v.read.checks, v.read.integrity)?;
    // SIGINT/SIGTERM stop the scratch server and remove the scratch copy.
    let signals = kars_backup::schedule::ShutdownSignals::install()?;
    options.cancel = signals.graceful();
    let job = config_job(&v.read.job)?;
    let drill = drill_options(
        job.as_ref(),
        a.rto,
        v.read.checks.rpo,
        v.read.retry.attempts(),
        !a.no_store,
    );
    let (report, restore) = kars_backup::job::physical::drill_physical(
        &reading,
        &options,
        &drill,
        a.random_instant.then_some(&checks),
        progress::for_terminal(v.read.json),
    )
    .await;
    if let (Some(r), false) = (&restore, v.read.json) {
        print!("{}", render::physical_restore(r));
    }
    finish(
        &report,
        drill.store,
        v.read.json,
        restore.map(json).transpose()?,
    )
}

fn json(value: impl serde::Serialize) -> serde_json::Result<serde_json::Value> {
    serde_json::to_value(value)
}

/// Prints a drill's report (JSON: with the physical restore's or the replica's verification,
/// when there was one) and returns its exit code.
fn finish(
    report: &DrillReport,
    store: bool,
    json: bool,
    restore: Option<serde_json::Value>,
) -> anyhow::Result<u8> {
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
    if json {
        render::print_json(&serde_json::json!({
            "ok": code == exit::OK,
            "exit_code": code,
            "drill": report,
            "restore": restore,
        }))?;
    } else {
        print!("{}", report.to_text());
        let stored = report.destinations.len() - report.store_errors.len();
        if store && report.error_category.as_deref() != Some("usage") && stored > 0 {
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
