//! Plugging notifications and metrics into the scheduler.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use kars_backup_schedule::{RunContext, RunObserver, RunReport};

use crate::metrics::Metrics;
use crate::notifier::Notifier;

/// A [`RunObserver`] that sends each job's notifications and records metrics; give it to
/// `Scheduler::with_observer`, or call its methods around a one-shot run.
///
/// ```
/// use std::sync::Arc;
/// use kars_backup_notify::{Alerts, Metrics, Notifier, NotifyOptions};
/// let metrics = Metrics::new();
/// let alerts = Alerts::new()
///     .with_job("asset-data", Notifier::new(NotifyOptions::default()).unwrap())
///     .with_metrics(metrics.clone());
/// let observer: kars_backup_schedule::DynRunObserver = Arc::new(alerts);
/// # let _ = observer;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    jobs: HashMap<String, Arc<Notifier>>,
    fallback: Option<Arc<Notifier>>,
    metrics: Option<Metrics>,
}

impl Alerts {
    /// Nothing to send, no metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notifications for `job`.
    pub fn with_job(mut self, job: impl Into<String>, notifier: Notifier) -> Self {
        self.jobs.insert(job.into(), Arc::new(notifier));
        self
    }

    /// Notifications for jobs without their own.
    pub fn with_default(mut self, notifier: Notifier) -> Self {
        self.fallback = Some(Arc::new(notifier));
        self
    }

    /// Records every finished run in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The notifier for `job`, if any.
    pub fn notifier(&self, job: &str) -> Option<&Notifier> {
        self.jobs
            .get(job)
            .or(self.fallback.as_ref())
            .map(|n| n.as_ref())
    }

    /// The metrics, if any.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }
}

#[async_trait]
impl RunObserver for Alerts {
    async fn run_started(&self, ctx: &RunContext) {
        if let Some(n) = self.notifier(&ctx.job) {
            n.run_started(ctx).await;
        }
    }

    async fn run_finished(&self, report: &RunReport) {
        if let Some(m) = &self.metrics {
            m.record(report);
        }
        if let Some(n) = self.notifier(&report.job) {
            n.run_finished(report).await;
        }
    }
}

#[async_trait]
impl RunObserver for Notifier {
    async fn run_started(&self, ctx: &RunContext) {
        Notifier::run_started(self, ctx).await;
    }
    async fn run_finished(&self, report: &RunReport) {
        Notifier::run_finished(self, report).await;
    }
}

#[async_trait]
impl RunObserver for Metrics {
    async fn run_finished(&self, report: &RunReport) {
        self.record(report);
    }
}
