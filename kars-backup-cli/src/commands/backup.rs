//! `kars-backup backup`: from flags, or the jobs of a configuration file (`--config`). Both
//! build a [`JobSpec`] and run it through [`execute`].

use kars_backup_core::{
    BackupJob, BackupOptions, BackupReport, DynDatabaseSource, DynProgress, KeepRules, Placement,
    PruneOptions, PruneReport, Repository, Tier, TierRules,
};

use crate::args::BackupArgs;
use crate::{exit, progress, render, resolve};

/// One backup job, whether it came from flags or from a configuration file.
#[derive(Debug)]
pub(crate) struct JobSpec {
    /// The database.
    pub(crate) source: DynDatabaseSource,
    /// Where it goes.
    pub(crate) destinations: Vec<DestinationSpec>,
    /// Name prefix, compression, labels, …; `tiers` is filled in at run time.
    pub(crate) options: BackupOptions,
    /// Storage-tier routing, when on.
    pub(crate) tier_rules: Option<TierRules>,
    /// Encryption of the archive (after compression), when asked for.
    pub(crate) encryptor: Option<kars_backup_core::DynEncryptor>,
}

/// One destination of a [`JobSpec`].
#[derive(Debug, Clone)]
pub(crate) struct DestinationSpec {
    /// The URL as given (may carry credential query parameters: print `redact(url)`).
    pub(crate) url: String,
    /// Local or cloud.
    pub(crate) placement: Placement,
    /// The tiers this destination takes, overriding the job's tier rules.
    pub(crate) tiers: Option<Vec<Tier>>,
    /// The retention policy applied after the backup; `None`: not pruned.
    pub(crate) prune: Option<KeepRules>,
}

/// What a run did.
#[derive(Debug)]
pub(crate) struct JobRun {
    /// The backup.
    pub(crate) report: BackupReport,
    /// Destinations the tier rules left out (redacted).
    pub(crate) skipped: Vec<String>,
    /// Each pruned destination and how the prune went.
    pub(crate) prunes: Vec<(String, Result<PruneReport, String>)>,
    /// The exit code: OK, or STORAGE when a destination or prune failed.
    pub(crate) code: u8,
    /// The archive was stored unencrypted at local destinations by default (not with
    /// `--no-encrypt`): worth a one-line notice.
    pub(crate) plaintext_notice: bool,
}

pub(crate) async fn run(a: BackupArgs) -> anyhow::Result<u8> {
    if let Some(path) = a.config.clone() {
        return super::jobs::run_config_backup(&path, &a.job, a.json).await;
    }
    let json = a.json;
    let spec = spec_from_args(a)?;
    let run = execute(
        spec,
        &kars_backup_core::new_run_id(),
        progress::for_terminal(json),
    )
    .await?;
    print_run(&run, json)?;
    print_plaintext_notice(&run);
    Ok(run.code)
}

/// The job the flags describe.
fn spec_from_args(a: BackupArgs) -> anyhow::Result<JobSpec> {
    let db = a.db.clone().ok_or_else(|| {
        crate::commands::UsageError(
            "no database: give --db (or set DATABASE_URL), or --config FILE".into(),
        )
    })?;
    // Keys first: a bad recipient fails before the database is read.
    let encryptor = a.encryption.encryptor()?;
    let source: DynDatabaseSource = if resolve::is_postgres(&db) {
        std::sync::Arc::new(postgres_source(&db, &PgDumpFlags::from(&a.pg))?)
    } else {
        let mut source = resolve::sqlite_source(&db)?.with_integrity(a.integrity.into());
        if let Some(dir) = a.snapshot_dir.clone() {
            source = source.with_snapshot_dir(dir);
        }
        resolve::shared(source)
    };
    let rules = a.tier_rules();
    let destinations =
        a.to.iter()
            .map(|url| {
                let placement = kars_backup_storage::Destination::parse(url)?.placement();
                let prune = a
                    .prune
                    .then(|| prune_policy(a.policy.as_ref(), rules.as_ref(), placement));
                Ok(DestinationSpec {
                    url: url.clone(),
                    placement,
                    tiers: None,
                    prune,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(JobSpec {
        source,
        destinations,
        options: BackupOptions {
            name_prefix: a.prefix,
            compression: a.compression,
            threads: a.threads,
            version_label: a.label,
            host_label: a.host_label,
            tiers: Vec::new(),
            verify_upload: a.verify_upload,
            plaintext: a.encryption.plaintext(),
        },
        tier_rules: rules,
        encryptor,
    })
}

/// Runs a job: routes it by tiers, backs up, prunes the destinations that took it.
pub(crate) async fn execute(
    spec: JobSpec,
    run_id: &str,
    progress: DynProgress,
) -> anyhow::Result<JobRun> {
    // Storage tiers decide which destinations take this run.
    let routed = spec.tier_rules.is_some() || spec.destinations.iter().any(|d| d.tiers.is_some());
    let tags = if routed {
        Tier::of(chrono::Utc::now())
    } else {
        Vec::new()
    };
    let takes: Vec<bool> = spec
        .destinations
        .iter()
        .map(|d| match (&d.tiers, &spec.tier_rules) {
            (Some(tiers), _) => tiers.iter().any(|t| tags.contains(t)),
            (None, Some(rules)) => rules.takes(d.placement, &tags),
            (None, None) => true,
        })
        .collect();
    if !takes.contains(&true) {
        return Err(crate::commands::UsageError(format!(
            "the tier rules keep a {} backup at none of the destinations; add a destination that keeps it (daily backups stay local) or turn tiering off",
            tags.iter().map(|t| t.name()).collect::<Vec<_>>().join("+")
        ))
        .into());
    }
    let chosen: Vec<&DestinationSpec> = spec
        .destinations
        .iter()
        .zip(&takes)
        .filter_map(|(d, &t)| t.then_some(d))
        .collect();
    let skipped: Vec<String> = spec
        .destinations
        .iter()
        .zip(&takes)
        .filter(|(_, t)| !**t)
        .map(|(d, _)| kars_backup_storage::redact(&d.url))
        .collect();
    // Encrypted off-site copies unless told otherwise: refused before any destination is
    // opened (BackupJob::run checks again, for every caller of the library). Every destination
    // of the job counts, also one the tiers leave out of this run: a job that would store
    // plaintext off-site next Sunday is refused today.
    let placed: Vec<(String, Placement)> = spec
        .destinations
        .iter()
        .map(|d| (kars_backup_storage::redact(&d.url), d.placement))
        .collect();
    spec.options.plaintext.check_placements(
        &format!("the backup of {}", spec.source.describe()),
        spec.encryptor.is_some(),
        &placed,
    )?;
    let repos = chosen
        .iter()
        .map(|d| resolve::repository(&d.url))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut options = spec.options;
    options.tiers = tags.iter().map(|t| t.name().to_string()).collect();
    let plaintext_notice = options
        .plaintext
        .stores_plaintext_locally(spec.encryptor.is_some(), &repos.iter().collect::<Vec<_>>());
    let mut job = BackupJob::new(spec.source, repos.clone(), options)
        .with_run_id(run_id)
        .with_progress(progress);
    if let Some(e) = spec.encryptor {
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
    for ((repo, dest), outcome) in repos.iter().zip(&chosen).zip(&report.destinations) {
        let Some(policy) = &dest.prune else { continue };
        if outcome.error.is_some() {
            continue;
        }
        let result = prune_one(repo, policy).await;
        if result.as_ref().map_or(true, |r| !r.errors.is_empty()) {
            code = exit::STORAGE;
        }
        prunes.push((repo.describe(), result));
    }
    Ok(JobRun {
        report,
        skipped,
        prunes,
        code,
        plaintext_notice,
    })
}

/// The one-line reminder of an unencrypted local backup, on stderr (stdout stays the report).
pub(crate) fn print_plaintext_notice(run: &JobRun) {
    if run.plaintext_notice {
        eprintln!(
            "note: {} is not encrypted (local destinations only); to encrypt: `kars-backup key init`, then --encrypt-to age1…",
            run.report.manifest.name
        );
    }
}

/// The JSON document of a run.
pub(crate) fn run_json(run: &JobRun) -> serde_json::Value {
    let report = &run.report;
    serde_json::json!({
        "ok": run.code == exit::OK,
        "run_id": report.run_id,
        "backup": report.manifest.name,
        "duration_secs": report.duration.as_secs_f64(),
        "destinations": report.destinations,
        "skipped_by_tier_rules": run.skipped,
        "prune": run.prunes.iter().map(|(d, r)| match r {
            Ok(r) => serde_json::json!({ "destination": d, "report": r }),
            Err(e) => serde_json::json!({ "destination": d, "error": e }),
        }).collect::<Vec<_>>(),
        "manifest": report.manifest,
    })
}

/// Prints a run: one JSON document, or lines of text.
pub(crate) fn print_run(run: &JobRun, json: bool) -> anyhow::Result<()> {
    if json {
        return render::print_json(&run_json(run));
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
    Ok(())
}

/// The `pg_dump` options of a job, from flags or from `[job.postgres]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct PgDumpFlags {
    pub(crate) format: Option<kars_backup_postgres::DumpFormat>,
    pub(crate) jobs: Option<usize>,
    pub(crate) tables: Vec<String>,
    pub(crate) exclude_tables: Vec<String>,
    pub(crate) schema_only: bool,
    pub(crate) data_only: bool,
    pub(crate) pg_bin_dir: Option<std::path::PathBuf>,
}

impl From<&crate::args::PgDumpArgs> for PgDumpFlags {
    fn from(pg: &crate::args::PgDumpArgs) -> Self {
        PgDumpFlags {
            format: pg.format,
            jobs: pg.jobs,
            tables: pg.tables.clone(),
            exclude_tables: pg.exclude_tables.clone(),
            schema_only: pg.schema_only,
            data_only: pg.data_only,
            pg_bin_dir: pg.pg_bin_dir.clone(),
        }
    }
}

/// The PostgreSQL source with the dump options: format, jobs, table selection.
pub(crate) fn postgres_source(
    db: &str,
    pg: &PgDumpFlags,
) -> anyhow::Result<kars_backup_postgres::PostgresSource> {
    use kars_backup_postgres::{DumpFormat, DumpOptions};
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
    Ok(resolve::postgres_source(db, pg.pg_bin_dir.as_deref())?
        .with_format(format)
        .with_jobs(jobs)
        .with_dump_options(DumpOptions {
            jobs,
            tables: pg.tables.clone(),
            exclude_tables: pg.exclude_tables.clone(),
            schema_only: pg.schema_only,
            data_only: pg.data_only,
        }))
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
