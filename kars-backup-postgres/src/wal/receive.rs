//! [`receive_wal`]: streams the WAL with `pg_receivewal` and ships it, for servers where
//! `archive_command` cannot be set.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kars_backup_core::{CancellationToken, DynBackupSink, Error, Result};

use super::archive::ArchiveOptions;
use super::archive_command::archive_wal;
use super::keys::{WalKind, WalName};
use crate::conn::{ConnInfo, quote_ident};
use crate::error::Error as PgError;
use crate::tools::{self, Tools};

/// How [`receive_wal`] streams and ships.
#[derive(Debug, Clone, Default)]
pub struct ReceiveOptions {
    /// How each file is stored (encryption, plaintext policy).
    pub archive: ArchiveOptions,
    /// Where and how it streams, as the operator gives it.
    pub settings: ReceiveSettings,
}

/// The operator's settings of `pg receive-wal` (flags with the `clap` feature).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ReceiveSettings {
    /// Where pg_receivewal writes; kept across restarts (it resumes from what is there)
    /// [default: $XDG_STATE_HOME/kars-backup/receive-wal/<host-port>, else
    /// ~/.local/state/…].
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub spool_dir: Option<PathBuf>,

    /// Stream through this replication slot (the server keeps the WAL the receiver has not
    /// had yet).
    #[cfg_attr(feature = "clap", arg(long, value_name = "NAME"))]
    pub slot: Option<String>,

    /// Create the slot if it does not exist.
    #[cfg_attr(feature = "clap", arg(long, requires = "slot"))]
    pub create_slot: bool,

    /// How often the current `.partial` is shipped: seconds (`0.5`) or with a unit (`500ms`,
    /// `2s`); from 100 ms to an hour.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "INTERVAL", default_value = "1", value_parser = parse_ship_interval)
    )]
    pub ship_interval: Duration,

    /// The directory of pg_receivewal [default: the server version's Debian directory, else
    /// PATH].
    #[cfg_attr(feature = "clap", arg(long = "pg-bin-dir", value_name = "DIR"))]
    pub bin_dir: Option<PathBuf>,
}

impl Default for ReceiveSettings {
    fn default() -> Self {
        ReceiveSettings {
            spool_dir: None,
            slot: None,
            create_slot: false,
            ship_interval: Duration::from_secs(1),
            bin_dir: None,
        }
    }
}

/// `--ship-interval`: seconds, or a number with `ms` or `s`; from 100 ms to an hour.
///
/// # Errors
/// Text that is neither, or outside that range.
pub fn parse_ship_interval(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let seconds = if let Some(ms) = t.strip_suffix("ms") {
        ms.trim().parse::<f64>().map(|v| v / 1000.0)
    } else {
        t.strip_suffix('s').unwrap_or(t).trim().parse::<f64>()
    }
    .map_err(|_| format!("{text:?} is not an interval: write 1, 0.5, 500ms or 2s"))?;
    if !(0.1..=3600.0).contains(&seconds) {
        return Err(format!(
            "{text:?}: the interval must be from 100ms to 3600s"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// What [`receive_wal`] did before it stopped.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReceiveReport {
    /// Files shipped (completed segments, history files and `.partial` shipments).
    pub shipped: u64,
    /// The last file shipped.
    pub last: Option<String>,
}

/// `$XDG_STATE_HOME/kars-backup/receive-wal/<server>` (else `~/.local/state/…`, else the
/// system temporary directory), `<server>` being `host-port`.
pub fn default_spool_dir(server: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("state"))
        })
        .unwrap_or_else(std::env::temp_dir);
    let safe: String = server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    base.join("kars-backup").join("receive-wal").join(safe)
}

/// What the server must allow for streaming, checked before anything starts. Returns the
/// system identifier (when the role may read it) and the server's major version.
async fn check_streaming(conn: &ConnInfo) -> Result<(Option<u64>, u32)> {
    let client = conn
        .connect()
        .await
        .map_err(|e| e.into_core(&conn.redacted()))?;
    let show = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map(|r| r.get::<_, String>(0))
                .map_err(|e| {
                    PgError::query(format!("SHOW {name}"), conn.redacted(), &e)
                        .into_core(&conn.redacted())
                })
        }
    };
    let mut problems = Vec::new();
    let wal_level = show("wal_level").await?;
    if wal_level == "minimal" {
        problems.push(
            "wal_level is minimal: set wal_level = replica in postgresql.conf and restart the server"
                .to_string(),
        );
    }
    let senders: u32 = show("max_wal_senders").await?.parse().unwrap_or(0);
    if senders == 0 {
        problems.push(
            "max_wal_senders is 0: set max_wal_senders = 10 (or more) in postgresql.conf and restart the server".into(),
        );
    }
    let may_replicate: bool = client
        .query_one(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(false);
    if !may_replicate {
        problems.push(format!(
            "the role {} may not replicate: ALTER ROLE {} REPLICATION (and allow it in pg_hba.conf: host replication {} <address> scram-sha-256)",
            conn.user(),
            quote_ident(conn.user()),
            conn.user()
        ));
    }
    if !problems.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{} cannot stream its WAL: {}",
            conn.redacted(),
            problems.join("; ")
        )));
    }
    let num: u32 = show("server_version_num").await?.parse().unwrap_or(0);
    let sysid = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .ok()
        .and_then(|r| r.get::<_, String>(0).parse().ok());
    Ok((sysid, tools::major_of_num(num)))
}

/// Streams the WAL of the server at `url` with `pg_receivewal` into the spool directory and
/// ships every completed segment and history file, and the current `.partial` every
/// [`ReceiveOptions::ship_interval`], to `sinks` ([`archive_wal`]), until `stop` is cancelled
/// (then `pg_receivewal` is stopped and what it wrote last is shipped once more).
///
/// The server's settings (`wal_level`, `max_wal_senders`, the role's `REPLICATION`) are checked
/// first, with messages that say what to change. The password reaches `pg_receivewal` through
/// `PGPASSWORD`, never its command line. Shipped segments are removed from the spool directory
/// except the newest, from which `pg_receivewal` resumes after a restart.
///
/// # Errors
/// Settings that do not allow streaming ([`Error::InvalidInput`]), `pg_receivewal` missing or
/// failing (its last messages quoted), storage failures.
pub async fn receive_wal(
    url: &str,
    sinks: &[DynBackupSink],
    options: &ReceiveOptions,
    stop: CancellationToken,
) -> Result<ReceiveReport> {
    let conn = ConnInfo::parse(url).map_err(|e| e.into_core("postgres"))?;
    let placements: Vec<_> = sinks
        .iter()
        .map(|s| (s.describe(), s.placement()))
        .collect();
    options.archive.plaintext.check_placements(
        "the streamed WAL",
        options.archive.encryptor.is_some(),
        &placements,
    )?;
    let (sysid, major) = check_streaming(&conn).await?;
    let mut archive = options.archive.clone();
    archive.system_identifier = archive.system_identifier.or(sysid);
    let settings = &options.settings;
    let spool = settings
        .spool_dir
        .clone()
        .unwrap_or_else(|| default_spool_dir(&conn.server()));
    std::fs::create_dir_all(&spool).map_err(|e| Error::io("create directory", &spool, e))?;
    let program = Tools {
        bin_dir: settings.bin_dir.clone(),
    }
    .find("pg_receivewal", Some(major))
    .map_err(|e| e.into_core(&conn.redacted()))?;

    if let (Some(slot), true) = (&settings.slot, settings.create_slot) {
        let mut cmd = tools::command(&program, &conn);
        cmd.arg("--create-slot")
            .arg("--if-not-exists")
            .arg(format!("--slot={slot}"));
        let mut child =
            tools::spawn("pg_receivewal", &mut cmd).map_err(|e| e.into_core(&conn.redacted()))?;
        let stderr = tools::collect_stderr(child.stderr.take());
        tools::wait_checked("pg_receivewal --create-slot", child, stderr)
            .await
            .map_err(|e| e.into_core(&conn.redacted()))?;
    }

    let mut cmd = tools::command(&program, &conn);
    cmd.arg(format!("--directory={}", spool.display()))
        .arg("--no-password")
        .arg("--status-interval=1");
    if let Some(slot) = &settings.slot {
        cmd.arg(format!("--slot={slot}"));
    }
    let mut child =
        tools::spawn("pg_receivewal", &mut cmd).map_err(|e| e.into_core(&conn.redacted()))?;
    let stderr = tools::collect_stderr(child.stderr.take());
    tracing::info!(server = %conn.redacted(), spool = %spool.display(), "receiving WAL");

    let mut shipper = Shipper::new(spool.clone(), archive);
    let mut report = ReceiveReport::default();
    let mut ticker = tokio::time::interval(settings.ship_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let exited = loop {
        tokio::select! {
            _ = ticker.tick() => {
                // A destination failing now is retried at the next tick: the spool keeps the
                // WAL meanwhile (and with a slot, so does the server).
                if let Err(e) = shipper.ship(sinks, &mut report).await {
                    tracing::warn!(error = %e, "shipping WAL failed; retrying");
                }
            }
            status = child.wait() => break Some(status),
            () = stop.cancelled() => break None,
        }
    };
    let failure = match exited {
        Some(status) => {
            let err = stderr.await.unwrap_or_default();
            Some(Error::source(
                conn.redacted(),
                PgError::ToolFailed {
                    tool: "pg_receivewal".into(),
                    status: status
                        .map(tools::describe_status)
                        .unwrap_or_else(|e| e.to_string()),
                    stderr: tools::tail(&err),
                },
            ))
        }
        None => {
            if let Some(pid) = child.id() {
                // SIGINT: pg_receivewal flushes what it has and exits cleanly.
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
                }
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
            None
        }
    };
    shipper.ship(sinks, &mut report).await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Ships what `pg_receivewal` wrote into the spool directory.
struct Shipper {
    spool: PathBuf,
    archive: ArchiveOptions,
    /// The `.partial` last shipped and its modification time.
    partial_shipped: Option<(String, SystemTime, u64)>,
}

impl Shipper {
    fn new(spool: PathBuf, archive: ArchiveOptions) -> Self {
        Shipper {
            spool,
            archive,
            partial_shipped: None,
        }
    }

    /// The WAL files in the spool directory, history files first, then by name.
    fn scan(&self) -> Result<Vec<(WalName, PathBuf)>> {
        let mut files = Vec::new();
        let entries =
            std::fs::read_dir(&self.spool).map_err(|e| Error::io("list", &self.spool, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(wal) = WalName::parse(&name) {
                files.push((wal, entry.path()));
            }
        }
        files.sort_by(|(a, _), (b, _)| {
            (a.kind != WalKind::History, &a.name).cmp(&(b.kind != WalKind::History, &b.name))
        });
        Ok(files)
    }

    async fn ship(&mut self, sinks: &[DynBackupSink], report: &mut ReceiveReport) -> Result<()> {
        let files = self.scan()?;
        let newest_complete = files
            .iter()
            .filter(|(w, _)| w.kind == WalKind::Segment)
            .map(|(w, _)| w.name.clone())
            .max();
        for (wal, path) in &files {
            match wal.kind {
                WalKind::Partial => {
                    let Ok(meta) = std::fs::metadata(path) else {
                        continue;
                    };
                    let stamp = (
                        wal.name.clone(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        meta.len(),
                    );
                    if self.partial_shipped.as_ref() == Some(&stamp) {
                        continue;
                    }
                    match archive_wal(sinks, path, &self.archive).await {
                        Ok(_) => {
                            self.partial_shipped = Some(stamp);
                            report.shipped += 1;
                            report.last = Some(wal.name.clone());
                        }
                        // Renamed to its complete name meanwhile, or not written yet.
                        Err(Error::Io(e)) if e.source.kind() == std::io::ErrorKind::NotFound => {}
                        Err(Error::InvalidInput(m)) if m.contains("system identifier") => {
                            tracing::debug!(file = %wal.name, "no WAL page header yet");
                        }
                        Err(e) => return Err(e),
                    }
                }
                WalKind::Segment | WalKind::History | WalKind::Backup => {
                    if self.is_shipped(path) {
                        continue;
                    }
                    archive_wal(sinks, path, &self.archive).await?;
                    report.shipped += 1;
                    report.last = Some(wal.name.clone());
                    self.mark_shipped(path)?;
                    if wal.kind == WalKind::Segment
                        && newest_complete.as_deref() != Some(wal.name.as_str())
                    {
                        let _ = std::fs::remove_file(path);
                        let _ = std::fs::remove_file(shipped_marker(path));
                    }
                }
            }
        }
        // Older complete segments shipped in an earlier round.
        if let Some(newest) = newest_complete {
            for (wal, path) in &files {
                if wal.kind == WalKind::Segment && wal.name < newest && self.is_shipped(path) {
                    let _ = std::fs::remove_file(path);
                    let _ = std::fs::remove_file(shipped_marker(path));
                }
            }
        }
        Ok(())
    }

    fn is_shipped(&self, path: &Path) -> bool {
        shipped_marker(path).exists()
    }

    fn mark_shipped(&self, path: &Path) -> Result<()> {
        let marker = shipped_marker(path);
        std::fs::write(&marker, b"").map_err(|e| Error::io("write", &marker, e))
    }
}

/// `<file>.kars-shipped`: the file is stored at every destination (pg_receivewal ignores it).
fn shipped_marker(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".kars-shipped");
    PathBuf::from(p)
}
