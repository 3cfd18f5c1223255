//! Checks of a restored database: integrity (amcheck where it can be used, else catalog checks),
//! row counts against the manifest, minimum rows, test queries.
//!
//! The scans (amcheck of each B-tree index, the exact row count of each table) are spread over
//! two connections, largest first, so they use two server processes.

use std::collections::VecDeque;
use std::sync::Mutex;

use kars_backup_core::verify::{self as core_verify, IntegrityLevel};
use kars_backup_core::{Manifest, TableInfo, VerifyPlan, VerifyReport};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::amcheck::{amcheck_setup, btree_indexes, check_sql, drop_amcheck, heapallindexed};
use crate::conn::ConnInfo;
use crate::error::{Error, Result, db_message};
use crate::loaded::{EarlyChecks, LoadedCounts};
use crate::metadata::{self, Selection};

/// amcheck set up for a verification: its schema, whether this check created it (and drops it
/// again), and the indexes to check with the pages each check reads.
type Amcheck = (String, bool, Vec<(u32, i64)>);

/// One scan of the verification.
enum Scan {
    /// `count(*)` of the table at this index of the table list.
    Count(usize),
    /// `bt_index_check` of the index with this OID.
    Check(u32),
}

/// What the scans found.
#[derive(Default)]
struct ScanResults {
    counts: Vec<(usize, std::result::Result<u64, Error>)>,
    checked: u64,
    check_errors: Vec<String>,
}

/// Runs scans from the shared queue on one connection until the queue is empty.
async fn scan_worker(
    client: &Client,
    queue: &Mutex<VecDeque<Scan>>,
    tables: &[String],
    check_sql: &str,
    target: &str,
) -> ScanResults {
    let mut out = ScanResults::default();
    loop {
        let next = queue.lock().expect("scan queue").pop_front();
        let Some(scan) = next else { break };
        match scan {
            Scan::Count(i) => {
                let t = &tables[i];
                let r = client
                    .query_one(&format!("SELECT count(*) FROM ONLY {t}"), &[])
                    .await
                    .map(|row| row.get::<_, i64>(0).max(0) as u64)
                    .map_err(|e| Error::query(format!("count the rows of {t}"), target, &e));
                out.counts.push((i, r));
            }
            Scan::Check(oid) => match client.query_one(check_sql, &[&oid]).await {
                Ok(_) => out.checked += 1,
                Err(e) => out.check_errors.push(db_message(&e)),
            },
        }
    }
    out
}

/// Runs `plan` against the database `conn` names. `only` limits the count comparison to these
/// tables (a selective restore). `loaded` holds row counts the server reported while loading
/// this database (`COPY n` of a table's one `COPY`, in a new database nothing else wrote to):
/// those tables are not counted again; and the amcheck checks run on indexes once they were
/// built, which are not run again when they were at least as thorough as `plan` asks.
pub(crate) async fn verify_database(
    conn: &ConnInfo,
    plan: &VerifyPlan,
    manifest: Option<&Manifest>,
    only: &[String],
    loaded: &LoadedCounts,
) -> Result<VerifyReport> {
    let early = loaded.early.as_ref();
    let loaded = &loaded.rows;
    let client = conn.connect().await?;
    // Check lines name tables, not the database: the archive holds one, and it is verified under
    // a scratch or staging name that means nothing to the reader.
    let label = "";
    let target = conn.redacted();
    let mut report = VerifyReport::default();
    let tables = metadata::list_tables(&client, &Selection::default(), &target).await?;

    // What the integrity check scans: amcheck on every B-tree index, else catalog checks.
    let heap = heapallindexed(plan.integrity).unwrap_or(false);
    // Checks run during the load count when they were as thorough (heapallindexed if asked).
    let reused: Option<&EarlyChecks> = early.filter(|e| e.heap || !heap);
    let early_created = early.is_some_and(|e| e.created);
    let mut amcheck: Option<Amcheck> = None;
    if plan.integrity == IntegrityLevel::Off {
        drop_amcheck(&client, early_created).await;
    } else {
        match amcheck_setup(&client).await {
            Ok(Some((schema, created))) => match btree_indexes(&client, heap).await {
                Ok(mut indexes) => {
                    if let Some(e) = reused {
                        indexes.retain(|(oid, _)| !e.checked.contains(oid));
                    }
                    amcheck = Some((schema, created || early_created, indexes));
                }
                Err(e) => {
                    drop_amcheck(&client, created || early_created).await;
                    report.push("amcheck", false, e);
                }
            },
            Ok(None) => catalog_check(&client, &mut report).await,
            Err(e) => report.push("amcheck", false, e),
        }
    }

    // Tables are counted for the plan's counts and minimums, and where amcheck cannot be used
    // (reading each table in full is then the integrity check).
    let count = plan.check_counts
        || !plan.min_rows.is_empty()
        || (plan.integrity != IntegrityLevel::Off && amcheck.is_none());
    // Largest scans first, shared by the connections.
    let sizes = if count {
        table_sizes(&client, &tables).await
    } else {
        Vec::new()
    };
    let mut scans: Vec<(i64, Scan)> = (0..tables.len())
        .filter(|&i| count && !loaded.contains_key(&tables[i]))
        .map(|i| (sizes.get(i).copied().unwrap_or(0), Scan::Count(i)))
        .collect();
    let check_sql = match &amcheck {
        Some((schema, _, indexes)) => {
            scans.extend(indexes.iter().map(|&(oid, cost)| (cost, Scan::Check(oid))));
            check_sql(schema, heap)
        }
        None => String::new(),
    };
    scans.sort_by_key(|s| std::cmp::Reverse(s.0));
    let queue = Mutex::new(scans.into_iter().map(|(_, s)| s).collect::<VecDeque<_>>());
    let second = if queue.lock().expect("scan queue").len() > 1 {
        match conn.connect().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "a second verification connection failed; scanning on one");
                None
            }
        }
    } else {
        None
    };
    let (first, other) = tokio::join!(
        scan_worker(&client, &queue, &tables, &check_sql, &target),
        async {
            match &second {
                Some(c) => scan_worker(c, &queue, &tables, &check_sql, &target).await,
                None => ScanResults::default(),
            }
        }
    );
    drop(second);
    let results = [first, other];

    if let Some((_, created, _)) = &amcheck {
        drop_amcheck(&client, *created).await;
        let early_checked = reused.map_or(0, |e| e.checked.len() as u64);
        let checked: u64 = results.iter().map(|r| r.checked).sum::<u64>() + early_checked;
        let early_errors = reused.into_iter().flat_map(|e| e.errors.iter());
        match early_errors
            .chain(results.iter().flat_map(|r| r.check_errors.iter()))
            .next()
        {
            Some(e) => report.push("amcheck", false, e.clone()),
            None => report.push(
                "amcheck",
                true,
                format!(
                    "{checked} B-tree indexes checked with bt_index_check{}{}",
                    if heap { " (heapallindexed)" } else { "" },
                    if early_checked > 0 {
                        format!(", {early_checked} of them as soon as they were built")
                    } else {
                        String::new()
                    }
                ),
            ),
        }
    }
    let mut counted: Vec<Option<u64>> = tables.iter().map(|t| loaded.get(t).copied()).collect();
    let from_load = counted.iter().filter(|c| c.is_some()).count();
    for r in results {
        for (i, n) in r.counts {
            match n {
                Ok(n) => counted[i] = Some(n),
                Err(e) => {
                    report.push("row counts", false, e.to_string());
                    return Ok(report);
                }
            }
        }
    }
    let actual: Vec<TableInfo> = tables
        .iter()
        .zip(counted)
        .map(|(t, n)| TableInfo {
            name: t.clone(),
            rows: n.unwrap_or(0),
        })
        .collect();

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
                let mut check = core_verify::compare_counts(label, &expected, &actual);
                if from_load > 0 {
                    check.detail.push_str(&format!(
                        " ({from_load} of {} tables counted by the server while loading them, the rest with count(*))",
                        tables.len()
                    ));
                }
                report.checks.push(check);
            }
            None => report.push(
                "row counts",
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
        report
            .checks
            .extend(core_verify::check_min_rows(label, &plan.min_rows, &aliases));
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

/// Catalog checks where amcheck cannot be used: no invalid index (the tables are read in full
/// by the row counts).
async fn catalog_check(client: &Client, report: &mut VerifyReport) {
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

/// The size of each table in bytes (0 where it cannot be read), to schedule the counts.
async fn table_sizes(client: &Client, tables: &[String]) -> Vec<i64> {
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    match client
        .query(
            "SELECT pg_catalog.pg_relation_size(t::pg_catalog.regclass)::int8
             FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
            &[&names],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(_) => Vec::new(),
    }
}
