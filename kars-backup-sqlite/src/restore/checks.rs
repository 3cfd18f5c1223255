//! Verification of the staged databases: integrity, row counts against the manifest, minimum
//! row counts and test queries.

use kars_backup_core::verify;
use kars_backup_core::{Manifest, TableInfo, VerifyPlan, VerifyReport};

use super::target::StagedDatabase;
use crate::inspect;

/// Runs the verification plan against the staged databases (see [`StagedRestore::verify`]).
pub(crate) fn verify_blocking(
    databases: &[StagedDatabase],
    plan: &VerifyPlan,
    manifest: Option<&Manifest>,
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut counted: Vec<(&StagedDatabase, Vec<TableInfo>)> = Vec::new();
    if databases.is_empty() {
        report.push("databases", false, "the archive holds no SQLite database");
    }
    for db in databases {
        if let Some(tables) = verify_database(db, plan, manifest, &mut report) {
            counted.push((db, tables));
        }
    }
    if let Some(m) = manifest {
        for expected in &m.databases {
            if !databases.iter().any(|d| d.name == expected.name) && databases.len() > 1 {
                report.push(
                    format!("database {}", expected.name),
                    false,
                    "listed in the manifest but missing from the archive",
                );
            }
        }
    }
    check_min_rows(&counted, &plan.min_rows, &mut report);
    if let Some(primary) = primary_database(databases, manifest) {
        run_queries(primary, plan, &mut report);
    }
    report
}

/// Integrity and row counts of one staged database; returns its tables when they could be counted.
fn verify_database(
    db: &StagedDatabase,
    plan: &VerifyPlan,
    manifest: Option<&Manifest>,
    report: &mut VerifyReport,
) -> Option<Vec<TableInfo>> {
    let conn = match inspect::open_private(&db.path) {
        Ok(c) => c,
        Err(e) => {
            report.push(format!("open {}", db.name), false, e.to_string());
            return None;
        }
    };
    if let Some(check) = inspect::integrity_pragma(plan.integrity) {
        let label = format!("{check} of {}", db.name);
        match inspect::integrity(&conn, &db.path, plan.integrity) {
            Ok(Some(result)) => report.push(label, result == "ok", result),
            Ok(None) => {}
            Err(e) => report.push(label, false, e.to_string()),
        }
    }
    let tables = match inspect::count_tables(&conn, &db.path) {
        Ok(t) => t,
        Err(e) => {
            report.push(format!("row counts of {}", db.name), false, e.to_string());
            return None;
        }
    };
    if plan.check_counts {
        match manifest {
            Some(m) => match m.databases.iter().find(|d| d.name == db.name) {
                Some(expected) => {
                    report
                        .checks
                        .push(verify::compare_counts(&db.name, &expected.tables, &tables))
                }
                None => report.push(
                    format!("row counts of {}", db.name),
                    false,
                    "the manifest does not list this database",
                ),
            },
            None => report.push(
                format!("row counts of {}", db.name),
                true,
                format!(
                    "{} tables, {} rows; not compared: the archive has no manifest",
                    tables.len(),
                    tables.iter().map(|t| t.rows).sum::<u64>()
                ),
            ),
        }
    }
    Some(tables)
}

/// Minimum row counts: each table is looked up in the first database that has it.
fn check_min_rows(
    counted: &[(&StagedDatabase, Vec<TableInfo>)],
    minimums: &[TableInfo],
    report: &mut VerifyReport,
) {
    for minimum in minimums {
        let holder = counted
            .iter()
            .find(|(_, tables)| tables.iter().any(|t| t.name == minimum.name))
            .or(counted.first());
        match holder {
            Some((db, tables)) => report.checks.extend(verify::check_min_rows(
                &db.name,
                std::slice::from_ref(minimum),
                tables,
            )),
            None => report.push(
                format!(
                    "at least {} in {}",
                    verify::rows_text(minimum.rows),
                    minimum.name
                ),
                false,
                "no database could be counted",
            ),
        }
    }
}

/// The database test queries run against: the manifest's first database, else the first by name.
fn primary_database<'a>(
    databases: &'a [StagedDatabase],
    manifest: Option<&Manifest>,
) -> Option<&'a StagedDatabase> {
    manifest
        .and_then(|m| m.databases.first())
        .and_then(|first| databases.iter().find(|d| d.name == first.name))
        .or(databases.first())
}

/// Runs each test query read-only; a query that fails is a failed check.
fn run_queries(db: &StagedDatabase, plan: &VerifyPlan, report: &mut VerifyReport) {
    if plan.queries.is_empty() {
        return;
    }
    let conn = match inspect::open_private(&db.path) {
        Ok(c) => c,
        Err(e) => {
            report.push(format!("open {}", db.name), false, e.to_string());
            return;
        }
    };
    for query in &plan.queries {
        match inspect::run_query(&conn, &query.sql) {
            Ok(rows) => report.checks.push(verify::judge_query(query, &rows)),
            Err(e) => report.push(
                format!("query: {}", query.sql),
                false,
                format!("failed in {}: {e}", db.name),
            ),
        }
    }
}
