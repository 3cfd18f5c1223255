//! What notifications say: the webhook's JSON body and the command's environment.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use kars_backup_schedule::{DestinationResult, RunContext, RunReport, RunStatus, Trigger};

/// The JSON body of a webhook (and `KARS_REPORT_JSON` of a command).
///
/// ```json
/// {"event":"run-finished","job":"asset-data","run_id":"20241218T020000Z-3f9a1c",
///  "status":"failure","trigger":"scheduled","error":"destination s3://b/p failed: …",
///  "scheduled_at":"2024-12-18T02:00:00Z","started_at":"…","finished_at":"…",
///  "duration_seconds":12.5,"size_bytes":1048576,
///  "destinations":[{"name":"file:///backups","status":"success","bytes":1048576,"error":null}],
///  "host":"db-1","tool":"kars-backup 0.1.0"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// Always `"run-finished"`.
    pub event: String,
    /// The job.
    pub job: String,
    /// The run id (also in the logs and the manifest).
    pub run_id: String,
    /// `"success"` or `"failure"`.
    pub status: RunStatus,
    /// `"scheduled"`, `"catch-up"` or `"manual"`.
    pub trigger: Trigger,
    /// The error of a failed run.
    pub error: Option<String>,
    /// The slot the run was for (RFC 3339, UTC).
    pub scheduled_at: DateTime<Utc>,
    /// Start (RFC 3339, UTC).
    pub started_at: DateTime<Utc>,
    /// End (RFC 3339, UTC).
    pub finished_at: DateTime<Utc>,
    /// End minus start.
    pub duration_seconds: f64,
    /// The archive's size.
    pub size_bytes: Option<u64>,
    /// Per destination results.
    pub destinations: Vec<DestinationResult>,
    /// The host label (`KARS_BACKUP_HOST` or the host name).
    pub host: String,
    /// `kars-backup <version>`.
    pub tool: String,
}

impl WebhookPayload {
    /// The payload for a finished run.
    pub fn from_report(report: &RunReport) -> Self {
        WebhookPayload {
            event: "run-finished".into(),
            job: report.job.clone(),
            run_id: report.run_id.clone(),
            status: report.status(),
            trigger: report.trigger,
            error: report.outcome.error.clone(),
            scheduled_at: report.scheduled_at,
            started_at: report.started_at,
            finished_at: report.finished_at,
            duration_seconds: report.duration().as_secs_f64(),
            size_bytes: report.outcome.bytes,
            destinations: report.outcome.destinations.clone(),
            host: kars_backup_core::host_label(),
            tool: concat!("kars-backup ", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The environment a notification command gets for a finished run:
///
/// | variable | value |
/// |---|---|
/// | `KARS_EVENT` | `run-finished` |
/// | `KARS_JOB`, `KARS_RUN_ID` | the job, the run id |
/// | `KARS_STATUS` | `success` or `failure` |
/// | `KARS_TRIGGER` | `scheduled`, `catch-up`, `manual` |
/// | `KARS_ERROR` | the error (empty on success) |
/// | `KARS_SCHEDULED_AT`, `KARS_STARTED_AT`, `KARS_FINISHED_AT` | RFC 3339, UTC |
/// | `KARS_DURATION_SECONDS` | e.g. `12.500` |
/// | `KARS_SIZE_BYTES` | the archive size (empty if unknown) |
/// | `KARS_DESTINATIONS` | destination names, comma-separated |
/// | `KARS_FAILED_DESTINATIONS` | the failed ones, comma-separated |
/// | `KARS_HOST` | the host label |
/// | `KARS_REPORT_JSON` | the [`WebhookPayload`] as JSON |
pub fn command_env(report: &RunReport) -> Vec<(String, String)> {
    let payload = WebhookPayload::from_report(report);
    let names = |pred: &dyn Fn(&DestinationResult) -> bool| {
        report
            .outcome
            .destinations
            .iter()
            .filter(|d| pred(d))
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut env = vec![
        ("KARS_EVENT", "run-finished".to_string()),
        ("KARS_JOB", report.job.clone()),
        ("KARS_RUN_ID", report.run_id.clone()),
        ("KARS_STATUS", report.status().to_string()),
        ("KARS_TRIGGER", report.trigger.to_string()),
        (
            "KARS_ERROR",
            report.outcome.error.clone().unwrap_or_default(),
        ),
        ("KARS_SCHEDULED_AT", ts(report.scheduled_at)),
        ("KARS_STARTED_AT", ts(report.started_at)),
        ("KARS_FINISHED_AT", ts(report.finished_at)),
        (
            "KARS_DURATION_SECONDS",
            format!("{:.3}", report.duration().as_secs_f64()),
        ),
        (
            "KARS_SIZE_BYTES",
            report
                .outcome
                .bytes
                .map(|b| b.to_string())
                .unwrap_or_default(),
        ),
        ("KARS_DESTINATIONS", names(&|_| true)),
        (
            "KARS_FAILED_DESTINATIONS",
            names(&|d| d.status != RunStatus::Success),
        ),
        ("KARS_HOST", payload.host.clone()),
    ];
    env.push((
        "KARS_REPORT_JSON",
        serde_json::to_string(&payload).unwrap_or_default(),
    ));
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The plain-text body of a `POST` ping: one line for start, a short summary for the end.
pub(crate) fn start_text(ctx: &RunContext) -> String {
    format!(
        "kars-backup job {} run {} started ({}, slot {})\n",
        ctx.job,
        ctx.run_id,
        ctx.trigger,
        ts(ctx.scheduled_at)
    )
}

pub(crate) fn finish_text(report: &RunReport) -> String {
    let mut text = format!(
        "kars-backup job {} run {}: {} after {:.1}s",
        report.job,
        report.run_id,
        report.status(),
        report.duration().as_secs_f64()
    );
    if let Some(b) = report.outcome.bytes {
        text.push_str(&format!(", {b} bytes"));
    }
    text.push('\n');
    if let Some(e) = &report.outcome.error {
        text.push_str("error: ");
        text.push_str(e);
        text.push('\n');
    }
    for d in &report.outcome.destinations {
        text.push_str(&format!("destination {}: {}", d.name, d.status));
        if let Some(e) = &d.error {
            text.push_str(&format!(" ({e})"));
        }
        text.push('\n');
    }
    // healthchecks.io keeps the first 100 kB of a ping body.
    if text.len() > 10_000 {
        let mut cut = 10_000;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n…\n");
    }
    text
}
