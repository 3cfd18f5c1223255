//! What to notify, where, and when: the options the config file maps to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use kars_backup_schedule::RunStatus;

/// When a notifier fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyOn {
    /// Only for failed runs (the default).
    #[default]
    Failure,
    /// Only for successful runs.
    Success,
    /// For every run.
    Always,
}

impl NotifyOn {
    /// True when a run that ended with `status` should be notified.
    pub fn matches(self, status: RunStatus) -> bool {
        match self {
            NotifyOn::Always => true,
            NotifyOn::Failure => status != RunStatus::Success,
            NotifyOn::Success => status == RunStatus::Success,
        }
    }
}

fn default_http_timeout() -> u64 {
    10
}
fn default_command_timeout() -> u64 {
    60
}
fn default_retries() -> u32 {
    2
}
fn default_retry_delay() -> u64 {
    1000
}

/// A webhook: a JSON POST of [`WebhookPayload`](crate::WebhookPayload) after a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WebhookOptions {
    /// The URL (http or https; it may carry a token: it is never logged unredacted).
    pub url: String,
    /// Extra headers (e.g. `Authorization`); their values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// When to send.
    #[serde(default)]
    pub on: NotifyOn,
    /// Per-attempt timeout in seconds (default 10).
    #[serde(default = "default_http_timeout")]
    pub timeout_secs: u64,
    /// Retries after a failed attempt (connection error, timeout, 5xx, 429; default 2).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Delay before the first retry in milliseconds, doubled for each further retry (default 1000).
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
}

impl WebhookOptions {
    /// A webhook for failures with the default timeout and retries.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookOptions {
            url: url.into(),
            headers: BTreeMap::new(),
            on: NotifyOn::default(),
            timeout_secs: default_http_timeout(),
            retries: default_retries(),
            retry_delay_ms: default_retry_delay(),
        }
    }
}

/// A command run with `sh -c` after a run; the run's details are in environment variables
/// (`KARS_JOB`, `KARS_RUN_ID`, `KARS_STATUS`, `KARS_ERROR`, … see
/// [`command_env`](crate::command_env)), never in its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CommandOptions {
    /// The shell command.
    pub command: String,
    /// When to run it.
    #[serde(default)]
    pub on: NotifyOn,
    /// Timeout in seconds; the command is killed after it (default 60).
    #[serde(default = "default_command_timeout")]
    pub timeout_secs: u64,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl CommandOptions {
    /// A command for failures with the default timeout.
    pub fn new(command: impl Into<String>) -> Self {
        CommandOptions {
            command: command.into(),
            on: NotifyOn::default(),
            timeout_secs: default_command_timeout(),
            env: BTreeMap::new(),
        }
    }
}

/// How pings are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PingMethod {
    /// `GET` without a body (the default).
    #[default]
    Get,
    /// `POST` with a short plain-text summary of the run as the body (healthchecks.io shows it
    /// as the ping's log).
    Post,
}

/// Healthcheck-style ping URLs: one at the start of a run, one on success, one on failure.
///
/// Give `url` for the hc-ping convention (start = `<url>/start`, success = `<url>`,
/// fail = `<url>/fail`), and/or `start`, `success`, `fail` explicitly (they win).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PingOptions {
    /// An hc-ping style base URL.
    #[serde(default)]
    pub url: Option<String>,
    /// The URL pinged when a run starts.
    #[serde(default)]
    pub start: Option<String>,
    /// The URL pinged when a run succeeds.
    #[serde(default)]
    pub success: Option<String>,
    /// The URL pinged when a run fails.
    #[serde(default)]
    pub fail: Option<String>,
    /// `get` or `post`.
    #[serde(default)]
    pub method: PingMethod,
    /// Per-attempt timeout in seconds (default 10).
    #[serde(default = "default_http_timeout")]
    pub timeout_secs: u64,
    /// Retries after a failed attempt (default 2).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Delay before the first retry in milliseconds, doubled for each further retry (default 1000).
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
}

impl PingOptions {
    /// hc-ping style pings under `url` (`/start`, ``, `/fail`).
    pub fn hc_ping(url: impl Into<String>) -> Self {
        PingOptions {
            url: Some(url.into()),
            timeout_secs: default_http_timeout(),
            retries: default_retries(),
            retry_delay_ms: default_retry_delay(),
            ..PingOptions::default()
        }
    }

    /// The start URL (explicit, else `<url>/start`).
    pub fn start_url(&self) -> Option<String> {
        self.start
            .clone()
            .or_else(|| self.url.as_deref().map(|u| join(u, "start")))
    }

    /// The success URL (explicit, else `<url>`).
    pub fn success_url(&self) -> Option<String> {
        self.success.clone().or_else(|| self.url.clone())
    }

    /// The failure URL (explicit, else `<url>/fail`).
    pub fn fail_url(&self) -> Option<String> {
        self.fail
            .clone()
            .or_else(|| self.url.as_deref().map(|u| join(u, "fail")))
    }
}

fn join(base: &str, leaf: &str) -> String {
    format!("{}/{leaf}", base.trim_end_matches('/'))
}

/// All notifications of one job (each list may be left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct NotifyOptions {
    /// Webhooks.
    pub webhooks: Vec<WebhookOptions>,
    /// Commands.
    pub commands: Vec<CommandOptions>,
    /// Ping URL sets.
    pub pings: Vec<PingOptions>,
}

impl NotifyOptions {
    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && self.commands.is_empty() && self.pings.is_empty()
    }
}
