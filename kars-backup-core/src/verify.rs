//! Verification: the plan of checks run against a restored database, and their report.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::TableInfo;

/// How thorough the engine's own integrity check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum IntegrityLevel {
    /// The engine's usual check: SQLite `PRAGMA integrity_check`; PostgreSQL amcheck's
    /// `bt_index_check` of every B-tree index, as `pg_amcheck` does by default.
    #[default]
    Standard,
    /// The most thorough check: SQLite `PRAGMA integrity_check`; PostgreSQL `bt_index_check` with
    /// `heapallindexed` (every row is looked up in every index: a scan of each table per index).
    Full,
    /// A faster check (SQLite `PRAGMA quick_check`; PostgreSQL as `Standard`), for very large
    /// databases.
    Quick,
    /// No integrity check.
    Off,
}

/// What a test query must return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expectation {
    /// The first column of the first row, as text, equals this.
    Value(String),
    /// The query returns this many rows.
    RowCount(u64),
    /// The first column of the first row is true (non-zero, `t`, `true`).
    True,
    /// The first column of the first row is a time within these bounds (the audit-log check:
    /// the newest entry is not later than the backup and not older than the RPO before it).
    TimeBetween {
        /// The earliest accepted time.
        not_before: DateTime<Utc>,
        /// The latest accepted time.
        not_after: DateTime<Utc>,
    },
}

impl TestQuery {
    /// The audit-log check: the newest `column` of `table` must lie between `rpo` before the
    /// backup's time and the backup's time (plus a minute of clock skew). A newer entry means the
    /// data is not the backup's; an older one means a stale or mislabelled backup.
    pub fn audit_log(
        table: &str,
        column: &str,
        backup_time: DateTime<Utc>,
        rpo: chrono::Duration,
    ) -> Self {
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        TestQuery {
            sql: format!("SELECT max({}) FROM {}", quote(column), quote(table)),
            expect: Expectation::TimeBetween {
                not_before: backup_time - rpo,
                not_after: backup_time + chrono::Duration::minutes(1),
            },
            label: None,
        }
    }

    /// A query that must return true.
    pub fn expect_true(sql: impl Into<String>) -> Self {
        TestQuery {
            sql: sql.into(),
            expect: Expectation::True,
            label: None,
        }
    }

    /// The same query, reported under `label` instead of its SQL.
    pub fn labelled(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// How the check is named in reports: its label, else `query: <sql>`.
    pub fn check_name(&self) -> String {
        match &self.label {
            Some(l) => l.clone(),
            None => format!("query: {}", self.sql),
        }
    }
}

/// Parses the text of a timestamp as SQLite and PostgreSQL print it (`2024-12-18 02:00:00`,
/// `2024-12-18T02:00:00Z`, `2024-12-18 02:00:00.123+00`); times without an offset are UTC.
pub fn parse_db_time(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.to_utc());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, format) {
            return Some(dt.to_utc());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(t, format) {
            return Some(dt.and_utc());
        }
    }
    None
}

/// [`parse_db_time`] for an instant the operator gives (`--to-time`), with an error that shows
/// how to write one.
///
/// # Errors
/// Text that is no time.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    parse_db_time(text).ok_or_else(|| {
        format!(
            "{text:?} is not a time: write 2026-12-05T10:00:00.250Z, 2026-12-05 10:00:00.250 (UTC) \
             or 2026-12-05T11:00:00.250+01:00"
        )
    })
}

/// A query run against the restored database, with what it must return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestQuery {
    /// The SQL (a single read-only statement).
    pub sql: String,
    /// What it must return.
    pub expect: Expectation,
    /// A name for reports (`kars: at least one admin user`); the SQL when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The checks to run against a restored database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct VerifyPlan {
    /// The engine's integrity check.
    #[serde(default)]
    pub integrity: IntegrityLevel,
    /// Compare every table's row count with the manifest's counts from the snapshot.
    #[serde(default = "yes")]
    pub check_counts: bool,
    /// Minimum row counts per table.
    #[serde(default)]
    pub min_rows: Vec<TableInfo>,
    /// Test queries.
    #[serde(default)]
    pub queries: Vec<TestQuery>,
}

fn yes() -> bool {
    true
}

impl Default for VerifyPlan {
    fn default() -> Self {
        VerifyPlan {
            integrity: IntegrityLevel::Standard,
            check_counts: true,
            min_rows: Vec::new(),
            queries: Vec::new(),
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// What was checked (`integrity_check`, `row counts of assets.db`, `query: SELECT …`).
    pub check: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found.
    pub detail: String,
}

/// The outcomes of every check of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Every check that ran, in order.
    pub checks: Vec<CheckOutcome>,
}

impl VerifyReport {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// Adds an outcome.
    pub fn push(&mut self, check: impl Into<String>, passed: bool, detail: impl Into<String>) {
        self.checks.push(CheckOutcome {
            check: check.into(),
            passed,
            detail: detail.into(),
        });
    }

    /// The failed checks, one a line.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.check, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Appends another report's checks.
    pub fn extend(&mut self, other: VerifyReport) {
        self.checks.extend(other.checks);
    }
}

/// The name of a check of `what` in the database `label`: `row counts of assets.db`, or
/// `row counts` with an empty label (an archive of one database, which a check line need not name:
/// a PostgreSQL verification runs in a scratch or staging database whose name means nothing to
/// the reader).
fn check_name(what: &str, label: &str) -> String {
    if label.is_empty() {
        what.to_string()
    } else {
        format!("{what} of {label}")
    }
}

/// Compares row counts found in a restored database with the expected ones (from a manifest).
/// `label` names the database in the check line (see [`check_min_rows`]; empty: not named).
///
/// Tables missing on either side and differing counts each make the check fail.
pub fn compare_counts(label: &str, expected: &[TableInfo], actual: &[TableInfo]) -> CheckOutcome {
    let mut problems = Vec::new();
    for e in expected {
        match actual.iter().find(|a| a.name == e.name) {
            None => problems.push(format!("table {} is missing", e.name)),
            Some(a) if a.rows != e.rows => problems.push(format!(
                "table {} has {}, the manifest says {}",
                e.name,
                rows_text(a.rows),
                e.rows
            )),
            Some(_) => {}
        }
    }
    for a in actual {
        if !expected.iter().any(|e| e.name == a.name) {
            problems.push(format!("table {} is not in the manifest", a.name));
        }
    }
    let total: u64 = actual.iter().map(|t| t.rows).sum();
    CheckOutcome {
        check: check_name("row counts", label),
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "{} table{}, {}, as in the manifest",
                actual.len(),
                if actual.len() == 1 { "" } else { "s" },
                rows_text(total)
            )
        } else {
            problems.join("; ")
        },
    }
}

/// Checks minimum row counts. `label` names the database in the check lines
/// (`at least 1 row in assets.db:users`); an empty one names the table alone (`at least 1 row in
/// users`).
pub fn check_min_rows(
    label: &str,
    minimums: &[TableInfo],
    actual: &[TableInfo],
) -> Vec<CheckOutcome> {
    minimums
        .iter()
        .map(|m| {
            let found = actual.iter().find(|a| a.name == m.name).map(|a| a.rows);
            CheckOutcome {
                check: if label.is_empty() {
                    format!("at least {} in {}", rows_text(m.rows), m.name)
                } else {
                    format!("at least {} in {label}:{}", rows_text(m.rows), m.name)
                },
                passed: found.is_some_and(|n| n >= m.rows),
                detail: match found {
                    Some(n) => rows_text(n),
                    None => "table missing".to_string(),
                },
            }
        })
        .collect()
}

/// A value as a check line shows it: the text itself, `NULL` for SQL NULL, `an empty string`
/// for one.
fn shown(value: Option<&str>) -> String {
    match value {
        None => "NULL".to_string(),
        Some("") => "an empty string".to_string(),
        Some(text) => text.to_string(),
    }
}

/// `1 row`, `3 rows`.
pub fn rows_text(n: u64) -> String {
    format!("{n} row{}", if n == 1 { "" } else { "s" })
}

/// Judges a test query's result: `rows` are the rows it returned, each as its first column's text.
pub fn judge_query(query: &TestQuery, rows: &[Option<String>]) -> CheckOutcome {
    let first = rows.first().cloned().flatten();
    // What the query returned, as the detail of a value check shows it.
    let returned = match rows.first() {
        None => "no rows".to_string(),
        Some(v) => shown(v.as_deref()),
    };
    let (passed, detail) = match &query.expect {
        Expectation::RowCount(n) => (
            rows.len() as u64 == *n,
            format!(
                "returned {}, expected {}",
                rows_text(rows.len() as u64),
                rows_text(*n)
            ),
        ),
        Expectation::Value(v) => (
            first.as_deref() == Some(v.as_str()),
            format!("returned {returned}, expected {}", shown(Some(v))),
        ),
        Expectation::True => {
            let t = matches!(
                first.as_deref().map(str::to_ascii_lowercase).as_deref(),
                Some("1" | "t" | "true")
            );
            // PostgreSQL's text of a boolean is `t`/`f`.
            let returned = match first.as_deref() {
                Some("t") => "true".to_string(),
                Some("f") => "false".to_string(),
                _ => returned,
            };
            (t, format!("returned {returned}, expected true"))
        }
        Expectation::TimeBetween {
            not_before,
            not_after,
        } => match first.as_deref().map(|t| (t, parse_db_time(t))) {
            Some((_, Some(t))) if t > *not_after => (
                false,
                format!(
                    "newest entry {t} is later than the backup ({not_after}): the data is not the backup's"
                ),
            ),
            Some((_, Some(t))) if t < *not_before => (
                false,
                format!(
                    "newest entry {t} is older than {not_before}: a stale or mislabelled backup"
                ),
            ),
            Some((_, Some(t))) => (
                true,
                format!("newest entry {t}, within {not_before} .. {not_after}"),
            ),
            Some((_, None)) => (false, format!("returned {returned}, which is not a time")),
            None => (
                false,
                format!("no entry at all (the query returned {returned})"),
            ),
        },
    };
    // A labelled check that fails shows its SQL, so the operator can run it by hand.
    let detail = match &query.label {
        Some(_) if !passed => format!("{detail} (SQL: {})", query.sql),
        _ => detail,
    };
    CheckOutcome {
        check: query.check_name(),
        passed,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_database_times() {
        let t = Utc.with_ymd_and_hms(2024, 12, 18, 2, 0, 0).unwrap();
        for text in [
            "2024-12-18 02:00:00",
            "2024-12-18T02:00:00Z",
            "2024-12-18T02:00:00",
            "2024-12-18 02:00:00+00",
            "2024-12-18 03:00:00+01:00",
            "2024-12-18 02:00:00.000",
        ] {
            assert_eq!(parse_db_time(text), Some(t), "{text}");
        }
        assert_eq!(parse_db_time("yesterday"), None);
    }

    #[test]
    fn the_audit_log_check_catches_stale_and_future_data() {
        let backup = Utc.with_ymd_and_hms(2024, 12, 18, 2, 0, 0).unwrap();
        let q = TestQuery::audit_log(
            "audit_logs",
            "timestamp",
            backup,
            chrono::Duration::hours(24),
        );
        assert_eq!(q.sql, "SELECT max(\"timestamp\") FROM \"audit_logs\"");
        let judge = |v: Option<&str>| judge_query(&q, &[v.map(String::from)]).passed;
        assert!(judge(Some("2024-12-18 01:30:00")));
        assert!(!judge(Some("2024-12-16 01:30:00")), "older than the RPO");
        assert!(!judge(Some("2024-12-18 05:00:00")), "later than the backup");
        assert!(!judge(None), "no entry");
        assert!(!judge(Some("garbage")));
    }

    #[test]
    fn check_lines_read_as_text() {
        let q = |expect| TestQuery {
            sql: "SELECT x FROM t".into(),
            expect,
            label: None,
        };
        let row = |v: &str| vec![Some(v.to_string())];
        let detail = |e, rows: &[Option<String>]| judge_query(&q(e), rows).detail;
        assert_eq!(
            detail(Expectation::True, &row("1")),
            "returned 1, expected true"
        );
        assert_eq!(
            detail(Expectation::True, &row("f")),
            "returned false, expected true"
        );
        assert_eq!(
            detail(Expectation::True, &[]),
            "returned no rows, expected true"
        );
        assert_eq!(
            detail(Expectation::True, &[None]),
            "returned NULL, expected true"
        );
        assert_eq!(
            detail(Expectation::Value("42".into()), &row("41")),
            "returned 41, expected 42"
        );
        assert_eq!(
            detail(Expectation::Value("42".into()), &row("")),
            "returned an empty string, expected 42"
        );
        assert_eq!(
            detail(Expectation::Value(String::new()), &[None]),
            "returned NULL, expected an empty string"
        );
        assert_eq!(
            detail(Expectation::RowCount(1), &[None, None]),
            "returned 2 rows, expected 1 row"
        );
        assert_eq!(
            detail(Expectation::RowCount(0), &row("x")),
            "returned 1 row, expected 0 rows"
        );
        let between = Expectation::TimeBetween {
            not_before: Utc.with_ymd_and_hms(2024, 12, 17, 2, 0, 0).unwrap(),
            not_after: Utc.with_ymd_and_hms(2024, 12, 18, 2, 1, 0).unwrap(),
        };
        assert_eq!(
            detail(between.clone(), &row("soon")),
            "returned soon, which is not a time"
        );
        assert_eq!(
            detail(between.clone(), &[None]),
            "no entry at all (the query returned NULL)"
        );
        assert_eq!(
            detail(between, &[]),
            "no entry at all (the query returned no rows)"
        );
        for (expect, rows) in [
            (Expectation::True, row("t")),
            (Expectation::Value("x".into()), row("x")),
            (Expectation::RowCount(1), row("x")),
        ] {
            let c = judge_query(&q(expect), &rows);
            assert!(c.passed, "{c:?}");
            assert!(!c.detail.contains("Some("), "{c:?}");
        }
    }
}
