//! Check presets: the verification queries that say a restored database of a known application
//! is whole, by name (`--checks kars`, `checks = "kars"` in `[job.verify]`).
//!
//! The queries are plain SQL that SQLite and PostgreSQL both run, and they become ordinary
//! [`TestQuery`] values of a [`VerifyPlan`](crate::VerifyPlan), so restores, verifications and
//! drills run them like any other test query.
//!
//! ```
//! use chrono::{Duration, Utc};
//! use kars_backup_core::preset::CheckPreset;
//! let preset: CheckPreset = "kars".parse().unwrap();
//! let queries = preset.queries(Utc::now(), Duration::hours(24));
//! assert!(queries.iter().any(|q| q.check_name() == "kars: at least one admin user"));
//! assert!(queries.iter().any(|q| q.sql.contains("\"timestamp\"")));
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::verify::{Expectation, TestQuery};

/// A named set of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckPreset {
    /// The KARS asset-registration database: users exist and one of them is an `admin`, every
    /// asset's company exists, serial numbers and asset tags are unique, and the newest
    /// `audit_logs.timestamp` lies within the RPO before the backup (KARS writes an audit row
    /// for every change, so an older one means a stale or mislabelled backup).
    Kars,
}

impl CheckPreset {
    /// Every preset.
    pub const ALL: [CheckPreset; 1] = [CheckPreset::Kars];

    /// The preset's name (`kars`).
    pub fn name(self) -> &'static str {
        match self {
            CheckPreset::Kars => "kars",
        }
    }

    /// The preset's queries for a backup taken at `backup_time`, with `rpo` as the window of
    /// the audit-log check.
    pub fn queries(self, backup_time: DateTime<Utc>, rpo: Duration) -> Vec<TestQuery> {
        match self {
            CheckPreset::Kars => kars(backup_time, rpo),
        }
    }
}

fn zero(sql: &str, label: &str) -> TestQuery {
    TestQuery {
        sql: sql.to_string(),
        expect: Expectation::Value("0".into()),
        label: Some(label.to_string()),
    }
}

fn duplicates(column: &str) -> String {
    format!(
        "SELECT count(*) FROM (SELECT {column} FROM assets WHERE {column} IS NOT NULL GROUP BY {column} HAVING count(*) > 1) AS duplicated"
    )
}

fn kars(backup_time: DateTime<Utc>, rpo: Duration) -> Vec<TestQuery> {
    vec![
        TestQuery::expect_true("SELECT count(*) > 0 FROM users").labelled("kars: users exist"),
        TestQuery::expect_true("SELECT count(*) > 0 FROM users WHERE role = 'admin'")
            .labelled("kars: at least one admin user"),
        zero(
            "SELECT count(*) FROM assets a LEFT JOIN companies c ON c.id = a.company_id WHERE c.id IS NULL",
            "kars: every asset's company exists",
        ),
        zero(
            &duplicates("serial_number"),
            "kars: serial numbers are unique",
        ),
        zero(&duplicates("asset_tag"), "kars: asset tags are unique"),
        TestQuery::audit_log("audit_logs", "timestamp", backup_time, rpo).labelled(format!(
            "kars: newest audit_logs.timestamp within the RPO ({}) before the backup",
            human(rpo)
        )),
    ]
}

/// `24h`, `90m`, `2d`: the way durations are written on the command line.
fn human(d: Duration) -> String {
    let secs = d.num_seconds();
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3_600 == 0 {
        format!("{}h", secs / 3_600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

impl fmt::Display for CheckPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CheckPreset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CheckPreset::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown check preset {s:?}: use {}",
                    CheckPreset::ALL.map(|p| p.name()).join(", ")
                )
            })
    }
}

/// Adds the preset's queries to `queries`, leaving out any query already there (the same SQL,
/// e.g. an `audit-log` check that the preset also makes).
pub fn add_preset(
    queries: &mut Vec<TestQuery>,
    preset: CheckPreset,
    backup_time: DateTime<Utc>,
    rpo: Duration,
) {
    for q in preset.queries(backup_time, rpo) {
        if !queries.iter().any(|existing| existing.sql == q.sql) {
            queries.push(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::judge_query;
    use chrono::TimeZone;

    #[test]
    fn parses_and_names() {
        assert_eq!("kars".parse::<CheckPreset>(), Ok(CheckPreset::Kars));
        let err = "karss".parse::<CheckPreset>().unwrap_err();
        assert!(err.contains("use kars"), "{err}");
        assert_eq!(CheckPreset::Kars.to_string(), "kars");
    }

    #[test]
    fn the_kars_audit_check_reads_the_timestamp_column_in_both_formats() {
        let backup = Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap();
        let queries = CheckPreset::Kars.queries(backup, Duration::hours(24));
        let audit = queries
            .iter()
            .find(|q| q.sql.contains("audit_logs"))
            .unwrap();
        assert_eq!(audit.sql, "SELECT max(\"timestamp\") FROM \"audit_logs\"");
        assert!(
            audit.check_name().contains("(1d)"),
            "{}",
            audit.check_name()
        );
        // SQLite: ISO-8601 text as KARS writes it; PostgreSQL: `timestamp` as text.
        for fresh in ["2026-12-05T09:30:18.123Z", "2026-12-05 09:30:18.123"] {
            assert!(judge_query(audit, &[Some(fresh.into())]).passed, "{fresh}");
        }
        let stale = judge_query(audit, &[Some("2026-12-01T09:30:18.123Z".into())]);
        assert!(!stale.passed);
        assert!(stale.detail.contains("stale"), "{}", stale.detail);
        assert!(stale.detail.contains("SQL: SELECT max"), "{}", stale.detail);
    }

    #[test]
    fn presets_do_not_repeat_a_query_already_planned() {
        let backup = Utc::now();
        let mut queries = vec![TestQuery::audit_log(
            "audit_logs",
            "timestamp",
            backup,
            Duration::hours(24),
        )];
        add_preset(&mut queries, CheckPreset::Kars, backup, Duration::hours(24));
        assert_eq!(
            queries
                .iter()
                .filter(|q| q.sql.contains("audit_logs"))
                .count(),
            1
        );
        assert_eq!(
            queries.len(),
            CheckPreset::Kars.queries(backup, Duration::hours(24)).len()
        );
    }
}
