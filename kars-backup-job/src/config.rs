//! Jobs of a configuration file: load it (every problem as `file:line:col: message`), pick
//! jobs by name, and where their locks and catch-up state live.

use std::path::{Path, PathBuf};

use kars_backup_config::{Config, JobConfig};

use crate::error::{Error, Result};

/// Loads and checks a configuration file ([`kars_backup_config::load`]).
///
/// # Errors
/// [`Error::Config`] with every problem of the file.
pub fn load_config(path: &Path) -> Result<Config> {
    Ok(kars_backup_config::load(path)?)
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

/// The jobs named (all when none), in file order.
///
/// # Errors
/// [`Error::Usage`] for a name the file does not have.
pub fn select_jobs<'a>(config: &'a Config, names: &[String]) -> Result<Vec<&'a JobConfig>> {
    for name in names {
        if config.job(name).is_none() {
            return Err(Error::usage(format!(
                "no job {name:?} in the config; its jobs: {}",
                job_names(config)
            )));
        }
    }
    Ok(config
        .jobs
        .iter()
        .filter(|j| names.is_empty() || names.contains(&j.name))
        .collect())
}

/// The job named `name`, or the file's only job without a name.
///
/// # Errors
/// [`Error::Usage`] for an unknown name, or no name in a file with several jobs.
pub fn one_job<'a>(config: &'a Config, name: Option<&str>) -> Result<&'a JobConfig> {
    match name {
        Some(n) => Ok(select_jobs(config, &[n.to_string()])?[0]),
        None if config.jobs.len() == 1 => Ok(&config.jobs[0]),
        None => Err(Error::usage(format!(
            "the config has several jobs: name one with --job ({})",
            job_names(config)
        ))),
    }
}

/// Where locks and catch-up state live: `[daemon] state-dir`, else systemd's
/// `STATE_DIRECTORY`, else `/var/lib/kars-backup` for root, else `~/.local/state/kars-backup`.
pub fn state_dir(config: &Config) -> PathBuf {
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
