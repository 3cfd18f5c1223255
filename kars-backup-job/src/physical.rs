//! Physical restores of PostgreSQL clusters from the destinations a command reads: the base
//! backup and WAL replay of [`kars_backup_postgres::physical`], with the reading's keys.

use chrono::{DateTime, Utc};
use kars_backup_core::checks::Checks;
use kars_backup_core::drill::{DrillOptions, DrillReport};
use kars_backup_core::objective::Objective;
use kars_backup_core::recovery::Origin;
use kars_backup_core::{DynProgress, EntryKind};
use kars_backup_postgres::physical::{
    PhysicalRestoreOptions, PhysicalRestoreReport, RecoveryTarget, fetch_wal_command, pick_base,
    restore_to_instant,
};
use kars_backup_postgres::wal::{DEFAULT_SEGMENT_SIZE, list_chains};

use std::path::PathBuf;

use crate::drill::Restored;
use crate::error::{Error, Result, into_core};
use crate::restore::Reading;
use crate::wal::{WalCheck, check_wal};

/// How a physical restore, verify or drill of a PostgreSQL cluster runs, as the operator gives
/// it (`--physical`, `--pgdata`, …); [`PhysicalFlags::options`] makes the restore's options.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Physical (PostgreSQL)"))]
pub struct PhysicalFlags {
    /// A physical base backup of a whole PostgreSQL cluster and its archived WAL, replayed to
    /// --to-time or --latest, verified while paused at the target, promoted (restore: into
    /// --pgdata, left stopped and ready for `pg_ctl start`; verify and drill: into a scratch
    /// directory, removed afterwards).
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "backup"))]
    pub physical: bool,

    /// Restore: the new data directory; it must not exist, or be empty (a live cluster is never
    /// touched). Verify and drill: where the scratch directory goes [default: the system's
    /// temporary directory].
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR", requires = "physical"))]
    pub pgdata: Option<PathBuf>,

    /// PostgreSQL's `restore_command` that fetches archived WAL (`%f` the file name, `%p` the
    /// path to write) [default: kars-backup pg fetch-wal --from DEST %f %p].
    #[cfg_attr(feature = "clap", arg(long, value_name = "CMD", requires = "physical"))]
    pub restore_command: Option<String>,

    /// Running as root: the OS user the restored cluster belongs to and runs as (PostgreSQL
    /// refuses root) [default: postgres].
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "USER", requires = "physical")
    )]
    pub run_as: Option<String>,

    /// Only base backups of the cluster with this system identifier (when a destination holds
    /// several clusters').
    #[cfg_attr(feature = "clap", arg(long, value_name = "ID", requires = "physical"))]
    pub system_identifier: Option<String>,

    /// Restore: keep the backup's `archive_mode` [default: off, so the restored cluster cannot
    /// push a new timeline into the archive it came from].
    #[cfg_attr(feature = "clap", arg(long, requires = "physical"))]
    pub keep_archiving: bool,
}

impl PhysicalFlags {
    /// The options of a physical restore to `target` with `checks`' plan at its instant and
    /// PostgreSQL's programs from `bin_dir`. `scratch` names a verify or drill, which remove
    /// their copy, so `--keep-archiving` is refused there.
    ///
    /// # Errors
    /// [`Error::Usage`]: `--keep-archiving` with a scratch copy.
    pub fn options(
        &self,
        target: RecoveryTarget,
        checks: &Checks,
        bin_dir: Option<PathBuf>,
        scratch: Option<&str>,
    ) -> Result<PhysicalRestoreOptions> {
        if let (Some(what), true) = (scratch, self.keep_archiving) {
            return Err(Error::usage(format!(
                "--keep-archiving is for restores: {what} removes its scratch copy"
            )));
        }
        let mut options = PhysicalRestoreOptions::new(
            self.pgdata.clone().unwrap_or_default(),
            target,
            self.restore_command.clone().unwrap_or_default(),
        );
        options.plan = checks.plan_at(match target {
            RecoveryTarget::Time(t) => t,
            RecoveryTarget::Latest => chrono::Utc::now(),
        });
        options.run_as = self.run_as.clone();
        options.system_identifier = self.system_identifier.clone();
        options.keep_archiving = self.keep_archiving;
        options.bin_dir = bin_dir;
        Ok(options)
    }
}

/// The target of `--to-time T` or `--latest` (`random`: a drill's random instant, picked
/// later; the target stays at the latest until then).
///
/// # Errors
/// [`Error::Usage`] when neither (or both) is given.
pub fn recovery_target(
    to_time: Option<DateTime<Utc>>,
    latest: bool,
    random: bool,
) -> Result<RecoveryTarget> {
    match (to_time, latest || random) {
        (Some(t), false) => Ok(RecoveryTarget::Time(t)),
        (None, true) => Ok(RecoveryTarget::Latest),
        _ => Err(Error::usage(
            "--physical needs --to-time TIME or --latest (a drill: or --random-instant)",
        )),
    }
}

/// Restores the cluster into a new data directory as [`restore_to_instant`] does, from the
/// first of the reading's destinations that holds a fitting base backup (its keys decrypt
/// it). An empty `options.restore_command` fetches WAL from that destination's archive
/// ([`fetch_wal_command`]).
///
/// A base backup whose stored copy is damaged (checksum mismatch, unreadable or undecryptable
/// archive) is not the end: the same backup at the other destinations is tried, then the next
/// older base backup that fits the target (it replays more WAL). Each fallback is the first of
/// the report's `steps`.
///
/// # Errors
/// No destination; none with a base backup for the target (the first one's reason); the
/// restore's errors (with every damaged copy, the last one's).
pub async fn restore_physical(
    reading: &Reading,
    options: &PhysicalRestoreOptions,
    progress: DynProgress,
) -> Result<PhysicalRestoreReport> {
    let origins = reading.origins()?;
    if origins.is_empty() {
        return Err(Error::usage("a physical restore needs --from DEST"));
    }
    // Per destination, the base backups whose copy there is damaged.
    let mut damaged: Vec<Vec<String>> = vec![Vec::new(); origins.len()];
    let mut fallbacks: Vec<String> = Vec::new();
    let mut first_reason = None;
    let mut last_error = None;
    // A round tries each destination's best base backup; a damaged copy moves on to the
    // next destination (the same backup, another copy), and, once every copy of it is
    // damaged, to an older one.
    loop {
        let mut tried = false;
        let mut best: Vec<(usize, String, chrono::DateTime<chrono::Utc>)> = Vec::new();
        for (i, origin) in origins.iter().enumerate() {
            let listing = origin.repo.list().await?;
            match pick_base(
                listing
                    .entries
                    .iter()
                    .filter(|e| !damaged[i].contains(&e.name.to_string())),
                options.target,
                options.system_identifier.as_deref(),
            ) {
                Ok(e) => best.push((i, e.name.to_string(), e.time())),
                Err(e) => {
                    first_reason.get_or_insert(e);
                }
            }
        }
        // The newest base backup first, at the first destination that has it.
        best.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        if let Some((i, name, _)) = best.first().cloned() {
            let mut options = options.clone();
            options.skip = damaged[i].clone();
            if options.restore_command.trim().is_empty() {
                options.restore_command = fetch_wal_command(&reading.from[i]);
            }
            tried = true;
            match restore_to_instant(&origins[i].repo, &options, progress.clone()).await {
                Ok(mut report) => {
                    report.steps.splice(0..0, fallbacks);
                    return Ok(report);
                }
                Err(e) if damaged_copy(&e) => {
                    tracing::warn!(backup = %name, destination = %origins[i].label, error = %e, "damaged base backup copy; trying another");
                    fallbacks.push(format!(
                        "base backup {name} at {} is damaged ({e}); next: another copy, else an older base backup",
                        origins[i].label
                    ));
                    damaged[i].push(name);
                    last_error = Some(e);
                }
                Err(e) => return Err(Error::Core(e)),
            }
        }
        if !tried {
            break;
        }
    }
    if let Some(e) = last_error {
        return Err(Error::Core(e));
    }
    let reason = first_reason.expect("at least one origin was tried");
    Err(Error::Core(reason.into_core("the physical restore")))
}

/// Whether a restore failed on the stored copy of its base backup itself (another copy, or an
/// older base backup, may work).
fn damaged_copy(e: &kars_backup_core::Error) -> bool {
    matches!(
        e,
        kars_backup_core::Error::ChecksumMismatch { .. }
            | kars_backup_core::Error::InvalidArchive { .. }
            | kars_backup_core::Error::DecryptionFailed { .. }
    )
}

/// Verifies a physical backup as [`restore_physical`] restores it, into a scratch data
/// directory that is removed afterwards: a new directory inside `options.pgdata` when it is
/// set, else inside the system's temporary directory. Archiving stays off.
///
/// First the WAL chain of every destination read ([`check_chains`]): a segment missing on the
/// way from any retained base backup to the newest archived one fails the verification,
/// naming it, before anything is restored.
///
/// # Errors
/// A broken WAL chain ([`kars_backup_core::Error::VerificationFailed`]); as
/// [`restore_physical`]; a scratch directory that cannot be made.
pub async fn verify_physical(
    reading: &Reading,
    options: &PhysicalRestoreOptions,
    progress: DynProgress,
) -> Result<PhysicalRestoreReport> {
    let problems: Vec<String> = check_chains(reading)
        .await?
        .iter()
        .flat_map(|c| {
            c.problems()
                .into_iter()
                .map(move |p| format!("{}: {p}", c.destination))
        })
        .collect();
    if !problems.is_empty() {
        return Err(Error::Core(kars_backup_core::Error::VerificationFailed(
            format!("the WAL chain is broken: {}", problems.join("; ")),
        )));
    }
    let parent = if options.pgdata.as_os_str().is_empty() {
        std::env::temp_dir()
    } else {
        options.pgdata.clone()
    };
    let dir = tempfile::Builder::new()
        .prefix("kars-verify-physical-")
        .tempdir_in(&parent)
        .map_err(|e| kars_backup_core::Error::io("create a scratch directory in", &parent, e))?;
    // The cluster's OS user (run as root: another one) must reach the data directory inside.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711));
    }
    let mut scratch = options.clone();
    scratch.pgdata = dir.path().join("pgdata");
    scratch.keep_archiving = false;
    let report = restore_physical(reading, &scratch, progress).await;
    drop(dir);
    report
}

/// The WAL archive of every destination `reading` reads, checked against its base backups
/// ([`check_wal`]; the reading's keys open encrypted history files). Destinations without WAL
/// are left out.
///
/// # Errors
/// A destination that cannot be opened or listed.
pub async fn check_chains(reading: &Reading) -> Result<Vec<WalCheck>> {
    let mut checks = Vec::new();
    for origin in reading.origins()? {
        let check = check_wal(&origin.repo, origin.repo.decryptor().cloned()).await?;
        if !check.is_empty() {
            checks.push(check);
        }
    }
    Ok(checks)
}

/// A physical drill: [`verify_physical`] timed and measured like every drill, its report stored
/// under `.kars-drills/` at the destinations read (unless `drill.store` is off), so `status`
/// shows it as the last drill. Never fails: every failure is in the report.
///
/// - RTO: from the start of the drill to a verified, promoted copy (download and replay
///   included).
/// - RPO: the age at the drill's start of the newest WAL archived (else of the newest base
///   backup's end): what a restore right now would lose.
/// - `random`: the checks of the drill; the instant restored to is drawn at random between the
///   end of the oldest retained base backup and the end of the newest (with one base backup:
///   the latest state), and the checks are planned for it.
///
/// Returns the report and, when the restore ran, its own report.
pub async fn drill_physical(
    reading: &Reading,
    options: &PhysicalRestoreOptions,
    drill: &DrillOptions,
    random: Option<&Checks>,
    progress: DynProgress,
) -> (DrillReport, Option<PhysicalRestoreReport>) {
    let clock = std::time::Instant::now();
    let origins = reading.origins();
    let labels = origins
        .as_ref()
        .map(|o| o.iter().map(|o| o.label.clone()).collect())
        .unwrap_or_default();
    let mut report = DrillReport::begin(labels, drill);
    report.engine = Some(kars_backup_postgres::ENGINE.to_string());
    let origins = match origins {
        Ok(o) => o,
        Err(e) => {
            report.fail(&into_core(e));
            report.conclude();
            return (report, None);
        }
    };
    let mut options = options.clone();
    match window(&origins, options.system_identifier.as_deref()).await {
        Ok(Some(w)) => {
            let newest = w.newest_wal.map_or(w.last_base, |n| n.max(w.last_base));
            let age = (report.started_at - newest).num_milliseconds() as f64 / 1000.0;
            report.rpo = Objective::of(drill.rpo, Some(age.max(0.0)));
            if let Some(checks) = random {
                let span = (w.last_base - w.first_base).num_milliseconds();
                if span > 0 {
                    let offset = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=span);
                    let t = w.first_base + chrono::Duration::milliseconds(offset);
                    options.target = RecoveryTarget::Time(t);
                    options.plan = checks.plan_at(t);
                } else {
                    options.target = RecoveryTarget::Latest;
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            report.fail(&into_core(e));
            report.conclude();
            return (report, None);
        }
    }
    if let RecoveryTarget::Time(t) = options.target {
        report.restored_to = Some(t);
    }
    let restored = Restored::record(
        verify_physical(reading, &options, progress).await,
        |r| Restored {
            backup: r.backup.clone(),
            time: r.base.end_time,
            from: r.destination.clone(),
            scratch: r.pgdata.clone(),
            verification: r.verification.clone(),
        },
        &mut report,
        drill.rto,
        clock,
    );
    report.conclude();
    if drill.store {
        report
            .store_at(origins.iter().map(|o| (o.label.as_str(), &o.repo)))
            .await;
    }
    (report, restored)
}

/// The instants the base backups at some destinations cover, and the newest WAL there.
struct Window {
    first_base: DateTime<Utc>,
    last_base: DateTime<Utc>,
    newest_wal: Option<DateTime<Utc>>,
}

/// The ends of the oldest and newest committed base backups (of cluster `system_identifier`,
/// when given) across `origins`, and when the newest WAL of their cluster was stored.
async fn window(origins: &[Origin], system_identifier: Option<&str>) -> Result<Option<Window>> {
    let mut ends: Vec<DateTime<Utc>> = Vec::new();
    let mut clusters: Vec<String> = Vec::new();
    let mut newest_wal: Option<DateTime<Utc>> = None;
    for origin in origins {
        let listing = origin.repo.list().await?;
        for info in listing
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Committed)
            .filter_map(|e| e.manifest.as_ref()?.physical.as_ref())
            .filter(|p| system_identifier.is_none_or(|s| s == p.system_identifier))
        {
            ends.push(info.end_time);
            clusters.push(info.system_identifier.clone());
        }
        for chain in list_chains(origin.repo.sink(), DEFAULT_SEGMENT_SIZE).await? {
            if clusters.contains(&chain.system_identifier.to_string()) {
                let newest = chain.timelines.iter().filter_map(|t| t.newest).max();
                newest_wal = newest_wal.max(newest);
            }
        }
    }
    Ok(match (ends.iter().min(), ends.iter().max()) {
        (Some(first), Some(last)) => Some(Window {
            first_base: *first,
            last_base: *last,
            newest_wal,
        }),
        _ => None,
    })
}
