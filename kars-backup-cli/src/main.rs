//! `kars-backup`: the command-line front of the kars-backup libraries. It parses arguments,
//! builds sources and sinks, calls the library and prints results; no backup logic lives here.

mod args;
mod commands;
mod progress;
mod render;

use std::process::ExitCode;

use kars_backup::core::ErrorCategory;

use kars_backup::config::LogFormat;

use crate::args::{Cli, Command};

/// Exit codes, documented in `--help` and docs/operators/exit-codes.md.
pub(crate) mod exit {
    /// Success.
    pub(crate) const OK: u8 = 0;
    /// An internal or unclassified error.
    pub(crate) const INTERNAL: u8 = 1;
    /// Bad flags or input, or a restore that was not confirmed.
    pub(crate) const USAGE: u8 = 2;
    /// The database (or a hook around it) failed.
    pub(crate) const SOURCE: u8 = 3;
    /// A storage destination failed (also a backup that failed at some destinations).
    pub(crate) const STORAGE: u8 = 4;
    /// Verification failed: checksum, integrity, row counts, test queries (also `status` when a
    /// destination's last drill failed).
    pub(crate) const VERIFICATION: u8 = 5;
    /// `status`: a destination's newest backup is older than the RPO target (or missing);
    /// `drill`: the RTO or RPO target was missed.
    pub(crate) const RPO_MISSED: u8 = 6;
    /// Interrupted (SIGINT; a restore stopped by SIGTERM exits with 143), after the rollback.
    pub(crate) const INTERRUPTED: u8 = 130;
}

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
            let code = exit_code_of(&err);
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

/// The error and its causes on one line, leaving out causes already quoted by their parent.
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    kars_backup::job::error_text(err.as_ref())
}

/// Maps an error to its exit code through the library error's category.
pub(crate) fn exit_code_of(err: &anyhow::Error) -> u8 {
    let code = |category: Option<ErrorCategory>| match category {
        Some(ErrorCategory::Usage) => exit::USAGE,
        Some(ErrorCategory::Source) => exit::SOURCE,
        Some(ErrorCategory::Storage) => exit::STORAGE,
        Some(ErrorCategory::Verification) => exit::VERIFICATION,
        Some(ErrorCategory::Interrupted) => exit::INTERRUPTED,
        _ => exit::INTERNAL,
    };
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<kars_backup::job::Error>() {
            return code(e.category());
        }
        if let Some(e) = cause.downcast_ref::<kars_backup::core::Error>() {
            return code(Some(e.category()));
        }
        if cause.downcast_ref::<commands::UsageError>().is_some() {
            return exit::USAGE;
        }
    }
    exit::INTERNAL
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
            Command::Config(crate::args::ConfigCommand::Check(a)) => a.json,
            Command::Key(crate::args::KeyCommand::Init(a)) => a.json,
            Command::Key(crate::args::KeyCommand::Show(a)) => a.json,
            Command::Schedule(_) | Command::Daemon(_) => false,
        }
    }
}
