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
mod pg;
mod prune;
mod replicate;
mod restore;
mod retention;
mod schedule;
mod shared;
mod status;
mod verify;

use crate::args::Command;

/// Runs a subcommand; returns the exit code.
pub(crate) async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Backup(a) => backup::run(a).await,
        Command::List(a) => list::run(a).await,
        Command::Restore(a) => restore::run(a).await,
        Command::Replicate(a) => replicate::run(a).await,
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
        Command::Pg(c) => pg::run(c).await,
    }
}
