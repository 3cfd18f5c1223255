//! Continuous SQLite replication as a job: [`Replication`] (a database, its destinations,
//! the operator's [`ReplicationSettings`] and encryption, checked before anything runs),
//! [`Replica`] (which replica of a destination a restore, verify or drill to an instant or to
//! the latest replicated state reads), [`ReplicaRestore`] (a replica through the staged,
//! verified restore) and [`ReplicaWindow`] (the instants a replica can restore, from listings
//! only: [`windows`]).
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
use kars_backup_sqlite::replicate::keys::ChainKeys;
use kars_backup_sqlite::replicate::{
    ReplicaRestoreReport, ReplicateOptions, ReplicationSettings, ReplicationStatus, Replicator,
    RestorePoint, catalog, restore_replica,
};

use crate::error::{Error, Result};
use crate::job::{Job, repository, sinks};
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
        let sinks = sinks(to)?;
        options.encryptor = encryptor;
        // Absolute, so that the lease names the file `status` finds from any directory.
        let db = std::path::absolute(source.path()).unwrap_or_else(|_| source.path().into());
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

/// What the operator asked a restore, verify or drill for, where a replica may answer it.
#[derive(Debug, Clone, Default)]
pub struct ReplicaRequest {
    /// The database as it was at this instant.
    pub to_time: Option<DateTime<Utc>>,
    /// The newest state (a replica's when the destination holds a replica and no backups, or
    /// when `replica` names one).
    pub latest: bool,
    /// An instant drawn at random in the replica's window (a drill's `--random-instant`).
    pub random: bool,
    /// The replicated database's name (its file name) when the destination holds several.
    pub replica: Option<String>,
}

/// One replicated database at one destination, at the point a request asked for: what a
/// restore, a verify or a drill of a replica reads.
pub struct Replica {
    repo: Repository,
    name: String,
    point: RestorePoint,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {}", self.describe(), self.repo.describe())
    }
}

impl Replica {
    /// The replica `request` means at `reading`'s one destination; `None` when it asks for a
    /// backup (no `--to-time` nor random instant; `--latest` where the destination holds
    /// backups, or no replica). `target_name` (the file name of the database restored into)
    /// chooses among several replicas when `request.replica` does not.
    ///
    /// # Errors
    /// [`Error::Usage`]: `--to-time` with several destinations, no such replica, several
    /// replicas and none chosen; storage errors.
    pub async fn find(
        reading: &Reading,
        request: &ReplicaRequest,
        target_name: Option<&str>,
    ) -> Result<Option<Replica>> {
        let instant = request.to_time.is_some() || request.random;
        if !instant && (!request.latest || reading.from.len() != 1) {
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
        if !instant
            && (names.is_empty() || (request.replica.is_none() && has_backups(&repo).await?))
        {
            // --latest: the newest backup, unless the destination holds only a replica or
            // --replica asks for one.
            return Ok(None);
        }
        let name = choose(&repo, &names, request.replica.as_deref(), target_name)?;
        let point = request
            .to_time
            .map_or(RestorePoint::Latest, RestorePoint::Time);
        Ok(Some(Replica { repo, name, point }))
    }

    /// What is read, for the confirmation and the reports (`app.db as of …`).
    pub fn describe(&self) -> String {
        match self.point {
            RestorePoint::Time(t) => format!("{} as of {}", self.name, t.to_rfc3339()),
            RestorePoint::Latest => format!("the latest replicated state of {}", self.name),
        }
    }

    /// The replicated database's name (its file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The point read.
    pub fn point(&self) -> RestorePoint {
        self.point
    }

    /// The same replica at `point`.
    pub fn at(self, point: RestorePoint) -> Replica {
        Replica { point, ..self }
    }

    /// The destination.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The instant the verification plan is taken at (the requested one, else now).
    pub fn instant(&self) -> DateTime<Utc> {
        match self.point {
            RestorePoint::Time(t) => t,
            RestorePoint::Latest => Utc::now(),
        }
    }

    /// Its window at the destination (from listings only).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn window(&self) -> Result<ReplicaWindow> {
        let keys = ChainKeys::new(&self.name);
        let generations = catalog::generations(self.repo.sink(), &keys)
            .await
            .map_err(|e| Error::Core(e.into_core(&self.repo.describe())))?;
        Ok(ReplicaWindow::of(
            &self.repo.describe(),
            &self.name,
            &generations,
        ))
    }
}

/// A restore of a replicated SQLite database: which replica, to which point, into which file.
pub struct ReplicaRestore {
    replica: Replica,
    target: SqliteSource,
}

impl std::fmt::Debug for ReplicaRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} into {}",
            self.replica,
            self.target.path().display()
        )
    }
}

impl ReplicaRestore {
    /// The replica restore `request` means at `reading`'s one destination into `db`; `None`
    /// when it is an ordinary backup restore (see [`Replica::find`]; among several replicas
    /// the one named like the target is read).
    ///
    /// # Errors
    /// As [`Replica::find`]; a target that is not SQLite.
    pub async fn find(
        reading: &Reading,
        db: &str,
        request: &ReplicaRequest,
    ) -> Result<Option<ReplicaRestore>> {
        if request.to_time.is_none() && !request.random && !request.latest {
            return Ok(None);
        }
        // A PostgreSQL target is no replica's: `--latest` then means its newest backup.
        let target = SqliteSource::from_url(db);
        let target_name = target.as_ref().ok().and_then(|t| {
            t.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        });
        let Some(replica) = Replica::find(reading, request, target_name.as_deref()).await? else {
            return Ok(None);
        };
        let target = target.map_err(|e| {
            Error::usage(format!("a replica restores into an SQLite database: {e}"))
        })?;
        Ok(Some(ReplicaRestore { replica, target }))
    }

    /// What is restored, for the confirmation and the report (`app.db as of …`).
    pub fn describe(&self) -> String {
        self.replica.describe()
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
        self.replica.instant()
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
        Ok(restore_replica(
            &self.target,
            self.replica.repo.sink(),
            &self.replica.name,
            self.replica.point,
            decryptor(reading)?,
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

/// The decryptor of `reading`'s keys, when it has any.
pub(crate) fn decryptor(reading: &Reading) -> Result<Option<kars_backup_core::DynDecryptor>> {
    Ok(if reading.keys.any() {
        Some(reading.keys.decryptor()?)
    } else {
        None
    })
}

pub use kars_backup_sqlite::replicate::catalog::Window as ReplicaWindow;

/// The window of every replicated database at `repo`, by name, from listings only.
///
/// # Errors
/// Storage errors.
pub async fn windows(repo: &Repository) -> Result<Vec<ReplicaWindow>> {
    let destination = repo.describe();
    let core = |e: kars_backup_sqlite::Error| Error::Core(e.into_core(&destination));
    let mut out = Vec::new();
    for name in catalog::databases(repo.sink()).await.map_err(core)? {
        let generations = catalog::generations(repo.sink(), &ChainKeys::new(&name))
            .await
            .map_err(core)?;
        out.push(ReplicaWindow::of(&destination, &name, &generations));
    }
    Ok(out)
}

async fn has_backups(repo: &Repository) -> Result<bool> {
    Ok(repo.list().await?.latest().is_some())
}

/// The replica to read: `asked`, else the only one, else the one named like the target.
fn choose(
    repo: &Repository,
    names: &[String],
    asked: Option<&str>,
    target_name: Option<&str>,
) -> Result<String> {
    let from = repo.sink().describe();
    match (asked, names) {
        (Some(r), _) if names.iter().any(|n| n == r) => Ok(r.to_string()),
        (Some(r), _) => Err(Error::usage(format!(
            "{from} holds no replica of {r} (it holds: {})",
            names.join(", ")
        ))),
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err(Error::usage(format!("{from} holds no replicated database"))),
        (None, several) => target_name
            .filter(|t| several.iter().any(|n| n == t))
            .map(str::to_string)
            .ok_or_else(|| {
                Error::usage(format!(
                    "{from} holds replicas of several databases ({}): choose one with --replica",
                    several.join(", ")
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kars_backup_sqlite::replicate::catalog::{Generation, SegmentEntry, SnapshotEntry};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn snap(txid: u64, t: i64) -> SnapshotEntry {
        SnapshotEntry {
            key: format!("snap-{txid}"),
            txid,
            time: at(t),
            size: 100,
        }
    }

    fn seg(first: u64, last: u64, t: i64) -> SegmentEntry {
        SegmentEntry {
            key: format!("seg-{first}-{last}"),
            first,
            last,
            time: at(t),
            size: 10,
        }
    }

    #[test]
    fn a_window_spans_the_first_snapshot_to_the_newest_commit_and_names_gaps() {
        let old = Generation {
            id: "a".into(),
            snapshots: vec![snap(0, 0)],
            // 4..=5 follow a gap; 6 overlaps a compacted 4..=6.
            segments: vec![seg(1, 2, 5), seg(4, 5, 8), seg(4, 6, 9), seg(7, 7, 10)],
        };
        let new = Generation {
            id: "b".into(),
            // The snapshot at 10 bridges the missing 9..=10.
            snapshots: vec![snap(0, 20), snap(10, 40)],
            segments: vec![seg(1, 8, 30), seg(11, 12, 50)],
        };
        let w = ReplicaWindow::of("dest", "app.db", &[old, new]);
        assert_eq!((w.from, w.to), (Some(at(0)), Some(at(50))));
        assert_eq!(w.newest_txid, Some(12));
        assert_eq!((w.generations, w.snapshots, w.segments), (2, 3, 6));
        assert_eq!(w.size_bytes, 3 * 100 + 6 * 10);
        assert_eq!(w.gaps, vec!["seg-4-5".to_string()]);
        assert!(w.covers(at(25)) && !w.covers(at(-1)) && !w.covers(at(51)));
        let empty = ReplicaWindow::of("dest", "app.db", &[]);
        assert_eq!(
            (empty.from, empty.to, empty.newest_txid),
            (None, None, None)
        );
    }
}
