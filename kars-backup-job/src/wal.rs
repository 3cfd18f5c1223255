//! The PostgreSQL WAL archive beside a destination's base backups: [`prune`] (the retention
//! policy, then the WAL no kept base backup needs) and [`check_wal`] (the chain from every
//! retained base backup to the newest archived segment, its gaps and its age), which `prune`,
//! `verify --physical`, `pg wal-status` and `status` share; [`WalPlaces`]: where
//! `pg archive-wal`, `pg fetch-wal` and `pg receive-wal` store and read, with which keys.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kars_backup_core::{
    BackupEntry, DynDecryptor, EntryKind, PhysicalInfo, PruneOptions, PruneReport, Repository,
    RetentionPolicy,
};
use kars_backup_postgres::wal::{
    DEFAULT_SEGMENT_SIZE, WalChain, WalKind, WalName, WalPath, WalPruneReport, list_chains,
    prune_wal, wal_path,
};
use serde::Serialize;

use std::path::PathBuf;

use kars_backup_core::DynBackupSink;
use kars_backup_encrypt::{DecryptOptions, EncryptOptions};
use std::ffi::OsString;
use std::path::Path;

use kars_backup_postgres::wal::{
    ArchiveOptions, FetchOptions, PushOptions, ReceiveOptions, ReceiveSettings, SpoolOptions,
};

use crate::error::{Error, Result};
use crate::job::{Job, sinks};

/// Where the WAL goes or comes from besides the URLs given: a configuration file's job (its
/// destinations and encryption; credentials stay in the environment or the file, never in the
/// `archive_command` line that `pg_settings` and `ps` show), and which cluster.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct WalPlaces {
    /// Take the destinations (and encryption) from this configuration file's job.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub config: Option<PathBuf>,

    /// With --config: the job (default: the file's only job).
    #[cfg_attr(feature = "clap", arg(long, value_name = "NAME", requires = "config"))]
    pub job: Option<String>,

    /// The cluster's system identifier (default: from the WAL file's header, else from
    /// global/pg_control of --pgdata or the current directory).
    #[cfg_attr(feature = "clap", arg(long, value_name = "ID"))]
    pub system_id: Option<u64>,

    /// The data directory whose global/pg_control names the cluster (default: the current
    /// directory, where PostgreSQL runs archive_command and restore_command).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub pgdata: Option<PathBuf>,
}

/// `archive-wal`'s asynchronous spool for busy servers (docs/operators/wal-archive.md).
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Asynchronous spool"))]
pub struct SpoolFlags {
    /// Queue the file in this local directory (fsynced, on the server's disk) and exit 0 at
    /// once; a background `kars-backup pg push-wal` uploads the queue in WAL order.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub spool_dir: Option<PathBuf>,

    /// The queue's bound in bytes: at or over it, the file is uploaded before archive-wal
    /// returns, as without a spool [default: 1 GiB].
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "BYTES", requires = "spool_dir")
    )]
    pub spool_max_bytes: Option<u64>,
}

impl WalPlaces {
    /// The command that drains `spool_dir` to the same places with the same encryption
    /// (`program pg push-wal --spool-dir DIR --to URL…`): no secret in it, only URLs as given
    /// (credentials stay in the environment or the configuration file), recipients and file
    /// names.
    pub fn push_command(
        &self,
        program: &Path,
        spool_dir: &Path,
        to: &[String],
        encryption: &EncryptOptions,
    ) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![program.into(), "pg".into(), "push-wal".into()];
        let mut flag = |name: &str, value: OsString| {
            argv.push(format!("--{name}").into());
            argv.push(value);
        };
        flag("spool-dir", spool_dir.into());
        to.iter().for_each(|url| flag("to", url.into()));
        if let Some(config) = &self.config {
            flag("config", config.into());
        }
        if let Some(job) = &self.job {
            flag("job", job.into());
        }
        if let Some(id) = self.system_id {
            flag("system-id", id.to_string().into());
        }
        if let Some(pgdata) = &self.pgdata {
            flag("pgdata", pgdata.into());
        }
        argv.extend(encryption.to_args());
        argv
    }

    /// `archiving` with `spool`: the file is queued in the spool and `pusher` (see
    /// [`WalPlaces::push_command`]) drains it in the background.
    ///
    /// # Errors
    /// As [`WalPlaces::archiving`].
    pub fn archiving_spooled(
        &self,
        to: &[String],
        encryption: &EncryptOptions,
        spool: &SpoolFlags,
        program: &Path,
    ) -> Result<(Vec<DynBackupSink>, ArchiveOptions)> {
        let (sinks, mut options) = self.archiving(to, encryption)?;
        if let Some(dir) = &spool.spool_dir {
            let mut spooled = SpoolOptions::new(dir);
            if let Some(max) = spool.spool_max_bytes {
                spooled.max_bytes = max;
            }
            spooled.pusher = self.push_command(program, dir, to, encryption);
            options.spool = Some(spooled);
        }
        Ok((sinks, options))
    }

    /// What `push-wal` uploads with: the places and encryption of `archiving`.
    ///
    /// # Errors
    /// As [`WalPlaces::archiving`].
    pub fn pushing(
        &self,
        to: &[String],
        encryption: &EncryptOptions,
    ) -> Result<(Vec<DynBackupSink>, PushOptions)> {
        let (sinks, archive) = self.archiving(to, encryption)?;
        Ok((
            sinks,
            PushOptions {
                archive,
                ..PushOptions::default()
            },
        ))
    }

    /// Where `archive-wal` stores (`to`, then the job's destinations) and how: `encryption`
    /// given wins over the job's `[job.encryption]`, and so does `--no-encrypt`.
    ///
    /// # Errors
    /// A configuration file or job that cannot be loaded, no destination, a bad destination or
    /// recipient.
    pub fn archiving(
        &self,
        to: &[String],
        encryption: &EncryptOptions,
    ) -> Result<(Vec<DynBackupSink>, ArchiveOptions)> {
        let job = self.job()?;
        let sinks = destination_sinks(to, job.as_ref())?;
        let encryptor = match (encryption.encryptor()?, &job) {
            (Some(e), _) => Some(e),
            (None, Some(job)) => job.encryptor()?,
            (None, None) => None,
        };
        let plaintext = match &job {
            Some(job) if !encryption.no_encrypt => job.plaintext(),
            _ => encryption.plaintext(),
        };
        let options = ArchiveOptions {
            encryptor,
            system_identifier: self.system_id,
            pgdata: self.pgdata.clone(),
            plaintext,
            ..ArchiveOptions::default()
        };
        Ok((sinks, options))
    }

    /// Where `fetch-wal` reads (`from`, then the job's destinations, tried in order) with
    /// `decryption`'s keys and the job's, fetching `read_ahead` segments ahead.
    ///
    /// # Errors
    /// As [`WalPlaces::archiving`]; an unreadable key.
    pub fn fetching(
        &self,
        from: &[String],
        decryption: &DecryptOptions,
        read_ahead: usize,
    ) -> Result<(Vec<DynBackupSink>, FetchOptions)> {
        let job = self.job()?;
        let sinks = destination_sinks(from, job.as_ref())?;
        let keys = match &job {
            Some(job) => job.decrypt_options(decryption),
            None => decryption.clone(),
        };
        let options = FetchOptions {
            decryptor: Some(keys.decryptor()?),
            system_identifier: self.system_id,
            pgdata: self.pgdata.clone(),
            read_ahead,
            ..FetchOptions::default()
        };
        Ok((sinks, options))
    }

    fn job(&self) -> Result<Option<Job>> {
        let load = |path| Job::from_file(path, self.job.as_deref());
        self.config.as_deref().map(load).transpose()
    }
}

/// Where `receive-wal` ships (`to`) and how (`encryption`, `settings`).
///
/// # Errors
/// No destination, a bad destination or recipient.
pub fn receiving(
    to: &[String],
    encryption: &EncryptOptions,
    settings: &ReceiveSettings,
) -> Result<(Vec<DynBackupSink>, ReceiveOptions)> {
    let options = ReceiveOptions {
        archive: ArchiveOptions {
            encryptor: encryption.encryptor()?,
            plaintext: encryption.plaintext(),
            ..ArchiveOptions::default()
        },
        settings: settings.clone(),
    };
    Ok((destination_sinks(to, None)?, options))
}

/// The sinks of `urls`, then of the job's destinations.
fn destination_sinks(urls: &[String], job: Option<&Job>) -> Result<Vec<DynBackupSink>> {
    let from_job = job
        .into_iter()
        .flat_map(|j| j.destinations().iter().map(|d| d.url.clone()));
    let all: Vec<String> = urls.iter().cloned().chain(from_job).collect();
    if all.is_empty() {
        return Err(Error::usage(
            "no destination: give --to/--from URL, or --config FILE with a job that has destinations",
        ));
    }
    sinks(&all)
}

/// What a prune of a destination did: the backups (core's [`PruneReport`]) and, per cluster
/// with a kept base backup, the WAL removed below the oldest one's first segment.
#[derive(Debug, Clone, Serialize)]
pub struct PruneRun {
    /// The backups kept and deleted. A failed WAL prune is one of its `errors`.
    #[serde(flatten)]
    pub report: PruneReport,
    /// The WAL pruned, per cluster.
    pub wal: Vec<WalPruned>,
}

/// The WAL pruned of one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct WalPruned {
    /// The cluster's system identifier.
    pub system_identifier: String,
    /// The oldest base backup kept of it.
    pub oldest_kept_base: String,
    /// Its first WAL segment: everything before it (on every timeline) went, history files
    /// excepted.
    pub kept_from: String,
    /// What was removed (or, in a dry run, would be).
    pub report: WalPruneReport,
}

/// Applies `policy` to the backups in `repo` (core's prune), then removes from its WAL archive,
/// per cluster, the segments before the first segment of the oldest base backup still kept
/// (history files stay; a cluster without a kept base backup keeps all its WAL). A dry run
/// deletes nothing and reports what would go.
///
/// # Errors
/// As core's prune. A failed WAL prune is recorded in the report's `errors`.
pub async fn prune(
    repo: &Repository,
    policy: &dyn RetentionPolicy,
    options: &PruneOptions,
) -> Result<PruneRun> {
    let mut report = kars_backup_core::prune(repo, policy, options).await?;
    let mut wal = Vec::new();
    // After the prune: what is still listed (a failed deletion keeps its WAL too), less what a
    // dry run would have deleted.
    let gone: Vec<String> = if options.dry_run {
        report.delete.iter().map(|i| i.name.clone()).collect()
    } else {
        Vec::new()
    };
    let listing = match repo.list().await {
        Ok(listing) => listing,
        Err(e) => {
            report.errors.push(format!("WAL archive: {e}"));
            return Ok(PruneRun { report, wal });
        }
    };
    let bases = oldest_bases(
        listing
            .entries
            .iter()
            .filter(|e| !gone.contains(&e.name.to_string())),
    );
    for (sysid, (entry, info)) in bases {
        match prune_wal(
            repo.sink(),
            sysid,
            &info.start_wal,
            info.wal_segment_size,
            options.dry_run,
        )
        .await
        {
            Ok(r) => {
                if !r.removed.is_empty() {
                    tracing::info!(cluster = sysid, removed = r.removed.len(), kept_from = %info.start_wal, "WAL pruned");
                }
                wal.push(WalPruned {
                    system_identifier: info.system_identifier.clone(),
                    oldest_kept_base: entry.name.to_string(),
                    kept_from: info.start_wal.clone(),
                    report: r,
                });
            }
            Err(e) => report
                .errors
                .push(format!("WAL archive of cluster {sysid}: {e}")),
        }
    }
    Ok(PruneRun { report, wal })
}

/// Per cluster, the committed base backup whose first WAL segment is the oldest.
fn oldest_bases<'a>(
    entries: impl Iterator<Item = &'a BackupEntry>,
) -> BTreeMap<u64, (&'a BackupEntry, &'a PhysicalInfo)> {
    let mut oldest: BTreeMap<u64, (&BackupEntry, &PhysicalInfo, u64)> = BTreeMap::new();
    for (entry, info) in physical_bases(entries) {
        let (Ok(sysid), Some(start)) = (info.system_identifier.parse::<u64>(), start_segno(info))
        else {
            continue;
        };
        let slot = oldest.entry(sysid).or_insert((entry, info, start));
        if start < slot.2 {
            *slot = (entry, info, start);
        }
    }
    oldest
        .into_iter()
        .map(|(k, (e, i, _))| (k, (e, i)))
        .collect()
}

fn physical_bases<'a>(
    entries: impl Iterator<Item = &'a BackupEntry>,
) -> impl Iterator<Item = (&'a BackupEntry, &'a PhysicalInfo)> {
    entries
        .filter(|e| e.kind == EntryKind::Committed)
        .filter_map(|e| Some((e, e.manifest.as_ref()?.physical.as_ref()?)))
}

fn start_segno(info: &PhysicalInfo) -> Option<u64> {
    WalName::parse(&info.start_wal)
        .filter(|w| w.kind == WalKind::Segment)
        .map(|w| w.segno(info.wal_segment_size))
}

/// The WAL one retained base backup replays: from its first segment to the newest archived
/// segment on its timeline path.
#[derive(Debug, Clone, Serialize)]
pub struct BaseWal {
    /// The base backup.
    pub backup: String,
    /// Its cluster.
    pub system_identifier: String,
    /// Its first WAL segment.
    pub start_wal: String,
    /// The path through the archive ([`wal_path`]); `None` when it could not be followed.
    pub path: Option<WalPath>,
    /// Why the path could not be followed (a missing history file, a storage failure).
    pub error: Option<String>,
}

impl BaseWal {
    /// What stops a restore from this base backup short of the archive's end: the first
    /// missing segment, or why the path could not be followed.
    pub fn problem(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!(
                "base backup {}: its WAL cannot be followed: {e}",
                self.backup
            ));
        }
        let missing = self.path.as_ref()?.first_missing.as_deref()?;
        Some(format!(
            "WAL segment {missing} is missing: base backup {} cannot be restored past it (re-archive it, or take a new base backup)",
            self.backup
        ))
    }
}

/// The WAL archive at a destination, checked against its base backups.
#[derive(Debug, Clone, Serialize)]
pub struct WalCheck {
    /// The destination (redacted).
    pub destination: String,
    /// Per cluster and timeline: windows and gaps.
    pub chains: Vec<WalChain>,
    /// Every retained base backup and the WAL it replays, oldest first.
    pub bases: Vec<BaseWal>,
    /// When the newest WAL file was stored (when the destination tells).
    pub newest: Option<DateTime<Utc>>,
}

impl WalCheck {
    /// Whether any WAL is archived here.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// Everything that breaks the chain: a segment missing on a base backup's path (named),
    /// a path that cannot be followed, and for clusters with no base backup here the gaps of
    /// their windows and missing history files.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.bases.iter().filter_map(BaseWal::problem).collect();
        for chain in &self.chains {
            let sysid = chain.system_identifier.to_string();
            if self.bases.iter().any(|b| b.system_identifier == sysid) {
                continue;
            }
            for (tli, gap) in chain.gaps() {
                problems.push(format!(
                    "cluster {sysid} timeline {tli}: {} WAL segment(s) missing from {} to {}",
                    gap.count, gap.first, gap.last
                ));
            }
            for tli in chain.missing_history() {
                problems.push(format!(
                    "cluster {sysid}: the history file of timeline {tli} is not archived"
                ));
            }
        }
        problems
    }

    /// The age of the newest archived WAL at `now` (the archive's lag; `None` without WAL or
    /// when the destination gives no times).
    pub fn lag(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        self.newest.map(|t| now - t)
    }
}

/// Checks the WAL archive at `repo`: its windows, and for every committed base backup the
/// path from its first segment to the newest archived one ([`wal_path`], across timelines:
/// `decryptor` opens encrypted history files), naming the first missing segment.
///
/// # Errors
/// Listing failures. A path that cannot be followed is recorded in [`BaseWal::error`].
pub async fn check_wal(repo: &Repository, decryptor: Option<DynDecryptor>) -> Result<WalCheck> {
    let sink = repo.sink();
    let chains = list_chains(sink, DEFAULT_SEGMENT_SIZE).await?;
    let newest = chains
        .iter()
        .flat_map(|c| c.timelines.iter().filter_map(|t| t.newest))
        .max();
    let mut bases = Vec::new();
    if !chains.is_empty() {
        let listing = repo.list().await?;
        for (entry, info) in physical_bases(listing.entries.iter()) {
            let Ok(sysid) = info.system_identifier.parse::<u64>() else {
                continue;
            };
            let path = wal_path(
                sink,
                sysid,
                &info.start_wal,
                None,
                decryptor.clone(),
                info.wal_segment_size,
            )
            .await;
            let (path, error) = match path {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e.to_string())),
            };
            bases.push(BaseWal {
                backup: entry.name.to_string(),
                system_identifier: info.system_identifier.clone(),
                start_wal: info.start_wal.clone(),
                path,
                error,
            });
        }
    }
    Ok(WalCheck {
        destination: repo.describe(),
        chains,
        bases,
        newest,
    })
}
