//! `kars-backup prune`.

use kars_backup::core::PruneOptions;

use crate::args::PruneArgs;
use crate::{exit, render};

pub(crate) async fn run(a: PruneArgs) -> anyhow::Result<u8> {
    let repo = kars_backup::job::repository(&a.from)?;
    let options = PruneOptions {
        dry_run: a.dry_run,
        orphan_grace: a.orphan_grace,
        include_runbook: a.include_runbook,
        now: a.now.map_or_else(chrono::Utc::now, |t| t.to_utc()),
        ..PruneOptions::default()
    };
    let policy = a.policy.policy;
    let run = kars_backup::job::wal::prune(&repo, &policy, &options).await?;
    let report = &run.report;
    let code = if report.errors.is_empty() {
        exit::OK
    } else {
        exit::STORAGE
    };
    if a.json {
        let mut doc = serde_json::to_value(&run)?;
        doc["policy"] = policy.to_string().into();
        doc["ok"] = (code == exit::OK).into();
        render::print_json(&doc)?;
        return Ok(code);
    }
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    println!(
        "Prune of {} with policy {policy}{}:",
        report.destination,
        if report.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    );
    for k in &report.keep {
        println!("  keep   {}  {}", k.item.name, k.reasons.join(", "));
    }
    for d in &report.delete {
        println!("  {verb} {}", d.name);
    }
    for o in &report.orphans {
        println!("  {verb} leftover of a failed run: {o}");
    }
    for l in &report.left_alone {
        println!("  left alone: {} ({})", l.name, l.reason);
    }
    print!("{}", render::wal_pruned(&run.wal, report.dry_run));
    for e in &report.errors {
        println!("  ERROR {e}");
    }
    println!(
        "{} kept, {} {verb}, {} leftovers, {} left alone",
        report.keep.len(),
        report.delete.len(),
        report.orphans.len(),
        report.left_alone.len()
    );
    Ok(code)
}
