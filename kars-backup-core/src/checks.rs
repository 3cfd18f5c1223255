//! What a restore, verification or drill checks, as library values: [`Checks`] (a verification
//! plan whose time-dependent checks are filled in per backup), the [`PlanSource`] trait the
//! recovery functions take it through, and [`ScratchTargets`], the scratch databases of verifies
//! and drills.
//!
//! ```
//! use kars_backup_core::checks::{Checks, PlanSource};
//! use kars_backup_core::IntegrityLevel;
//!
//! let checks = Checks {
//!     integrity: IntegrityLevel::Full,
//!     audit_log: Some(("audit_logs".into(), "timestamp".into())),
//!     ..Checks::default()
//! };
//! let plan = checks.plan_at(chrono::Utc::now());
//! assert_eq!(plan.integrity, IntegrityLevel::Full);
//! assert_eq!(plan.queries.len(), 1);
//! ```

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::preset::{CheckPreset, add_preset};
#[cfg(feature = "clap")]
use crate::retention::parse_duration;
use crate::verify::{Expectation, TestQuery};
use crate::{BackupEntry, DynDatabaseSource, IntegrityLevel, TableInfo, VerifyPlan};

/// The verification plan of each backup a restore, verification or drill tries (checks may
/// depend on the backup's time, as the audit-log check does).
pub trait PlanSource: Send + Sync + std::fmt::Debug {
    /// The plan for `entry`.
    ///
    /// # Errors
    /// A plan that cannot be built (usage errors).
    fn plan_for(&self, entry: &BackupEntry) -> Result<VerifyPlan>;
}

/// A fixed plan: the same checks for every backup.
impl PlanSource for VerifyPlan {
    fn plan_for(&self, _entry: &BackupEntry) -> Result<VerifyPlan> {
        Ok(self.clone())
    }
}

/// Makes a new scratch target (a temporary SQLite file, a temporary PostgreSQL database) for
/// verifying one backup; it must not exist yet.
pub trait ScratchTargets: Send + Sync + std::fmt::Debug {
    /// A new scratch target for `entry`.
    ///
    /// # Errors
    /// A scratch target that cannot be made (no scratch server for a PostgreSQL backup, a
    /// directory that cannot be created).
    fn scratch_for(&self, entry: &BackupEntry) -> Result<DynDatabaseSource>;
}

/// A verification plan as configured: fixed checks plus the time-dependent ones (the audit-log
/// check and presets measure against the backup's time and the RPO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checks {
    /// The engine's integrity check.
    pub integrity: IntegrityLevel,
    /// Compare row counts with the manifest's.
    pub check_counts: bool,
    /// Minimum row counts per table.
    pub min_rows: Vec<TableInfo>,
    /// Test queries.
    pub queries: Vec<TestQuery>,
    /// Audit-log check: `(table, column)` whose newest value must lie within `rpo` before the
    /// backup's time.
    pub audit_log: Option<(String, String)>,
    /// A preset of checks.
    pub preset: Option<CheckPreset>,
    /// The window of the audit-log check and presets.
    pub rpo: chrono::Duration,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            integrity: IntegrityLevel::Standard,
            check_counts: true,
            min_rows: Vec::new(),
            queries: Vec::new(),
            audit_log: None,
            preset: None,
            rpo: chrono::Duration::hours(24),
        }
    }
}

impl Checks {
    /// The plan for a backup taken at `backup_time`: the queries, then the audit-log check, then
    /// the preset's queries.
    pub fn plan_at(&self, backup_time: DateTime<Utc>) -> VerifyPlan {
        let mut queries = self.queries.clone();
        if let Some((table, column)) = &self.audit_log {
            queries.push(TestQuery::audit_log(table, column, backup_time, self.rpo));
        }
        if let Some(preset) = self.preset {
            add_preset(&mut queries, preset, backup_time, self.rpo);
        }
        VerifyPlan {
            integrity: self.integrity,
            check_counts: self.check_counts,
            min_rows: self.min_rows.clone(),
            queries,
        }
    }
}

impl PlanSource for Checks {
    fn plan_for(&self, entry: &BackupEntry) -> Result<VerifyPlan> {
        Ok(self.plan_at(entry.time()))
    }
}

/// The verification flags of `restore`, `verify` and `drill` (`clap` feature): test queries,
/// minimum row counts, the audit-log check and presets. A job's `[job.verify]` plan replaces
/// them as a whole (they are not half-merged: giving both is a usage error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Verification"))]
#[cfg_attr(
    feature = "clap",
    command(group(clap::ArgGroup::new("rpo_window").multiple(true).args(["audit_log", "checks"])))
)]
pub struct CheckOptions {
    /// A preset of checks: `kars` (users exist and one is an admin, every asset's company
    /// exists, serial numbers and asset tags are unique, the newest audit_logs.timestamp lies
    /// within --rpo before the backup).
    #[cfg_attr(feature = "clap", arg(long, value_name = "PRESET"))]
    pub checks: Option<CheckPreset>,

    /// A test query that must return true (or a non-zero number) in its first column, e.g.
    /// "SELECT count(*) > 0 FROM users"; repeatable.
    #[cfg_attr(feature = "clap", arg(long = "verify-query", value_name = "SQL"))]
    pub queries: Vec<String>,

    /// A minimum row count, `table=N` (e.g. users=1); repeatable.
    #[cfg_attr(
        feature = "clap",
        arg(long = "min-rows", value_name = "TABLE=N", value_parser = parse_min_rows)
    )]
    pub min_rows: Vec<TableInfo>,

    /// Audit-log check, `TABLE.COLUMN` (e.g. audit_logs.timestamp): the newest entry must not be
    /// later than the backup's time nor older than --rpo before it.
    #[cfg_attr(feature = "clap", arg(long, value_name = "TABLE.COLUMN"))]
    pub audit_log: Option<String>,

    /// Recovery point objective of the audit-log check (--audit-log, --checks kars)
    /// [default: 24h].
    #[cfg_attr(
        feature = "clap",
        arg(long, value_parser = parse_duration, requires = "rpo_window")
    )]
    pub rpo: Option<chrono::Duration>,
}

impl CheckOptions {
    /// Whether any check is given (beyond the RPO).
    pub fn any(&self) -> bool {
        !self.queries.is_empty()
            || !self.min_rows.is_empty()
            || self.audit_log.is_some()
            || self.checks.is_some()
    }

    /// The RPO (default 24 h).
    pub fn rpo(&self) -> chrono::Duration {
        self.rpo.unwrap_or_else(|| chrono::Duration::hours(24))
    }

    /// These checks with the given integrity level.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an audit-log check that is not `TABLE.COLUMN`.
    pub fn checks(&self, integrity: IntegrityLevel) -> Result<Checks> {
        let audit_log = match &self.audit_log {
            None => None,
            Some(spec) => {
                let (table, column) = spec
                    .split_once('.')
                    .filter(|(t, c)| !t.is_empty() && !c.is_empty())
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "--audit-log {spec:?}: use TABLE.COLUMN, e.g. audit_logs.timestamp"
                        ))
                    })?;
                Some((table.to_string(), column.to_string()))
            }
        };
        Ok(Checks {
            integrity,
            check_counts: true,
            min_rows: self.min_rows.clone(),
            queries: self
                .queries
                .iter()
                .map(|sql| TestQuery {
                    sql: sql.clone(),
                    expect: Expectation::True,
                    label: None,
                })
                .collect(),
            audit_log,
            preset: self.checks,
            rpo: self.rpo(),
        })
    }
}

/// `TABLE=N`, a minimum row count.
///
/// # Errors
/// Anything else, with an example.
pub fn parse_min_rows(s: &str) -> std::result::Result<TableInfo, String> {
    let (table, n) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: use TABLE=N, e.g. users=1"))?;
    let rows = n
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the row count {n:?} is not a number"))?;
    if table.trim().is_empty() {
        return Err(format!("{s:?}: name the table, e.g. users=1"));
    }
    Ok(TableInfo {
        name: table.trim().to_string(),
        rows,
    })
}
