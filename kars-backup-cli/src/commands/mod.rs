//! One module per subcommand.

mod backup;
mod config;
mod copy;
mod daemon;
mod demo;
mod drill;
mod inspect;
mod key;
mod list;
mod prune;
mod restore;
mod retention;
mod schedule;
mod status;
mod verify;

use kars_backup::job::Job;

use crate::args::Command;

/// A usage error found by the CLI itself (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// The config job `--config FILE [--job NAME]` names (the file's only job without `--job`).
pub(crate) fn config_job(arg: &crate::args::JobArg) -> anyhow::Result<Option<Job>> {
    let job = arg
        .config
        .as_ref()
        .map(|p| Job::from_file(p, arg.job.as_deref()));
    Ok(job.transpose()?)
}

/// `--latest` or `--backup NAME`.
pub(crate) fn pick(which: &crate::args::Which) -> kars_backup::core::recovery::Pick {
    match &which.backup {
        Some(name) => kars_backup::core::recovery::Pick::Named(name.clone()),
        None => kars_backup::core::recovery::Pick::Latest,
    }
}

/// Runs a subcommand; returns the exit code.
pub(crate) async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Backup(a) => backup::run(a).await,
        Command::List(a) => list::run(a).await,
        Command::Restore(a) => restore::run(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::Copy(a) => copy::run(a).await,
        Command::Prune(a) => prune::run(a).await,
        Command::Retention(c) => retention::run(c).await,
        Command::Status(a) => status::run(a).await,
        Command::Drill(a) => drill::run(a).await,
        Command::Inspect(a) => inspect::run(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::DemoDb(a) => demo::run_demo_db(a).await,
        Command::Config(c) => config::run(c).await,
        Command::Key(c) => key::run(c).await,
        Command::Schedule(a) => schedule::run(a).await,
        Command::Daemon(a) => daemon::run(a).await,
    }
}
