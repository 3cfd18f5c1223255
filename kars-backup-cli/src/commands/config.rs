//! `kars-backup config check --config FILE`.

use crate::args::{ConfigCheckArgs, ConfigCommand};
use crate::{exit, render};

pub(crate) async fn run(command: ConfigCommand) -> anyhow::Result<u8> {
    match command {
        ConfigCommand::Check(a) => check(a),
    }
}

fn check(a: ConfigCheckArgs) -> anyhow::Result<u8> {
    let options = kars_backup::config::LoadOptions { strict: a.strict };
    let config = match kars_backup::config::load_with(&a.config, &options) {
        Ok(c) => c,
        Err(errors) => {
            let lines: Vec<String> = errors
                .errors
                .iter()
                .map(|e| e.display_in(&errors.file))
                .collect();
            if a.json {
                render::print_json(&serde_json::json!({
                    "ok": false,
                    "file": errors.file,
                    "errors": errors.errors.iter().map(|e| serde_json::json!({
                        "line": e.location.map(|l| l.line),
                        "column": e.location.map(|l| l.column),
                        "message": e.message,
                    })).collect::<Vec<_>>(),
                    "exit_code": exit::USAGE,
                }))?;
            }
            for line in &lines {
                eprintln!("{line}");
            }
            return Ok(exit::USAGE);
        }
    };
    // the scheduler's own view of each schedule: the next three runs
    let now = chrono::Utc::now();
    let next_runs: Vec<(String, chrono_tz::Tz, Vec<chrono::DateTime<chrono::Utc>>)> = config
        .jobs
        .iter()
        .filter_map(|j| {
            let s = j.schedule.as_ref()?;
            let schedule = &s.schedule;
            Some((
                j.name.clone(),
                schedule.time_zone(),
                schedule.upcoming(now, 3),
            ))
        })
        .collect();
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": true,
            "file": a.config,
            "config": kars_backup::config::effective_json(&config),
            "environment": config.env_names(),
            "strict": a.strict,
            "notes": config.notes(),
            "next_runs": next_runs
                .iter()
                .map(|(job, _, runs)| (job.clone(), serde_json::json!(runs)))
                .collect::<serde_json::Map<_, _>>(),
        }))?;
    } else {
        println!(
            "# {}: OK, {} job(s). Effective configuration, secrets redacted:",
            a.config.display(),
            config.jobs.len()
        );
        if !config.env_names().is_empty() {
            println!(
                "# reads from the environment: {}{}",
                config.env_names().join(", "),
                if a.strict {
                    " (strict: every one is set)"
                } else {
                    ""
                }
            );
        }
        for note in config.notes() {
            println!("# note: {note}");
        }
        println!();
        print!("{}", kars_backup::config::effective_toml(&config));
        for (job, tz, runs) in &next_runs {
            let runs: Vec<String> = runs
                .iter()
                .map(|t| t.with_timezone(tz).format("%Y-%m-%d %H:%M %Z").to_string())
                .collect();
            println!("# next runs of {job}: {}", runs.join(", "));
        }
    }
    Ok(exit::OK)
}
