//! `kars-backup backup`: from flags, or the jobs of a configuration file (`--config`). Both
//! build a [`Job`] and run its backup.

use kars_backup::job::{BackupRun, Destination, Job, SourceOptions};

use crate::args::BackupArgs;
use crate::{exit, progress, render};

pub(crate) async fn run(a: BackupArgs) -> anyhow::Result<u8> {
    if let Some(path) = a.config.clone() {
        return run_config(&path, &a.job, a.json).await;
    }
    let json = a.json;
    let job = job_from_args(a)?;
    let run = job
        .backup(
            &kars_backup::core::new_run_id(),
            progress::for_terminal(json),
        )
        .await?;
    print_run(&run, json)?;
    print_plaintext_notice(&run);
    Ok(code_of(&run))
}

/// OK, or STORAGE when a destination or a prune failed.
fn code_of(run: &BackupRun) -> u8 {
    if run.all_succeeded() {
        exit::OK
    } else {
        exit::STORAGE
    }
}

/// The job the flags describe.
fn job_from_args(a: BackupArgs) -> anyhow::Result<Job> {
    let db = a.db.clone().ok_or_else(|| {
        exit::UsageError("no database: give --db (or set DATABASE_URL), or --config FILE".into())
    })?;
    let mut builder = Job::builder("backup")
        .source_url(
            db,
            SourceOptions {
                integrity: a.integrity,
                snapshot_dir: a.snapshot_dir.clone(),
                postgres: a.pg.clone(),
            },
        )
        .options(a.options)
        .tiers(a.tiers)
        .encryption(kars_backup::job::Encryption {
            options: a.encryption,
            identity_file: None,
        });
    for url in &a.to {
        builder = builder.destination(Destination::new(url.clone())?);
    }
    if a.prune {
        builder = builder.prune_all(a.policy);
    }
    Ok(builder.build()?)
}

/// `kars-backup backup --config FILE [--job NAME]`: each job once, now, with its lock, state,
/// notifications and textfile metrics; one exit code for all (the worst).
async fn run_config(path: &std::path::Path, names: &[String], json: bool) -> anyhow::Result<u8> {
    let config = kars_backup::job::load_config(path)?;
    let jobs = kars_backup::job::select_jobs(&config, names)?;
    // (one-shot runs write the jobs' textfiles through the scheduler's observer)
    let metrics = kars_backup::notify::Metrics::new();
    let scheduler = kars_backup::job::scheduler_for(&config, &metrics)?;
    let mut code = exit::OK;
    let mut documents = Vec::new();
    for job in jobs {
        let name = &job.name;
        let shot = kars_backup::job::run_once(&scheduler, Job::from_config(job)?).await;
        let (job_code, doc) = match (shot.report, shot.run) {
            (Err(e), _) => {
                let text = e.to_string();
                if !json {
                    println!("Job {name}: NOT RUN: {text}");
                }
                (
                    exit::INTERNAL,
                    serde_json::json!({ "job": name, "ok": false, "error": text }),
                )
            }
            (Ok(report), Some(Ok(run))) => {
                if !json {
                    println!("Job {name} (run {}):", report.run_id);
                    print_run(&run, false)?;
                }
                print_plaintext_notice(&run);
                let mut doc = run.to_json();
                doc["job"] = serde_json::json!(name);
                (code_of(&run), doc)
            }
            (Ok(report), other) => {
                let (c, text) = match other {
                    Some(Err(e)) => {
                        let e = anyhow::Error::from(e);
                        (exit::code_of(&e), exit::error_text(&e))
                    }
                    _ => (
                        exit::INTERNAL,
                        report.outcome.error.clone().unwrap_or_default(),
                    ),
                };
                if !json {
                    println!("Job {name} (run {}): FAILED: {text}", report.run_id);
                }
                (
                    c,
                    serde_json::json!({ "job": name, "run_id": report.run_id, "ok": false, "error": text }),
                )
            }
        };
        code = code.max(job_code);
        documents.push(doc);
    }
    if json {
        render::print_json(&serde_json::json!({ "ok": code == exit::OK, "jobs": documents }))?;
    }
    Ok(code)
}

/// The one-line reminder of an unencrypted local backup, on stderr (stdout stays the report).
fn print_plaintext_notice(run: &BackupRun) {
    if run.plaintext_notice {
        eprintln!(
            "note: {} is not encrypted (local destinations only); to encrypt: `kars-backup key init`, then --encrypt-to age1…",
            run.report.manifest.name
        );
    }
}

/// Prints a run: one JSON document, or lines of text.
fn print_run(run: &BackupRun, json: bool) -> anyhow::Result<()> {
    if json {
        return render::print_json(&run.to_json());
    }
    let report = &run.report;
    print!("Backup created: {}", render::manifest(&report.manifest));
    for d in &report.destinations {
        match &d.error {
            None => println!("  stored at {}", d.destination),
            Some(e) => println!("  FAILED at {}: {e}", d.destination),
        }
    }
    for d in &run.skipped {
        println!(
            "  not sent to {d}: the tier rules keep {} backups elsewhere",
            render_tags(&report.manifest.tiers)
        );
    }
    println!("  took {:.1}s", report.duration.as_secs_f64());
    for (d, r) in &run.prunes {
        match r {
            Ok(run) => {
                let r = &run.report;
                println!(
                    "  pruned {d}: {} kept, {} deleted, {} leftovers removed{}",
                    r.keep.len(),
                    r.deleted.len(),
                    r.orphans.len(),
                    if r.errors.is_empty() {
                        String::new()
                    } else {
                        format!(", ERRORS: {}", r.errors.join("; "))
                    }
                );
                print!("{}", render::wal_pruned(&run.wal, false));
            }
            Err(e) => println!("  prune of {d} FAILED: {e}"),
        }
    }
    Ok(())
}

fn render_tags(tags: &[String]) -> String {
    if tags.is_empty() {
        "untagged".into()
    } else {
        tags.join("+")
    }
}
