//! Continuous SQLite replication as a job: [`Replication`] (a database, its destinations,
//! the operator's [`ReplicationSettings`] and encryption, checked before anything runs) and
//! [`ReplicaRestore`] (which replica of a destination a restore to an instant or to the
//! latest replicated state reads, through the staged, verified restore).
//!
//! ```no_run
//! use kars_backup_job::replicate::Replication;
//! use kars_backup_encrypt::EncryptOptions;
//! use kars_backup_sqlite::replicate::ReplicationSettings;
//!
//! # async fn run() -> kars_backup_job::Result<()> {
//! let replication = Replication::new(
//!     "/var/lib/kars/assets.db",
//!     &["file:///backups/replica".to_string()],
//!     &ReplicationSettings::default(),
//!     &EncryptOptions { no_encrypt: true, ..EncryptOptions::default() },
//! )?;
//! let stop = kars_backup_core::CancellationToken::new();
//! let status = replication.run(stop).await?;
//! println!("{} transactions captured", status.captured_txid);
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use kars_backup_core::checks::Checks;
use kars_backup_core::sink::DynBackupSink;
use kars_backup_core::{CancellationToken, DatabaseSource, Repository, RestoreOptions};
use kars_backup_encrypt::EncryptOptions;
use kars_backup_sqlite::SqliteSource;
use kars_backup_sqlite::replicate::{
    ReplicaRestoreReport, ReplicateOptions, ReplicationSettings, ReplicationStatus, Replicator,
    RestorePoint, catalog, restore_replica,
};

use crate::error::{Error, Result};
use crate::job::{Job, repository};
use crate::restore::Reading;

/// A replication ready to run: the database, its destinations and the resolved options.
#[derive(Clone)]
pub struct Replication {
    db: PathBuf,
    sinks: Vec<DynBackupSink>,
    options: ReplicateOptions,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Replication {
    /// The replication of the SQLite database `db` (`sqlite:///…` or a path) to `to`, with
    /// `settings` and `encryption`. Refuses unencrypted replicas where the plaintext policy
    /// does (off-site destinations without `--no-encrypt`), like backups.
    ///
    /// # Errors
    /// [`Error::Usage`] for a database that is not SQLite, no destination or a bad one; a bad
    /// recipient; plaintext refused.
    pub fn new(
        db: &str,
        to: &[String],
        settings: &ReplicationSettings,
        encryption: &EncryptOptions,
    ) -> Result<Replication> {
        Replication::with(
            db,
            to,
            settings.resolve(ReplicateOptions::default()),
            encryption.encryptor()?,
            encryption.plaintext(),
        )
    }

    /// The replication of a job's SQLite database (a configuration file's `[job.replicate]`)
    /// to `to` (URLs of some of its destinations), encrypted as its backups are (its keys
    /// checked now), with `options` (the job's settings resolved).
    ///
    /// # Errors
    /// As [`Replication::new`]; a job whose source is not an SQLite URL or path.
    pub fn of_job(job: &Job, to: &[String], options: ReplicateOptions) -> Result<Replication> {
        let Some(db) = job.source_url() else {
            return Err(Error::usage(format!(
                "job {}: replication needs an SQLite database given by path or URL",
                job.name()
            )));
        };
        Replication::with(db, to, options, job.encryptor()?, job.plaintext())
    }

    fn with(
        db: &str,
        to: &[String],
        mut options: ReplicateOptions,
        encryptor: Option<kars_backup_core::DynEncryptor>,
        plaintext: kars_backup_core::PlaintextPolicy,
    ) -> Result<Replication> {
        let source = SqliteSource::from_url(db).map_err(|e| Error::usage(e.to_string()))?;
        if to.is_empty() {
            return Err(Error::usage("no destination: give at least one --to URL"));
        }
        let sinks = to
            .iter()
            .map(|url| Ok(repository(url)?.sink().clone()))
            .collect::<Result<Vec<_>>>()?;
        options.encryptor = encryptor;
        let db = source.path().to_path_buf();
        let placed: Vec<_> = sinks
            .iter()
            .map(|s| (s.describe(), s.placement()))
            .collect();
        plaintext.check_placements(
            &format!("the replica of {}", db.display()),
            options.encryptor.is_some(),
            &placed,
        )?;
        Ok(Replication { db, sinks, options })
    }

    /// One line for the operator: the database, the destinations, the sync interval.
    pub fn describe(&self) -> String {
        let destinations: Vec<String> = self.sinks.iter().map(|s| s.describe()).collect();
        format!(
            "{} to {} (sync every {:?})",
            self.db.display(),
            destinations.join(", "),
            self.options.sync_interval
        )
    }

    /// The database file.
    pub fn database(&self) -> &std::path::Path {
        &self.db
    }

    /// The resolved options.
    pub fn options(&self) -> &ReplicateOptions {
        &self.options
    }

    /// The replicator, to run in the caller's runtime with its live
    /// [`status`](Replicator::status); [`Replication::run`] runs it to the end.
    pub fn replicator(self) -> Replicator {
        Replicator::new(&self.db, self.options, self.sinks)
    }

    /// Runs until `stop` fires, then uploads what it can within the shutdown grace.
    ///
    /// # Errors
    /// A database that cannot be replicated (not in WAL mode without `enable_wal`, another
    /// replicator holding a destination's lease); the source's errors.
    pub async fn run(self, stop: CancellationToken) -> Result<ReplicationStatus> {
        let name = self.db.display().to_string();
        Replicator::new(&self.db, self.options, self.sinks)
            .run(stop)
            .await
            .map_err(|e| Error::Core(e.into_core(&name)))
    }
}

/// What the operator asked a restore for, where a replica may answer it.
#[derive(Debug, Clone, Default)]
pub struct ReplicaRequest {
    /// The database as it was at this instant.
    pub to_time: Option<DateTime<Utc>>,
    /// The newest state (a replica's when the destination holds a replica and no backups, or
    /// when `replica` names one).
    pub latest: bool,
    /// The replicated database's name (its file name) when the destination holds several.
    pub replica: Option<String>,
}

/// A restore of a replicated SQLite database: which replica, to which point, into which file.
pub struct ReplicaRestore {
    sink: DynBackupSink,
    name: String,
    point: RestorePoint,
    target: SqliteSource,
}

impl std::fmt::Debug for ReplicaRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {}", self.describe(), self.sink.describe())
    }
}

impl ReplicaRestore {
    /// The replica restore `request` means at `reading`'s one destination into `db`; `None`
    /// when it is an ordinary backup restore (no `--to-time`; `--latest` where the destination
    /// holds backups, or no replica).
    ///
    /// # Errors
    /// [`Error::Usage`]: `--to-time` with several destinations, no such replica, several
    /// replicas and none chosen, a target that is not SQLite; storage errors.
    pub async fn find(
        reading: &Reading,
        db: &str,
        request: &ReplicaRequest,
    ) -> Result<Option<ReplicaRestore>> {
        if request.to_time.is_none() && (!request.latest || reading.from.len() != 1) {
            return Ok(None);
        }
        let [from] = reading.from.as_slice() else {
            return Err(Error::usage(
                "--to-time reads one destination: give one --from",
            ));
        };
        let repo = repository(from)?;
        let names = catalog::databases(repo.sink())
            .await
            .map_err(|e| Error::Core(e.into_core(from)))?;
        if request.to_time.is_none()
            && (names.is_empty() || (request.replica.is_none() && has_backups(&repo).await?))
        {
            // --latest: the newest backup, unless the destination holds only a replica or
            // --replica asks for one.
            return Ok(None);
        }
        let target = SqliteSource::from_url(db).map_err(|e| Error::usage(e.to_string()))?;
        let name = choose(&repo, &names, request.replica.as_deref(), &target)?;
        let point = request
            .to_time
            .map_or(RestorePoint::Latest, RestorePoint::Time);
        Ok(Some(ReplicaRestore {
            sink: repo.sink().clone(),
            name,
            point,
            target,
        }))
    }

    /// What is restored, for the confirmation and the report (`app.db as of …`).
    pub fn describe(&self) -> String {
        match self.point {
            RestorePoint::Time(t) => format!("{} as of {}", self.name, t.to_rfc3339()),
            RestorePoint::Latest => format!("the latest replicated state of {}", self.name),
        }
    }

    /// The database file that is replaced.
    pub fn target(&self) -> &SqliteSource {
        &self.target
    }

    /// Whether the target exists (then the operator confirms).
    ///
    /// # Errors
    /// The target cannot be looked at.
    pub async fn target_exists(&self) -> Result<bool> {
        Ok(self.target.exists().await?)
    }

    /// The instant the verification plan is taken at (the requested one, else now).
    pub fn instant(&self) -> DateTime<Utc> {
        match self.point {
            RestorePoint::Time(t) => t,
            RestorePoint::Latest => Utc::now(),
        }
    }

    /// Rebuilds the replica and swaps it in through the staged, verified restore (hooks,
    /// `options.in_use`, rollback); `checks` are those `reading` resolved.
    ///
    /// # Errors
    /// A gap or mismatch in the chain, a failed verification (the target is left as it was),
    /// storage and decryption errors.
    pub async fn run(
        &self,
        reading: &Reading,
        options: &RestoreOptions,
    ) -> Result<ReplicaRestoreReport> {
        let decryptor = if reading.keys.any() {
            Some(reading.keys.decryptor()?)
        } else {
            None
        };
        Ok(restore_replica(
            &self.target,
            &self.sink,
            &self.name,
            self.point,
            decryptor,
            options,
        )
        .await?)
    }

    /// The restore options of this replica restore: `checks`' plan at its instant, the rest
    /// from `base`.
    pub fn options(&self, checks: &Checks, base: RestoreOptions) -> RestoreOptions {
        RestoreOptions {
            plan: checks.plan_at(self.instant()),
            ..base
        }
    }
}

async fn has_backups(repo: &Repository) -> Result<bool> {
    Ok(repo.list().await?.latest().is_some())
}

/// The replica to read: `asked`, else the only one, else the one named like the target.
fn choose(
    repo: &Repository,
    names: &[String],
    asked: Option<&str>,
    target: &SqliteSource,
) -> Result<String> {
    let from = repo.sink().describe();
    let target_name = target
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    match (asked, names) {
        (Some(r), _) if names.iter().any(|n| n == r) => Ok(r.to_string()),
        (Some(r), _) => Err(Error::usage(format!(
            "{from} holds no replica of {r} (it holds: {})",
            names.join(", ")
        ))),
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err(Error::usage(format!("{from} holds no replicated database"))),
        (None, several) => target_name.filter(|t| several.contains(t)).ok_or_else(|| {
            Error::usage(format!(
                "{from} holds replicas of several databases ({}): choose one with --replica",
                several.join(", ")
            ))
        }),
    }
}
