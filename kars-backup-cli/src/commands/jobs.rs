//! Jobs of a configuration file: loading it, turning a `[[job]]` into a [`JobSpec`], the
//! [`JobRunner`] the daemon and `backup --config` share, and the one-shot run.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kars_backup_config::{Config, JobConfig};
use kars_backup_core::{BackupOptions, DynDatabaseSource};
use kars_backup_schedule::{
    CancellationToken, JobRunner, RunContext, RunOutcome, RunReport, RunStatus, SystemClock,
};

use super::backup::{DestinationSpec, JobRun, JobSpec, PgDumpFlags, execute, print_run, run_json};
use crate::commands::UsageError;
use crate::{exit, render, resolve};

/// Loads and checks a configuration file; problems become one usage error (exit 2) with a
/// `file:line:col: message` line each.
pub(crate) fn load_config(path: &Path) -> anyhow::Result<Config> {
    kars_backup_config::set_cron_validator(|expr| {
        kars_backup_schedule::Schedule::parse(expr, "UTC")
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    kars_backup_config::load(path).map_err(|e| UsageError(e.to_string()).into())
}

/// The config's job names, for errors: `a, b, c`.
fn job_names(config: &Config) -> String {
    config
        .jobs
        .iter()
        .map(|j| j.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The jobs named by `--job` (all when none), in file order.
pub(crate) fn select_jobs<'a>(
    config: &'a Config,
    names: &[String],
) -> anyhow::Result<Vec<&'a JobConfig>> {
    for name in names {
        if config.job(name).is_none() {
            return Err(UsageError(format!(
                "no job {name:?} in the config; its jobs: {}",
                job_names(config)
            ))
            .into());
        }
    }
    Ok(config
        .jobs
        .iter()
        .filter(|j| names.is_empty() || names.contains(&j.name))
        .collect())
}

/// Where locks and catch-up state live: `[daemon] state-dir`, else systemd's
/// `STATE_DIRECTORY`, else `/var/lib/kars-backup` for root, else `~/.local/state/kars-backup`.
pub(crate) fn state_dir(config: &Config) -> PathBuf {
    if let Some(d) = &config.daemon.state_dir {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || std::env::var_os("HOME").is_some_and(|h| h == "/root");
    match std::env::var_os("HOME") {
        Some(home) if !root => PathBuf::from(home).join(".local/state/kars-backup"),
        _ => PathBuf::from("/var/lib/kars-backup"),
    }
}

/// The encryptor of a `[[job]]`'s `[job.encryption]`, if it encrypts (OpenPGP keys are looked
/// up now, so a bad recipient fails before anything is read; the recipient of an
/// `identity-file` is derived from it).
///
/// # Errors
/// A bad recipient, a missing key, an unreadable identity or passphrase file.
pub(crate) fn encryptor_for(
    job: &JobConfig,
) -> anyhow::Result<Option<kars_backup_core::DynEncryptor>> {
    let Some(enc) = job.encryption_keys().filter(|e| e.encrypts()) else {
        return Ok(None);
    };
    let own = match &enc.identity_file {
        Some(file) => kars_backup_encrypt::identity_file_recipients(file)
            .with_context(|| format!("job {}: [job.encryption] identity-file", job.name))?,
        None => Vec::new(),
    };
    let recipients: Vec<String> = own
        .into_iter()
        .chain(enc.age_recipients.iter().cloned())
        .chain(enc.gpg_recipients.iter().map(|r| format!("gpg:{r}")))
        .collect();
    kars_backup_encrypt::encryptor(&recipients, enc.passphrase_file.as_deref())
        .with_context(|| format!("job {}: [job.encryption]", job.name))
}

/// The backup a `[[job]]` describes.
///
/// # Errors
/// A usage error for a job that cannot run as configured (bad encryption keys, bad source).
pub(crate) fn spec_from_config(job: &JobConfig) -> anyhow::Result<JobSpec> {
    let encryptor = encryptor_for(job)?;
    let db = job.source.expose();
    let source: DynDatabaseSource = if job.is_postgres() {
        let pg = job.postgres.clone().unwrap_or_default();
        Arc::new(super::backup::postgres_source(
            db,
            &PgDumpFlags {
                format: pg.format,
                jobs: pg.jobs,
                tables: pg.tables,
                exclude_tables: pg.exclude_tables,
                schema_only: pg.schema_only,
                data_only: pg.data_only,
                pg_bin_dir: pg.bin_dir,
            },
        )?)
    } else {
        let mut source = resolve::sqlite_source(db)?.with_integrity(job.integrity);
        if let Some(dir) = job.snapshot_dir.clone() {
            source = source.with_snapshot_dir(dir);
        }
        resolve::shared(source)
    };
    let destinations = job
        .destinations
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Ok(DestinationSpec {
                url: d.sink_url()?,
                placement: kars_backup_storage::Destination::parse(d.url.expose())?.placement(),
                tiers: d.tiers.clone(),
                prune: job.retention_for(i),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(JobSpec {
        source,
        destinations,
        options: BackupOptions {
            name_prefix: job.prefix.clone(),
            compression: job.compression,
            threads: job.threads,
            version_label: job.label.clone(),
            host_label: job.host_label.clone(),
            tiers: Vec::new(),
            verify_upload: job.verify_upload,
            plaintext: job.plaintext_policy(),
        },
        tier_rules: job.tier_rules(),
        encryptor,
    })
}

/// How the last run of a [`ConfigJobRunner`] went, for printing by the one-shot CLI.
pub(crate) type LastRun = Arc<Mutex<Option<Result<JobRun, (u8, String)>>>>;

/// Runs one `[[job]]` of the config: the same code path as `kars-backup backup`.
#[derive(Debug)]
pub(crate) struct ConfigJobRunner {
    job: JobConfig,
    /// Fired by a second SIGTERM/SIGINT: abort the in-flight backup (nothing is listed).
    abort: CancellationToken,
    last: LastRun,
}

impl ConfigJobRunner {
    pub(crate) fn new(job: JobConfig, abort: CancellationToken) -> Self {
        ConfigJobRunner {
            job,
            abort,
            last: Arc::default(),
        }
    }

    pub(crate) fn last(&self) -> LastRun {
        self.last.clone()
    }
}

#[async_trait]
impl JobRunner for ConfigJobRunner {
    async fn run(&self, ctx: RunContext) -> RunOutcome {
        // A first shutdown signal lets the backup finish (ctx.cancel); a second aborts it.
        let result = async {
            let spec = spec_from_config(&self.job)?;
            execute(spec, &ctx.run_id, kars_backup_core::progress::no_progress()).await
        };
        let result = tokio::select! {
            r = result => r,
            _ = self.abort.cancelled() => Err(anyhow::anyhow!(
                "aborted by a second shutdown signal before the backup was committed; nothing was listed (leftovers are removed by a later prune)"
            )),
        };
        let outcome = match &result {
            Ok(run) => outcome_of(run),
            Err(e) => RunOutcome::failure(crate::error_text(e)),
        };
        if let Ok(mut slot) = self.last.lock() {
            *slot = Some(result.map_err(|e| (crate::exit_code_of(&e), crate::error_text(&e))));
        }
        outcome
    }
}

/// The scheduler's view of a run: per destination, and failed prunes as failures.
fn outcome_of(run: &JobRun) -> RunOutcome {
    let mut outcome = RunOutcome::from_backup_report(&run.report);
    for (dest, result) in &run.prunes {
        let problem = match result {
            Err(e) => Some(e.clone()),
            Ok(r) if !r.errors.is_empty() => Some(r.errors.join("; ")),
            Ok(_) => None,
        };
        if let Some(p) = problem {
            outcome.status = RunStatus::Failure;
            outcome
                .error
                .get_or_insert_with(|| format!("prune of {dest} failed: {p}"));
        }
    }
    outcome
}

/// `kars-backup backup --config FILE [--job NAME]`: each job once, now, with its lock, state,
/// notifications and textfile metrics; one exit code for all (the worst).
pub(crate) async fn run_config_backup(
    path: &Path,
    names: &[String],
    json: bool,
) -> anyhow::Result<u8> {
    let config = load_config(path)?;
    let jobs = select_jobs(&config, names)?;
    // (one-shot runs write the jobs' textfiles through the scheduler's observer)
    let metrics = kars_backup_notify::Metrics::new();
    let scheduler = super::daemon::scheduler_for(&config, &metrics)?;
    let mut code = exit::OK;
    let mut documents = Vec::new();
    for job in jobs {
        let runner = Arc::new(ConfigJobRunner::new(job.clone(), CancellationToken::new()));
        let last = runner.last();
        let report: Result<RunReport, _> = scheduler
            .run_now(&job.name, runner, &SystemClock, CancellationToken::new())
            .await;
        let taken = last.lock().ok().and_then(|mut s| s.take());
        let (job_code, doc) = match (report, taken) {
            (Err(e), _) => {
                let text = e.to_string();
                if !json {
                    println!("Job {}: NOT RUN: {text}", job.name);
                }
                (
                    exit::INTERNAL,
                    serde_json::json!({ "job": job.name, "ok": false, "error": text }),
                )
            }
            (Ok(report), Some(Ok(run))) => {
                if !json {
                    println!("Job {} (run {}):", job.name, report.run_id);
                    print_run(&run, false)?;
                }
                super::backup::print_plaintext_notice(&run);
                let mut doc = run_json(&run);
                doc["job"] = serde_json::json!(job.name);
                (run.code, doc)
            }
            (Ok(report), other) => {
                let (c, text) = match other {
                    Some(Err((c, t))) => (c, t),
                    _ => (
                        exit::INTERNAL,
                        report.outcome.error.clone().unwrap_or_default(),
                    ),
                };
                if !json {
                    println!("Job {} (run {}): FAILED: {text}", job.name, report.run_id);
                }
                (
                    c,
                    serde_json::json!({ "job": job.name, "run_id": report.run_id, "ok": false, "error": text }),
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

/// What a command that reads backups (restore, verify, drill) works from: the `--config` job's
/// destinations, keys and `[job.verify]` plan, else the flags'.
#[derive(Debug)]
pub(crate) struct Reading {
    /// Destination URLs.
    pub(crate) from: Vec<String>,
    /// Decryption keys: the flags' plus `[job.encryption]`'s identity and passphrase files.
    pub(crate) decrypt: crate::args::DecryptArgs,
    /// `[job.verify]`, when the job has one (else the check flags apply).
    pub(crate) verify: Option<kars_backup_config::VerifyConfig>,
}

impl Reading {
    /// The destinations, reading encrypted archives with the keys.
    pub(crate) fn origins(&self) -> anyhow::Result<Vec<kars_backup_core::recovery::Origin>> {
        self.decrypt.apply_all(resolve::origins(&self.from)?)
    }

    /// The verification plan for a backup taken at `time`: the job's, else the check flags'.
    pub(crate) fn plan(
        &self,
        checks: &crate::args::CheckArgs,
        integrity: crate::args::Integrity,
        time: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<kars_backup_core::VerifyPlan> {
        match &self.verify {
            Some(job) => Ok(job.plan(time)),
            None => checks.plan(integrity, time),
        }
    }
}

/// The job `--config FILE [--job NAME]` names (the file's only job without `--job`); `None`
/// without `--config`.
fn config_job(arg: &crate::args::JobArg) -> anyhow::Result<Option<JobConfig>> {
    let Some(path) = &arg.config else {
        return Ok(None);
    };
    let config = load_config(path)?;
    let job = match arg.job.as_deref() {
        Some(n) => select_jobs(&config, &[n.to_string()])?[0],
        None if config.jobs.len() == 1 => &config.jobs[0],
        None => {
            return Err(UsageError(format!(
                "the config has several jobs: name one with --job ({})",
                job_names(&config)
            ))
            .into());
        }
    };
    Ok(Some(job.clone()))
}

/// What the read commands take: the flags without a job; with one, its destinations, keys and
/// plan (`--from` and check flags next to a job plan are usage errors, not half-applied).
fn reading(
    job: Option<&JobConfig>,
    from: &[String],
    checks: &crate::args::CheckArgs,
    decrypt: &crate::args::DecryptArgs,
) -> anyhow::Result<Reading> {
    let Some(job) = job else {
        return Ok(Reading {
            from: from.to_vec(),
            decrypt: decrypt.clone(),
            verify: None,
        });
    };
    if !from.is_empty() {
        return Err(UsageError(
            "--from cannot be given with --config: the job's destinations are used".into(),
        )
        .into());
    }
    if job.verify.is_some()
        && (!checks.queries.is_empty() || !checks.min_rows.is_empty() || checks.audit_log.is_some())
    {
        return Err(UsageError(format!(
            "job {} has a [job.verify] plan: put the checks there instead of --verify-query/--min-rows/--audit-log",
            job.name
        ))
        .into());
    }
    let d = job_keys(job, decrypt);
    Ok(Reading {
        from: job
            .destinations
            .iter()
            .map(|d| d.sink_url())
            .collect::<Result<_, _>>()?,
        decrypt: d,
        verify: job.verify.clone(),
    })
}

/// The keys of a read command: the flags' plus the job's `[job.encryption]` identity files
/// (`identity-file`, `identity-files`) and passphrase file.
pub(crate) fn job_keys(
    job: &JobConfig,
    decrypt: &crate::args::DecryptArgs,
) -> crate::args::DecryptArgs {
    let mut d = decrypt.clone();
    if let Some(enc) = job.encryption_keys() {
        d.identities.extend(enc.all_identity_files());
        if d.passphrase_file.is_none() {
            d.passphrase_file = enc.passphrase_file.clone();
        }
    }
    d
}

/// `verify`/`drill [--config FILE [--job NAME]]`: what they read, and the scratch server and
/// PostgreSQL programs (as for `restore`, a flag wins over the file: `--scratch-db`, else
/// `[job.verify] scratch-db`; `--pg-bin-dir`, else `[job.postgres] bin-dir`).
pub(crate) fn check_job(
    v: &crate::args::VerifyArgs,
) -> anyhow::Result<(Reading, crate::args::PgVerifyArgs)> {
    let job = config_job(&v.job)?;
    let reading = reading(job.as_ref(), &v.from, &v.checks, &v.decrypt)?;
    let pg = crate::args::PgVerifyArgs {
        scratch_db: v.pg.scratch_db.clone().or_else(|| {
            reading
                .verify
                .as_ref()
                .and_then(|c| c.scratch_db.as_ref())
                .map(|u| u.expose().to_string())
        }),
        jobs: v.pg.jobs,
        pg_bin_dir: v.pg.pg_bin_dir.clone().or_else(|| {
            job.as_ref()
                .and_then(|j| j.postgres.as_ref())
                .and_then(|p| p.bin_dir.clone())
        }),
    };
    Ok((reading, pg))
}

/// What `restore` runs with: where it reads, the hooks, how it treats the application and the
/// previous database, and the PostgreSQL programs' directory.
pub(crate) struct RestorePlan {
    pub(crate) reading: Reading,
    pub(crate) hooks: kars_backup_core::RestoreHooks,
    pub(crate) in_use: kars_backup_core::InUsePolicy,
    pub(crate) keep_previous: u32,
    pub(crate) pg_bin_dir: Option<PathBuf>,
}

/// `restore [--config FILE [--job NAME]]`. One rule for every setting: a flag given on the
/// command line wins over the job's `[job.hooks]`/`[job.restore]`/`[job.postgres]`, which win
/// over the defaults.
pub(crate) fn restore_job(a: &crate::args::RestoreArgs) -> anyhow::Result<RestorePlan> {
    use kars_backup_core::InUsePolicy;
    let job = config_job(&a.job)?;
    let reading = reading(job.as_ref(), &a.from, &a.checks, &a.decrypt)?;
    let hooks = job.as_ref().and_then(|j| j.hooks.as_ref());
    let command = |flag: &Option<String>, conf: Option<&kars_backup_config::CommandLine>| {
        flag.clone()
            .or_else(|| conf.map(|c| c.expose().to_string()))
    };
    let secs = |d: chrono::Duration| d.num_seconds().max(0) as u64;
    let defaults = kars_backup_core::RestoreHooks::default();
    let hooks = kars_backup_core::RestoreHooks {
        stop: command(&a.stop_cmd, hooks.and_then(|h| h.stop.as_ref())),
        start: command(&a.start_cmd, hooks.and_then(|h| h.start.as_ref())),
        health_check: command(&a.health_cmd, hooks.and_then(|h| h.health.as_ref())),
        health_check_attempts: a
            .health_attempts
            .or(hooks.map(|h| h.health_attempts))
            .unwrap_or(defaults.health_check_attempts),
        health_check_interval_secs: a
            .health_interval
            .or(hooks.map(|h| secs(h.health_interval)))
            .unwrap_or(defaults.health_check_interval_secs),
        health_check_start_period_secs: a
            .health_start_period
            .or(hooks.map(|h| secs(h.health_start_period)))
            .unwrap_or(defaults.health_check_start_period_secs),
        health_check_timeout_secs: a
            .health_timeout
            .or(hooks.map(|h| secs(h.health_timeout)))
            .unwrap_or(defaults.health_check_timeout_secs),
        timeout_secs: a
            .hook_timeout
            .or(hooks.map(|h| secs(h.timeout)))
            .unwrap_or(defaults.timeout_secs),
    };
    let restore = job.as_ref().and_then(|j| j.restore.as_ref());
    let in_use = if a.live {
        InUsePolicy::Live
    } else if a.terminate_connections {
        InUsePolicy::TerminateSessions
    } else {
        restore.map_or(InUsePolicy::Refuse, |r| r.in_use)
    };
    let keep_previous = a
        .keep_previous
        .or(restore.map(|r| r.keep_previous))
        .unwrap_or(1);
    let pg_bin_dir = a.pg.pg_bin_dir.clone().or_else(|| {
        job.as_ref()
            .and_then(|j| j.postgres.as_ref())
            .and_then(|p| p.bin_dir.clone())
    });
    Ok(RestorePlan {
        reading,
        hooks,
        in_use,
        keep_previous,
        pg_bin_dir,
    })
}

/// `status --config`: the source (database URL or path) of each selected job.
pub(crate) fn job_sources(path: &Path, names: &[String]) -> anyhow::Result<Vec<String>> {
    let config = load_config(path)?;
    Ok(select_jobs(&config, names)?
        .into_iter()
        .map(|j| j.source.expose().to_string())
        .collect())
}

/// One destination `status` checks.
#[derive(Debug)]
pub(crate) struct StatusTarget {
    /// The destination URL.
    pub(crate) url: String,
    /// Its freshness target.
    pub(crate) rpo: chrono::Duration,
    /// The config job it belongs to.
    pub(crate) job: Option<String>,
    /// The keys that must open its newest backup: the flags' plus the job's.
    pub(crate) keys: crate::args::DecryptArgs,
}

/// `status --config`: every destination of the selected jobs with its freshness target — the
/// job's `[job.verify] rpo` (else `default_rpo`), plus the tier's period where the destination
/// takes no daily backups (a weekly-only cloud copy is up to a week old by design) — and the
/// job's keys with the flags' (`keys`).
pub(crate) fn freshness_targets(
    path: &Path,
    names: &[String],
    default_rpo: chrono::Duration,
    keys: &crate::args::DecryptArgs,
) -> anyhow::Result<Vec<StatusTarget>> {
    use kars_backup_core::Tier;
    let config = load_config(path)?;
    let mut targets = Vec::new();
    for job in select_jobs(&config, names)? {
        let rpo = job
            .verify
            .as_ref()
            .map_or(default_rpo, |v| v.rpo.unwrap_or(default_rpo));
        let rules = job.tier_rules();
        for d in &job.destinations {
            let placement = kars_backup_storage::Destination::parse(d.url.expose())?.placement();
            let tiers: Option<Vec<Tier>> = d
                .tiers
                .clone()
                .or_else(|| rules.as_ref().map(|r| r.accepted(placement).to_vec()));
            let period_days = match tiers {
                Some(t) if !t.contains(&Tier::Daily) => {
                    if t.contains(&Tier::Weekly) {
                        7
                    } else if t.contains(&Tier::Monthly) {
                        31
                    } else {
                        366
                    }
                }
                _ => 0,
            };
            targets.push(StatusTarget {
                url: d.url.expose().to_string(),
                rpo: rpo + chrono::Duration::days(period_days),
                job: Some(job.name.clone()),
                keys: job_keys(job, keys),
            });
        }
    }
    Ok(targets)
}
