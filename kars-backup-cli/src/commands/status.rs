//! `kars-backup status`.

use kars_backup::core::status::DestinationStatus;
use kars_backup::job::status::{self, StatusTarget};

use crate::args::StatusArgs;
use crate::{exit, render};

pub(crate) async fn run(a: StatusArgs) -> anyhow::Result<u8> {
    let now = chrono::Utc::now();
    // The flags' destinations, or every destination of the config's jobs (with their keys),
    // and the databases whose previous copies are listed: each --db, and each job's source.
    let mut targets: Vec<StatusTarget> = Vec::new();
    let mut databases = a.db.clone();
    match &a.config {
        Some(path) => {
            let config = kars_backup::job::load_config(path)?;
            let mut sources = Vec::new();
            for job in kars_backup::job::select_jobs(&config, &a.job)? {
                let job = kars_backup::job::Job::from_config(job)?;
                targets.extend(job.status_targets(a.rpo, &a.decrypt));
                sources.extend(job.source_url().map(str::to_string));
            }
            databases.extend(sources);
        }
        None => targets.extend(
            a.from
                .iter()
                .map(|d| StatusTarget::new(d.clone(), a.rpo, a.decrypt.clone())),
        ),
    }
    let mut statuses = Vec::new();
    let mut jobs = Vec::new();
    for target in &targets {
        jobs.push(target.job.clone());
        statuses.push(status::check(target, now).await?);
    }
    let mut previous = Vec::new();
    for db in &databases {
        previous.push(status::previous_copies(db).await?);
    }
    // Losing the key loses the backups: a newest backup the keys cannot open is a failure.
    let keys_fail = statuses.iter().any(DestinationStatus::keys_fail);
    let last_drill = statuses
        .iter()
        .filter_map(|s| s.last_drill.as_ref())
        .max_by_key(|d| d.at);
    let all_fresh = statuses.iter().all(|s| s.within_rpo);
    // A destination whose last drill failed may hold backups that do not restore.
    let drill_failed = statuses.iter().any(|s| {
        s.last_drill
            .as_ref()
            .is_some_and(|d| d.outcome == kars_backup::core::drill::DrillOutcome::Failed)
    });
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": all_fresh && !drill_failed && !keys_fail,
            "drill_failed": drill_failed,
            "keys_fail": keys_fail,
            "rpo_secs": a.rpo.num_seconds(),
            "destinations": statuses.iter().zip(&jobs).map(|(s, job)| {
                let mut v = serde_json::json!(s);
                if let Some(job) = job {
                    v["job"] = serde_json::json!(job);
                }
                v
            }).collect::<Vec<_>>(),
            "last_drill": last_drill,
            "previous_copies": previous.iter().map(|(target, copies)| serde_json::json!({
                "target": target,
                "copies": copies,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for (s, job) in statuses.iter().zip(&jobs) {
            if let Some(job) = job {
                print!("job {job}: ");
            }
            let verdict = if s.within_rpo { "ok" } else { "RPO MISSED" };
            match (&s.newest, s.age_secs) {
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
        for (target, copies) in &previous {
            if copies.is_empty() {
                println!("{target}: no previous copies kept by restores");
            } else {
                println!("{target}:");
                print!("{}", render::previous_copies(copies));
            }
        }
    }
    for s in statuses.iter().filter(|s| s.keys_fail()) {
        if let Some(k) = &s.keys {
            eprintln!(
                "warning: {}: the newest backup {} cannot be decrypted with the keys given; without its key it cannot be restored ({})",
                s.destination, k.backup, k.detail
            );
        }
    }
    Ok(if drill_failed || keys_fail {
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
