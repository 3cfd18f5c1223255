//! `kars-backup backup`.

use kars_backup_core::{BackupJob, BackupOptions};

use crate::args::BackupArgs;
use crate::{exit, progress, render, resolve};

pub(crate) async fn run(a: BackupArgs) -> anyhow::Result<u8> {
    let mut source = resolve::sqlite_source(&a.db.db)?.with_integrity(a.integrity.into());
    if let Some(dir) = a.snapshot_dir {
        source = source.with_snapshot_dir(dir);
    }
    let repos =
        a.to.iter()
            .map(|d| resolve::repository(d))
            .collect::<anyhow::Result<Vec<_>>>()?;
    let options = BackupOptions {
        name_prefix: a.prefix,
        compression: a.compression,
        threads: a.threads,
        version_label: a.label,
        host_label: a.host_label,
        tiers: Vec::new(),
    };
    let report = BackupJob::new(resolve::shared(source), repos, options)
        .with_progress(progress::for_terminal(a.json))
        .run()
        .await?;
    let code = if report.all_succeeded() {
        exit::OK
    } else {
        exit::STORAGE
    };
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": code == exit::OK,
            "run_id": report.run_id,
            "backup": report.manifest.name,
            "duration_secs": report.duration.as_secs_f64(),
            "destinations": report.destinations,
            "manifest": report.manifest,
        }))?;
    } else {
        print!("Backup created: {}", render::manifest(&report.manifest));
        for d in &report.destinations {
            match &d.error {
                None => println!("  stored at {}", d.destination),
                Some(e) => println!("  FAILED at {}: {e}", d.destination),
            }
        }
        println!("  took {:.1}s", report.duration.as_secs_f64());
    }
    Ok(code)
}
