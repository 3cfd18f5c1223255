//! What the server says about its archiving: the settings `archive_command` needs and
//! `pg_stat_archiver` (how far it got, what failed).

use kars_backup_core::{Error, Result};

use crate::conn::ConnInfo;
use crate::error::Error as PgError;

/// The archiver of a server, as `pg_stat_archiver` and its settings tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiverState {
    /// The WAL file being written now.
    pub current_wal: String,
    /// The last file archived, if any.
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    pub last_archived_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Failed attempts since the statistics were reset.
    pub failed_count: i64,
    /// The last file whose archiving failed, if any.
    pub last_failed_wal: Option<String>,
    /// When.
    pub last_failed_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Settings that keep the WAL from being archived, each with what to change.
    pub problems: Vec<String>,
}

impl ArchiverState {
    /// Whether the last failure is newer than the last success: archiving is stuck.
    pub fn failing(&self) -> bool {
        match (self.last_failed_time, self.last_archived_time) {
            (Some(f), Some(a)) => f > a,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// Reads the server's archiving settings and `pg_stat_archiver`.
///
/// # Errors
/// When the server cannot be reached or queried.
pub async fn archiver_state(url: &str) -> Result<ArchiverState> {
    let conn = ConnInfo::parse(url).map_err(|e| e.into_core("postgres"))?;
    let target = conn.redacted();
    let client = conn.connect().await.map_err(|e| e.into_core(&target))?;
    let query = |e: tokio_postgres::Error| {
        PgError::query("read the archiver's state", target.clone(), &e).into_core(&target)
    };
    let settings = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('archive_mode'),
                    current_setting('archive_command'),
                    CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END",
            &[],
        )
        .await
        .map_err(query)?;
    let wal_level: String = settings.get(0);
    let archive_mode: String = settings.get(1);
    let archive_command: String = settings.get(2);
    let mut state = ArchiverState {
        current_wal: settings.get(3),
        ..ArchiverState::default()
    };
    if wal_level == "minimal" {
        state
            .problems
            .push("wal_level is minimal: set wal_level = replica and restart the server".into());
    }
    if archive_mode == "off" {
        state
            .problems
            .push("archive_mode is off: set archive_mode = on and restart the server".into());
    }
    if archive_command.trim().is_empty() || archive_command == "(disabled)" {
        state.problems.push(
            "archive_command is empty: set archive_command = 'kars-backup pg archive-wal --to URL %p' and reload (SELECT pg_reload_conf())".into(),
        );
    }
    let stats = client
        .query_one(
            "SELECT last_archived_wal, extract(epoch FROM last_archived_time)::float8, failed_count,
                    last_failed_wal, extract(epoch FROM last_failed_time)::float8
             FROM pg_stat_archiver",
            &[],
        )
        .await
        .map_err(query)?;
    state.last_archived_wal = stats.get(0);
    state.last_archived_time = stats.get::<_, Option<f64>>(1).and_then(from_epoch);
    state.failed_count = stats.get(2);
    state.last_failed_wal = stats.get(3);
    state.last_failed_time = stats.get::<_, Option<f64>>(4).and_then(from_epoch);
    if state.failing() {
        state.problems.push(format!(
            "archiving fails: {} failed last ({} failures); the server's log has archive_command's error, and pg_wal grows until it succeeds",
            state.last_failed_wal.as_deref().unwrap_or("?"),
            state.failed_count
        ));
    }
    Ok(state)
}

/// Fails with the problems, if any, as one message (for commands that need archiving to work).
///
/// # Errors
/// [`Error::InvalidInput`] listing what to change.
pub fn require_archiving(state: &ArchiverState, server: &str) -> Result<()> {
    if state.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{server} does not archive its WAL: {}",
            state.problems.join("; ")
        )))
    }
}

fn from_epoch(seconds: f64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_micros((seconds * 1e6) as i64)
}
