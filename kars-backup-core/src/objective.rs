//! Recovery objectives: the runbook's targets for recovery time (RTO) and recovery point (RPO),
//! and a measurement against a target. [`status`](crate::status) checks the RPO of the newest
//! backup; a [`drill`](crate::drill) measures both.

use chrono::Duration;
use serde::{Deserialize, Serialize};

/// The runbook's recovery time objective: restored and verified within an hour.
pub const DEFAULT_RTO: Duration = Duration::hours(1);

/// The runbook's recovery point objective: a backup at most 24 hours old.
pub const DEFAULT_RPO: Duration = Duration::hours(24);

/// A measured objective against its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// The target in seconds.
    pub target_secs: i64,
    /// What was measured, in seconds (none when it could not be measured).
    pub measured_secs: Option<f64>,
    /// Whether the measurement is within the target.
    pub met: bool,
}

impl Objective {
    /// `measured` seconds against `target`: met when measured and within it.
    pub fn of(target: Duration, measured: Option<f64>) -> Self {
        let target_secs = target.num_seconds();
        Objective {
            target_secs,
            measured_secs: measured,
            met: measured.is_some_and(|m| m <= target_secs as f64),
        }
    }
}
