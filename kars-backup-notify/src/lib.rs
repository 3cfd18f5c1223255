//! Alerts and metrics for kars-backup runs.
//!
//! - [`Notifier`]: one job's notifications, from [`NotifyOptions`]: webhooks (a JSON POST of
//!   [`WebhookPayload`]), commands (`sh -c`, details in `KARS_*` environment variables, see
//!   [`command_env`]), and healthcheck-style pings (start / success / fail, GET or POST). Each
//!   has a timeout and retries; a failing notifier is logged and returned as a [`Delivery`],
//!   never an error of the backup. URLs are logged redacted ([`redact_url`]).
//! - [`Metrics`]: Prometheus metrics per job and destination (last success, last run, last
//!   duration, last size, runs and failures), rendered in the text exposition format, written
//!   atomically for node_exporter's textfile collector, or served by [`MetricsServer`].
//! - [`Alerts`]: both as a scheduler `RunObserver`.
//! - [`ReplicationEvent`]: alerts of a continuous replication (failed, lagging, caught up,
//!   frequent WAL resets), sent by [`Notifier::replication_event`]; the replication's metrics
//!   (lag, last shipped commit, transactions shipped, WAL resets, generations) are in
//!   [`Metrics`] too ([`Metrics::update_replica`], [`Metrics::update_replicator`]).
//!
//! The run types ([`RunReport`], [`RunOutcome`], …) come from `kars-backup-schedule` and are
//! re-exported here.
//!
//! ```
//! use chrono::Utc;
//! use kars_backup_notify::*;
//!
//! let metrics = Metrics::new();
//! let ctx = RunContext::manual("asset-data", Utc::now(), Default::default());
//! let report = RunReport::new(&ctx, Utc::now(), RunOutcome::success()
//!     .with_bytes(1024)
//!     .with_destination(DestinationResult::success("local", Some(1024))));
//! metrics.record(&report);
//! let samples = parse_text(&metrics.render()).unwrap();
//! assert!(samples.iter().any(|s| s.name == "kars_backup_last_size_bytes" && s.value == 1024.0));
//! ```

pub mod alerts;
pub mod error;
pub mod metrics;
pub mod notifier;
pub mod options;
pub mod payload;
pub mod redact;
pub mod replication;
pub mod server;

pub use alerts::Alerts;
pub use error::{Error, Result};
pub use metrics::{
    ALL_DESTINATIONS, Metrics, ReplicaValues, ReplicatorValues, Sample, SeriesValues, parse_text,
};
pub use notifier::{Delivery, Notifier};
pub use options::{
    CommandOptions, NotifyOn, NotifyOptions, PingMethod, PingOptions, WebhookOptions,
};
pub use payload::{WebhookPayload, command_env};
pub use redact::redact_url;
pub use replication::{ReplicationEvent, ReplicationEventKind};
pub use server::{MetricsServer, TEXT_FORMAT};

pub use kars_backup_schedule::{
    DestinationResult, RunContext, RunOutcome, RunReport, RunStatus, Trigger,
};
