//! Checks of a restored database: integrity (amcheck where it can be used, else catalog checks),
//! row counts against the manifest, minimum rows, test queries.

use kars_backup_core::verify::{self as core_verify, IntegrityLevel};
use kars_backup_core::{Manifest, TableInfo, VerifyPlan, VerifyReport};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::conn::ConnInfo;
use crate::error::{Result, db_message};
use crate::metadata::{self, Selection};

/// Runs `plan` against the database `conn` names. `only` limits the count comparison to these
/// tables (a selective restore).
pub(crate) async fn verify_database(
    conn: &ConnInfo,
    plan: &VerifyPlan,
    manifest: Option<&Manifest>,
    only: &[String],
) -> Result<VerifyReport> {
    let client = conn.connect().await?;
    let label = conn.dbname().to_string();
    let target = conn.redacted();
    let mut report = VerifyReport::default();
    if plan.integrity != IntegrityLevel::Off {
        integrity(&client, plan.integrity, &mut report).await;
    }
    let tables = metadata::list_tables(&client, &Selection::default(), &target).await?;
    let actual = match metadata::count_rows(&client, &tables, &target).await {
        Ok(a) => a,
        Err(e) => {
            report.push(format!("row counts of {label}"), false, e.to_string());
            return Ok(report);
        }
    };
    let selected =
        |name: &str| only.is_empty() || only.iter().any(|o| unqualified(o) == unqualified(name));
    if plan.check_counts {
        match manifest.and_then(|m| m.databases.first()) {
            Some(expected) => {
                let expected: Vec<TableInfo> = expected
                    .tables
                    .iter()
                    .filter(|t| selected(&t.name))
                    .cloned()
                    .collect();
                let actual: Vec<TableInfo> = actual
                    .iter()
                    .filter(|t| selected(&t.name))
                    .cloned()
                    .collect();
                report
                    .checks
                    .push(core_verify::compare_counts(&label, &expected, &actual));
            }
            None => report.push(
                format!("row counts of {label}"),
                true,
                format!(
                    "{} tables, {} rows; not compared: the archive has no manifest",
                    actual.len(),
                    actual.iter().map(|t| t.rows).sum::<u64>()
                ),
            ),
        }
    }
    if !plan.min_rows.is_empty() {
        // `users` finds `public.users` too.
        let mut aliases = actual.clone();
        for t in &actual {
            if let Some(rest) = t.name.strip_prefix("public.") {
                aliases.push(TableInfo {
                    name: rest.trim_matches('"').to_string(),
                    rows: t.rows,
                });
            }
        }
        report.checks.extend(core_verify::check_min_rows(
            &label,
            &plan.min_rows,
            &aliases,
        ));
    }
    for query in &plan.queries {
        match run_query(&client, &query.sql).await {
            Ok(rows) => report.checks.push(core_verify::judge_query(query, &rows)),
            Err(e) => report.push(format!("query: {}", query.sql), false, e),
        }
    }
    Ok(report)
}

fn unqualified(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, n)| n)
        .unwrap_or(name)
        .trim_matches('"')
        .to_string()
}

/// A test query in a read-only transaction; each row's first column as text.
async fn run_query(client: &Client, sql: &str) -> Result<Vec<Option<String>>, String> {
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .map_err(|e| db_message(&e))?;
    let result = client.simple_query(sql).await;
    let _ = client.batch_execute("ROLLBACK").await;
    let messages = result.map_err(|e| db_message(&e))?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .collect())
}

/// amcheck's `bt_index_check` on every B-tree index (with `heapallindexed` for the full
/// check); where amcheck cannot be used, catalog checks (no invalid index, every table readable).
async fn integrity(client: &Client, level: IntegrityLevel, report: &mut VerifyReport) {
    match amcheck(client, level).await {
        Ok(Some(detail)) => {
            report.push("amcheck", true, detail);
            return;
        }
        Ok(None) => {}
        Err(e) => {
            report.push("amcheck", false, e);
            return;
        }
    }
    let invalid = client
        .query(
            "SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid",
            &[],
        )
        .await;
    match invalid {
        Ok(rows) if rows.is_empty() => report.push(
            "catalog check",
            true,
            "no invalid index (amcheck is not available here; tables are read in full by the row counts)",
        ),
        Ok(rows) => report.push(
            "catalog check",
            false,
            format!(
                "invalid indexes: {}",
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(e) => report.push("catalog check", false, db_message(&e)),
    }
}

/// `Ok(None)` when amcheck is not available (not installed on the server, or no privilege to
/// create it); the extension is dropped again if this check created it.
async fn amcheck(client: &Client, level: IntegrityLevel) -> Result<Option<String>, String> {
    let installed: Option<String> = client
        .query_opt(
            "SELECT n.nspname::text FROM pg_catalog.pg_extension e
             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
            &[],
        )
        .await
        .map_err(|e| db_message(&e))?
        .map(|r| r.get(0));
    let available = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'amcheck'",
            &[],
        )
        .await
        .map_err(|e| db_message(&e))?
        .is_some();
    let (schema, created) = match installed {
        Some(s) => (s, false),
        None if !available => return Ok(None),
        None => {
            let created = client
                .batch_execute(
                    "CREATE SCHEMA kars_amcheck; CREATE EXTENSION amcheck SCHEMA kars_amcheck",
                )
                .await;
            if let Err(e) = created {
                tracing::info!(error = %db_message(&e), "amcheck cannot be installed; using catalog checks");
                let _ = client
                    .batch_execute("DROP SCHEMA IF EXISTS kars_amcheck CASCADE")
                    .await;
                return Ok(None);
            }
            ("kars_amcheck".to_string(), true)
        }
    };
    let heap = level == IntegrityLevel::Full;
    let sql = format!(
        "SELECT count({schema}.bt_index_check(c.oid::pg_catalog.regclass, {heap}))
         FROM pg_catalog.pg_index i
         JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
         JOIN pg_catalog.pg_am a ON a.oid = c.relam
         WHERE a.amname = 'btree' AND c.relkind = 'i' AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready",
        schema = crate::conn::quote_ident(&schema)
    );
    let result = client.query_one(&sql, &[]).await;
    if created {
        let _ = client
            .batch_execute("DROP SCHEMA IF EXISTS kars_amcheck CASCADE")
            .await;
    }
    match result {
        Ok(row) => {
            let n: i64 = row.get(0);
            Ok(Some(format!(
                "{n} B-tree indexes checked with bt_index_check{}",
                if heap { " (heapallindexed)" } else { "" }
            )))
        }
        Err(e) => Err(db_message(&e)),
    }
}
