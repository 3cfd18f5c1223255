//! `kars-backup`: the command-line front of the kars-backup libraries. It parses arguments,
//! builds sources and sinks, calls the library and prints results; no backup logic lives here.

mod args;
mod commands;
mod progress;
mod render;
mod resolve;

use std::process::ExitCode;

use clap::Parser;
use kars_backup_core::ErrorCategory;

use crate::args::{Cli, Command, LogFormat};

/// Exit codes, documented in `--help` and the README.
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
    /// Verification failed: checksum, integrity, row counts, test queries.
    pub(crate) const VERIFICATION: u8 = 5;
    /// `status`: a destination's newest backup is older than the RPO target (or missing);
    /// `drill`: the RTO or RPO target was missed.
    pub(crate) const RPO_MISSED: u8 = 6;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
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

/// The error and its causes on one line, leaving out causes already quoted by their parent.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// Maps an error to its exit code through the library error's category.
fn exit_code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<kars_backup_core::Error>() {
            return match e.category() {
                ErrorCategory::Usage => exit::USAGE,
                ErrorCategory::Source => exit::SOURCE,
                ErrorCategory::Storage => exit::STORAGE,
                ErrorCategory::Verification => exit::VERIFICATION,
                _ => exit::INTERNAL,
            };
        }
        if cause.downcast_ref::<commands::UsageError>().is_some() {
            return exit::USAGE;
        }
    }
    exit::INTERNAL
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
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
            Command::Restore(a) => a.json,
            Command::Verify(a) => a.json,
            Command::Copy(a) => a.json,
            Command::Prune(a) => a.json,
            Command::Retention(_) => true,
            Command::Status(a) => a.json,
            Command::Drill(a) => a.verify.json,
            Command::Inspect(a) => a.json,
            Command::Demo(a) => a.json,
            Command::DemoDb(_) => false,
        }
    }
}
