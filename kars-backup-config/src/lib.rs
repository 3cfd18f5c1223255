//! The kars-backup configuration file: backup jobs in TOML.
//!
//! - [`Config`]: `[daemon]`, `[notify]` and one [`JobConfig`] per `[[job]]` (source,
//!   destinations with retention and tiers, compression, [`EncryptionConfig`],
//!   [`VerifyConfig`] → core [`Checks`](kars_backup_core::checks::Checks), `[job.hooks]` and
//!   `[job.restore]` as core's [`HookOptions`](kars_backup_core::settings::HookOptions) and
//!   [`RestoreSettings`](kars_backup_core::settings::RestoreSettings), `[job.postgres]` as
//!   [`DumpOptions`](kars_backup_postgres::DumpOptions), [`ScheduleConfig`], [`NotifyConfig`],
//!   [`ReplicateConfig`] with the replicator's
//!   [`ReplicationSettings`](kars_backup_sqlite::replicate::ReplicationSettings)).
//!   These option types are defined once, in the crate that owns each concept; the command
//!   line flattens the same structs.
//! - [`load`] / [`parse`]: `${VAR}`, `${VAR:-default}` and `${VAR:?message}` interpolation of
//!   string values (after TOML parsing, so a value never changes the file's structure; `$${` is a
//!   literal `${`; [`LoadOptions::strict`] makes every unset variable an error), unknown keys
//!   refused, semantic checks (destination URLs, cron expressions and time zones parsed into the
//!   scheduler's [`Schedule`], duplicate names, unencrypted off-site destinations, …); every
//!   problem as `file:line:col: message` in [`ConfigErrors`]; [`Config::notes`] for what must be
//!   done before the jobs run.
//! - [`effective_toml`] / [`effective_json`]: the configuration with defaults filled in and
//!   secrets redacted.
//! - [`emit`]: crontab lines and systemd units for the jobs' schedules.
//!
//! ```
//! let text = r#"
//! [[job]]
//! name = "kars-sqlite"
//! source = "sqlite:///app/data/assets.db"
//! retention = "daily=7,weekly=4,monthly=12,yearly=all"
//! [[job.destination]]
//! url = "/var/backups/kars"
//! [job.schedule]
//! cron = "0 2 * * *"
//! "#;
//! let config = kars_backup_config::parse(text, "kars-backup.toml".as_ref()).unwrap();
//! assert_eq!(config.jobs[0].name, "kars-sqlite");
//! assert_eq!(config.jobs[0].retention_for(0).unwrap().to_string(), "daily=7,weekly=4,monthly=12,yearly=all");
//! let schedule = &config.jobs[0].schedule.as_ref().unwrap().schedule;
//! assert_eq!(schedule.on_calendar(), ["*-*-* 02:00:00 UTC"]);
//!
//! let err = kars_backup_config::parse("[[job]]\nnmae = 1\n", "k.toml".as_ref()).unwrap_err();
//! assert!(err.to_string().starts_with("k.toml:2:1: unknown field `nmae`"), "{err}");
//! ```

pub mod emit;
mod error;
mod interpolate;
mod model;
mod redact;
mod replicate;
mod validate;

use std::path::Path;

use serde::Deserialize;

pub use error::{ConfigError, ConfigErrors, Location};
pub use kars_backup_core::Tiering;
pub use kars_backup_schedule::Schedule;
pub use model::{
    CommandLine, Config, DEFAULT_RPO_HOURS, DaemonConfig, DestinationConfig, EncryptionConfig,
    JobConfig, JobEncryption, LogFormat, NotifyConfig, PingConfig, QueryConfig, ScheduleConfig,
    SecretUrl, TokenUrl, VerifyConfig,
};
pub use redact::{effective_json, effective_toml};
pub use replicate::{DEFAULT_LAG_ALERT, DEFAULT_WAL_RESET_ALERT, ReplicateConfig};

/// How a configuration file is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LoadOptions {
    /// Every `${NAME}` must be set in the environment: a `${NAME:-default}` whose variable is
    /// unset (or empty) is an error instead of taking its default (`config check --strict`).
    #[serde(default)]
    pub strict: bool,
}

/// Reads and checks a configuration file, interpolating `${VAR}` from the process environment.
///
/// # Errors
/// Every problem found, each with its line and column.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] with options (e.g. [`LoadOptions::strict`]).
///
/// # Errors
/// Every problem found, each with its line and column.
pub fn load_with(path: &Path, options: &LoadOptions) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: path.to_path_buf(),
        errors: vec![ConfigError::whole(format!("cannot read the file: {e}"))],
    })?;
    parse_with(&text, path, |name: &str| std::env::var(name).ok(), options)
}

/// Parses and checks configuration text (`file` names it in errors), interpolating `${VAR}`
/// from the process environment.
///
/// # Errors
/// Every problem found, each with its line and column.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    parse_with_env(text, file, |name: &str| std::env::var(name).ok())
}

/// [`parse`] with variables from `env` instead of the process environment.
///
/// # Errors
/// Every problem found, each with its line and column.
pub fn parse_with_env(
    text: &str,
    file: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    parse_with(text, file, env, &LoadOptions::default())
}

/// [`parse_with_env`] with options.
///
/// # Errors
/// Every problem found, each with its line and column.
pub fn parse_with(
    text: &str,
    file: &Path,
    env: impl Fn(&str) -> Option<String>,
    options: &LoadOptions,
) -> Result<Config, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        file: file.to_path_buf(),
        errors,
    };
    let toml_error = |e: toml::de::Error| match e.span() {
        Some(span) => ConfigError::at(Location::of(text, span.start), e.message().trim()),
        None => ConfigError::whole(e.message().trim()),
    };
    let mut table = toml::de::DeTable::parse(text).map_err(|e| fail(vec![toml_error(e)]))?;
    let mut collected = interpolate::Collected {
        env: &env,
        strict: options.strict,
        subs: Vec::new(),
        names: Vec::new(),
        errors: Vec::new(),
    };
    interpolate::interpolate_table(table.get_mut(), text, &mut collected);
    let interpolate::Collected {
        subs: substitutions,
        names: env_names,
        mut errors,
        ..
    } = collected;
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.location);
        return Err(fail(errors));
    }
    let spans_table = table.clone();
    let mut config = Config::deserialize(toml::de::Deserializer::from(table))
        .map_err(|e| fail(vec![toml_error(e)]))?;
    config.substitutions = substitutions;
    config.env_names = env_names;
    config.notes = validate::notes(&config);
    let spans = validate::Spans {
        root: &spans_table,
        source: text,
    };
    let errors = validate::validate(&config, &spans);
    if errors.is_empty() {
        for job in &mut config.jobs {
            if let Some(level) = job.compression_level.take() {
                job.compression =
                    validate::with_level(job.compression, level).expect("checked by validate");
            }
        }
        Ok(config)
    } else {
        Err(fail(errors))
    }
}
