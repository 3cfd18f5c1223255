//! amcheck: the extension that checks B-tree indexes (and with `heapallindexed` that every
//! table row is indexed), set up in a restored database for the verification and, during a
//! parallel load, for each table's indexes once they are built.

use kars_backup_core::verify::IntegrityLevel;
use tokio_postgres::Client;

use crate::conn::quote_ident;
use crate::error::db_message;

/// Whether amcheck at `level` runs with `heapallindexed` (only `Full`); `None` for no amcheck.
pub(crate) fn heapallindexed(level: IntegrityLevel) -> Option<bool> {
    match level {
        IntegrityLevel::Full => Some(true),
        IntegrityLevel::Standard | IntegrityLevel::Quick => Some(false),
        IntegrityLevel::Off => None,
    }
}

/// The query that checks the index whose OID is `$1` with amcheck installed in `schema`.
pub(crate) fn check_sql(schema: &str, heap: bool) -> String {
    format!(
        "SELECT {}.bt_index_check($1::pg_catalog.oid::pg_catalog.regclass, {heap})::text",
        quote_ident(schema)
    )
}

/// The schema of amcheck and whether this check created it; `Ok(None)` when amcheck is not
/// available (not installed on the server, or no privilege to create it).
pub(crate) async fn amcheck_setup(client: &Client) -> Result<Option<(String, bool)>, String> {
    let installed: Option<String> = client
        .query_opt(
            "SELECT n.nspname::text FROM pg_catalog.pg_extension e
             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
            &[],
        )
        .await
        .map_err(|e| db_message(&e))?
        .map(|r| r.get(0));
    if let Some(s) = installed {
        return Ok(Some((s, false)));
    }
    let available = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'amcheck'",
            &[],
        )
        .await
        .map_err(|e| db_message(&e))?
        .is_some();
    if !available {
        return Ok(None);
    }
    let created = client
        .batch_execute("CREATE SCHEMA kars_amcheck; CREATE EXTENSION amcheck SCHEMA kars_amcheck")
        .await;
    if let Err(e) = created {
        tracing::info!(error = %db_message(&e), "amcheck cannot be installed; using catalog checks");
        drop_amcheck(client, true).await;
        return Ok(None);
    }
    Ok(Some(("kars_amcheck".to_string(), true)))
}

/// Drops amcheck again when this check created it.
pub(crate) async fn drop_amcheck(client: &Client, created: bool) {
    if created {
        let _ = client
            .batch_execute("DROP SCHEMA IF EXISTS kars_amcheck CASCADE")
            .await;
    }
}

/// The B-tree indexes amcheck can check, with the pages a check reads (the index, and its table
/// too for `heapallindexed`).
pub(crate) async fn btree_indexes(client: &Client, heap: bool) -> Result<Vec<(u32, i64)>, String> {
    let rows = client
        .query(
            "SELECT c.oid, pg_catalog.pg_relation_size(c.oid)::int8
                    + CASE WHEN $1 THEN pg_catalog.pg_relation_size(i.indrelid)::int8 ELSE 0 END
             FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             JOIN pg_catalog.pg_am a ON a.oid = c.relam
             WHERE a.amname = 'btree' AND c.relkind = 'i' AND c.relpersistence <> 't'
               AND i.indisvalid AND i.indisready",
            &[&heap],
        )
        .await
        .map_err(|e| db_message(&e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
