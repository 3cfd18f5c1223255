//! [`PhysicalSource`]: a base backup of a whole cluster with `pg_basebackup`, its tar streamed
//! into the pipeline, described by its place in the WAL ([`PhysicalInfo`]).

use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kars_backup_core::{
    DatabaseInfo, DatabaseSource, DynProgress, PayloadFormat, PayloadReader, PayloadWriter,
    PhysicalInfo, SnapshotInfo, StageContext, StagedRestore,
};
use tokio_postgres::Client;

use crate::conn::ConnInfo;
use crate::error::{Error, Result};
use crate::metadata;
use crate::physical::tar_scan::{Found, TarScan};
use crate::physical::wal::{Lsn, previous_segment_name};
use crate::source::ENGINE;
use crate::tools::{self, Tools};

/// The archive name prefix of base backups (`kars-pgbase-YYYYmmdd-HHMMSS.tar.zst`).
pub const BASE_BACKUP_PREFIX: &str = "kars-pgbase";

/// The oldest server whose base backups carry a backup manifest (`pg_verifybackup`).
const MIN_SERVER_VERSION: u32 = 130_000;

/// A whole PostgreSQL cluster, backed up physically: `pg_basebackup -D - -Ft -X none
/// --checkpoint=fast --manifest-checksums=CRC32C` streams one tar (the data directory with its
/// `backup_manifest`) into the pipeline, which compresses, encrypts, hashes and commits it like
/// every backup. The WAL the backup needs is not in it: it comes from the WAL archive
/// (`archive_command`), which `pg_basebackup` waits for before it ends.
///
/// The manifest's [`PhysicalInfo`] records the system identifier, the timeline, the start and
/// stop LSN, the WAL segments from start to stop and the time the backup ended. Before anything
/// starts, the server is checked for what a base backup needs (`wal_level`, `max_wal_senders`,
/// a role with `REPLICATION`, a `pg_hba.conf` replication entry, no extra tablespaces), with
/// messages that say what to change. The password reaches `pg_basebackup` only through
/// `PGPASSWORD`.
///
/// Restores do not go through [`DatabaseSource::stage_restore`] (a cluster is not restored
/// over a live one): see [`restore_to_instant`](crate::physical::restore_to_instant).
///
/// ```
/// use kars_backup_core::DatabaseSource;
/// use kars_backup_postgres::physical::PhysicalSource;
///
/// let source = PhysicalSource::from_url("postgres://kars:secret@db.internal:5432/assets").unwrap();
/// assert_eq!(source.describe(), "postgres://kars@db.internal:5432/assets");
/// assert_eq!(source.payload_format().extension, "tar");
/// assert_eq!(source.default_name_prefix(), "kars-pgbase");
/// ```
#[derive(Debug, Clone)]
pub struct PhysicalSource {
    conn: ConnInfo,
    tools: Tools,
}

impl PhysicalSource {
    /// A source for the cluster a `postgres://` URL reaches (its database is the one the
    /// manifest describes and a restore verifies).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`].
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(PhysicalSource {
            conn: ConnInfo::parse(url)?,
            tools: Tools::default(),
        })
    }

    /// Takes `pg_basebackup` from this directory (instead of the Debian directory of the
    /// server's version, or `PATH`).
    pub fn with_pg_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tools.bin_dir = Some(dir.into());
        self
    }

    /// The connection.
    pub fn conn(&self) -> &ConnInfo {
        &self.conn
    }

    fn core_error(&self, e: Error) -> kars_backup_core::Error {
        e.into_core(&self.describe())
    }

    async fn backup(&self, out: PayloadWriter, progress: DynProgress) -> Result<SnapshotInfo> {
        let target = self.conn.redacted();
        let client = self.conn.connect().await?;
        let version = metadata::server_version(&client, &target).await?;
        let settings = check_settings(&client, &self.conn, &target, version.num).await?;
        for warning in &settings.warnings {
            tracing::warn!(server = %target, "{warning}");
        }
        let pg_basebackup = self
            .tools
            .find("pg_basebackup", Some(tools::major_of_num(version.num)))?;
        let start_time = server_now(&client, &target).await?;
        let mut cmd = tools::command(&pg_basebackup, &self.conn);
        cmd.args([
            "--pgdata=-",
            "--format=tar",
            "--wal-method=none",
            "--checkpoint=fast",
            "--manifest-checksums=CRC32C",
            "--no-password",
            "--label=kars-backup base backup",
        ])
        .stdout(Stdio::piped());
        tracing::info!(server = %target, "pg_basebackup starts");
        progress.start("base backup", Some(settings.cluster_bytes));
        let mut child = tools::spawn("pg_basebackup", &mut cmd)?;
        let stderr = tools::collect_stderr(child.stderr.take());
        let mut out = out;
        let mut scan = TarScan::default();
        tools::pipe_stdout("pg_basebackup", &mut child, &mut out, |piece| {
            scan.feed(piece);
            progress.advance(piece.len() as u64);
        })
        .await?;
        if let Err(e) = tools::wait_checked("pg_basebackup", child, stderr).await {
            return Err(hint_basebackup_failure(e, self.conn.user()));
        }
        let end_time = server_now(&client, &target).await?;
        progress.finish();
        let physical = describe_backup(
            scan.found(),
            settings.wal_segment_size,
            start_time,
            end_time,
        )?;
        // The payload ends only once the backup is complete and described.
        out.finish().await.map_err(Error::Pipeline)?;
        tracing::info!(
            start = %physical.start_lsn, stop = %physical.stop_lsn,
            wal = %format!("{}..{}", physical.start_wal, physical.stop_wal),
            "base backup complete"
        );
        let mut info = DatabaseInfo {
            name: self.conn.dbname().to_string(),
            engine_version: version.text.clone(),
            size_bytes: settings.cluster_bytes,
            tables: Vec::new(),
            integrity_check: None,
            details: serde_json::Map::new(),
        };
        info.details
            .insert("kind".into(), "physical base backup".into());
        info.details
            .insert("databases".into(), settings.databases.clone().into());
        Ok(SnapshotInfo {
            taken_at: end_time,
            databases: vec![info],
            physical: Some(physical),
        })
    }
}

/// What the checks found out about the server.
struct Settings {
    wal_segment_size: u64,
    cluster_bytes: u64,
    databases: Vec<String>,
    warnings: Vec<String>,
}

/// Checks, before anything starts, what `pg_basebackup` needs; each refusal says what to change.
async fn check_settings(
    client: &Client,
    conn: &ConnInfo,
    target: &str,
    version_num: u32,
) -> Result<Settings> {
    if version_num < MIN_SERVER_VERSION {
        return Err(Error::Settings(format!(
            "{target} runs PostgreSQL {}; physical backups need PostgreSQL 13 or newer (backup manifests); use a logical backup (without --physical)",
            version_num / 10_000
        )));
    }
    let q = |sql: &'static str| async move {
        client
            .query_one(sql, &[])
            .await
            .map_err(|e| Error::query("read the server's settings", target, &e))
    };
    let row = q("SELECT current_setting('wal_level'), current_setting('max_wal_senders')::int4,
                current_setting('archive_mode'),
                (SELECT setting::int8 FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'),
                (SELECT rolsuper OR rolreplication FROM pg_catalog.pg_roles WHERE rolname = current_user)")
    .await?;
    let wal_level: String = row.get(0);
    let senders: i32 = row.get(1);
    let archive_mode: String = row.get(2);
    let segment: i64 = row.get(3);
    let replication: Option<bool> = row.get(4);
    if wal_level == "minimal" {
        return Err(Error::Settings(format!(
            "{target} has wal_level = minimal, which cannot make base backups or archive WAL: set wal_level = replica in postgresql.conf and restart the server"
        )));
    }
    if senders < 1 {
        return Err(Error::Settings(format!(
            "{target} has max_wal_senders = 0, so pg_basebackup cannot connect: set max_wal_senders = 10 in postgresql.conf and restart the server"
        )));
    }
    if replication != Some(true) {
        return Err(Error::Settings(format!(
            "role {} on {target} may not make base backups: give it the REPLICATION attribute (as a superuser: ALTER ROLE \"{}\" REPLICATION)",
            conn.user(),
            conn.user()
        )));
    }
    // pg_hba_file_rules is readable by superusers only: when it is not, pg_basebackup's own
    // refusal is explained instead (hint_basebackup_failure).
    if let Ok(row) = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_hba_file_rules
             WHERE error IS NULL AND ('replication' = ANY(database))",
            &[],
        )
        .await
    {
        let n: i64 = row.get(0);
        if n == 0 {
            return Err(Error::Settings(hba_hint(conn.user(), target)));
        }
    }
    let spaces: Vec<String> = client
        .query(
            "SELECT spcname::text FROM pg_catalog.pg_tablespace
             WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| Error::query("list the tablespaces", target, &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !spaces.is_empty() {
        return Err(Error::Settings(format!(
            "{target} has tablespaces outside the data directory ({}): pg_basebackup streams only the data directory's own tablespaces into one tar; move them into pg_default (ALTER TABLE … SET TABLESPACE pg_default), or back this cluster up logically (without --physical)",
            spaces.join(", ")
        )));
    }
    let dbs = client
        .query(
            "SELECT datname::text, pg_catalog.pg_database_size(oid)::int8 FROM pg_catalog.pg_database
             WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| Error::query("list the databases", target, &e))?;
    let mut warnings = Vec::new();
    if archive_mode == "off" {
        warnings.push("archive_mode is off: this base backup restores only with WAL shipped by other means (kars-backup pg receive-wal); set archive_mode = on and archive_command = 'kars-backup pg archive-wal --to URL %p' for restores to an instant".to_string());
    }
    Ok(Settings {
        wal_segment_size: segment.max(1) as u64,
        cluster_bytes: dbs.iter().map(|r| r.get::<_, i64>(1).max(0) as u64).sum(),
        databases: dbs.iter().map(|r| r.get(0)).collect(),
        warnings,
    })
}

fn hba_hint(user: &str, target: &str) -> String {
    format!(
        "pg_hba.conf of {target} has no entry for replication connections, so pg_basebackup is refused: add a line such as `host replication {user} 10.0.0.0/8 scram-sha-256` (the database column must say replication; `all` does not cover it) and reload the server (SELECT pg_reload_conf())"
    )
}

/// `pg_basebackup`'s failure, with what to change when the server refused it.
fn hint_basebackup_failure(e: Error, user: &str) -> Error {
    match e {
        Error::ToolFailed {
            tool,
            status,
            stderr,
        } => {
            let hint = if stderr.contains("no pg_hba.conf entry for replication") {
                format!("; {}", hba_hint(user, "the server"))
            } else if stderr.contains("number of requested standby connections exceeds")
                || stderr.contains("max_wal_senders")
            {
                "; all WAL senders are busy: raise max_wal_senders and restart the server".into()
            } else if stderr.contains("can only write single tablespace") {
                "; the cluster has tablespaces outside its data directory: move them into pg_default".into()
            } else {
                String::new()
            };
            Error::ToolFailed {
                tool,
                status,
                stderr: format!("{stderr}{hint}"),
            }
        }
        other => other,
    }
}

async fn server_now(client: &Client, target: &str) -> Result<DateTime<Utc>> {
    let row = client
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await
        .map_err(|e| Error::query("read the server's clock", target, &e))?;
    let secs: f64 = row.get(0);
    let micros = (secs * 1_000_000.0).round() as i64;
    Ok(DateTime::from_timestamp_micros(micros).unwrap_or_else(Utc::now))
}

/// The backup's place in the WAL, from the members `pg_basebackup` wrote.
fn describe_backup(
    scan: &Found,
    segment_size: u64,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
) -> Result<PhysicalInfo> {
    let bad = |reason: String| Error::InvalidArchive {
        archive: "pg_basebackup output".into(),
        reason,
    };
    let label = scan
        .label
        .as_ref()
        .ok_or_else(|| bad("pg_basebackup wrote no backup_label".into()))?;
    let label = String::from_utf8_lossy(label);
    let field = |key: &str| {
        label
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let start = field("START WAL LOCATION:")
        .ok_or_else(|| bad(format!("backup_label has no START WAL LOCATION: {label}")))?;
    // `0/2000028 (file 000000010000000000000002)`
    let start_lsn = start.split_whitespace().next().unwrap_or("").to_string();
    let start_wal = start
        .split("(file ")
        .nth(1)
        .map(|s| s.trim_end_matches(')').to_string())
        .ok_or_else(|| bad(format!("backup_label: cannot read {start}")))?;
    let timeline: u32 = field("START TIMELINE:")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("backup_label has no START TIMELINE".into()))?;
    let tail = scan
        .manifest_tail
        .as_ref()
        .ok_or_else(|| bad("pg_basebackup wrote no backup_manifest".into()))?;
    let tail = String::from_utf8_lossy(tail);
    let ranges = tail
        .rfind("\"WAL-Ranges\"")
        .and_then(|i| {
            let rest = &tail[i..];
            let open = rest.find('[')?;
            let close = rest.find(']')?;
            serde_json::from_str::<Vec<serde_json::Value>>(&rest[open..=close]).ok()
        })
        .ok_or_else(|| bad("backup_manifest has no WAL-Ranges".into()))?;
    let last = ranges
        .last()
        .ok_or_else(|| bad("backup_manifest has an empty WAL-Ranges".into()))?;
    let stop_tli = last["Timeline"].as_u64().unwrap_or(u64::from(timeline)) as u32;
    let stop_lsn = last["End-LSN"]
        .as_str()
        .and_then(Lsn::parse)
        .ok_or_else(|| bad("backup_manifest's WAL range has no End-LSN".into()))?;
    let control = scan
        .control_head
        .as_ref()
        .filter(|c| c.len() >= 8)
        .ok_or_else(|| bad("pg_basebackup wrote no global/pg_control".into()))?;
    let sysid = u64::from_le_bytes(control[..8].try_into().expect("8 bytes"));
    Ok(PhysicalInfo {
        system_identifier: sysid.to_string(),
        timeline,
        start_lsn,
        stop_lsn: stop_lsn.to_string(),
        start_wal,
        stop_wal: previous_segment_name(stop_tli, stop_lsn, segment_size),
        wal_segment_size: segment_size,
        start_time,
        end_time,
    })
}

#[async_trait]
impl DatabaseSource for PhysicalSource {
    fn engine(&self) -> &str {
        ENGINE
    }

    /// `postgres://user@host:port/db`, never with the password.
    fn describe(&self) -> String {
        self.conn.redacted()
    }

    fn payload_format(&self) -> PayloadFormat {
        PayloadFormat {
            extension: "tar".into(),
            compressed: false,
        }
    }

    fn default_name_prefix(&self) -> &str {
        BASE_BACKUP_PREFIX
    }

    async fn inspect(&self) -> kars_backup_core::Result<Vec<DatabaseInfo>> {
        async {
            let target = self.conn.redacted();
            let client = self.conn.connect().await?;
            let version = metadata::server_version(&client, &target).await?;
            let row = client
                .query_one(
                    "SELECT coalesce(sum(pg_catalog.pg_database_size(oid)), 0)::int8 FROM pg_catalog.pg_database WHERE datallowconn",
                    &[],
                )
                .await
                .map_err(|e| Error::query("read the cluster's size", &target, &e))?;
            Ok::<_, Error>(vec![DatabaseInfo {
                name: self.conn.dbname().to_string(),
                engine_version: version.text,
                size_bytes: row.get::<_, i64>(0).max(0) as u64,
                tables: Vec::new(),
                integrity_check: None,
                details: serde_json::Map::new(),
            }])
        }
        .await
        .map_err(|e| self.core_error(e))
    }

    async fn exists(&self) -> kars_backup_core::Result<bool> {
        Ok(true)
    }

    async fn write_payload(
        &self,
        out: PayloadWriter,
        progress: DynProgress,
    ) -> kars_backup_core::Result<SnapshotInfo> {
        use tracing::Instrument;
        let span = tracing::info_span!("pg_basebackup", server = %self.describe());
        self.backup(out, progress)
            .instrument(span)
            .await
            .map_err(|e| self.core_error(e))
    }

    async fn stage_restore(
        &self,
        _payload: PayloadReader,
        context: &StageContext,
    ) -> kars_backup_core::Result<Box<dyn StagedRestore>> {
        Err(self.core_error(Error::Unsupported(format!(
            "{} is a physical base backup: restore it into a new data directory with `kars-backup restore --physical --pgdata NEWDIR`",
            context.archive_name
        ))))
    }
}
