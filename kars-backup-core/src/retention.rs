//! [`RetentionPolicy`]: a pure function from backups and "now" to a plan of what to keep.

use std::fmt::Debug;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// One backup, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionItem {
    /// The backup's name.
    pub name: String,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Its tier tags.
    pub tiers: Vec<String>,
    /// Stored size.
    pub size: u64,
}

/// A kept backup and the rules that keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The backup.
    pub item: RetentionItem,
    /// Why it is kept ("within 7 days", "newest backup").
    pub reasons: Vec<String>,
}

/// What to keep and what to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    /// Kept backups, newest first.
    pub keep: Vec<Kept>,
    /// Backups to delete, newest first.
    pub delete: Vec<RetentionItem>,
}

/// Decides which backups to keep. Implementations are pure: no I/O, no clock.
///
/// # Contract
/// - Every input item is in exactly one of `keep` and `delete`.
/// - The newest backup is always kept.
/// - The plan does not depend on the input order.
pub trait RetentionPolicy: Send + Sync + Debug {
    /// Plans retention over `items` at time `now`.
    fn plan(&self, items: &[RetentionItem], now: DateTime<Utc>) -> RetentionPlan;
}

/// Keeps every backup taken within a duration before now: the runbook's `RETENTION_DAYS=7`.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use kars_backup_core::retention::{KeepWithin, RetentionItem, RetentionPolicy};
/// let now = Utc.with_ymd_and_hms(2024, 12, 18, 2, 0, 0).unwrap();
/// let item = |days| RetentionItem { name: format!("b{days}"), time: now - Duration::days(days), tiers: vec![], size: 0 };
/// let plan = KeepWithin::days(7).plan(&[item(1), item(6), item(8)], now);
/// assert_eq!(plan.keep.len(), 2);
/// assert_eq!(plan.delete[0].name, "b8");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepWithin {
    within: Duration,
}

impl KeepWithin {
    /// Keeps backups younger than `within`.
    pub fn new(within: Duration) -> Self {
        KeepWithin { within }
    }

    /// Keeps backups younger than `days` days.
    pub fn days(days: i64) -> Self {
        KeepWithin::new(Duration::days(days))
    }
}

impl RetentionPolicy for KeepWithin {
    fn plan(&self, items: &[RetentionItem], now: DateTime<Utc>) -> RetentionPlan {
        let mut sorted: Vec<&RetentionItem> = items.iter().collect();
        sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
        let mut plan = RetentionPlan::default();
        let days = self.within.num_days();
        let label = if self.within == Duration::days(days) {
            format!("within {days} days")
        } else {
            format!("within {} seconds", self.within.num_seconds())
        };
        for (i, item) in sorted.into_iter().enumerate() {
            let mut reasons = Vec::new();
            if i == 0 {
                reasons.push("newest backup".to_string());
            }
            if now - item.time <= self.within {
                reasons.push(label.clone());
            }
            if reasons.is_empty() {
                plan.delete.push(item.clone());
            } else {
                plan.keep.push(Kept {
                    item: item.clone(),
                    reasons,
                });
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn item(name: &str, t: DateTime<Utc>) -> RetentionItem {
        RetentionItem {
            name: name.into(),
            time: t,
            tiers: vec![],
            size: 1,
        }
    }

    #[test]
    fn keeps_the_newest_even_when_old() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let plan = KeepWithin::days(7).plan(
            &[
                item("a", now - Duration::days(30)),
                item("b", now - Duration::days(20)),
            ],
            now,
        );
        assert_eq!(plan.keep.len(), 1);
        assert_eq!(plan.keep[0].item.name, "b");
        assert_eq!(plan.keep[0].reasons, vec!["newest backup"]);
        assert_eq!(plan.delete.len(), 1);
    }

    #[test]
    fn plan_does_not_depend_on_order() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let items: Vec<_> = (0..20)
            .map(|d| item(&format!("b{d}"), now - Duration::hours(d * 13)))
            .collect();
        let mut rev = items.clone();
        rev.reverse();
        let p = KeepWithin::days(3);
        assert_eq!(p.plan(&items, now), p.plan(&rev, now));
        let kept = p.plan(&items, now).keep.len();
        assert_eq!(kept, (0..20).filter(|d| d * 13 <= 72).count());
    }
}
