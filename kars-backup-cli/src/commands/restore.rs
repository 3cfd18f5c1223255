//! `kars-backup restore`.

use std::io::{BufRead, IsTerminal, Write};

use kars_backup_core::{RestoreHooks, RestoreOptions};

use crate::args::RestoreArgs;
use crate::commands::UsageError;
use crate::{exit, progress, render, resolve};

pub(crate) async fn run(a: RestoreArgs) -> anyhow::Result<u8> {
    let repo = resolve::repository(&a.from)?;
    let entry = resolve::backup(&repo, &a.which).await?;
    let plan = a.checks.plan(a.integrity, entry.time())?;
    let target: kars_backup_core::DynDatabaseSource = if resolve::is_postgres(&a.db.db) {
        let pg = &a.pg;
        std::sync::Arc::new(
            resolve::postgres_source(&a.db.db, pg.pg_bin_dir.as_deref())?
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
    let options = RestoreOptions {
        plan,
        hooks: RestoreHooks {
            stop: a.stop_cmd,
            start: a.start_cmd,
            health_check: a.health_cmd,
            health_check_attempts: a.health_attempts,
            health_check_interval_secs: a.health_interval,
        },
        confirmed: true,
    };
    let report = kars_backup_core::restore(
        &repo,
        &entry,
        target.as_ref(),
        &options,
        progress::for_terminal(a.json),
    )
    .await?;
    if a.json {
        render::print_json(&serde_json::json!({ "ok": true, "restore": report }))?;
    } else {
        print!("{}", render::restore(&report));
        println!("Restore completed successfully.");
    }
    Ok(exit::OK)
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
