//! Sending notifications: webhooks, commands, pings; with timeouts and retries, never failing
//! the run.

use std::process::Stdio;
use std::time::Duration;

use futures::future::join_all;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::AsyncReadExt;

use kars_backup_schedule::{RunContext, RunReport, RunStatus};

use crate::error::{Error, Result};
use crate::options::{CommandOptions, NotifyOptions, PingMethod, PingOptions, WebhookOptions};
use crate::payload::{WebhookPayload, command_env, finish_text, start_text};
use crate::redact::{error_chain, redact_url};
use crate::replication::ReplicationEvent;

/// The result of one notification: logged, returned, never an error of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// What was notified, safe to log (`webhook https://hooks.example.com/…`,
    /// `ping fail https://hc-ping.com/…`, `command #1`).
    pub target: String,
    /// Attempts made.
    pub attempts: u32,
    /// `None` when delivered; the last error otherwise.
    pub error: Option<String>,
}

impl Delivery {
    /// True when delivered.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Sends one job's notifications.
///
/// ```no_run
/// # async fn demo(report: kars_backup_schedule::RunReport) -> kars_backup_notify::Result<()> {
/// use kars_backup_notify::{Notifier, NotifyOptions, PingOptions, WebhookOptions};
/// let notifier = Notifier::new(NotifyOptions {
///     webhooks: vec![WebhookOptions::new("https://hooks.example.com/T0K3N")],
///     pings: vec![PingOptions::hc_ping("https://hc-ping.com/uuid")],
///     ..Default::default()
/// })?;
/// for d in notifier.run_finished(&report).await {
///     assert!(d.is_ok() || d.error.is_some());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Notifier {
    options: NotifyOptions,
    client: reqwest::Client,
}

impl Notifier {
    /// Checks the options (URLs, header names and values, commands) and builds the HTTP client
    /// (rustls, no redirects followed to other hosts beyond reqwest's default policy).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], [`Error::InvalidHeader`], [`Error::InvalidOptions`],
    /// [`Error::HttpClient`].
    pub fn new(options: NotifyOptions) -> Result<Self> {
        for w in &options.webhooks {
            check_url("webhook", &w.url)?;
            header_map(w)?;
        }
        for c in &options.commands {
            if c.command.trim().is_empty() {
                return Err(Error::InvalidOptions(
                    "a notification command is empty".into(),
                ));
            }
        }
        for p in &options.pings {
            let urls = [
                ("ping start", p.start_url()),
                ("ping success", p.success_url()),
                ("ping fail", p.fail_url()),
            ];
            if urls.iter().all(|(_, u)| u.is_none()) {
                return Err(Error::InvalidOptions(
                    "a ping has no URL: set url (hc-ping style) or start/success/fail".into(),
                ));
            }
            for (what, url) in urls {
                if let Some(url) = url {
                    check_url(what, &url)?;
                }
            }
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("kars-backup/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::HttpClient(error_chain(&e.without_url())))?;
        Ok(Notifier { options, client })
    }

    /// The options.
    pub fn options(&self) -> &NotifyOptions {
        &self.options
    }

    /// Sends the start pings (concurrently); returns one [`Delivery`] per URL.
    pub async fn run_started(&self, ctx: &RunContext) -> Vec<Delivery> {
        let body = start_text(ctx);
        let sends = self.options.pings.iter().filter_map(|p| {
            p.start_url()
                .map(|url| self.ping(p, "start", url, body.clone()))
        });
        let out = join_all(sends).await;
        log_deliveries(&out);
        out
    }

    /// Sends what a finished run calls for (concurrently): webhooks and commands whose `on`
    /// matches the status, and the success or fail pings.
    pub async fn run_finished(&self, report: &RunReport) -> Vec<Delivery> {
        let status = report.status();
        let payload = WebhookPayload::from_report(report);
        let mut sends: Vec<futures::future::BoxFuture<'_, Delivery>> = Vec::new();
        for w in self
            .options
            .webhooks
            .iter()
            .filter(|w| w.on.matches(status))
        {
            sends.push(Box::pin(self.webhook(w, &payload)));
        }
        for (i, c) in self.options.commands.iter().enumerate() {
            if c.on.matches(status) {
                sends.push(Box::pin(run_command(i + 1, c, report)));
            }
        }
        self.end_pings(status, &finish_text(report), &mut sends);
        let out = join_all(sends).await;
        log_deliveries(&out);
        out
    }

    /// Sends a replication's alert or notice (concurrently): to the webhooks and commands that
    /// get failures (a notice goes where its alert went), and the fail ping for an alert, the
    /// success ping for a notice.
    pub async fn replication_event(&self, event: &ReplicationEvent) -> Vec<Delivery> {
        let mut sends: Vec<futures::future::BoxFuture<'_, Delivery>> = Vec::new();
        for w in &self.options.webhooks {
            if w.on.matches(RunStatus::Failure) {
                sends.push(Box::pin(self.webhook(w, event)));
            }
        }
        for (i, c) in self.options.commands.iter().enumerate() {
            if c.on.matches(RunStatus::Failure) {
                let target = format!("command #{}", i + 1);
                sends.push(Box::pin(async move {
                    Delivery {
                        target,
                        attempts: 1,
                        error: command_result(c, event.command_env()).await.err(),
                    }
                }));
            }
        }
        self.end_pings(event.status, &event.text(), &mut sends);
        let out = join_all(sends).await;
        log_deliveries(&out);
        out
    }

    /// The success pings for `status` success, else the fail pings, with `body`.
    fn end_pings<'a>(
        &'a self,
        status: RunStatus,
        body: &str,
        sends: &mut Vec<futures::future::BoxFuture<'a, Delivery>>,
    ) {
        for p in &self.options.pings {
            let (kind, url) = match status {
                RunStatus::Success => ("success", p.success_url()),
                _ => ("fail", p.fail_url()),
            };
            if let Some(url) = url {
                sends.push(Box::pin(self.ping(p, kind, url, body.to_string())));
            }
        }
    }

    async fn webhook<T: serde::Serialize + Sync>(
        &self,
        options: &WebhookOptions,
        payload: &T,
    ) -> Delivery {
        let target = format!("webhook {}", redact_url(&options.url));
        let headers = header_map(options).unwrap_or_default();
        let send = || {
            self.client
                .post(&options.url)
                .headers(headers.clone())
                .json(payload)
                .timeout(Duration::from_secs(options.timeout_secs.max(1)))
                .send()
        };
        with_retries(target, options.retries, options.retry_delay_ms, send).await
    }

    async fn ping(&self, options: &PingOptions, kind: &str, url: String, body: String) -> Delivery {
        let target = format!("ping {kind} {}", redact_url(&url));
        let timeout = Duration::from_secs(options.timeout_secs.max(1));
        let send = || {
            let request = match options.method {
                PingMethod::Get => self.client.get(&url),
                PingMethod::Post => self
                    .client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(body.clone()),
            };
            request.timeout(timeout).send()
        };
        with_retries(target, options.retries, options.retry_delay_ms, send).await
    }
}

fn check_url(what: &'static str, url: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidUrl {
        what,
        url: redact_url(url),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not supported",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".into()));
    }
    Ok(())
}

fn header_map(options: &WebhookOptions) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in &options.headers {
        let invalid = |reason: &str| Error::InvalidHeader {
            name: name.clone(),
            reason: reason.to_string(),
        };
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid("not a valid header name"))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| invalid("the value has characters not allowed in a header"))?;
        value.set_sensitive(true);
        map.insert(header, value);
    }
    Ok(map)
}

/// Sends with up to `retries` retries on connection errors, timeouts, 5xx and 429.
async fn with_retries<F, Fut>(target: String, retries: u32, delay_ms: u64, send: F) -> Delivery
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let mut attempts = 0;
    let mut delay = Duration::from_millis(delay_ms);
    loop {
        attempts += 1;
        let (error, retryable) = match send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Delivery {
                        target,
                        attempts,
                        error: None,
                    };
                }
                let retryable = status.is_server_error() || status.as_u16() == 429;
                (format!("HTTP status {status}"), retryable)
            }
            Err(e) => {
                let retryable = e.is_timeout() || e.is_connect() || e.is_request();
                (error_chain(&e.without_url()), retryable)
            }
        };
        if !retryable || attempts > retries {
            return Delivery {
                target,
                attempts,
                error: Some(error),
            };
        }
        tracing::debug!(notifier = %target, attempt = attempts, error = %error, "notification failed; retrying");
        tokio::time::sleep(delay).await;
        delay = delay.saturating_mul(2);
    }
}

async fn run_command(index: usize, options: &CommandOptions, report: &RunReport) -> Delivery {
    let target = format!("command #{index}");
    let error = command_result(options, command_env(report)).await.err();
    Delivery {
        target,
        attempts: 1,
        error,
    }
}

async fn command_result(
    options: &CommandOptions,
    env: Vec<(String, String)>,
) -> std::result::Result<(), String> {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&options.command)
        .envs(env)
        .envs(&options.env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a timeout can stop the command's children too.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let mut stderr = child.stderr.take();
    let pid = child.id();
    let wait = async {
        let mut text = Vec::new();
        if let Some(err) = stderr.as_mut() {
            // Keep the first 4 KiB and drain the rest so the command never blocks on a full pipe.
            let _ = err.take(4096).read_to_end(&mut text).await;
            let _ = tokio::io::copy(err, &mut tokio::io::sink()).await;
        }
        (child.wait().await, text)
    };
    let timeout = Duration::from_secs(options.timeout_secs.max(1));
    match tokio::time::timeout(timeout, wait).await {
        Err(_) => {
            #[cfg(unix)]
            if let Some(pid) = pid {
                // `kill -KILL -- -PGID`: the shell and everything it started.
                let _ = tokio::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
            }
            let _ = pid;
            Err(format!(
                "timed out after {}s and was killed",
                timeout.as_secs()
            ))
        }
        Ok((Err(e), _)) => Err(format!("cannot wait for the command: {e}")),
        Ok((Ok(status), stderr)) if !status.success() => {
            let stderr = String::from_utf8_lossy(&stderr);
            tracing::debug!(stderr = %stderr.trim(), "notification command's error output");
            Err(format!("exited with {status}"))
        }
        Ok(_) => Ok(()),
    }
}

fn log_deliveries(deliveries: &[Delivery]) {
    for d in deliveries {
        match &d.error {
            None => {
                tracing::debug!(notifier = %d.target, attempts = d.attempts, "notification sent")
            }
            Some(e) => tracing::warn!(
                notifier = %d.target, attempts = d.attempts, error = %e,
                "notification failed (the backup itself is not affected)"
            ),
        }
    }
}
