//! Status: how fresh the newest committed backup of a destination is, against an RPO target.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::repository::Listing;

/// The runbook's recovery point objective: a backup at most 24 hours old.
pub const DEFAULT_RPO: Duration = Duration::hours(24);

/// The freshness of one destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationStatus {
    /// The destination (redacted).
    pub destination: String,
    /// The newest committed backup's name, if any.
    pub newest: Option<String>,
    /// When it was taken.
    pub newest_time: Option<DateTime<Utc>>,
    /// Its age in seconds at `checked_at`.
    pub age_secs: Option<i64>,
    /// The RPO target in seconds.
    pub rpo_secs: i64,
    /// True when the newest backup is younger than the RPO target.
    pub within_rpo: bool,
    /// Committed backups at the destination.
    pub committed: usize,
    /// Incomplete uploads (failed or running) at the destination.
    pub incomplete: usize,
    /// When the status was taken.
    pub checked_at: DateTime<Utc>,
    /// The newest restore drill stored at the destination, if any (see [`crate::drill`]).
    pub last_drill: Option<crate::drill::DrillSummary>,
}

impl DestinationStatus {
    /// The same status with the destination's newest drill.
    pub fn with_last_drill(mut self, drill: Option<&crate::drill::DrillReport>) -> Self {
        self.last_drill = drill.map(crate::drill::DrillReport::summary);
        self
    }

    /// The status of a destination's listing at `now` against `rpo`.
    ///
    /// ```
    /// use chrono::{Duration, Utc};
    /// use kars_backup_core::repository::Listing;
    /// use kars_backup_core::status::DestinationStatus;
    /// let empty = DestinationStatus::of("memory://", &Listing::default(), Utc::now(), Duration::hours(24));
    /// assert!(!empty.within_rpo, "no backup at all misses every RPO");
    /// ```
    pub fn of(destination: &str, listing: &Listing, now: DateTime<Utc>, rpo: Duration) -> Self {
        let newest = listing.latest();
        let age = newest.map(|e| now - e.time());
        DestinationStatus {
            destination: destination.to_string(),
            newest: newest.map(|e| e.name.to_string()),
            newest_time: newest.map(|e| e.time()),
            age_secs: age.map(|a| a.num_seconds()),
            rpo_secs: rpo.num_seconds(),
            within_rpo: age.is_some_and(|a| a <= rpo),
            committed: listing.committed().count(),
            incomplete: listing
                .entries
                .iter()
                .filter(|e| e.kind == crate::repository::EntryKind::Incomplete)
                .count(),
            checked_at: now,
            last_drill: None,
        }
    }
}
