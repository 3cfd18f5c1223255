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
        let sorted = newest_first(items);
        let days = self.within.num_days();
        let label = if self.within == Duration::days(days) {
            format!("within {days} days")
        } else {
            format!("within {} seconds", self.within.num_seconds())
        };
        let reasons = sorted
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let mut reasons = Vec::new();
                if i == 0 {
                    reasons.push("newest backup".to_string());
                }
                if now - item.time <= self.within {
                    reasons.push(label.clone());
                }
                reasons
            })
            .collect();
        assemble(sorted, reasons)
    }
}

/// Items newest first; equal times by name, descending: the order every policy works in, so a
/// plan does not depend on the input order.
fn newest_first(items: &[RetentionItem]) -> Vec<&RetentionItem> {
    let mut sorted: Vec<&RetentionItem> = items.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    sorted
}

/// The plan: items with reasons are kept, the others deleted (both newest first).
fn assemble(sorted: Vec<&RetentionItem>, reasons: Vec<Vec<String>>) -> RetentionPlan {
    let mut plan = RetentionPlan::default();
    for (item, reasons) in sorted.into_iter().zip(reasons) {
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

/// How many buckets a calendar rule keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepCount {
    /// The newest `n` buckets.
    Last(u32),
    /// Every bucket (`yearly=all`: forever).
    All,
}

impl KeepCount {
    fn allows(self, kept: u32) -> bool {
        match self {
            KeepCount::Last(n) => kept < n,
            KeepCount::All => true,
        }
    }

    fn label(self) -> String {
        match self {
            KeepCount::Last(n) => n.to_string(),
            KeepCount::All => "all".to_string(),
        }
    }
}

/// A calendar bucket kind of [`KeepRules`], in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Calendar {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Calendar {
    fn name(self) -> &'static str {
        match self {
            Calendar::Hourly => "hourly",
            Calendar::Daily => "daily",
            Calendar::Weekly => "weekly",
            Calendar::Monthly => "monthly",
            Calendar::Yearly => "yearly",
        }
    }

    /// The bucket's identity, cheap to compute and compare.
    fn key(self, t: DateTime<Utc>) -> i64 {
        use chrono::Datelike;
        match self {
            Calendar::Hourly => t.timestamp().div_euclid(3600),
            Calendar::Daily => t.timestamp().div_euclid(86_400),
            Calendar::Weekly => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Calendar::Monthly => i64::from(t.year()) * 12 + i64::from(t.month0()),
            Calendar::Yearly => i64::from(t.year()),
        }
    }

    /// The bucket's label: `2026-03-14T02`, `2026-03-14`, `2026-W11` (ISO week), `2026-03`, `2026`.
    fn bucket(self, t: DateTime<Utc>) -> String {
        use chrono::Datelike;
        match self {
            Calendar::Hourly => t.format("%Y-%m-%dT%H").to_string(),
            Calendar::Daily => t.format("%Y-%m-%d").to_string(),
            Calendar::Weekly => {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Calendar::Monthly => t.format("%Y-%m").to_string(),
            Calendar::Yearly => t.format("%Y").to_string(),
        }
    }
}

/// Grandfather-father-son retention with the semantics of restic's `forget`; the union of its
/// rules is kept.
///
/// - `last`: the `n` newest backups.
/// - `hourly`/`daily`/`weekly`/`monthly`/`yearly`: the newest backup of each of the `n` most
///   recent calendar buckets (UTC; weeks are ISO weeks) that hold a backup: a bucket with no
///   backup does not use up a slot.
/// - `within`: every backup younger than the duration.
/// - The newest backup is always kept.
///
/// The runbook's table is [`KeepRules::runbook`]: daily 7, weekly 4, monthly 12, yearly forever.
///
/// ```
/// use kars_backup_core::retention::KeepRules;
/// let rules: KeepRules = "daily=7,weekly=4,monthly=12,yearly=all".parse().unwrap();
/// assert_eq!(rules, KeepRules::runbook());
/// assert_eq!(rules.to_string(), "daily=7,weekly=4,monthly=12,yearly=all");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepRules {
    /// Keep the newest `n` backups.
    pub last: Option<u32>,
    /// Newest backup of each of the most recent hours.
    pub hourly: Option<KeepCount>,
    /// Newest backup of each of the most recent days.
    pub daily: Option<KeepCount>,
    /// Newest backup of each of the most recent ISO weeks.
    pub weekly: Option<KeepCount>,
    /// Newest backup of each of the most recent months.
    pub monthly: Option<KeepCount>,
    /// Newest backup of each of the most recent years.
    pub yearly: Option<KeepCount>,
    /// Every backup younger than this.
    pub within: Option<Duration>,
}

impl KeepRules {
    /// The runbook's policy: daily 7, weekly 4, monthly 12, yearly forever.
    pub fn runbook() -> Self {
        KeepRules {
            daily: Some(KeepCount::Last(7)),
            weekly: Some(KeepCount::Last(4)),
            monthly: Some(KeepCount::Last(12)),
            yearly: Some(KeepCount::All),
            ..KeepRules::default()
        }
    }

    fn calendars(&self) -> Vec<(Calendar, KeepCount)> {
        [
            (Calendar::Hourly, self.hourly),
            (Calendar::Daily, self.daily),
            (Calendar::Weekly, self.weekly),
            (Calendar::Monthly, self.monthly),
            (Calendar::Yearly, self.yearly),
        ]
        .into_iter()
        .filter_map(|(c, n)| n.map(|n| (c, n)))
        .collect()
    }
}

impl std::fmt::Display for KeepRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.last {
            parts.push(format!("last={n}"));
        }
        for (c, n) in self.calendars() {
            parts.push(format!("{}={}", c.name(), n.label()));
        }
        if let Some(d) = self.within {
            parts.push(format!("within={}", format_duration(d)));
        }
        f.write_str(&parts.join(","))
    }
}

fn format_duration(d: Duration) -> String {
    let s = d.num_seconds();
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

/// Parses a duration such as `7d`, `36h`, `90m`, `3600s` or `2w`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| {
        format!("bad duration {s:?}: use a number and a unit, e.g. 7d, 36h, 90m, 2w")
    })?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" | "" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("bad duration unit in {s:?}: use s, m, h, d or w")),
    };
    n.checked_mul(secs)
        .map(Duration::seconds)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

impl std::str::FromStr for KeepRules {
    type Err = String;

    /// Parses `daily=7,weekly=4,monthly=12,yearly=all,last=3,within=7d`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut rules = KeepRules::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                format!("bad policy part {part:?}: expected rule=value, e.g. daily=7")
            })?;
            let count = || -> Result<KeepCount, String> {
                if value == "all" || value == "forever" {
                    Ok(KeepCount::All)
                } else {
                    value
                        .parse::<u32>()
                        .map(KeepCount::Last)
                        .map_err(|_| format!("bad count {value:?} for {key}: a number or `all`"))
                }
            };
            match key {
                "last" => {
                    rules.last = Some(
                        value
                            .parse()
                            .map_err(|_| format!("bad count {value:?} for last: a number"))?,
                    )
                }
                "hourly" => rules.hourly = Some(count()?),
                "daily" => rules.daily = Some(count()?),
                "weekly" => rules.weekly = Some(count()?),
                "monthly" => rules.monthly = Some(count()?),
                "yearly" => rules.yearly = Some(count()?),
                "within" => rules.within = Some(parse_duration(value)?),
                other => {
                    return Err(format!(
                        "unknown retention rule {other:?}: use last, hourly, daily, weekly, monthly, yearly or within"
                    ));
                }
            }
        }
        if rules == KeepRules::default() {
            return Err("empty retention policy: give at least one rule, e.g. daily=7".into());
        }
        Ok(rules)
    }
}

impl RetentionPolicy for KeepRules {
    fn plan(&self, items: &[RetentionItem], now: DateTime<Utc>) -> RetentionPlan {
        let sorted = newest_first(items);
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); sorted.len()];
        if !sorted.is_empty() {
            reasons[0].push("newest backup".to_string());
        }
        if let Some(n) = self.last {
            for (i, r) in reasons.iter_mut().enumerate().take(n as usize) {
                r.push(format!("last {} of {n}", i + 1));
            }
        }
        for (calendar, count) in self.calendars() {
            let mut last_bucket: Option<i64> = None;
            let mut kept = 0u32;
            let total = count.label();
            for (i, item) in sorted.iter().enumerate() {
                let bucket = calendar.key(item.time);
                if last_bucket == Some(bucket) {
                    continue;
                }
                if !count.allows(kept) {
                    break;
                }
                kept += 1;
                reasons[i].push(format!(
                    "{} {kept} of {total} ({})",
                    calendar.name(),
                    calendar.bucket(item.time)
                ));
                last_bucket = Some(bucket);
            }
        }
        if let Some(d) = self.within {
            let label = format!("within {}", format_duration(d));
            for (i, item) in sorted.iter().enumerate() {
                if now - item.time <= d {
                    reasons[i].push(label.clone());
                }
            }
        }
        assemble(sorted, reasons)
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
    fn runbook_policy_over_a_year_of_daily_backups() {
        let now = Utc.with_ymd_and_hms(2025, 12, 31, 3, 0, 0).unwrap();
        let items: Vec<_> = (0..366)
            .map(|d| {
                item(
                    &format!("b{d:03}"),
                    now - Duration::days(d) - Duration::hours(1),
                )
            })
            .collect();
        let plan = KeepRules::runbook().plan(&items, now);
        let with = |rule: &str| {
            plan.keep
                .iter()
                .filter(|k| k.reasons.iter().any(|r| r.starts_with(rule)))
                .count()
        };
        assert_eq!(with("daily"), 7);
        assert_eq!(with("weekly"), 4);
        assert_eq!(with("monthly"), 12);
        assert_eq!(with("yearly"), 2, "2025 and the one day of 2024");
        assert_eq!(plan.keep.len() + plan.delete.len(), 366);
        let newest = &plan.keep[0];
        assert_eq!(newest.reasons[0], "newest backup");
        assert!(
            newest
                .reasons
                .contains(&"daily 1 of 7 (2025-12-31)".to_string()),
            "{:?}",
            newest.reasons
        );
        assert!(
            newest
                .reasons
                .contains(&"weekly 1 of 4 (2026-W01)".to_string()),
            "{:?}",
            newest.reasons
        );
        assert!(
            newest
                .reasons
                .contains(&"monthly 1 of 12 (2025-12)".to_string()),
            "{:?}",
            newest.reasons
        );
        assert!(
            newest
                .reasons
                .contains(&"yearly 1 of all (2025)".to_string()),
            "{:?}",
            newest.reasons
        );
    }

    #[test]
    fn empty_buckets_do_not_use_slots() {
        let t = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap();
        let items = vec![
            item("a", t(2025, 1, 10)),
            item("b", t(2025, 6, 10)),
            item("c", t(2025, 6, 1)),
        ];
        let rules: KeepRules = "monthly=2".parse().unwrap();
        let plan = rules.plan(&items, t(2025, 12, 1));
        let kept: Vec<_> = plan.keep.iter().map(|k| k.item.name.as_str()).collect();
        assert_eq!(
            kept,
            vec!["b", "a"],
            "June and January, though months between are empty"
        );
    }

    #[test]
    fn parses_and_rejects_policies() {
        assert!("".parse::<KeepRules>().is_err());
        assert!("daily".parse::<KeepRules>().is_err());
        assert!("dayly=3".parse::<KeepRules>().is_err());
        assert!("daily=x".parse::<KeepRules>().is_err());
        let r: KeepRules = "last=3, within=36h".parse().unwrap();
        assert_eq!(r.last, Some(3));
        assert_eq!(r.within, Some(Duration::hours(36)));
        assert_eq!(r.to_string(), "last=3,within=36h");
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
