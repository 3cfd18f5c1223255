//! `kars-backup list`.

use kars_backup::core::EntryKind;

use crate::args::ListArgs;
use crate::{exit, render};

pub(crate) async fn run(a: ListArgs) -> anyhow::Result<u8> {
    let repo = kars_backup::job::repository(&a.from)?;
    let listing = repo.list().await?;
    let wal = kars_backup::postgres::wal::list_chains(
        repo.sink(),
        kars_backup::postgres::wal::DEFAULT_SEGMENT_SIZE,
    )
    .await?;
    let replicas = kars_backup::job::replicate::windows(&repo).await?;
    let shown: Vec<_> = listing
        .entries
        .iter()
        .filter(|e| a.all || e.kind != EntryKind::Incomplete)
        .collect();
    if a.json {
        let entries: Vec<_> = shown
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name.to_string(),
                    "kind": e.kind,
                    "time": e.time(),
                    "size_bytes": e.size(),
                    "sha256": e.manifest.as_ref().map(|m| m.archive.sha256.clone()),
                    "engine": e.manifest.as_ref().map(|m| m.engine.clone()),
                    "rows": e.manifest.as_ref().map(|m| m.total_rows()),
                    "note": e.note,
                })
            })
            .collect();
        let mut doc = serde_json::json!({
            "destination": repo.describe(),
            "backups": entries,
            "latest": listing.latest().map(|e| e.name.to_string()),
        });
        if !wal.is_empty() {
            doc["wal"] = serde_json::to_value(&wal)?;
        }
        if !replicas.is_empty() {
            doc["replicas"] = serde_json::to_value(&replicas)?;
        }
        if a.all {
            doc["foreign"] = listing.foreign.iter().map(|o| o.key.clone()).collect();
            doc["drill_reports"] = kars_backup::core::drill::report_keys(&repo).await?.into();
        }
        render::print_json(&doc)?;
        return Ok(exit::OK);
    }
    if shown.is_empty() && !replicas.is_empty() {
        println!("No backups in {}; it holds replicas", repo.describe());
    } else if shown.is_empty() {
        println!("No backups in {}", repo.describe());
    } else {
        println!("Backups in {} (oldest first):", repo.describe());
        for e in &shown {
            println!("{}", render::entry_row(e));
            if let (true, Some(note)) = (e.kind != EntryKind::Committed, &e.note) {
                println!("    {note}");
            }
        }
    }
    print!("{}", render::wal_chains(&wal));
    print!("{}", render::replica_windows(&replicas));
    let hidden = listing.entries.len() - shown.len();
    if hidden > 0 {
        println!("({hidden} incomplete upload(s) hidden; --all shows them)");
    }
    if a.all {
        for f in &listing.foreign {
            println!("foreign file (left alone): {}", f.key);
        }
        let drills = kars_backup::core::drill::report_keys(&repo).await?;
        if let Some(newest) = drills.last() {
            println!(
                "{} drill report(s) (kept, never pruned); newest: {newest}",
                drills.len()
            );
        }
    }
    Ok(exit::OK)
}
