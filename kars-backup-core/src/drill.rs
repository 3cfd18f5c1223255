//! Restore drills: restore a backup into a scratch target, verify it, measure RTO and RPO against
//! their targets, and keep a report next to the backups.
//!
//! - **RTO** (recovery time) is measured from the start of the drill (listing the destinations
//!   included) until the scratch copy is verified: the download, the restore, the checks and the
//!   removal of the scratch copy. Default target: 1 hour ([`DEFAULT_RTO`]).
//! - **RPO** (recovery point) is the age of the backup when the drill starts: the data a restore
//!   right now would lose. Default target: 24 hours ([`DEFAULT_RPO`]).
//! - The report is stored at every destination drilled, as JSON and as text, under
//!   [`DRILL_PREFIX`] (`.kars-drills/drill-<time>-<id>.json` and `.txt`). These files are not
//!   backups and not foreign files: listings skip them, and prune never deletes them (they are
//!   small; remove old ones by hand if you like). [`latest_report`] reads the newest one, which
//!   `status` shows.

use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::checks::{PlanSource, ScratchTargets};
use crate::error::{Error, Result};
use crate::layout::drill_report_key;
use crate::objective::DEFAULT_RPO;
use crate::progress::DynProgress;
use crate::recovery::{
    Attempt, AttemptOptions, AttemptOutcome, Candidates, Origin, Pick, Recovery, Unavailable,
    recover,
};
use crate::repository::Repository;
use crate::run::{host_label, new_run_id};
use crate::sink::SinkExt;
use crate::source::engine_name;
use crate::verify::VerifyReport;

/// Where drill reports are kept at a destination (a directory boundary).
pub use crate::layout::DRILL_PREFIX;
/// The objectives a drill measures.
pub use crate::objective::{DEFAULT_RTO, Objective};

/// Options of [`run_drill`].
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The recovery time objective.
    pub rto: Duration,
    /// The recovery point objective.
    pub rpo: Duration,
    /// Retries of transient failures and other copies (a drill does not fall back to older
    /// backups unless `fallback` is set here).
    pub attempts: AttemptOptions,
    /// Store the report at the destinations (on by default).
    pub store: bool,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            rto: DEFAULT_RTO,
            rpo: DEFAULT_RPO,
            attempts: AttemptOptions::default(),
            store: true,
        }
    }
}

/// The verdict of a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrillOutcome {
    /// Restored, verified, and within both targets.
    Passed,
    /// Restored and verified, but the RTO or the RPO target was missed.
    TargetMissed,
    /// The backup could not be restored or failed verification (or there was none).
    Failed,
}

/// What a drill did and found; stored at the destinations as JSON and text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// The drill's id (UTC time and a random suffix).
    pub id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// The host it ran on.
    pub host: String,
    /// The kars-backup version.
    pub tool_version: String,
    /// The destinations drilled.
    pub destinations: Vec<String>,
    /// The backup restored (or the one that failed).
    pub backup: Option<String>,
    /// Its time.
    pub backup_time: Option<DateTime<Utc>>,
    /// Its engine (`sqlite`, `postgres`).
    pub engine: Option<String>,
    /// The destination whose copy was restored.
    pub restored_from: Option<String>,
    /// The scratch target (removed after the drill).
    pub scratch_target: Option<String>,
    /// A point-in-time drill (a physical PostgreSQL base backup and its WAL): the instant
    /// restored to (`None`: the latest state, or a drill of a backup as it was taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_to: Option<DateTime<Utc>>,
    /// Recovery time: start of the drill to verified.
    pub rto: Objective,
    /// Recovery point: the backup's age at the start of the drill.
    pub rpo: Objective,
    /// The verdict.
    pub outcome: DrillOutcome,
    /// True for [`DrillOutcome::Passed`].
    pub passed: bool,
    /// Why the drill failed.
    pub error: Option<String>,
    /// The failure's category (`verification`, `storage`, `source`, `usage`).
    pub error_category: Option<String>,
    /// The checks run on the scratch copy.
    pub verification: Option<VerifyReport>,
    /// Every attempt (retries, other copies).
    pub attempts: Vec<Attempt>,
    /// Destinations that could not be listed.
    pub unavailable: Vec<Unavailable>,
    /// The report's key at each destination (`.kars-drills/drill-….json`).
    pub report_key: String,
    /// Destinations where the report could not be stored (filled after storing).
    #[serde(default)]
    pub store_errors: Vec<String>,
}

/// The essentials of a drill, for `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillSummary {
    /// The drill's id.
    pub id: String,
    /// When it finished.
    pub at: DateTime<Utc>,
    /// The backup drilled.
    pub backup: Option<String>,
    /// The verdict.
    pub outcome: DrillOutcome,
    /// True when it passed.
    pub passed: bool,
    /// Measured recovery time in seconds.
    pub rto_secs: Option<f64>,
    /// Whether the RTO target was met.
    pub rto_met: bool,
    /// The backup's age at the drill in seconds.
    pub rpo_secs: Option<f64>,
    /// Whether the RPO target was met.
    pub rpo_met: bool,
    /// Why it failed.
    pub error: Option<String>,
}

impl DrillReport {
    /// The essentials, for `status`.
    pub fn summary(&self) -> DrillSummary {
        DrillSummary {
            id: self.id.clone(),
            at: self.finished_at,
            backup: self.backup.clone(),
            outcome: self.outcome,
            passed: self.passed,
            rto_secs: self.rto.measured_secs,
            rto_met: self.rto.met,
            rpo_secs: self.rpo.measured_secs,
            rpo_met: self.rpo.met,
            error: self.error.clone(),
        }
    }

    /// The report as text (what is stored next to the JSON).
    pub fn to_text(&self) -> String {
        let verdict = match self.outcome {
            DrillOutcome::Passed => "PASSED",
            DrillOutcome::TargetMissed => "TARGET MISSED",
            DrillOutcome::Failed => "FAILED",
        };
        let mut out = format!("Restore drill {} on {}: {verdict}\n", self.id, self.host);
        out.push_str(&format!(
            "  started:  {}\n  finished: {}\n",
            self.started_at.to_rfc3339(),
            self.finished_at.to_rfc3339()
        ));
        out.push_str(&format!(
            "  destinations: {}\n",
            self.destinations.join(", ")
        ));
        match &self.backup {
            Some(b) => out.push_str(&format!(
                "  backup:   {b} ({}), taken {}, {}\n",
                self.engine.as_deref().map_or("unknown engine", engine_name),
                self.backup_time
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "?".into()),
                self.restored_from
                    .as_deref()
                    .map_or("not restored".to_string(), |d| format!("restored from {d}"))
            )),
            None => out.push_str("  backup:   none\n"),
        }
        if let Some(t) = &self.restored_to {
            out.push_str(&format!("  instant:  {} (restored to)\n", t.to_rfc3339()));
        }
        if let Some(s) = &self.scratch_target {
            out.push_str(&format!("  scratch:  {s} (removed afterwards)\n"));
        }
        let objective = |name: &str, what: &str, o: &Objective| {
            format!(
                "  {name}:      {} ({what}); target {}: {}\n",
                o.measured_secs
                    .map(human_secs)
                    .unwrap_or_else(|| "not measured".into()),
                human_secs(o.target_secs as f64),
                if o.met { "met" } else { "MISSED" }
            )
        };
        out.push_str(&objective(
            "RTO",
            "start to verified, download included",
            &self.rto,
        ));
        out.push_str(&objective(
            "RPO",
            "age of the backup at the drill",
            &self.rpo,
        ));
        if let Some(v) = &self.verification {
            out.push_str("  checks:\n");
            for c in &v.checks {
                out.push_str(&format!(
                    "    [{}] {}: {}\n",
                    if c.passed { "ok" } else { "FAILED" },
                    c.check,
                    c.detail
                ));
            }
        }
        if !self.attempts.is_empty() {
            out.push_str("  attempts:\n");
            for (i, a) in self.attempts.iter().enumerate() {
                out.push_str(&format!(
                    "    {}. {} from {} (try {}): {} in {}{}\n",
                    i + 1,
                    a.backup,
                    a.destination,
                    a.try_number,
                    match a.outcome {
                        AttemptOutcome::Succeeded => "succeeded",
                        AttemptOutcome::Retried => "transient failure, retried",
                        AttemptOutcome::Failed => "failed",
                    },
                    human_secs(a.seconds),
                    a.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ));
            }
        }
        for u in &self.unavailable {
            out.push_str(&format!("  unavailable: {}: {}\n", u.destination, u.error));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("  error: {e}\n"));
        }
        out
    }
}

/// Seconds as `850 ms`, `3.2 s`, `4 m 05 s`, `2 h 03 m`, `3 d 4 h`.
pub fn human_secs(secs: f64) -> String {
    if secs < 1.0 {
        return format!("{:.0} ms", secs * 1000.0);
    }
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as i64;
    if s < 3600 {
        format!("{} m {:02} s", s / 60, s % 60)
    } else if s < 86_400 {
        match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m:02} m", s / 3600),
        }
    } else {
        match (s % 86_400) / 3600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        }
    }
}

/// Runs a drill: finds the backup (`pick`) across `origins`, verifies it in a scratch target made
/// by `scratch` (with the checks of `plan`), measures RTO and RPO, and stores the report at every
/// origin that could be listed (unless the failure was a usage error, or `options.store` is off).
///
/// Never fails: every failure is in the report ([`DrillReport::outcome`], `error`,
/// `error_category`, `store_errors`).
pub async fn run_drill(
    origins: &[Origin],
    pick: &Pick,
    scratch: &dyn ScratchTargets,
    plan: &dyn PlanSource,
    options: &DrillOptions,
    progress: DynProgress,
) -> DrillReport {
    let clock = Instant::now();
    let mut report = DrillReport::begin(origins.iter().map(|o| o.label.clone()).collect(), options);
    let started_at = report.started_at;
    let span = tracing::info_span!("drill", id = %report.id);
    let _enter = span.enter();
    let mut listed: Vec<&Origin> = origins.iter().collect();
    match Candidates::find(origins, pick).await {
        Err(e) => report.fail(&e),
        Ok(candidates) => {
            report.unavailable = candidates.unavailable.clone();
            listed.retain(|o| {
                !candidates
                    .unavailable
                    .iter()
                    .any(|u| u.destination == o.label)
            });
            if let Some(first) = candidates.first() {
                report.backup = Some(first.name.clone());
                report.backup_time = Some(first.time);
                report.engine = first.entry().manifest.as_ref().map(|m| m.engine.clone());
                let age = (started_at - first.time).num_milliseconds() as f64 / 1000.0;
                report.rpo = Objective::of(options.rpo, Some(age));
            }
            match recover(
                &candidates,
                Recovery::Verify { scratch },
                plan,
                &options.attempts,
                progress,
            )
            .await
            {
                Ok(recovered) => {
                    let rto = clock.elapsed().as_secs_f64();
                    report.rto = Objective::of(options.rto, Some(rto));
                    let r = recovered.report;
                    report.backup = Some(r.backup.clone());
                    if let Some(c) = candidates.backups.iter().find(|c| c.name == r.backup) {
                        report.backup_time = Some(c.time);
                        let age = (started_at - c.time).num_milliseconds() as f64 / 1000.0;
                        report.rpo = Objective::of(options.rpo, Some(age));
                    }
                    report.restored_from = Some(r.destination.clone());
                    report.scratch_target = Some(r.target.clone());
                    report.verification = Some(r.verification);
                    report.attempts = recovered.attempts;
                    report.outcome = if report.rto.met && report.rpo.met {
                        DrillOutcome::Passed
                    } else {
                        DrillOutcome::TargetMissed
                    };
                }
                Err(failed) => {
                    report.fail(&failed.error);
                    report.attempts = failed.attempts;
                }
            }
        }
    }
    report.conclude();
    if options.store {
        report
            .store_at(listed.iter().map(|o| (o.label.as_str(), &o.repo)))
            .await;
    }
    report
}

impl DrillReport {
    /// A drill starting now at `destinations` (redacted) with the targets of `options`:
    /// failed until told otherwise, measured nothing yet. For drills that restore by other
    /// means than [`run_drill`] (a physical restore to an instant).
    pub fn begin(destinations: Vec<String>, options: &DrillOptions) -> DrillReport {
        let started_at = Utc::now();
        let run = new_run_id();
        let suffix = run.rsplit('-').next().unwrap_or("0");
        let id = format!("{}-{suffix}", started_at.format("%Y%m%dT%H%M%S%.3fZ"));
        DrillReport {
            report_key: drill_report_key(&id, "json"),
            id,
            started_at,
            finished_at: started_at,
            host: host_label(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            destinations,
            backup: None,
            backup_time: None,
            engine: None,
            restored_from: None,
            scratch_target: None,
            restored_to: None,
            rto: Objective::of(options.rto, None),
            rpo: Objective::of(options.rpo, None),
            outcome: DrillOutcome::Failed,
            passed: false,
            error: None,
            error_category: None,
            verification: None,
            attempts: Vec::new(),
            unavailable: Vec::new(),
            store_errors: Vec::new(),
        }
    }

    /// Records a failure: its message and category.
    pub fn fail(&mut self, e: &Error) {
        self.error = Some(e.to_string());
        self.error_category = Some(e.category().as_str().to_string());
    }

    /// Ends the drill now: `passed` from the outcome, the finish time, a log line.
    pub fn conclude(&mut self) {
        self.passed = self.outcome == DrillOutcome::Passed;
        self.finished_at = Utc::now();
        tracing::info!(
            id = %self.id,
            outcome = ?self.outcome,
            rto_secs = self.rto.measured_secs,
            rpo_secs = self.rpo.measured_secs,
            "drill finished"
        );
    }

    /// Stores the report at each `(label, repository)` ([`store_report`]); failures go to
    /// [`store_errors`](Self::store_errors). A drill that failed on usage stores nothing.
    pub async fn store_at<'a>(
        &mut self,
        destinations: impl IntoIterator<Item = (&'a str, &'a Repository)>,
    ) {
        if self.error_category.as_deref() == Some("usage") {
            return;
        }
        for (label, repo) in destinations {
            if let Err(e) = store_report(repo, self).await {
                tracing::warn!(destination = %label, error = %e, "could not store the drill report");
                self.store_errors.push(format!("{label}: {e}"));
            }
        }
    }
}

/// Stores a report at a destination: the text first, then the JSON (which [`latest_report`]
/// reads), under [`DRILL_PREFIX`].
///
/// # Errors
/// The sink's errors.
pub async fn store_report(repo: &Repository, report: &DrillReport) -> Result<()> {
    let text_key = report
        .report_key
        .strip_suffix(".json")
        .map(|k| format!("{k}.txt"))
        .unwrap_or_else(|| format!("{}.txt", report.report_key));
    let sink = repo.sink();
    sink.put_bytes(&text_key, Bytes::from(report.to_text()))
        .await?;
    let json = serde_json::to_vec_pretty(report).expect("a drill report serialises");
    sink.put_bytes(&report.report_key, Bytes::from(json))
        .await?;
    Ok(())
}

/// The keys of the drill reports (JSON) at a destination, oldest first.
///
/// # Errors
/// The sink's listing error.
pub async fn report_keys(repo: &Repository) -> Result<Vec<String>> {
    let mut keys: Vec<String> = repo
        .sink()
        .list(Some(DRILL_PREFIX))
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.starts_with(DRILL_PREFIX) && k.ends_with(".json"))
        .collect();
    keys.sort();
    Ok(keys)
}

/// The newest drill report at a destination, if any.
///
/// # Errors
/// The sink's errors; [`Error::InvalidArchive`] when the newest report cannot be read as one.
pub async fn latest_report(repo: &Repository) -> Result<Option<DrillReport>> {
    let Some(key) = report_keys(repo).await?.pop() else {
        return Ok(None);
    };
    let bytes = repo.sink().get_bytes(&key).await?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::InvalidArchive {
            name: format!("{key} in {}", repo.describe()),
            reason: format!("not a drill report: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_and_durations() {
        let o = Objective::of(Duration::hours(1), Some(12.5));
        assert!(o.met);
        assert_eq!(o.target_secs, 3600);
        assert!(!Objective::of(Duration::seconds(10), Some(12.5)).met);
        assert!(!Objective::of(Duration::hours(1), None).met, "unmeasured");
        assert_eq!(human_secs(0.25), "250 ms");
        assert_eq!(human_secs(3.21), "3.2 s");
        assert_eq!(human_secs(245.0), "4 m 05 s");
        assert_eq!(human_secs(7380.0), "2 h 03 m");
        assert_eq!(human_secs(3.0 * 86_400.0 + 7200.0), "3 d 2 h");
        assert_eq!(human_secs(3600.0), "1 h");
        assert_eq!(human_secs(86_400.0), "1 d");
    }

    #[test]
    fn reports_round_trip_and_read_as_text() {
        let t = Utc::now();
        let mut report = DrillReport::begin(vec!["file:///b".into()], &DrillOptions::default());
        report.id = "20261125T020000.000Z-abc".into();
        report.started_at = t;
        report.finished_at = t;
        report.backup = Some("asset-data-20261125-010000.tar.gz".into());
        report.backup_time = Some(t - Duration::hours(30));
        report.engine = Some("sqlite".into());
        report.restored_from = Some("file:///b".into());
        report.scratch_target = Some("/tmp/x.db".into());
        report.restored_to = Some(t - Duration::hours(31));
        report.rto = Objective::of(DEFAULT_RTO, Some(4.0));
        report.rpo = Objective::of(DEFAULT_RPO, Some(30.0 * 3600.0));
        report.outcome = DrillOutcome::TargetMissed;
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"outcome\":\"target-missed\""), "{json}");
        let back: DrillReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let text = report.to_text();
        assert!(text.contains("TARGET MISSED"), "{text}");
        assert!(text.contains("RPO:      1 d 6 h"), "{text}");
        assert!(text.contains("target 1 d: MISSED"), "{text}");
        assert!(text.contains("RTO:      4.0 s"), "{text}");
        assert!(text.contains("(restored to)"), "{text}");
        let summary = report.summary();
        assert!(summary.rto_met && !summary.rpo_met && !summary.passed);
    }
}
