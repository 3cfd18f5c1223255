//! Storage tiers: which kind of backup a run is (daily, weekly, monthly, yearly) and which
//! destinations keep it.
//!
//! The runbook's table is the default: daily backups stay local, weekly ones go local and to the
//! cloud, monthly and yearly ones go to the cloud only. A run's tags are every tier its time
//! qualifies for (a Sunday backup is daily and weekly), and a destination takes the run when it
//! accepts any of them. The tags are stored in the manifest.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::retention::{KeepCount, KeepRules};

/// A kind of backup in the runbook's retention table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Every backup.
    Daily,
    /// Backups taken on a Sunday (UTC).
    Weekly,
    /// Backups taken on the 1st of a month (UTC).
    Monthly,
    /// Backups taken on January 1st (UTC).
    Yearly,
}

impl Tier {
    /// Every tier, smallest first.
    pub const ALL: [Tier; 4] = [Tier::Daily, Tier::Weekly, Tier::Monthly, Tier::Yearly];

    /// The tier's name (`daily`, …).
    pub fn name(self) -> &'static str {
        match self {
            Tier::Daily => "daily",
            Tier::Weekly => "weekly",
            Tier::Monthly => "monthly",
            Tier::Yearly => "yearly",
        }
    }

    /// The tiers a backup taken at `time` belongs to (always `daily`).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use kars_backup_core::tier::Tier;
    /// let new_year = Utc.with_ymd_and_hms(2023, 1, 1, 2, 0, 0).unwrap(); // a Sunday
    /// assert_eq!(Tier::of(new_year), vec![Tier::Daily, Tier::Weekly, Tier::Monthly, Tier::Yearly]);
    /// ```
    pub fn of(time: DateTime<Utc>) -> Vec<Tier> {
        let mut tiers = vec![Tier::Daily];
        if time.weekday() == Weekday::Sun {
            tiers.push(Tier::Weekly);
        }
        if time.day() == 1 {
            tiers.push(Tier::Monthly);
            if time.month() == 1 {
                tiers.push(Tier::Yearly);
            }
        }
        tiers
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown tier {s:?}: use daily, weekly, monthly or yearly"))
    }
}

/// Whether a destination is on this host or off-site; the runbook's tiers depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Local disk.
    Local,
    /// Off-site storage (S3, GCS, Azure, Git LFS).
    Cloud,
}

/// Which tiers each kind of destination keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TierRules {
    /// Tiers kept on local destinations.
    pub local: Vec<Tier>,
    /// Tiers kept on cloud destinations.
    pub cloud: Vec<Tier>,
}

impl TierRules {
    /// The runbook's table: daily local; weekly local and cloud; monthly and yearly cloud only.
    pub fn runbook() -> Self {
        TierRules {
            local: vec![Tier::Daily, Tier::Weekly],
            cloud: vec![Tier::Weekly, Tier::Monthly, Tier::Yearly],
        }
    }

    /// The rules of a job's settings: `None` (no tiering) unless `runbook` is asked for or a
    /// side is given; otherwise the runbook's table with `local`/`cloud` replacing either side.
    ///
    /// ```
    /// use kars_backup_core::{Tier, TierRules};
    /// assert_eq!(TierRules::configured(false, None, None), None);
    /// let rules = TierRules::configured(false, Some(&[Tier::Daily]), None).unwrap();
    /// assert_eq!(rules.local, [Tier::Daily]);
    /// assert_eq!(rules.cloud, TierRules::runbook().cloud);
    /// ```
    pub fn configured(
        runbook: bool,
        local: Option<&[Tier]>,
        cloud: Option<&[Tier]>,
    ) -> Option<Self> {
        if !runbook && local.is_none() && cloud.is_none() {
            return None;
        }
        let mut rules = TierRules::runbook();
        if let Some(t) = local {
            rules.local = t.to_vec();
        }
        if let Some(t) = cloud {
            rules.cloud = t.to_vec();
        }
        Some(rules)
    }

    /// The tiers a destination of this placement keeps.
    pub fn accepted(&self, placement: Placement) -> &[Tier] {
        match placement {
            Placement::Local => &self.local,
            Placement::Cloud => &self.cloud,
        }
    }

    /// The retention policy that matches what a placement keeps: the runbook's count for each
    /// accepted tier (daily 7, weekly 4, monthly 12, yearly forever).
    ///
    /// ```
    /// use kars_backup_core::tier::{Placement, TierRules};
    /// let rules = TierRules::runbook();
    /// assert_eq!(rules.policy_for(Placement::Local).to_string(), "daily=7,weekly=4");
    /// assert_eq!(rules.policy_for(Placement::Cloud).to_string(), "weekly=4,monthly=12,yearly=all");
    /// ```
    pub fn policy_for(&self, placement: Placement) -> KeepRules {
        let mut rules = KeepRules::default();
        for tier in self.accepted(placement) {
            match tier {
                Tier::Daily => rules.daily = Some(KeepCount::Last(7)),
                Tier::Weekly => rules.weekly = Some(KeepCount::Last(4)),
                Tier::Monthly => rules.monthly = Some(KeepCount::Last(12)),
                Tier::Yearly => rules.yearly = Some(KeepCount::All),
            }
        }
        rules
    }

    /// Routes a backup taken at `time`: its tags, and for each destination (by placement) whether
    /// it takes the backup.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use kars_backup_core::tier::{Placement, Tier, TierRules};
    /// let wednesday = Utc.with_ymd_and_hms(2024, 12, 18, 2, 0, 0).unwrap();
    /// let (tags, takes) = TierRules::runbook().route(wednesday, &[Placement::Local, Placement::Cloud]);
    /// assert_eq!(tags, vec![Tier::Daily]);
    /// assert_eq!(takes, vec![true, false]);
    /// ```
    pub fn route(&self, time: DateTime<Utc>, placements: &[Placement]) -> (Vec<Tier>, Vec<bool>) {
        let tags = Tier::of(time);
        let takes = placements.iter().map(|p| self.takes(*p, &tags)).collect();
        (tags, takes)
    }

    /// Whether a backup with these tags goes to a destination of this placement.
    pub fn takes(&self, placement: Placement, tags: &[Tier]) -> bool {
        self.accepted(placement).iter().any(|t| tags.contains(t))
    }
}

impl Default for TierRules {
    fn default() -> Self {
        TierRules::runbook()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 2, 0, 0).unwrap()
    }

    #[test]
    fn runbook_routing() {
        let rules = TierRules::runbook();
        // 2024-12-18 is a Wednesday: daily only, local only.
        let tags = Tier::of(at(2024, 12, 18));
        assert_eq!(tags, vec![Tier::Daily]);
        assert!(rules.takes(Placement::Local, &tags));
        assert!(!rules.takes(Placement::Cloud, &tags));
        // 2024-12-22 is a Sunday: local and cloud.
        let tags = Tier::of(at(2024, 12, 22));
        assert_eq!(tags, vec![Tier::Daily, Tier::Weekly]);
        assert!(rules.takes(Placement::Local, &tags));
        assert!(rules.takes(Placement::Cloud, &tags));
        // 2025-01-01 is a Wednesday: yearly and monthly to the cloud, daily locally.
        let tags = Tier::of(at(2025, 1, 1));
        assert_eq!(tags, vec![Tier::Daily, Tier::Monthly, Tier::Yearly]);
        assert!(rules.takes(Placement::Cloud, &tags));
        let monthly_only = TierRules {
            local: vec![Tier::Weekly],
            cloud: vec![Tier::Monthly],
        };
        assert!(!monthly_only.takes(Placement::Local, &tags));
    }

    #[test]
    fn parses_names() {
        assert_eq!("weekly".parse::<Tier>(), Ok(Tier::Weekly));
        assert!("hourly".parse::<Tier>().is_err());
    }
}

/// Storage-tier routing: off, or the runbook's table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Tiering {
    /// Every destination takes every backup.
    #[default]
    Off,
    /// The runbook's table: daily local; weekly local and cloud; monthly and yearly cloud only.
    Runbook,
}

/// A job's storage tiers as given: `tiering`, `local-tiers`, `cloud-tiers` (the configuration
/// file's keys, the `backup` flags with the `clap` feature).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TierOptions {
    /// Route by storage tiers: `runbook` sends daily backups to local destinations only, weekly
    /// ones to local and cloud, monthly and yearly ones to the cloud only (tags in the manifest).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Tiering::Off))]
    pub tiering: Tiering,

    /// Tiers local destinations keep (comma-separated: daily,weekly,monthly,yearly); turns
    /// tiering on. Default with --tiering runbook: daily,weekly.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_delimiter = ',', value_name = "TIERS")
    )]
    pub local_tiers: Option<Vec<Tier>>,

    /// Tiers cloud destinations keep; turns tiering on. Default with --tiering runbook:
    /// weekly,monthly,yearly.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_delimiter = ',', value_name = "TIERS")
    )]
    pub cloud_tiers: Option<Vec<Tier>>,
}

impl TierOptions {
    /// The tier rules, when tiering is on: the runbook's, with `local_tiers`/`cloud_tiers`
    /// replacing either side.
    pub fn rules(&self) -> Option<TierRules> {
        TierRules::configured(
            self.tiering != Tiering::Off,
            self.local_tiers.as_deref(),
            self.cloud_tiers.as_deref(),
        )
    }

    /// The retention policy of a destination pruned after a backup: `explicit`, else (with
    /// tiering) the policy of the tiers its placement keeps, else the runbook's table.
    pub fn prune_policy(&self, explicit: Option<&KeepRules>, placement: Placement) -> KeepRules {
        match (explicit, self.rules()) {
            (Some(p), _) => p.clone(),
            (None, Some(rules)) => rules.policy_for(placement),
            (None, None) => KeepRules::runbook(),
        }
    }
}
