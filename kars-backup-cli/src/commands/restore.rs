//! `kars-backup restore`.

use std::io::{BufRead, IsTerminal, Write};

use kars_backup_core::RestoreOptions;
use kars_backup_core::recovery::{AttemptOptions, Candidates, restore_with_fallback};

use crate::args::RestoreArgs;
use crate::commands::UsageError;
use crate::{exit, progress, render, resolve};

pub(crate) async fn run(a: RestoreArgs) -> anyhow::Result<u8> {
    // `--config`: destinations, checks, keys and hooks of a config job; else the flags'.
    let super::jobs::RestorePlan {
        reading,
        hooks,
        in_use,
        keep_previous,
        pg_bin_dir,
    } = super::jobs::restore_job(&a)?;
    let origins = reading.origins()?;
    let plan_for = |time| reading.plan(&a.checks, a.integrity, time);
    let candidates = Candidates::find(&origins, &resolve::pick(&a.which)).await?;
    let entry = candidates
        .first()
        .expect("find returns at least one backup")
        .entry()
        .clone();
    // Usage errors in the checks show before anything else happens.
    let plan = plan_for(entry.time())?;
    let target: kars_backup_core::DynDatabaseSource = if resolve::is_postgres(&a.db.db) {
        let pg = &a.pg;
        std::sync::Arc::new(
            resolve::postgres_source(&a.db.db, pg_bin_dir.as_deref())?
                .with_restore_options(kars_backup_postgres::PgRestoreOptions {
                    mode: pg.mode,
                    jobs: pg.jobs.unwrap_or(0),
                    tables: pg.tables.clone(),
                    clean: pg.clean,
                })
                .with_restore_checks(plan.integrity),
        )
    } else {
        let mut target = resolve::sqlite_source(&a.db.db)?;
        if entry
            .manifest
            .as_ref()
            .is_some_and(kars_backup_sqlite::is_volume_manifest)
        {
            // A volume backup restores into a directory, even one that does not exist yet.
            target = target.with_mode(kars_backup_sqlite::SourceMode::Volume);
        }
        resolve::shared(target)
    };
    let confirmed = if a.yes || !target.exists().await? {
        true
    } else if std::io::stdin().is_terminal() {
        ask(&entry.name.to_string(), &target.describe())?
    } else {
        return Err(UsageError(format!(
            "refusing to replace {} without confirmation: there is no terminal to ask on; pass --yes",
            target.describe()
        ))
        .into());
    };
    if !confirmed {
        println!("Restore cancelled; nothing was changed.");
        return Ok(exit::OK);
    }
    // From here on SIGINT/SIGTERM interrupt the restore, which rolls back and exits 128+signal.
    let signals = kars_backup_schedule::ShutdownSignals::install()?;
    let options = RestoreOptions {
        plan,
        hooks,
        confirmed: true,
        in_use,
        keep_previous,
        cancel: signals.graceful(),
    };
    let attempts = AttemptOptions {
        fallback: a.fallback,
        max_backups: a.max_attempts.max(1),
        ..a.retry.attempts()
    };
    let plan = |e: &kars_backup_core::BackupEntry| plan_for(e.time()).map_err(resolve::core_error);
    let result = restore_with_fallback(
        &candidates,
        target.as_ref(),
        &options,
        &plan,
        &attempts,
        progress::for_terminal(a.json),
    )
    .await;
    let recovered = match result {
        Ok(r) => r,
        Err(failed) => {
            let result = render::attempts_failed(failed, &candidates.unavailable, a.json);
            return match signals.received() {
                Some(signal) => interrupted(result, signal),
                None => result,
            };
        }
    };
    if a.json {
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

/// A restore stopped by a signal exits with 128 plus its number, as shells expect (130 for
/// SIGINT, 143 for SIGTERM), after the rollback.
fn interrupted(result: anyhow::Result<u8>, signal: i32) -> anyhow::Result<u8> {
    let code = 128 + signal as u8;
    match result {
        Ok(_) => Ok(code),
        Err(e) => {
            eprintln!("error: {}", crate::error_text(&e));
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
