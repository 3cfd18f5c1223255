//! Databases as a whole, over a maintenance connection: whether one exists, free names for
//! staging and kept databases, creating one with the backup's encoding and locale, and renaming
//! several in one transaction.

use std::time::Duration;

use kars_backup_core::Manifest;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::conn::{ConnInfo, MAINTENANCE_DB, MAX_IDENT, quote_ident, quote_literal};
use crate::error::{Error, Result, db_message};
use crate::metadata::server_version;
use crate::sessions;

/// A connection for creating, renaming and dropping databases: to `postgres` (or `template1`
/// when the target is `postgres` itself or `postgres` does not exist).
pub(crate) async fn admin_connect(target: &ConnInfo) -> Result<(Client, ConnInfo)> {
    let first = if target.dbname() == MAINTENANCE_DB {
        "template1"
    } else {
        MAINTENANCE_DB
    };
    let conn = target.with_dbname(first);
    match conn.connect().await {
        Ok(c) => Ok((c, conn)),
        Err(Error::NoSuchDatabase { .. }) => {
            let conn = target.with_dbname("template1");
            Ok((conn.connect().await?, conn))
        }
        Err(e) => Err(e),
    }
}

/// Whether a database exists.
pub(crate) async fn database_exists(admin: &Client, name: &str, target: &str) -> Result<bool> {
    let row = admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(|e| Error::query("look up the database", target, &e))?;
    Ok(row.is_some())
}

/// The server's version number (`150004`).
pub(crate) async fn server_num(admin: &Client, target: &str) -> Result<u32> {
    let v = server_version(admin, target).await?;
    Ok(v.num)
}

/// `base` + `suffix`, cut to PostgreSQL's identifier length, unused on the server.
pub(crate) async fn unused_name(
    admin: &Client,
    base: &str,
    suffix: &str,
    target: &str,
) -> Result<String> {
    for n in 0..100 {
        let suffix = if n == 0 {
            suffix.to_string()
        } else {
            format!("{suffix}_{n}")
        };
        let mut cut = MAX_IDENT.saturating_sub(suffix.len()).min(base.len());
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        let name = format!("{}{suffix}", &base[..cut]);
        if !database_exists(admin, &name, target).await? {
            return Ok(name);
        }
    }
    Err(Error::Unsupported(format!(
        "no free database name like {base}{suffix}; drop old ones"
    )))
}

/// The restore's time in database names (`_pre_restore_20241218T020000`).
pub(crate) fn timestamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string()
}

/// Encoding and locale for a new database: the manifest's, else the live database's.
pub(crate) async fn locale_of(
    admin: &Client,
    manifest: Option<&Manifest>,
    live: Option<&str>,
) -> Option<(String, String, String)> {
    if let Some(d) = manifest.and_then(|m| m.databases.first()) {
        let get = |k: &str| {
            d.details
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        if let (Some(e), Some(c), Some(t)) = (get("encoding"), get("lc_collate"), get("lc_ctype")) {
            return Some((e, c, t));
        }
    }
    let live = live?;
    let row = admin
        .query_opt(
            "SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate::text, datctype::text
             FROM pg_catalog.pg_database WHERE datname = $1",
            &[&live],
        )
        .await
        .ok()??;
    Some((row.get(0), row.get(1), row.get(2)))
}

/// Creates an empty database from `template0` with the given encoding and locale (falling back
/// to the server's defaults when that locale does not exist here), owned like `owner_of`.
pub(crate) async fn create_database(
    admin: &Client,
    name: &str,
    locale: Option<(String, String, String)>,
    owner_of: Option<&str>,
    target: &str,
) -> Result<()> {
    let base = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
    let mut created = false;
    if let Some((enc, collate, ctype)) = &locale {
        let sql = format!(
            "{base} ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(enc),
            quote_literal(collate),
            quote_literal(ctype)
        );
        match admin.batch_execute(&sql).await {
            Ok(()) => created = true,
            Err(e) => {
                tracing::warn!(error = %db_message(&e), "creating the database with the backup's encoding and locale failed; using the server's defaults")
            }
        }
    }
    if !created {
        admin
            .batch_execute(&base)
            .await
            .map_err(|e| Error::query(format!("create database {name}"), target, &e))?;
    }
    if let Some(live) = owner_of {
        let owner: Option<String> = admin
            .query_opt(
                "SELECT pg_catalog.pg_get_userbyid(datdba)::text FROM pg_catalog.pg_database WHERE datname = $1",
                &[&live],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        if let Some(owner) = owner {
            let _ = admin
                .batch_execute(&format!(
                    "ALTER DATABASE {} OWNER TO {}",
                    quote_ident(name),
                    quote_ident(&owner)
                ))
                .await;
        }
    }
    Ok(())
}

/// Renames databases in one transaction (`(from, to)` in order), so that a restore killed at
/// any moment leaves either every rename or none: the live name always names a database. With
/// `terminate`, the sessions on each renamed database are ended first (and again while they come
/// back); without it, a database with sessions fails the rename (core's `InUse` error).
pub(crate) async fn rename_databases(
    admin: &mut Client,
    renames: &[(&str, &str)],
    terminate: bool,
    target: &str,
) -> Result<()> {
    let mut last = None;
    for _ in 0..20 {
        if terminate {
            for (from, _) in renames {
                sessions::terminate(admin, from).await;
            }
        }
        let tx = admin
            .transaction()
            .await
            .map_err(|e| Error::query("begin the swap", target, &e))?;
        let mut failed = None;
        for (from, to) in renames {
            let sql = format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(from),
                quote_ident(to)
            );
            if let Err(e) = tx.batch_execute(&sql).await {
                failed = Some((from.to_string(), e));
                break;
            }
        }
        match failed {
            None => {
                return tx
                    .commit()
                    .await
                    .map_err(|e| Error::query("commit the swap", target, &e));
            }
            Some((from, e)) if e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                drop(tx);
                if !terminate {
                    let scan = sessions::sessions_on(admin, &from, target).await?;
                    return Err(Error::Core(kars_backup_core::Error::InUse {
                        target: target.to_string(),
                        holders: if scan.holders.is_empty() {
                            "other sessions".into()
                        } else {
                            scan.describe()
                        },
                        hint: format!(
                            "PostgreSQL cannot rename {from} while they are connected; {}",
                            sessions::remedies()
                        ),
                    }));
                }
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Some((from, e)) => {
                return Err(Error::query(format!("rename database {from}"), target, &e));
            }
        }
    }
    Err(Error::query(
        "rename databases (sessions kept reconnecting)",
        target,
        &last.expect("at least one attempt"),
    ))
}
