//! A per-job run lock that holds across processes.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job_name::validate_job_name;

/// Who holds a job's lock, as written into the lock file by the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LockHolder {
    /// The holding process.
    pub pid: u32,
    /// The run id of the holding run.
    pub run_id: String,
    /// When the lock was taken.
    pub since: DateTime<Utc>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {}, run {}, since {}",
            self.pid,
            self.run_id,
            self.since
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// An exclusive run lock for one job: `<dir>/<job>.lock`, locked with the operating system's
/// file lock (`flock` on Linux, `LockFileEx` on Windows) through [`File::try_lock`].
///
/// # Contract
/// - At most one `JobLock` per job and directory exists at a time, across processes and across
///   handles in one process; a second [`try_acquire`](JobLock::try_acquire) fails with
///   [`Error::Locked`] naming the holder.
/// - The lock is released when the `JobLock` is dropped or its process dies (the kernel drops
///   the lock with the file descriptor), so a crashed run never leaves a stale lock behind.
/// - The lock file itself stays on disk; its contents (a [`LockHolder`] as JSON) are for
///   humans and error messages only.
#[derive(Debug)]
pub struct JobLock {
    file: File,
    path: PathBuf,
    job: String,
}

impl JobLock {
    /// The lock file of `job` in `dir`.
    pub fn path_for(dir: &Path, job: &str) -> PathBuf {
        dir.join(format!("{job}.lock"))
    }

    /// Takes the lock without waiting, creating `dir` if needed, and records `run_id` and this
    /// process's id in the lock file.
    ///
    /// # Errors
    /// [`Error::Locked`] when it is held; [`Error::InvalidJobName`]; [`Error::Io`].
    pub fn try_acquire(dir: &Path, job: &str, run_id: &str) -> Result<JobLock> {
        validate_job_name(job)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create state directory", dir, e))?;
        let path = Self::path_for(dir, job);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file)
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "unknown holder".to_string());
                return Err(Error::Locked {
                    job: job.to_string(),
                    path,
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        let holder = LockHolder {
            pid: std::process::id(),
            run_id: run_id.to_string(),
            since: Utc::now(),
        };
        let text = serde_json::to_vec(&holder).unwrap_or_default();
        let write = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(&text))
            .and_then(|()| file.flush());
        write.map_err(|e| Error::io("write lock file", &path, e))?;
        Ok(JobLock {
            file,
            path,
            job: job.to_string(),
        })
    }

    /// Who holds `job`'s lock in `dir` right now, if anyone (for status output).
    ///
    /// To tell, it takes a shared lock for an instant when the lock is free, during which a
    /// run starting at that very moment would find the job locked: don't poll it in a loop.
    ///
    /// # Errors
    /// [`Error::Io`] when the lock file cannot be opened or locked for the check.
    pub fn holder(dir: &Path, job: &str) -> Result<Option<LockHolder>> {
        let path = Self::path_for(dir, job);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open lock file", &path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(read_holder(&mut file)),
            Err(TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The job this lock is for.
    pub fn job(&self) -> &str {
        &self.job
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock as well; unlocking first makes it explicit.
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(4096).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}
