//! [`restore_to_instant`]: a base backup extracted into a new data directory, the archived WAL
//! replayed to an instant (or to the end of the archive), the result verified while replay is
//! paused, promoted, checked read-write and left stopped, ready for `pg_ctl start`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kars_backup_core::verify::IntegrityLevel;
use kars_backup_core::{
    BackupEntry, CancellationToken, DynProgress, PhysicalInfo, Repository, TaskError, VerifyPlan,
    VerifyReport,
};
use serde::Serialize;

use crate::conn::ConnInfo;
use crate::error::{Error, Result, db_message};
use crate::loaded::LoadedCounts;
use crate::physical::extract::extract;
use crate::physical::manifest_check::Checked;
use crate::physical::scratch::{Scratch, chown, running_as_root};
use crate::physical::wal::{next_segment_name, recovery_target_time};
use crate::tools::{self, Tools};
use crate::verify::verify_database;

/// The `restore_command` that fetches WAL from a kars-backup WAL archive at `from` (a
/// destination URL): `kars-backup pg fetch-wal --from URL %f %p`, with this very program.
///
/// This is the one place that knows how a restore fetches archived WAL.
// TODO(issue-17-wal): when `pg fetch-wal` is merged, the CLI passes this as the default
// `restore_command` of `restore --physical` (tests pass a copying command meanwhile).
pub fn fetch_wal_command(from: &str) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "kars-backup".into());
    format!(
        "{} pg fetch-wal --from {} %f %p",
        shell_quote(&exe),
        shell_quote(from)
    )
}

/// `s` in single quotes for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// How far a physical restore replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryTarget {
    /// Every transaction committed at or before this instant, none after
    /// (`recovery_target_time`, inclusive).
    Time(DateTime<Utc>),
    /// Everything the archive holds.
    Latest,
}

impl std::fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryTarget::Time(t) => write!(f, "{}", recovery_target_time(*t)),
            RecoveryTarget::Latest => f.write_str("the end of the WAL archive"),
        }
    }
}

/// Options of [`restore_to_instant`].
#[derive(Debug, Clone)]
pub struct PhysicalRestoreOptions {
    /// The new data directory: it must not exist, or be empty. A live cluster is never touched.
    pub pgdata: PathBuf,
    /// How far to replay.
    pub target: RecoveryTarget,
    /// PostgreSQL's `restore_command` (`%f` the file name, `%p` the path to write), e.g.
    /// [`fetch_wal_command`].
    pub restore_command: String,
    /// Only base backups of this cluster (needed when the destination holds several).
    pub system_identifier: Option<String>,
    /// Running as root: the OS user the restored cluster belongs to and runs as (default
    /// `postgres`). PostgreSQL refuses to run as root.
    pub run_as: Option<String>,
    /// Where `postgres` and `pg_verifybackup` are (default: the Debian directory of the
    /// backup's major version, else `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// The checks run while replay is paused at the target (row counts are not compared: the
    /// manifest's are the base backup's, not the target's).
    pub plan: VerifyPlan,
    /// The database the plan checks (default: the one the backup's URL named).
    pub database: Option<String>,
    /// Leave `archive_mode` as the backup had it. By default the restored cluster gets
    /// `archive_mode = off`, so it cannot push a new timeline into the archive it came from.
    pub keep_archiving: bool,
    /// How long replay may take before the restore gives up.
    pub timeout: Duration,
    /// Cancelling it interrupts the restore: the scratch server is stopped and the data
    /// directory left as it was found ([`kars_backup_core::Error::Interrupted`]).
    pub cancel: CancellationToken,
    /// Base backups (by name) not to use: copies that failed their checksum (the job layer's
    /// fallback to another copy or an older base backup).
    pub skip: Vec<String>,
}

impl PhysicalRestoreOptions {
    /// Options with the defaults: the standard checks, archiving off, a day's timeout.
    pub fn new(
        pgdata: impl Into<PathBuf>,
        target: RecoveryTarget,
        restore_command: impl Into<String>,
    ) -> Self {
        PhysicalRestoreOptions {
            pgdata: pgdata.into(),
            target,
            restore_command: restore_command.into(),
            system_identifier: None,
            run_as: None,
            bin_dir: None,
            plan: VerifyPlan::default(),
            database: None,
            keep_archiving: false,
            timeout: Duration::from_secs(24 * 3600),
            cancel: CancellationToken::new(),
            skip: Vec::new(),
        }
    }
}

/// What a physical restore did.
#[derive(Debug, Clone, Serialize)]
pub struct PhysicalRestoreReport {
    /// The base backup used.
    pub backup: String,
    /// Where it came from.
    pub destination: String,
    /// SHA-256 of its stored bytes (checked against its manifest).
    pub sha256: String,
    /// The restored data directory.
    pub pgdata: String,
    /// The base backup's place in the WAL.
    pub base: PhysicalInfo,
    /// The target asked for.
    pub target: RecoveryTarget,
    /// The commit time of the last transaction replayed, when one was.
    pub replayed_to: Option<DateTime<Utc>>,
    /// The LSN replay ended at.
    pub replay_lsn: Option<String>,
    /// The timeline the cluster opened on.
    pub timeline: Option<u32>,
    /// The checks run on the restored cluster.
    pub verification: VerifyReport,
    /// The steps taken, in order.
    pub steps: Vec<String>,
    /// Wall time.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The base backup a restore to `target` starts from: the committed physical backup (of the
/// cluster `system_identifier`, when given) that ended last at or before the target.
///
/// # Errors
/// No physical backup; several clusters and no identifier; none ended before the target.
pub fn pick_base<'a>(
    entries: impl IntoIterator<Item = &'a BackupEntry>,
    target: RecoveryTarget,
    system_identifier: Option<&str>,
) -> Result<&'a BackupEntry> {
    let bases: Vec<(&BackupEntry, &PhysicalInfo)> = entries
        .into_iter()
        .filter(|e| e.kind == kars_backup_core::EntryKind::Committed)
        .filter_map(|e| Some((e, e.manifest.as_ref()?.physical.as_ref()?)))
        .filter(|(_, p)| system_identifier.is_none_or(|s| s == p.system_identifier))
        .collect();
    if bases.is_empty() {
        return Err(Error::Unsupported(match system_identifier {
            Some(s) => format!(
                "no physical base backup of the cluster with system identifier {s} here; take one with `kars-backup backup --physical`"
            ),
            None => {
                "no physical base backup here; take one with `kars-backup backup --physical`".into()
            }
        }));
    }
    let mut clusters: Vec<&str> = bases
        .iter()
        .map(|(_, p)| p.system_identifier.as_str())
        .collect();
    clusters.sort();
    clusters.dedup();
    if clusters.len() > 1 {
        return Err(Error::Unsupported(format!(
            "base backups of several clusters are here (system identifiers {}); choose one (--system-identifier)",
            clusters.join(", ")
        )));
    }
    let eligible = bases.iter().filter(|(_, p)| match target {
        RecoveryTarget::Time(t) => p.end_time <= t,
        RecoveryTarget::Latest => true,
    });
    match eligible.max_by_key(|(e, p)| (p.end_time, e.name.clone())) {
        Some((e, _)) => Ok(e),
        None => {
            let oldest = bases
                .iter()
                .map(|(_, p)| p.end_time)
                .min()
                .expect("bases is not empty");
            Err(Error::Unsupported(format!(
                "no base backup had ended by {target}: the oldest ended at {}; restore to a later instant",
                recovery_target_time(oldest)
            )))
        }
    }
}

/// Restores the cluster as it was at `options.target` into the new data directory
/// `options.pgdata`.
///
/// The newest base backup that ended before the target is streamed out of `repo` and extracted,
/// each file checked against the backup's own `backup_manifest` (size and CRC-32C) as its bytes
/// go by, so the data is read once (base backups with SHA-256 manifests, taken by earlier
/// versions, are checked by `pg_verifybackup` afterwards), the stored checksum checked before
/// anything is trusted; the
/// archived WAL is replayed by a scratch postmaster on a free port with a private socket
/// directory (`recovery_target_time` inclusive, `recovery_target_timeline = latest`, archiving
/// off), the verification plan runs while replay is paused at the target (for
/// [`RecoveryTarget::Latest`]: once replay reached the end of the archive), the cluster is
/// promoted, checked to open read-write, and stopped cleanly: ready for `pg_ctl start`.
///
/// On failure nothing is left in `pgdata` (a directory it created is removed).
///
/// # Errors
/// A non-empty `pgdata`; no fitting base backup; checksum or `pg_verifybackup` failures; a WAL
/// segment missing before the target (the error names it); verification failures; the
/// server's failures with the end of its log.
pub async fn restore_to_instant(
    repo: &Repository,
    options: &PhysicalRestoreOptions,
    progress: DynProgress,
) -> kars_backup_core::Result<PhysicalRestoreReport> {
    let pgdata = options.pgdata.display().to_string();
    let created = prepare_pgdata(&options.pgdata).map_err(|e| e.into_core(&pgdata))?;
    let result = run(repo, options, progress).await;
    if result.is_err() {
        clean_pgdata(&options.pgdata, created);
    }
    result
}

async fn run(
    repo: &Repository,
    options: &PhysicalRestoreOptions,
    progress: DynProgress,
) -> kars_backup_core::Result<PhysicalRestoreReport> {
    let started = Instant::now();
    let pgdata_s = options.pgdata.display().to_string();
    let core = |e: Error| e.into_core(&pgdata_s);
    let listing = repo.list().await?;
    let entry = pick_base(
        listing
            .entries
            .iter()
            .filter(|e| !options.skip.contains(&e.name.to_string())),
        options.target,
        options.system_identifier.as_deref(),
    )
    .map_err(core)?
    .clone();
    let manifest = entry.manifest.clone().expect("a committed backup");
    let base = manifest.physical.clone().expect("a physical backup");
    let mut steps = vec![format!(
        "base backup {} (WAL {}..{}, ended {})",
        entry.name,
        base.start_wal,
        base.stop_wal,
        recovery_target_time(base.end_time)
    )];
    let run_as = resolve_run_as(options.run_as.as_deref())
        .await
        .map_err(core)?;

    // Extract, checking each file against the backup's own manifest as its bytes go by; then
    // trust nothing before the stored checksum is known good.
    let (reader, check) = repo.open_payload(&entry, progress.clone()).await?;
    let dir = options.pgdata.clone();
    let cancel = options.cancel.clone();
    let unpacked =
        tokio::task::spawn_blocking(move || extract(reader.with_cancel(cancel), &dir)).await;
    progress.finish();
    let check = check
        .await
        .map_err(|e| kars_backup_core::Error::generic("download", e))?;
    interrupted_during(&options.cancel, "the download of the base backup").map_err(core)?;
    let check = check?;
    let files = match unpacked {
        Ok(Ok(files)) => files,
        Ok(Err(e)) => {
            return Err(core(Error::io(
                "extract the base backup into",
                &options.pgdata,
                e,
            )));
        }
        Err(e) => {
            return Err(core(Error::Task(TaskError::new(
                "extracting the base backup",
                e.to_string(),
            ))));
        }
    };
    let tools = Tools {
        bin_dir: options.bin_dir.clone(),
    };
    let major = std::fs::read_to_string(options.pgdata.join("PG_VERSION"))
        .ok()
        .and_then(|v| tools::parse_major(v.trim()));
    match files.finish() {
        Ok(Checked::Verified { files, bytes }) => push_step(
            &mut steps,
            format!(
                "extracted into {pgdata_s}; checksum verified; {files} files ({bytes} bytes) match the backup's backup_manifest (size and CRC-32C, checked while extracting)"
            ),
        ),
        Ok(Checked::OtherAlgorithm(algorithm)) => {
            // Older base backups: their manifest has SHA-256 (or another) checksums.
            push_step(
                &mut steps,
                format!("extracted into {pgdata_s}; checksum verified"),
            );
            verify_backup(&tools, major, &options.pgdata)
                .await
                .map_err(core)?;
            push_step(
                &mut steps,
                format!(
                    "pg_verifybackup: the files match the backup's manifest ({algorithm} checksums)"
                ),
            );
        }
        Err(reason) => {
            return Err(core(Error::InvalidArchive {
                archive: entry.name.to_string(),
                reason: format!(
                    "base backup {} is damaged: {reason}; nothing of it is used (restore from another copy, or an older base backup)",
                    entry.name
                ),
            }));
        }
    }

    if !options.pgdata.join("postgresql.conf").exists() {
        // Debian keeps the configuration in /etc/postgresql: the server needs a file here.
        std::fs::write(
            options.pgdata.join("postgresql.conf"),
            "# written by kars-backup: the base backup held no postgresql.conf (its server kept it outside the data directory)\n",
        )
        .map_err(|e| core(Error::io("write", options.pgdata.join("postgresql.conf"), e)))?;
        push_step(
            &mut steps,
            "the backup held no postgresql.conf: an empty one was written",
        );
    }
    std::fs::write(options.pgdata.join("recovery.signal"), "").map_err(|e| {
        core(Error::io(
            "write",
            options.pgdata.join("recovery.signal"),
            e,
        ))
    })?;
    set_private(&options.pgdata).map_err(core)?;
    if let Some(user) = &run_as {
        chown(&options.pgdata, user).await.map_err(core)?;
    }

    let mut scratch = Scratch::prepare(&options.pgdata, run_as.as_deref())
        .await
        .map_err(core)?;
    let result = recover(&mut scratch, &tools, major, options, &manifest, &mut steps).await;
    let recovered = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = scratch.stop(false).await;
            return Err(core(e));
        }
    };
    scratch.stop(true).await.map_err(core)?;
    // A restore interrupted before it reported success does not count, however far it got.
    interrupted_during(&options.cancel, "the end of the restore").map_err(core)?;
    push_step(&mut steps, "stopped cleanly; ready for pg_ctl start");
    tracing::info!(
        pgdata = %pgdata_s,
        seconds = started.elapsed().as_secs_f64(),
        "physical restore complete"
    );
    Ok(PhysicalRestoreReport {
        backup: entry.name.to_string(),
        destination: repo.describe(),
        sha256: check.stored.sha256,
        pgdata: pgdata_s,
        base,
        target: options.target,
        replayed_to: recovered.replayed_to,
        replay_lsn: recovered.replay_lsn,
        timeline: recovered.timeline,
        verification: recovered.verification,
        steps,
        duration: started.elapsed(),
    })
}

/// What replay reached, and what the checks found.
struct Recovered {
    replayed_to: Option<DateTime<Utc>>,
    replay_lsn: Option<String>,
    timeline: Option<u32>,
    verification: VerifyReport,
}

async fn recover(
    scratch: &mut Scratch,
    tools: &Tools,
    major: Option<u32>,
    options: &PhysicalRestoreOptions,
    manifest: &kars_backup_core::Manifest,
    steps: &mut Vec<String>,
) -> Result<Recovered> {
    let pgdata = options.pgdata.display().to_string();
    let postgres = tools.find("postgres", major)?;
    let missing = scratch.missing_file();
    let restore_command = format!(
        "{} || {{ s=$?; echo '%f' >> '{}'; exit $s; }}",
        options.restore_command,
        missing.display()
    );
    let mut settings = vec![
        ("restore_command".to_string(), restore_command),
        ("recovery_target_timeline".into(), "latest".into()),
    ];
    if !options.keep_archiving {
        settings.push(("archive_mode".into(), "off".into()));
    }
    if let RecoveryTarget::Time(t) = options.target {
        settings.push(("recovery_target_time".into(), recovery_target_time(t)));
        settings.push(("recovery_target_inclusive".into(), "on".into()));
        settings.push(("recovery_target_action".into(), "pause".into()));
    }
    scratch.start(&postgres, &settings)?;
    push_step(steps, format!("replaying WAL to {}", options.target));

    // Who to connect as: the backup's user, else the cluster's OS user.
    let database = options
        .database
        .clone()
        .or_else(|| manifest.databases.first().map(|d| d.name.clone()))
        .unwrap_or_else(|| "postgres".into());
    let mut users = Vec::new();
    if let Ok(c) = ConnInfo::parse(&manifest.source) {
        users.push(c.user().to_string());
    }
    users.push(
        options
            .run_as
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".into()),
    );
    users.push("postgres".into());

    let deadline = Instant::now() + options.timeout;
    let (conn, superuser) = loop {
        interrupted_during(&options.cancel, "the WAL replay")?;
        if let Some(status) = scratch.exited() {
            return Err(failed_replay(scratch, &pgdata, options.target, &status));
        }
        if Instant::now() > deadline {
            return Err(Error::Recovery {
                pgdata,
                reason: format!(
                    "replay did not reach {} within {:?}: {}",
                    options.target,
                    options.timeout,
                    scratch.log_tail()
                ),
            });
        }
        if let Some(found) = try_connect(scratch, &users, &database).await {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let su = scratch.conn(&superuser, &database)?;
    let client = su.connect().await?;
    // Wait for the target: paused there, or (latest) recovery finished.
    loop {
        interrupted_during(&options.cancel, "the WAL replay")?;
        if let Some(status) = scratch.exited() {
            return Err(failed_replay(scratch, &pgdata, options.target, &status));
        }
        let row = client
            .query_one(
                "SELECT pg_catalog.pg_is_in_recovery(),
                        CASE WHEN pg_catalog.pg_is_in_recovery()
                             THEN pg_catalog.pg_get_wal_replay_pause_state() ELSE 'not paused' END",
                &[],
            )
            .await
            .map_err(|e| Error::query("read the recovery state", &pgdata, &e))?;
        let in_recovery: bool = row.get(0);
        let pause: String = row.get(1);
        let done = match options.target {
            RecoveryTarget::Time(_) => {
                if !in_recovery {
                    return Err(Error::Recovery {
                        pgdata,
                        reason: "the server ended recovery instead of pausing at the target".into(),
                    });
                }
                pause == "paused"
            }
            RecoveryTarget::Latest => !in_recovery,
        };
        if done {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Recovery {
                pgdata,
                reason: format!("replay did not reach {} in time", options.target),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = client
        .query_one(
            "SELECT (extract(epoch FROM pg_catalog.pg_last_xact_replay_timestamp()) * 1000000)::int8,
                    coalesce(pg_catalog.pg_last_wal_replay_lsn(), pg_catalog.pg_current_wal_lsn())::text",
            &[],
        )
        .await;
    let (replayed_to, replay_lsn) = match row {
        Ok(r) => (
            r.get::<_, Option<i64>>(0)
                .and_then(DateTime::from_timestamp_micros),
            r.get::<_, Option<String>>(1),
        ),
        Err(_) => (None, None),
    };
    match options.target {
        RecoveryTarget::Time(_) => push_step(
            steps,
            format!(
                "paused at the target{}",
                replayed_to
                    .map(|t| format!(" (last commit replayed: {})", recovery_target_time(t)))
                    .unwrap_or_default()
            ),
        ),
        RecoveryTarget::Latest => {
            let end = scratch.missing_segments().pop();
            // Replay ends at the first segment the archive lacks: when the archive holds the
            // one after it, that is a gap, not the end.
            if let Some(missing) = &end {
                let next = next_segment_name(missing, manifest_segment_size(manifest));
                if let Some(next) = next {
                    // (A live archive may have received both since: then it is no gap.)
                    if scratch.fetches(&options.restore_command, &next).await
                        && !scratch.fetches(&options.restore_command, missing).await
                    {
                        return Err(Error::WalGap {
                            segment: missing.clone(),
                            detail: format!(
                                "stopped there, but the archive holds WAL after it ({next}): the latest state is beyond the gap"
                            ),
                        });
                    }
                }
            }
            push_step(
                steps,
                format!(
                    "replayed to the end of the archive{}",
                    end.map(|s| format!(" ({s} is not in it)"))
                        .unwrap_or_default()
                ),
            );
        }
    }

    // The checks, before the promotion.
    interrupted_during(&options.cancel, "the verification")?;
    // amcheck can only be installed once the cluster is promoted: unless the backup has it, the
    // integrity check waits for the promotion and only the plan's own checks run while paused.
    let integrity = options.plan.integrity;
    let amcheck_now = integrity == IntegrityLevel::Off
        || matches!(options.target, RecoveryTarget::Latest)
        || client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'amcheck'",
                &[],
            )
            .await
            .map_err(|e| Error::query("look for amcheck", &pgdata, &e))?
            .is_some();
    let plan = VerifyPlan {
        check_counts: false,
        integrity: if amcheck_now {
            integrity
        } else {
            IntegrityLevel::Off
        },
        ..options.plan.clone()
    };
    let mut verification =
        verify_database(&conn, &plan, None, &[], &LoadedCounts::default()).await?;
    if !verification.passed() {
        return Err(Error::Core(kars_backup_core::Error::VerificationFailed(
            format!(
                "{} (the restored cluster in {pgdata} was not promoted and is removed)",
                verification.failures()
            ),
        )));
    }
    let n = verification.checks.len();
    let when = match options.target {
        RecoveryTarget::Time(_) => "while paused",
        RecoveryTarget::Latest => "at the end of replay",
    };
    let later = if amcheck_now {
        ""
    } else {
        " (amcheck after the promotion: it cannot be installed during recovery)"
    };
    push_step(
        steps,
        match n {
            0 => format!("nothing to verify {when}{later}"),
            1 => format!("verified {when}: 1 check passed{later}"),
            _ => format!("verified {when}: {n} checks passed{later}"),
        },
    );

    interrupted_during(&options.cancel, "the verification")?;
    if matches!(options.target, RecoveryTarget::Time(_)) {
        // Paused at the target, resuming ends recovery and promotes (at once, where
        // pg_promote() waits for the paused startup process's next one-second wake-up).
        client
            .batch_execute("SELECT pg_catalog.pg_wal_replay_resume()")
            .await
            .map_err(|e| Error::query("promote the restored cluster", &pgdata, &e))?;
        loop {
            if let Some(status) = scratch.exited() {
                return Err(Error::Recovery {
                    pgdata,
                    reason: format!(
                        "the server stopped during the promotion ({status}): {}",
                        scratch.log_tail()
                    ),
                });
            }
            let in_recovery: bool = client
                .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
                .await
                .map_err(|e| Error::query("read the recovery state", &pgdata, &e))?
                .get(0);
            if !in_recovery {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Recovery {
                    pgdata,
                    reason: format!("the promotion did not finish: {}", scratch.log_tail()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Opens read-write: a write must succeed.
    let rw = su.connect().await?;
    rw.batch_execute(
        "CREATE TEMPORARY TABLE kars_read_write_check (x int); INSERT INTO kars_read_write_check VALUES (1); DROP TABLE kars_read_write_check",
    )
    .await
    .map_err(|e| Error::Recovery {
        pgdata: pgdata.clone(),
        reason: format!("the restored cluster does not accept writes: {}", db_message(&e)),
    })?;
    // The timeline the cluster opened on: the one of the WAL file it writes now.
    let timeline: Option<u32> = rw
        .query_one(
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn())",
            &[],
        )
        .await
        .ok()
        .and_then(|r| u32::from_str_radix(r.get::<_, String>(0).get(..8)?, 16).ok());
    push_step(
        steps,
        format!(
            "promoted; opens read-write{}",
            timeline
                .map(|t| format!(" (timeline {t})"))
                .unwrap_or_default()
        ),
    );

    // amcheck cannot be installed during recovery: when it was missing, it runs now.
    if !amcheck_now {
        let integrity = VerifyPlan {
            integrity,
            check_counts: false,
            min_rows: Vec::new(),
            queries: Vec::new(),
        };
        let after = verify_database(&conn, &integrity, None, &[], &LoadedCounts::default()).await?;
        for mut c in after.checks {
            c.check = format!("{} (after the promotion)", c.check);
            verification.checks.push(c);
        }
        if !verification.passed() {
            return Err(Error::Core(kars_backup_core::Error::VerificationFailed(
                format!(
                    "{} (the restored cluster in {pgdata} is removed)",
                    verification.failures()
                ),
            )));
        }
        push_step(steps, "amcheck after the promotion passed");
    }
    if !options.keep_archiving {
        rw.batch_execute("ALTER SYSTEM SET archive_mode = off")
            .await
            .map_err(|e| Error::query("turn archiving off", &pgdata, &e))?;
        push_step(
            steps,
            "archive_mode = off (so it cannot push a new timeline into the archive it came from)",
        );
    }
    Ok(Recovered {
        replayed_to,
        replay_lsn,
        timeline,
        verification,
    })
}

/// The WAL segment size of the backup's cluster.
fn manifest_segment_size(manifest: &kars_backup_core::Manifest) -> u64 {
    manifest
        .physical
        .as_ref()
        .map_or(16 * 1024 * 1024, |p| p.wal_segment_size)
}

/// Connects as the first of `users` the cluster has; returns the connection for the checks and
/// the name of a superuser (for pausing, promoting and settings).
async fn try_connect(scratch: &Scratch, users: &[String], db: &str) -> Option<(ConnInfo, String)> {
    for user in users {
        let Ok(conn) = scratch.conn(user, db) else {
            continue;
        };
        let Ok(client) = conn.connect().await else {
            continue;
        };
        let su: String = client
            .query_one(
                "SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10",
                &[],
            )
            .await
            .ok()?
            .get(0);
        return Some((conn, su));
    }
    None
}

/// Why replay stopped with the server: a missing segment before the target is named.
fn failed_replay(scratch: &Scratch, pgdata: &str, target: RecoveryTarget, status: &str) -> Error {
    let log = scratch.log();
    let short = log.contains("recovery ended before configured recovery target was reached")
        || log.contains("WAL ends before end of online backup")
        || log.contains("WAL ends before consistent recovery point");
    if short {
        if let Some(segment) = scratch.missing_segments().pop() {
            let redo = log
                .lines()
                .find_map(|l| l.split("redo done at ").nth(1))
                .map(|s| s.split_whitespace().next().unwrap_or("").to_string());
            return Error::WalGap {
                segment,
                detail: format!(
                    "replayed {} and could not fetch the next segment before reaching {target}",
                    redo.map(|r| format!("up to {r}"))
                        .unwrap_or_else(|| "only part of the WAL".into())
                ),
            };
        }
    }
    Error::Recovery {
        pgdata: pgdata.to_string(),
        reason: format!(
            "the server stopped ({status}): {}",
            tools::tail(log.as_bytes())
        ),
    }
}

/// `pg_verifybackup` of the extracted base backup against its own manifest (its WAL is checked
/// by replay, not here).
async fn verify_backup(tools: &Tools, major: Option<u32>, pgdata: &Path) -> Result<()> {
    let path = tools.find("pg_verifybackup", major)?;
    let mut cmd = tokio::process::Command::new(&path);
    cmd.arg("--no-parse-wal")
        .arg("--quiet")
        .arg(pgdata)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = tools::spawn("pg_verifybackup", &mut cmd)?;
    let stderr = tools::collect_stderr(child.stderr.take());
    tools::wait_checked("pg_verifybackup", child, stderr)
        .await
        .map(|_| ())
}

/// Makes sure `pgdata` is new or empty; creates it. True when it was created.
fn prepare_pgdata(pgdata: &Path) -> Result<bool> {
    match std::fs::read_dir(pgdata) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::Unsupported(format!(
                    "{} is not empty: a physical restore writes only into a new or empty directory, so a live cluster is never touched; choose another --pgdata",
                    pgdata.display()
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(pgdata).map_err(|e| Error::io("create", pgdata, e))?;
            Ok(true)
        }
        Err(e) => Err(Error::io("read", pgdata, e)),
    }
}

/// Removes what a failed restore wrote: the directory it created, or the content of the empty
/// directory it was given.
fn clean_pgdata(pgdata: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(pgdata);
        return;
    }
    if let Ok(rd) = std::fs::read_dir(pgdata) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

fn set_private(pgdata: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("set the permissions of", pgdata, e))
}

/// The OS user the restored cluster runs as: none unless this process is root (then `run_as`,
/// default `postgres`, which must exist).
async fn resolve_run_as(run_as: Option<&str>) -> Result<Option<String>> {
    if !running_as_root() {
        return match run_as {
            Some(u) if std::env::var("USER").ok().as_deref() != Some(u) => {
                Err(Error::Unsupported(format!(
                    "only root can run the restored cluster as {u}; run the restore as {u} instead"
                )))
            }
            _ => Ok(None),
        };
    }
    let user = run_as.unwrap_or("postgres");
    let known = tokio::process::Command::new("id")
        .arg("-u")
        .arg(user)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !known {
        return Err(Error::Unsupported(format!(
            "running as root, the restored cluster must belong to another OS user (PostgreSQL refuses to run as root), and there is no user {user}: pass --run-as USER"
        )));
    }
    Ok(Some(user.to_string()))
}

/// Fails with [`kars_backup_core::Error::Interrupted`] once `cancel` is cancelled.
fn interrupted_during(cancel: &CancellationToken, during: &str) -> Result<()> {
    if cancel.is_cancelled() {
        return Err(Error::Core(kars_backup_core::Error::Interrupted {
            during: during.to_string(),
        }));
    }
    Ok(())
}

/// Adds a step to the report, and to the log.
fn push_step(steps: &mut Vec<String>, step: impl Into<String>) {
    let step = step.into();
    tracing::info!(step = %step, "physical restore");
    steps.push(step);
}
