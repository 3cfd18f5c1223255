//! Persisted per-job state: the last run, for catch-up after downtime.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cron::Schedule;
use crate::error::{Error, Result};
use crate::lock::JobLock;
use crate::outcome::RunStatus;

/// The check of a job's name, which names its files here and its lock.
pub use crate::job_name::validate_job_name;

/// What the scheduler remembers about one job between processes (`<state dir>/<job>.state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct JobState {
    /// When a scheduler first watched this job (the start of catch-up's memory when the job
    /// has never finished a run).
    pub watched_since: Option<DateTime<Utc>>,
    /// The scheduled slot of the last run that finished (success or failure). A catch-up run
    /// records the time it ran.
    pub last_scheduled: Option<DateTime<Utc>>,
    /// The run id of the last run that started.
    pub last_run_id: Option<String>,
    /// When the last run started.
    pub last_started: Option<DateTime<Utc>>,
    /// When the last run finished.
    pub last_finished: Option<DateTime<Utc>>,
    /// How the last finished run ended.
    pub last_status: Option<RunStatus>,
    /// When the last successful run finished.
    pub last_success: Option<DateTime<Utc>>,
    /// The error of the last run, if it failed.
    pub last_error: Option<String>,
}

impl JobState {
    /// The first scheduled slot that was missed: the first slot of `schedule` after the last
    /// finished run (or, before any, after `watched_since`) that is at or before `now`.
    /// `None` when nothing was missed or nothing is known.
    pub fn missed_slot(&self, schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let since = self.last_scheduled.or(self.watched_since)?;
        schedule.next_after(since).filter(|slot| *slot <= now)
    }
}

/// Where the scheduler keeps job state and run locks: one directory, two small files per job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state file of `job`.
    pub fn state_path(&self, job: &str) -> PathBuf {
        self.dir.join(format!("{job}.state.json"))
    }

    /// The lock file of `job`.
    pub fn lock_path(&self, job: &str) -> PathBuf {
        JobLock::path_for(&self.dir, job)
    }

    /// Reads `job`'s state; a job without a state file has the default (empty) state.
    ///
    /// # Errors
    /// [`Error::InvalidJobName`], [`Error::CorruptState`], [`Error::Io`].
    pub fn load(&self, job: &str) -> Result<JobState> {
        validate_job_name(job)?;
        let path = self.state_path(job);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| Error::CorruptState { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobState::default()),
            Err(e) => Err(Error::io("read state file", path, e)),
        }
    }

    /// Writes `job`'s state atomically (a temporary file renamed over the old one).
    ///
    /// # Errors
    /// [`Error::InvalidJobName`], [`Error::Io`].
    pub fn save(&self, job: &str, state: &JobState) -> Result<()> {
        validate_job_name(job)?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("create state directory", &self.dir, e))?;
        let path = self.state_path(job);
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{job}.state.json.tmp-{}-{n}", std::process::id()));
        let mut text = serde_json::to_vec_pretty(state).unwrap_or_default();
        text.push(b'\n');
        write_synced(&tmp, &text).map_err(|e| Error::io("write state file", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("replace state file", &path, e)
        })
    }

    /// Loads, changes and saves `job`'s state.
    ///
    /// # Errors
    /// As [`load`](Self::load) and [`save`](Self::save).
    pub fn update(&self, job: &str, change: impl FnOnce(&mut JobState)) -> Result<JobState> {
        let mut state = self.load(job)?;
        change(&mut state);
        self.save(job, &state)?;
        Ok(state)
    }

    /// Takes `job`'s run lock (see [`JobLock::try_acquire`]).
    ///
    /// # Errors
    /// [`Error::Locked`] when another run holds it.
    pub fn lock(&self, job: &str, run_id: &str) -> Result<JobLock> {
        JobLock::try_acquire(&self.dir, job, run_id)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
