//! `kars-backup status`.

use kars_backup_core::status::DestinationStatus;

use crate::args::StatusArgs;
use crate::{exit, render, resolve};

pub(crate) async fn run(a: StatusArgs) -> anyhow::Result<u8> {
    let now = chrono::Utc::now();
    let mut statuses = Vec::new();
    for dest in &a.from {
        let repo = resolve::repository(dest)?;
        let listing = repo.list().await?;
        statuses.push(DestinationStatus::of(
            &repo.describe(),
            &listing,
            now,
            a.rpo,
        ));
    }
    let all_fresh = statuses.iter().all(|s| s.within_rpo);
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": all_fresh,
            "rpo_secs": a.rpo.num_seconds(),
            "destinations": statuses,
            // Restore drills (and their last result) come with `kars-backup drill`.
            "last_drill": null,
        }))?;
    } else {
        for s in &statuses {
            let verdict = if s.within_rpo { "ok" } else { "RPO MISSED" };
            match (&s.newest, s.age_secs) {
                (Some(name), Some(age)) => println!(
                    "[{verdict}] {}: newest {name}, {} old (RPO {}); {} backups, {} incomplete",
                    s.destination,
                    render::duration(age),
                    render::duration(s.rpo_secs),
                    s.committed,
                    s.incomplete
                ),
                _ => println!("[{verdict}] {}: no committed backup", s.destination),
            }
        }
    }
    Ok(if all_fresh {
        exit::OK
    } else {
        exit::RPO_MISSED
    })
}
