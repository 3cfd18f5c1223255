//! `kars-backup`: the command-line front of the kars-backup libraries. It parses arguments,
//! builds sources and sinks, calls the library and prints results; no backup logic lives here.

mod args;
mod commands;
mod exit;
mod progress;
mod render;

use std::process::ExitCode;

use kars_backup::config::LogFormat;

use crate::args::{Cli, Command, ConfigCommand, KeyCommand, PgCommand};
use crate::exit::{code_of, error_text};

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Some(message) = flags_beside_config(&matches) {
        eprintln!("error: {message}");
        return ExitCode::from(exit::USAGE);
    }
    init_logging(cli.verbose, log_format(&cli));
    let json = cli.command.wants_json();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = code_of(&err);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": error_text(&err), "exit_code": code })
                );
            }
            eprintln!("error: {}", error_text(&err));
            ExitCode::from(code)
        }
    }
}

/// `backup --config` takes everything from the file: flags that would be ignored are refused.
fn flags_beside_config(matches: &clap::ArgMatches) -> Option<String> {
    let ("backup", sub) = matches.subcommand()? else {
        return None;
    };
    sub.get_one::<std::path::PathBuf>("config")?;
    let allowed = ["config", "job", "json", "verbose", "log_format"];
    let command = <Cli as clap::CommandFactory>::command();
    let backup = command.find_subcommand("backup")?;
    let flag = |id: &str| {
        backup
            .get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_long())
            .map_or_else(|| id.replace('_', "-"), str::to_string)
    };
    let given: Vec<String> = sub
        .ids()
        .map(|id| id.as_str())
        .filter(|id| !allowed.contains(id))
        .filter(|id| sub.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .map(|id| format!("--{}", flag(id)))
        .collect();
    (!given.is_empty()).then(|| {
        format!(
            "--config takes the job from the file; {} cannot be given with it (put it in the job's table, or drop --config)",
            given.join(", ")
        )
    })
}

/// The log format: `--log-format`, else (daemon, `backup --config`) the config's `[daemon]
/// log-format`, else human.
fn log_format(cli: &Cli) -> LogFormat {
    let path = match &cli.command {
        Command::Daemon(a) => Some(&a.config),
        Command::Backup(a) => a.config.as_ref(),
        _ => None,
    };
    let file = || {
        path.and_then(|p| kars_backup::config::load(p).ok())
            .and_then(|c| c.daemon.log_format)
    };
    cli.log_format.or_else(file).unwrap_or(LogFormat::Human)
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // Hook commands' output (stop/start/health check) is shown as it comes, also without -v.
    let default = match verbose {
        0 => "warn,kars_backup_core::hook=info",
        1 => "info",
        _ => "debug",
    };
    let filter =
        EnvFilter::try_from_env("KARS_BACKUP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

impl Command {
    fn wants_json(&self) -> bool {
        match self {
            Command::Backup(a) => a.json,
            Command::List(a) => a.json,
            Command::Restore(a) => a.read.json,
            Command::Verify(a) => a.read.json,
            Command::Copy(a) => a.json,
            Command::Prune(a) => a.json,
            Command::Retention(_) => true,
            Command::Status(a) => a.json,
            Command::Drill(a) => a.verify.read.json,
            Command::Inspect(a) => a.json,
            Command::Demo(a) => a.json,
            Command::DemoDb(_) => false,
            Command::Config(ConfigCommand::Check(a)) => a.json,
            Command::Key(KeyCommand::Init(a)) => a.json,
            Command::Key(KeyCommand::Show(a)) => a.json,
            Command::Schedule(_) | Command::Daemon(_) | Command::Replicate(_) => false,
            Command::Pg(PgCommand::ArchiveWal(a)) => a.json,
            Command::Pg(PgCommand::FetchWal(a)) => a.json,
            Command::Pg(PgCommand::PushWal(a)) => a.json,
            Command::Pg(PgCommand::ReceiveWal(_)) => false,
            Command::Pg(PgCommand::WalStatus(a)) => a.json,
        }
    }
}
