//! `kars-backup restore`.

use std::io::{BufRead, IsTerminal, Write};

use kars_backup::core::RestoreOptions;
use kars_backup::core::recovery::{AttemptOptions, Candidates};
use kars_backup::job::replicate::{ReplicaRequest, ReplicaRestore};
use kars_backup::job::{Reading, RestorePlan};

use crate::args::RestoreArgs;
use crate::commands::shared::{config_job, physical_options, pick};
use crate::{exit, progress, render};

pub(crate) async fn run(a: RestoreArgs) -> anyhow::Result<u8> {
    if a.physical.physical {
        return run_physical(a).await;
    }
    let db = a
        .db
        .clone()
        .ok_or_else(|| exit::UsageError("no database: give --db (or set DATABASE_URL)".into()))?;
    // `--config`: destinations, checks, keys, hooks and settings of a config job; else the
    // flags'. A flag wins over the file, which wins over the default.
    let job = config_job(&a.read.job)?;
    let reading = Reading::new(job.as_ref(), &a.read.from, &a.read.checks, &a.read.decrypt)?;
    let restore = RestorePlan::new(job.as_ref(), reading, &a.hooks, &a.settings, &a.pg)?;
    if let Some(code) = from_replica(&a, &db, &restore).await? {
        return Ok(code);
    }
    let origins = restore.reading.origins()?;
    let candidates = Candidates::find(&origins, &pick(&a.read.which)?).await?;
    let entry = candidates
        .first()
        .expect("find returns at least one backup")
        .entry()
        .clone();
    // Usage errors in the checks show before anything else happens.
    let checks = restore.reading.checks(&a.read.checks, a.read.integrity)?;
    let plan = checks.plan_at(entry.time());
    let target = restore.target(&db, &entry, plan.integrity)?;
    let confirmed = confirmed(
        a.yes,
        target.exists().await?,
        &entry.name.to_string(),
        &target.describe(),
    )?;
    if !confirmed {
        println!("Restore cancelled; nothing was changed.");
        return Ok(exit::OK);
    }
    // From here on SIGINT/SIGTERM interrupt the restore, which rolls back and exits 128+signal.
    let signals = kars_backup::schedule::ShutdownSignals::install()?;
    let options = RestoreOptions {
        plan,
        ..restore.options(signals.graceful())
    };
    let attempts = AttemptOptions {
        fallback: a.fallback,
        max_backups: a.max_attempts.max(1),
        ..a.read.retry.attempts()
    };
    let result = kars_backup::job::restore::restore(
        &candidates,
        &target,
        &options,
        &checks,
        &attempts,
        progress::for_terminal(a.read.json),
    )
    .await;
    let recovered = match result {
        Ok(r) => r,
        Err(failed) => {
            let result = render::attempts_failed(failed, &candidates.unavailable, a.read.json);
            return match signals.received() {
                Some(signal) => interrupted(result, signal),
                None => result,
            };
        }
    };
    if a.read.json {
        render::print_json(&serde_json::json!({
            "ok": true,
            "restore": recovered.report,
            "attempts": recovered.attempts,
            "unavailable": candidates.unavailable,
        }))?;
    } else {
        print!("{}", render::restore(&recovered.report));
        print!(
            "{}",
            render::attempts(&recovered.attempts, &candidates.unavailable)
        );
        println!("Restore completed successfully.");
    }
    Ok(exit::OK)
}

/// `restore --physical`: a base backup and its WAL into a new data directory.
async fn run_physical(a: RestoreArgs) -> anyhow::Result<u8> {
    if a.db.is_some() && std::env::var_os("DATABASE_URL").is_none() {
        return Err(exit::UsageError(
            "--physical restores a whole cluster into --pgdata, not into --db".into(),
        )
        .into());
    }
    if a.physical.pgdata.is_none() {
        return Err(exit::UsageError(
            "restore --physical needs --pgdata DIR: a new or empty data directory".into(),
        )
        .into());
    }
    let (reading, mut options) =
        physical_options(&a.physical, &a.read, a.pg.bin_dir.clone(), None, false)?;
    // SIGINT/SIGTERM stop the scratch server and leave --pgdata as it was found.
    let signals = kars_backup::schedule::ShutdownSignals::install()?;
    options.cancel = signals.graceful();
    let result = kars_backup::job::physical::restore_physical(
        &reading,
        &options,
        progress::for_terminal(a.read.json),
    )
    .await;
    let report = match (result, signals.received()) {
        (Ok(r), _) => r,
        (Err(e), Some(signal)) => return interrupted(Err(e.into()), signal),
        (Err(e), None) => return Err(e.into()),
    };
    if a.read.json {
        render::print_json(&serde_json::json!({ "ok": true, "restore": report }))?;
    } else {
        print!("{}", render::physical_restore(&report));
        println!("Restore completed successfully.");
    }
    Ok(exit::OK)
}

/// `--to-time`, or `--latest` from a destination that holds a replicated database and no
/// backups: the rebuild of the replica goes through the same staged, verified restore.
/// `None` when this is an ordinary backup restore.
async fn from_replica(
    a: &RestoreArgs,
    db: &str,
    restore: &RestorePlan,
) -> anyhow::Result<Option<u8>> {
    let request = ReplicaRequest {
        to_time: a.read.which.to_time,
        latest: a.read.which.latest,
        replica: a.read.replica.clone(),
        ..ReplicaRequest::default()
    };
    let Some(replica) = ReplicaRestore::find(&restore.reading, db, &request).await? else {
        return Ok(None);
    };
    let what = replica.describe();
    let target = replica.target().path().display().to_string();
    if !confirmed(a.yes, replica.target_exists().await?, &what, &target)? {
        println!("Restore cancelled; nothing was changed.");
        return Ok(Some(exit::OK));
    }
    let checks = restore.reading.checks(&a.read.checks, a.read.integrity)?;
    let signals = kars_backup::schedule::ShutdownSignals::install()?;
    let options = replica.options(&checks, restore.options(signals.graceful()));
    let report = match (
        replica.run(&restore.reading, &options).await,
        signals.received(),
    ) {
        (Ok(r), _) => r,
        (Err(e), Some(signal)) => return interrupted(Err(e.into()), signal).map(Some),
        (Err(e), None) => return Err(e.into()),
    };
    if a.read.json {
        render::print_json(&serde_json::json!({ "ok": true, "restore": report }))?;
    } else {
        println!("Restored {what} into {}", report.target);
        for step in &report.steps {
            println!("  {step}");
        }
        println!("Restore completed successfully.");
    }
    Ok(Some(exit::OK))
}

/// Whether to go on: `--yes`, a target that does not exist yet, or the operator's `yes` on a
/// terminal; without a terminal to ask on, a usage error.
fn confirmed(yes: bool, exists: bool, what: &str, target: &str) -> anyhow::Result<bool> {
    if yes || !exists {
        Ok(true)
    } else if std::io::stdin().is_terminal() {
        ask(what, target)
    } else {
        Err(exit::UsageError(format!(
            "refusing to replace {target} without confirmation: there is no terminal to ask on; pass --yes"
        ))
        .into())
    }
}

/// A restore stopped by a signal exits with 128 plus its number, as shells expect (130 for
/// SIGINT, 143 for SIGTERM), after the rollback.
fn interrupted(result: anyhow::Result<u8>, signal: i32) -> anyhow::Result<u8> {
    let code = 128 + signal as u8;
    match result {
        Ok(_) => Ok(code),
        Err(e) => {
            eprintln!("error: {}", exit::error_text(&e));
            Ok(code)
        }
    }
}

/// Asks like the runbook's restore script; true only for `yes`.
fn ask(backup: &str, target: &str) -> anyhow::Result<bool> {
    let mut err = std::io::stderr();
    writeln!(err, "This will restore database {target} from: {backup}")?;
    writeln!(err, "WARNING: This will REPLACE all current data!")?;
    write!(err, "Are you sure? (yes/no): ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}
