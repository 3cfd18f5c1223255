//! The application's sessions on a restore target, and the names a restore gives databases:
//! who is connected (the in-use check), ending sessions when asked, the advisory lock a staging
//! database is held by while its restore runs, the leftovers of killed restores and the previous
//! copies restores keep.
//!
//! What happens to the application's connections:
//! - **safe mode** renames the staging database into the live one's place; PostgreSQL refuses to
//!   rename a database that has sessions, so by default the restore refuses before the swap and
//!   names them; with `--terminate-connections` they are ended at the swap, and the application
//!   reconnects (by name) to the restored database.
//! - **in-place mode** loads into the live database in one transaction: by default refused while
//!   sessions are connected; with `--live` they stay connected and see the restored data once
//!   the transaction commits (the load waits at most [`LOCK_TIMEOUT`] for their locks);
//!   `--terminate-connections` ends them first.

use chrono::{DateTime, NaiveDateTime, Utc};
use kars_backup_core::PreviousCopy;
use kars_backup_core::holders::{Holder, Scan};
use tokio_postgres::Client;

use crate::conn::{MAX_IDENT, quote_ident};
use crate::error::{Error, Result};
use crate::metadata::server_version;

/// The infix of staging databases (`<db>_kars_staging_<time>`).
pub(crate) const STAGING_INFIX: &str = "_kars_staging_";
/// The infix of previous copies (`<db>_pre_restore_<time>`).
pub(crate) const KEPT_INFIX: &str = "_pre_restore_";
/// How long an in-place load waits for the locks of sessions that stay connected (`--live`).
pub(crate) const LOCK_TIMEOUT: &str = "60s";

/// The client sessions on database `db`, other than the asking one.
pub(crate) async fn sessions_on(admin: &Client, db: &str, target: &str) -> Result<Scan> {
    let rows = admin
        .query(
            "SELECT pid, coalesce(usename, ''), coalesce(application_name, ''),
                    coalesce(host(client_addr), 'local socket'), coalesce(state, '')
             FROM pg_catalog.pg_stat_activity
             WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()
               AND backend_type = 'client backend'
             ORDER BY pid",
            &[&db],
        )
        .await
        .map_err(|e| Error::query("list the sessions", target, &e))?;
    let holders = rows
        .iter()
        .map(|r| {
            let pid: i32 = r.get(0);
            let (user, app, client, state): (String, String, String, String) =
                (r.get(1), r.get(2), r.get(3), r.get(4));
            let app = if app.is_empty() {
                "no application name".to_string()
            } else {
                app
            };
            Holder {
                pid: pid as u32,
                command: format!("session of {user} from {client}, {app}, {state}"),
                holds: vec![db.to_string()],
            }
        })
        .collect();
    Ok(Scan {
        holders,
        unreadable: 0,
        supported: true,
    })
}

/// Ends every other session on a database.
pub(crate) async fn terminate(admin: &Client, db: &str) {
    let ended = admin
        .query(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
             WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
            &[&db],
        )
        .await
        .map(|rows| rows.len())
        .unwrap_or(0);
    if ended > 0 {
        tracing::info!(database = db, sessions = ended, "sessions ended");
    }
}

/// The SQL key of the advisory lock that a restore holds on its staging database's name.
pub(crate) const LOCK_KEY_SQL: &str = "pg_catalog.hashtext('kars-backup restore ' || $1)::bigint";

/// Takes the advisory lock on a staging database's name (held until `admin` disconnects).
pub(crate) async fn lock_staging(admin: &Client, staging: &str, target: &str) -> Result<()> {
    admin
        .query_one(
            &format!("SELECT pg_catalog.pg_advisory_lock({LOCK_KEY_SQL})"),
            &[&staging],
        )
        .await
        .map_err(|e| Error::query("lock the staging database's name", target, &e))?;
    Ok(())
}

/// Whether a restore-made name (`<base>_kars_staging_<time>`) belongs to `db`: its base is `db`,
/// or `db` cut so the name fits PostgreSQL's 63 bytes. Returns the part after the infix.
fn belongs_to(name: &str, infix: &str, db: &str) -> Option<String> {
    let at = name.find(infix)?;
    let base = &name[..at];
    let cut = name.len() == MAX_IDENT && !base.is_empty() && db.starts_with(base);
    (base == db || cut).then(|| name[at + infix.len()..].to_string())
}

/// Databases whose names are `<db><infix>…`.
async fn named_like(admin: &Client, db: &str, infix: &str, target: &str) -> Result<Vec<String>> {
    let rows = admin
        .query(
            "SELECT datname FROM pg_catalog.pg_database WHERE strpos(datname, $1) > 0 ORDER BY datname",
            &[&infix],
        )
        .await
        .map_err(|e| Error::query("list databases", target, &e))?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|n| belongs_to(n, infix, db).is_some())
        .collect())
}

/// Drops the staging databases of `db` whose restore is gone (their advisory lock is free);
/// fails when another restore of `db` is still running.
pub(crate) async fn clean_leftovers(admin: &Client, db: &str, target: &str) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for name in named_like(admin, db, STAGING_INFIX, target).await? {
        let free: bool = admin
            .query_one(
                &format!("SELECT pg_catalog.pg_try_advisory_lock({LOCK_KEY_SQL})"),
                &[&name],
            )
            .await
            .map_err(|e| Error::query("check the staging database's lock", target, &e))?
            .get(0);
        if !free {
            return Err(Error::Core(kars_backup_core::Error::InUse {
                target: target.to_string(),
                holders: format!("another kars-backup restore (staging database {name})"),
                hint: "wait for it to end".into(),
            }));
        }
        let _ = admin
            .query_one(
                &format!("SELECT pg_catalog.pg_advisory_unlock({LOCK_KEY_SQL})"),
                &[&name],
            )
            .await;
        drop_database(admin, &name, target).await?;
        let line = format!(
            "dropped the staging database {name} of a restore that ended without removing it"
        );
        tracing::warn!("{line}");
        done.push(line);
    }
    Ok(done)
}

/// The previous copies of `db` (`<db>_pre_restore_<time>`), newest first, with their sizes.
pub(crate) async fn previous_copies(
    admin: &Client,
    db: &str,
    target: &str,
) -> Result<Vec<PreviousCopy>> {
    let mut copies = Vec::new();
    for name in named_like(admin, db, KEPT_INFIX, target).await? {
        let size: i64 = admin
            .query_one("SELECT pg_catalog.pg_database_size($1)", &[&name])
            .await
            .map_err(|e| Error::query("measure a previous copy", target, &e))?
            .get(0);
        let kept_at = belongs_to(&name, KEPT_INFIX, db).and_then(|tail| parse_time(&tail));
        copies.push(PreviousCopy {
            name,
            kept_at,
            size_bytes: size.max(0) as u64,
        });
    }
    copies.sort_by(|a, b| {
        (b.kept_at.unwrap_or(DateTime::<Utc>::MIN_UTC), &b.name)
            .cmp(&(a.kept_at.unwrap_or(DateTime::<Utc>::MIN_UTC), &a.name))
    });
    Ok(copies)
}

/// `20261205T101500` (or `…_2`) → its time.
fn parse_time(tail: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(tail.get(..15)?, "%Y%m%dT%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Drops a database, ending its sessions first.
pub(crate) async fn drop_database(admin: &Client, name: &str, target: &str) -> Result<()> {
    let num = server_version(admin, target)
        .await
        .map(|v| v.num)
        .unwrap_or(0);
    terminate(admin, name).await;
    let sql = if num >= 130_000 {
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name))
    } else {
        format!("DROP DATABASE IF EXISTS {}", quote_ident(name))
    };
    admin
        .batch_execute(&sql)
        .await
        .map_err(|e| Error::query(format!("drop database {name}"), target, &e))
}

/// The remedies named when the target is in use.
pub(crate) fn remedies() -> String {
    "stop the application first (--stop-cmd/--start-cmd stop and start it around the swap), end its sessions at the swap with --terminate-connections (it reconnects to the restored database), or restore in place while it stays connected with --mode in-place --live".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_made_names_belong_to_their_database() {
        assert_eq!(
            belongs_to("kars_kars_staging_20261205T101500", STAGING_INFIX, "kars"),
            Some("20261205T101500".into())
        );
        assert_eq!(
            belongs_to("kars_pre_restore_20261205T101500_1", KEPT_INFIX, "kars"),
            Some("20261205T101500_1".into())
        );
        // A cut name still belongs to its long database name; another database's does not.
        let long = "a".repeat(60);
        let cut = format!("{}{KEPT_INFIX}20261205T101500", &long[..35]);
        assert_eq!(cut.len(), 63);
        assert!(belongs_to(&cut, KEPT_INFIX, &long).is_some());
        assert!(belongs_to("other_pre_restore_x", KEPT_INFIX, "kars").is_none());
        assert!(belongs_to("kars_pre_restore_x", KEPT_INFIX, "kars_app").is_none());
        assert_eq!(
            parse_time("20261205T101500_1").unwrap().to_rfc3339(),
            "2026-12-05T10:15:00+00:00"
        );
    }
}
