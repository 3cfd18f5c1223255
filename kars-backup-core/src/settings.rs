//! What a restore does around the database, as the operator gives it — in a configuration
//! file's `[job.hooks]` and `[job.restore]`, or as command-line flags (`clap` feature): one
//! type each, with `Option` fields so that "not given" lets the next layer decide
//! ([`Merge`]: a flag wins over the file, which wins over the default).
//!
//! ```
//! use kars_backup_core::merge::merge;
//! use kars_backup_core::settings::HookOptions;
//!
//! let file = HookOptions { stop: Some("systemctl stop kars".into()), health_attempts: Some(10), ..HookOptions::default() };
//! let flags = HookOptions { health_attempts: Some(3), ..HookOptions::default() };
//! let hooks = merge(flags, Some(file)).resolve();
//! assert_eq!(hooks.stop.as_deref(), Some("systemctl stop kars"));
//! assert_eq!(hooks.health_check_attempts, 3);
//! assert_eq!(hooks.timeout_secs, 300); // the default
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::merge::Merge;
use crate::restore::RestoreHooks;
use crate::retention::parse_duration;
use crate::source::InUsePolicy;

/// Commands around a restore (run with `sh -c`) and their timing; what is not given takes
/// [`RestoreHooks`]' defaults. `Debug` leaves the commands out (they may hold secrets).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Application"))]
pub struct HookOptions {
    /// Command that stops the application before the swap (run with `sh -c`).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long = "stop-cmd", value_name = "CMD"))]
    pub stop: Option<String>,

    /// Command that starts the application after the swap (and after a rollback). It may leave
    /// the application running in the background: the restore waits for the command to exit,
    /// not for its output to close.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long = "start-cmd", value_name = "CMD"))]
    pub start: Option<String>,

    /// Health check after the start; exit 0 means healthy, else the restore is rolled back.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long = "health-cmd", value_name = "CMD"))]
    pub health: Option<String>,

    /// Failed health checks (after the start period) before rolling back [default: 5].
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub health_attempts: Option<u32>,

    /// Time between health-check attempts, e.g. 2s [default: 2s].
    #[serde(default, deserialize_with = "opt_seconds")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "SECS", value_parser = parse_seconds))]
    pub health_interval: Option<u64>,

    /// Time after the start during which failed health checks do not count (the application is
    /// still starting; Docker's start period), e.g. 30s [default: 0s].
    #[serde(default, deserialize_with = "opt_seconds")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION", value_parser = parse_seconds))]
    pub health_start_period: Option<u64>,

    /// How long one health-check attempt may run before it counts as failed [default: 30s].
    #[serde(default, deserialize_with = "opt_seconds")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION", value_parser = parse_seconds))]
    pub health_timeout: Option<u64>,

    /// How long the stop and start commands may run; past it their whole process group is
    /// killed and the restore fails and rolls back [default: 5m].
    #[serde(default, deserialize_with = "opt_seconds")]
    #[cfg_attr(
        feature = "clap",
        arg(long = "hook-timeout", value_name = "DURATION", value_parser = parse_seconds)
    )]
    pub timeout: Option<u64>,
}

impl fmt::Debug for HookOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |c: &Option<String>| c.as_ref().map(|c| format!("<{} bytes>", c.len()));
        f.debug_struct("HookOptions")
            .field("stop", &hidden(&self.stop))
            .field("start", &hidden(&self.start))
            .field("health", &hidden(&self.health))
            .field("health_attempts", &self.health_attempts)
            .field("health_interval", &self.health_interval)
            .field("health_start_period", &self.health_start_period)
            .field("health_timeout", &self.health_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HookOptions {
    /// The hooks a restore runs: what is given, else [`RestoreHooks`]' defaults.
    pub fn resolve(&self) -> RestoreHooks {
        let d = RestoreHooks::default();
        RestoreHooks {
            stop: self.stop.clone(),
            start: self.start.clone(),
            health_check: self.health.clone(),
            health_check_attempts: self.health_attempts.unwrap_or(d.health_check_attempts),
            health_check_interval_secs: self
                .health_interval
                .unwrap_or(d.health_check_interval_secs),
            health_check_start_period_secs: self
                .health_start_period
                .unwrap_or(d.health_check_start_period_secs),
            health_check_timeout_secs: self.health_timeout.unwrap_or(d.health_check_timeout_secs),
            timeout_secs: self.timeout.unwrap_or(d.timeout_secs),
        }
    }
}

impl Merge for HookOptions {
    fn merge(self, lower: Self) -> Self {
        HookOptions {
            stop: self.stop.or(lower.stop),
            start: self.start.or(lower.start),
            health: self.health.or(lower.health),
            health_attempts: self.health_attempts.or(lower.health_attempts),
            health_interval: self.health_interval.or(lower.health_interval),
            health_start_period: self.health_start_period.or(lower.health_start_period),
            health_timeout: self.health_timeout.or(lower.health_timeout),
            timeout: self.timeout.or(lower.timeout),
        }
    }
}

/// How a restore treats the application that has the target open, and the previous database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Application"))]
pub struct RestoreSettings {
    /// Previous copies of the target to keep after a successful restore, the one it just made
    /// included (`<db>.pre-restore-<time>`, `<db>_pre_restore_<time>`,
    /// `DATA_DIR/.kars-pre-restore-<time>/`); older ones are removed. 0 removes that one too once
    /// the health check passed [default: 1].
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", help_heading = None))]
    pub keep_previous: Option<u32>,

    /// What to do when other processes have the target open (`in-use` in the file: `refuse`,
    /// `live` or `terminate-sessions`; the flags `--live` and `--terminate-connections`).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(skip))]
    pub in_use: Option<InUsePolicy>,

    /// Restore into a database that the application keeps open: the verified data is written
    /// into it through the engine's own online mechanism (SQLite: the online backup API, the
    /// application keeps its connections; PostgreSQL: with --mode in-place, one transaction its
    /// sessions stay connected through). Without it, a target that other processes have open is
    /// refused (exit 3).
    #[serde(skip)]
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "terminate_connections"))]
    pub live: bool,

    /// PostgreSQL: end the application's sessions on the target database at the swap (it
    /// reconnects to the restored database) instead of refusing.
    #[serde(skip)]
    #[cfg_attr(feature = "clap", arg(long))]
    pub terminate_connections: bool,
}

impl RestoreSettings {
    /// The in-use policy given: `--live`, `--terminate-connections`, else `in_use`.
    pub fn in_use_given(&self) -> Option<InUsePolicy> {
        if self.live {
            Some(InUsePolicy::Live)
        } else if self.terminate_connections {
            Some(InUsePolicy::TerminateSessions)
        } else {
            self.in_use
        }
    }

    /// The in-use policy (default: refuse).
    pub fn in_use(&self) -> InUsePolicy {
        self.in_use_given().unwrap_or(InUsePolicy::Refuse)
    }

    /// Previous copies to keep (default 1).
    pub fn keep_previous(&self) -> u32 {
        self.keep_previous.unwrap_or(1)
    }
}

impl Merge for RestoreSettings {
    fn merge(self, lower: Self) -> Self {
        RestoreSettings {
            keep_previous: self.keep_previous.or(lower.keep_previous),
            in_use: self.in_use_given().or(lower.in_use_given()),
            live: false,
            terminate_connections: false,
        }
    }
}

/// A duration in whole seconds: `30s`, `5m`, `1h`, or a bare number of seconds.
///
/// # Errors
/// A duration that does not parse, or a negative one.
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    parse_duration(s).and_then(|d| {
        u64::try_from(d.num_seconds()).map_err(|_| format!("duration {s:?} must not be negative"))
    })
}

/// A duration string of the file (`2s`, `5m`) as seconds.
fn opt_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    let d = parse_duration(&s).map_err(serde::de::Error::custom)?;
    Ok(Some(d.num_seconds().max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::merge;

    #[test]
    fn hooks_flag_wins_over_file_wins_over_default() {
        let file = HookOptions {
            stop: Some("file-stop".into()),
            start: Some("file-start".into()),
            health_attempts: Some(9),
            health_interval: Some(7),
            timeout: Some(60),
            ..HookOptions::default()
        };
        let flags = HookOptions {
            start: Some("flag-start".into()),
            health_interval: Some(1),
            health_timeout: Some(5),
            ..HookOptions::default()
        };
        let h = merge(flags, Some(file)).resolve();
        assert_eq!(h.stop.as_deref(), Some("file-stop"));
        assert_eq!(h.start.as_deref(), Some("flag-start"));
        assert_eq!(h.health_check, None);
        assert_eq!(h.health_check_attempts, 9);
        assert_eq!(h.health_check_interval_secs, 1);
        assert_eq!(h.health_check_timeout_secs, 5);
        assert_eq!(h.health_check_start_period_secs, 0);
        assert_eq!(h.timeout_secs, 60);
        assert_eq!(
            merge(HookOptions::default(), None).resolve(),
            RestoreHooks::default()
        );
    }

    #[test]
    fn restore_flag_wins_over_file_wins_over_default() {
        let file = RestoreSettings {
            keep_previous: Some(3),
            in_use: Some(InUsePolicy::TerminateSessions),
            ..RestoreSettings::default()
        };
        let live = RestoreSettings {
            live: true,
            ..RestoreSettings::default()
        };
        let merged = merge(live, Some(file.clone()));
        assert_eq!(merged.in_use(), InUsePolicy::Live);
        assert_eq!(merged.keep_previous(), 3);
        let keep = RestoreSettings {
            keep_previous: Some(0),
            ..RestoreSettings::default()
        };
        let merged = merge(keep, Some(file));
        assert_eq!(merged.in_use(), InUsePolicy::TerminateSessions);
        assert_eq!(merged.keep_previous(), 0);
        let none = merge(RestoreSettings::default(), None);
        assert_eq!(
            (none.in_use(), none.keep_previous()),
            (InUsePolicy::Refuse, 1)
        );
    }

    #[test]
    fn file_durations_are_seconds() {
        let h: HookOptions =
            serde_json::from_str(r#"{"health-interval": "2m", "timeout": "1h", "stop": "x"}"#)
                .unwrap();
        assert_eq!((h.health_interval, h.timeout), (Some(120), Some(3600)));
        assert!(!format!("{h:?}").contains('x'));
        assert_eq!(parse_seconds("90"), Ok(90));
        assert_eq!(parse_seconds("5m"), Ok(300));
    }
}
