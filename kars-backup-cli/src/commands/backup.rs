//! `kars-backup backup`.

use kars_backup_core::{
    BackupJob, BackupOptions, KeepRules, Placement, PruneOptions, PruneReport, Repository,
    TierRules,
};

use crate::args::BackupArgs;
use crate::{exit, progress, render, resolve};

pub(crate) async fn run(a: BackupArgs) -> anyhow::Result<u8> {
    // Keys first: a bad recipient fails before the database is read.
    let encryptor = a.encryption.encryptor()?;
    let source: kars_backup_core::DynDatabaseSource = if resolve::is_postgres(&a.db.db) {
        std::sync::Arc::new(postgres_source(&a)?)
    } else {
        let mut source = resolve::sqlite_source(&a.db.db)?.with_integrity(a.integrity.into());
        if let Some(dir) = a.snapshot_dir.clone() {
            source = source.with_snapshot_dir(dir);
        }
        resolve::shared(source)
    };
    // Storage tiers decide which destinations take this run.
    let placements =
        a.to.iter()
            .map(|d| Ok(kars_backup_storage::Destination::parse(d)?.placement()))
            .collect::<anyhow::Result<Vec<Placement>>>()?;
    let rules = a.tier_rules();
    let (tags, takes) = match &rules {
        Some(rules) => rules.route(chrono::Utc::now(), &placements),
        None => (Vec::new(), vec![true; a.to.len()]),
    };
    if !takes.contains(&true) {
        return Err(crate::commands::UsageError(format!(
            "the tier rules keep a {} backup at none of the destinations; add a destination that keeps it (daily backups stay local) or drop --tiering",
            tags.iter().map(|t| t.name()).collect::<Vec<_>>().join("+")
        ))
        .into());
    }
    let chosen: Vec<usize> = (0..a.to.len()).filter(|&i| takes[i]).collect();
    let skipped: Vec<String> = (0..a.to.len())
        .filter(|&i| !takes[i])
        .map(|i| kars_backup_storage::redact(&a.to[i]))
        .collect();
    let repos = chosen
        .iter()
        .map(|&i| resolve::repository(&a.to[i]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = BackupOptions {
        name_prefix: a.prefix,
        compression: a.compression,
        threads: a.threads,
        version_label: a.label,
        host_label: a.host_label,
        tiers: tags.iter().map(|t| t.name().to_string()).collect(),
        verify_upload: a.verify_upload,
    };
    let mut job = BackupJob::new(source, repos.clone(), options)
        .with_progress(progress::for_terminal(a.json));
    if let Some(e) = encryptor {
        job = job.with_encryptor(e);
    }
    let report = job.run().await?;
    let mut code = if report.all_succeeded() {
        exit::OK
    } else {
        exit::STORAGE
    };
    // Prune each destination that committed this backup.
    let mut prunes: Vec<(String, Result<PruneReport, String>)> = Vec::new();
    if a.prune {
        for (repo, (&i, outcome)) in repos.iter().zip(chosen.iter().zip(&report.destinations)) {
            if outcome.error.is_some() {
                continue;
            }
            let policy = prune_policy(a.policy.as_ref(), rules.as_ref(), placements[i]);
            let result = prune_one(repo, &policy).await;
            if result.as_ref().map_or(true, |r| !r.errors.is_empty()) {
                code = exit::STORAGE;
            }
            prunes.push((repo.describe(), result));
        }
    }
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": code == exit::OK,
            "run_id": report.run_id,
            "backup": report.manifest.name,
            "duration_secs": report.duration.as_secs_f64(),
            "destinations": report.destinations,
            "skipped_by_tier_rules": skipped,
            "prune": prunes.iter().map(|(d, r)| match r {
                Ok(r) => serde_json::json!({ "destination": d, "report": r }),
                Err(e) => serde_json::json!({ "destination": d, "error": e }),
            }).collect::<Vec<_>>(),
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
        for d in &skipped {
            println!(
                "  not sent to {d}: the tier rules keep {} backups elsewhere",
                render_tags(&report.manifest.tiers)
            );
        }
        println!("  took {:.1}s", report.duration.as_secs_f64());
        for (d, r) in &prunes {
            match r {
                Ok(r) => println!(
                    "  pruned {d}: {} kept, {} deleted, {} leftovers removed{}",
                    r.keep.len(),
                    r.deleted.len(),
                    r.orphans.len(),
                    if r.errors.is_empty() {
                        String::new()
                    } else {
                        format!(", ERRORS: {}", r.errors.join("; "))
                    }
                ),
                Err(e) => println!("  prune of {d} FAILED: {e}"),
            }
        }
    }
    Ok(code)
}

/// The PostgreSQL source with the `backup` flags: format, jobs, table selection.
fn postgres_source(a: &BackupArgs) -> anyhow::Result<kars_backup_postgres::PostgresSource> {
    use kars_backup_postgres::{DumpFormat, DumpOptions};
    let pg = &a.pg;
    let jobs = pg.jobs.unwrap_or(1).max(1);
    let format = pg.format.unwrap_or(if jobs > 1 {
        DumpFormat::Directory
    } else {
        DumpFormat::Plain
    });
    if jobs > 1 && format != DumpFormat::Directory {
        return Err(crate::commands::UsageError(format!(
            "--jobs {jobs} needs --format directory (pg_dump dumps in parallel only in that format)"
        ))
        .into());
    }
    Ok(
        resolve::postgres_source(&a.db.db, pg.pg_bin_dir.as_deref())?
            .with_format(format)
            .with_jobs(jobs)
            .with_dump_options(DumpOptions {
                jobs,
                tables: pg.tables.clone(),
                exclude_tables: pg.exclude_tables.clone(),
                schema_only: pg.schema_only,
                data_only: pg.data_only,
            }),
    )
}

fn render_tags(tags: &[String]) -> String {
    if tags.is_empty() {
        "untagged".into()
    } else {
        tags.join("+")
    }
}

/// The policy of `--prune` at one destination: `--policy`, else the tier policy of its
/// placement (with `--tiering`), else the runbook's table.
fn prune_policy(
    explicit: Option<&KeepRules>,
    rules: Option<&TierRules>,
    placement: Placement,
) -> KeepRules {
    match (explicit, rules) {
        (Some(p), _) => p.clone(),
        (None, Some(rules)) => rules.policy_for(placement),
        (None, None) => KeepRules::runbook(),
    }
}

async fn prune_one(repo: &Repository, policy: &KeepRules) -> Result<PruneReport, String> {
    kars_backup_core::prune(repo, policy, &PruneOptions::default())
        .await
        .map_err(|e| e.to_string())
}
