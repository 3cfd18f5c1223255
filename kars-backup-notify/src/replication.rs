//! Alerts of a continuous replication, which has no runs: the replicator failed, a destination
//! lags or caught up again, the WAL was reset often. Sent by
//! [`Notifier::replication_event`](crate::Notifier::replication_event) to the same webhooks,
//! commands and pings as failed backups.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use kars_backup_schedule::RunStatus;

/// What happened to a replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationEventKind {
    /// The replicator stopped with an error (or stopped by itself); it is restarted after a
    /// delay. Sent for every failure.
    Failed,
    /// The replicator runs again after failing.
    Restored,
    /// A destination lags past the alert threshold (once per episode).
    Lagging,
    /// The lagging destination caught up (ends the episode).
    CaughtUp,
    /// The WAL was reset behind the replicator's back this many times within the window
    /// (each reset forces a new snapshot); once per episode.
    WalResets,
    /// The WAL resets became rare again (ends the episode).
    WalResetsCalm,
}

impl ReplicationEventKind {
    /// The `event` of the webhook's JSON and `KARS_EVENT` of a command:
    /// `replication-failed`, `replication-restored`, `replication-lagging`,
    /// `replication-caught-up`, `replication-wal-resets`, `replication-wal-resets-calm`.
    pub fn event(self) -> &'static str {
        match self {
            ReplicationEventKind::Failed => "replication-failed",
            ReplicationEventKind::Restored => "replication-restored",
            ReplicationEventKind::Lagging => "replication-lagging",
            ReplicationEventKind::CaughtUp => "replication-caught-up",
            ReplicationEventKind::WalResets => "replication-wal-resets",
            ReplicationEventKind::WalResetsCalm => "replication-wal-resets-calm",
        }
    }

    /// An alert ([`RunStatus::Failure`]) or the notice that one is over
    /// ([`RunStatus::Success`]).
    pub fn status(self) -> RunStatus {
        match self {
            ReplicationEventKind::Failed
            | ReplicationEventKind::Lagging
            | ReplicationEventKind::WalResets => RunStatus::Failure,
            ReplicationEventKind::Restored
            | ReplicationEventKind::CaughtUp
            | ReplicationEventKind::WalResetsCalm => RunStatus::Success,
        }
    }
}

/// One alert or notice of a replication; its JSON is the webhook's body:
///
/// ```json
/// {"event":"replication-lagging","job":"kars-sqlite","database":"assets.db",
///  "destination":"s3://backups/kars","status":"failure",
///  "message":"the replica at s3://backups/kars lags 75 s behind (alert at 60 s); last error: …",
///  "lag_seconds":75.2,"threshold_seconds":60.0,"wal_resets":null,
///  "at":"2026-12-05T10:00:00Z","host":"db-1","tool":"kars-backup 0.1.0"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationEvent {
    /// `replication-…` (see [`ReplicationEventKind::event`]).
    pub event: String,
    /// The job.
    pub job: String,
    /// The replicated database (its file name, the replica's name).
    pub database: String,
    /// The destination (redacted) for lag events.
    pub destination: Option<String>,
    /// `"failure"` for an alert, `"success"` for the notice that it is over.
    pub status: RunStatus,
    /// What happened and what to do, for a person.
    pub message: String,
    /// The destination's lag.
    pub lag_seconds: Option<f64>,
    /// The alert threshold (lag in seconds, or WAL resets per window).
    pub threshold_seconds: Option<f64>,
    /// WAL resets within the window.
    pub wal_resets: Option<u64>,
    /// When (RFC 3339, UTC).
    pub at: DateTime<Utc>,
    /// The host label (`KARS_BACKUP_HOST` or the host name).
    pub host: String,
    /// `kars-backup <version>`.
    pub tool: String,
}

impl ReplicationEvent {
    /// An event of `kind` of `job`'s replication of `database`, now.
    pub fn new(
        kind: ReplicationEventKind,
        job: impl Into<String>,
        database: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ReplicationEvent {
            event: kind.event().to_string(),
            job: job.into(),
            database: database.into(),
            destination: None,
            status: kind.status(),
            message: message.into(),
            lag_seconds: None,
            threshold_seconds: None,
            wal_resets: None,
            at: Utc::now(),
            host: kars_backup_core::host_label(),
            tool: concat!("kars-backup ", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    /// At `destination`.
    #[must_use]
    pub fn at_destination(mut self, destination: impl Into<String>) -> Self {
        self.destination = Some(destination.into());
        self
    }

    /// With the lag and its threshold, in seconds.
    #[must_use]
    pub fn with_lag(mut self, lag: f64, threshold: f64) -> Self {
        self.lag_seconds = Some(lag);
        self.threshold_seconds = Some(threshold);
        self
    }

    /// With the WAL resets counted within the window.
    #[must_use]
    pub fn with_wal_resets(mut self, resets: u64) -> Self {
        self.wal_resets = Some(resets);
        self
    }

    /// The environment a notification command gets: `KARS_EVENT`, `KARS_JOB`, `KARS_STATUS`
    /// (`failure`/`success`), `KARS_ERROR` (the message of an alert, empty for a notice),
    /// `KARS_MESSAGE`, `KARS_DATABASE`, `KARS_DESTINATION`, `KARS_LAG_SECONDS`, `KARS_AT`,
    /// `KARS_HOST`, `KARS_REPORT_JSON` (this event as JSON).
    pub fn command_env(&self) -> Vec<(String, String)> {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        let env = [
            ("KARS_EVENT", self.event.clone()),
            ("KARS_JOB", self.job.clone()),
            ("KARS_STATUS", self.status.to_string()),
            (
                "KARS_ERROR",
                if self.status == RunStatus::Success {
                    String::new()
                } else {
                    self.message.clone()
                },
            ),
            ("KARS_MESSAGE", self.message.clone()),
            ("KARS_DATABASE", self.database.clone()),
            (
                "KARS_DESTINATION",
                self.destination.clone().unwrap_or_default(),
            ),
            ("KARS_LAG_SECONDS", opt(self.lag_seconds)),
            (
                "KARS_AT",
                self.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
            ("KARS_HOST", self.host.clone()),
            (
                "KARS_REPORT_JSON",
                serde_json::to_string(self).unwrap_or_default(),
            ),
        ];
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The plain-text body of a `POST` ping.
    pub(crate) fn text(&self) -> String {
        format!(
            "kars-backup job {} replication of {}: {} ({})\n",
            self.job, self.database, self.message, self.event
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_failures_and_notices_successes() {
        let e = ReplicationEvent::new(ReplicationEventKind::Lagging, "j", "a.db", "lags")
            .at_destination("file:///r")
            .with_lag(75.0, 60.0);
        assert_eq!(e.status, RunStatus::Failure);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], "replication-lagging");
        assert_eq!(json["status"], "failure");
        let env = e.command_env();
        assert!(env.contains(&("KARS_ERROR".into(), "lags".into())));
        assert!(env.contains(&("KARS_LAG_SECONDS".into(), "75.000".into())));
        let e = ReplicationEvent::new(ReplicationEventKind::CaughtUp, "j", "a.db", "ok");
        assert_eq!(e.status, RunStatus::Success);
        assert!(
            e.command_env()
                .contains(&("KARS_ERROR".into(), String::new()))
        );
    }
}
