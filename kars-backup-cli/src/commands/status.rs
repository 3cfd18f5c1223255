//! `kars-backup status`.

use kars_backup::job::status::{self, StatusReport, StatusTarget};

use crate::args::StatusArgs;
use crate::{exit, render};

pub(crate) async fn run(a: StatusArgs) -> anyhow::Result<u8> {
    // The flags' destinations, or every destination of the config's jobs (with their keys);
    // the previous copies of each --db, and of each job's source.
    let (targets, mut databases) = match &a.config {
        Some(path) => {
            let config = kars_backup::job::load_config(path)?;
            status::config_targets(&config, &a.job, a.rpo, &a.decrypt)?
        }
        None => (
            a.from
                .iter()
                .map(|d| StatusTarget::new(d.clone(), a.rpo, a.decrypt.clone()))
                .collect(),
            Vec::new(),
        ),
    };
    databases.splice(0..0, a.db.iter().cloned());
    let report = StatusReport::check(&targets, &databases, chrono::Utc::now()).await?;
    let (all_fresh, drill_failed, keys_fail, wal_broken) = (
        report.all_fresh(),
        report.drill_failed(),
        report.keys_fail(),
        report.wal_broken(),
    );
    let previous = &report.previous;
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": all_fresh && !drill_failed && !keys_fail && !wal_broken,
            "drill_failed": drill_failed,
            "wal_broken": wal_broken,
            "keys_fail": keys_fail,
            "rpo_secs": a.rpo.num_seconds(),
            "destinations": report.destinations.iter().map(|(job, s)| {
                let mut v = serde_json::json!(s);
                if let Some(job) = job {
                    v["job"] = serde_json::json!(job);
                }
                if report.replicas_only(s) {
                    v["replicas_only"] = true.into();
                }
                v
            }).collect::<Vec<_>>(),
            "wal": report.wal,
            "replicas": report.replicas,
            "last_drill": report.last_drill(),
            "previous_copies": previous.iter().map(|(target, copies)| serde_json::json!({
                "target": target,
                "copies": copies,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for (job, s) in &report.destinations {
            if let Some(job) = job {
                print!("job {job}: ");
            }
            let verdict = if s.within_rpo { "ok" } else { "RPO MISSED" };
            match (&s.newest, s.age_secs) {
                _ if report.replicas_only(s) => println!(
                    "{}: no backups, replicas only (their lag is below)",
                    s.destination
                ),
                (Some(name), Some(age)) => println!(
                    "[{verdict}] {}: newest {name}, {} old (RPO {}); {} backup{}, {} incomplete",
                    s.destination,
                    render::duration(age),
                    render::duration(s.rpo_secs),
                    s.committed,
                    if s.committed == 1 { "" } else { "s" },
                    s.incomplete
                ),
                _ => println!("[{verdict}] {}: no committed backup", s.destination),
            }
            match &s.last_drill {
                Some(d) => println!(
                    "    last drill {} at {}: {} (backup {}, RTO {}, RPO {})",
                    d.id,
                    d.at.format("%Y-%m-%d %H:%M:%S UTC"),
                    match d.outcome {
                        kars_backup::core::drill::DrillOutcome::Passed => "PASSED",
                        kars_backup::core::drill::DrillOutcome::TargetMissed => "TARGET MISSED",
                        kars_backup::core::drill::DrillOutcome::Failed => "FAILED",
                    },
                    d.backup.as_deref().unwrap_or("none"),
                    objective(d.rto_secs, d.rto_met),
                    objective(d.rpo_secs, d.rpo_met),
                ),
                None => println!("    no restore drill recorded (run `kars-backup drill`)"),
            }
            match &s.keys {
                Some(k) if k.opens => println!("    keys: {} {}", k.backup, k.detail),
                Some(k) => println!(
                    "    WARNING: the keys given do not open the newest backup {}: {}",
                    k.backup, k.detail
                ),
                None => {}
            }
        }
        print!("{}", render::wal_status(&report.wal));
        print!("{}", render::replica_status(&report.replicas));
        for (target, copies) in previous {
            if copies.is_empty() {
                println!("{target}: no previous copies kept by restores");
            } else {
                println!("{target}:");
                print!("{}", render::previous_copies(copies));
            }
        }
    }
    for (_, s) in report.destinations.iter().filter(|(_, s)| s.keys_fail()) {
        if let Some(k) = &s.keys {
            eprintln!(
                "warning: {}: the newest backup {} cannot be decrypted with the keys given; without its key it cannot be restored ({})",
                s.destination, k.backup, k.detail
            );
        }
    }
    Ok(if drill_failed || keys_fail || wal_broken {
        exit::VERIFICATION
    } else if all_fresh {
        exit::OK
    } else {
        exit::RPO_MISSED
    })
}

fn objective(secs: Option<f64>, met: bool) -> String {
    match secs {
        Some(s) => format!(
            "{} {}",
            kars_backup::core::drill::human_secs(s),
            if met { "met" } else { "MISSED" }
        ),
        None => "not measured".into(),
    }
}
