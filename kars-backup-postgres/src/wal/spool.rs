//! The asynchronous spool of `archive-wal` for busy servers: [`archive_wal`](super::archive_wal)
//! with [`SpoolOptions`] copies the WAL file into a local queue (fsynced, then renamed into
//! place, then the directory fsynced) and returns at once, and a pusher ([`push_spool`])
//! uploads the queue in WAL order and removes each file only once every destination holds it.
//!
//! ```text
//! <spool>/queue/<WAL file>        waiting to be uploaded (durable: PostgreSQL was told it is archived)
//! <spool>/queue/.tmp-<file>-<pid> being copied (ignored; removed once its process is gone)
//! <spool>/pusher.lock             held (flock) by the pusher that runs
//! <spool>/pusher.log              what spawned pushers print
//! <spool>/pusher.error            the pusher's last failure, until a file is uploaded again
//! ```
//!
//! A file PostgreSQL was told is archived is never lost: it is in the queue (on disk, fsynced)
//! until it is stored at every destination, whatever process is killed when; an upload
//! interrupted by a kill is done again by the next pusher (a destination that holds it already
//! is left alone). When the queue holds [`SpoolOptions::max_bytes`] or more, `archive-wal`
//! uploads the file itself before it returns, as without a spool: the queue stays bounded and
//! PostgreSQL is slowed down instead.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kars_backup_core::{DynBackupSink, Error, Result};
use sha2::{Digest, Sha256};

use super::archive::{
    ArchiveOptions, ArchiveOutcome, ArchiveReport, ArchivedTo, SpoolOptions, read_head, store,
    system_identifier, wal_file_name,
};
use super::keys::WalName;

/// The queue below the spool directory.
const QUEUE: &str = "queue";
/// The lock the running pusher holds.
const LOCK: &str = "pusher.lock";
/// The pusher's last failure.
const ERROR_FILE: &str = "pusher.error";
/// What spawned pushers print.
const LOG: &str = "pusher.log";
/// Files being copied into the queue.
const TEMP_PREFIX: &str = ".tmp-";

fn queue_dir(dir: &Path) -> PathBuf {
    dir.join(QUEUE)
}

/// One file in the queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Queued {
    /// The WAL file's name.
    pub name: String,
    /// Its size.
    pub size: u64,
}

/// The files waiting in the queue, in the order they are uploaded (WAL order: timelines, then
/// history files before their timeline's segments, then segments).
///
/// # Errors
/// The queue cannot be read.
pub fn queued(dir: &Path) -> Result<Vec<Queued>> {
    let queue = queue_dir(dir);
    let entries = match std::fs::read_dir(&queue) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &queue, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", &queue, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if WalName::parse(&name).is_none() {
            continue;
        }
        let size = entry
            .metadata()
            .map_err(|e| Error::io("inspect", entry.path(), e))?
            .len();
        out.push(Queued { name, size });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What a spool holds, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStatus {
    /// The spool directory.
    pub dir: String,
    /// Files archived for PostgreSQL but not uploaded yet, in upload order.
    pub queued: Vec<Queued>,
    /// Their bytes.
    pub queued_bytes: u64,
    /// Whether a pusher runs now.
    pub pusher_running: bool,
    /// The pusher's last failure, when the last attempt failed.
    pub last_error: Option<String>,
}

/// What the spool in `dir` holds and whether it is being drained.
///
/// # Errors
/// The spool cannot be read.
pub fn spool_status(dir: &Path) -> Result<SpoolStatus> {
    let queued = queued(dir)?;
    let pusher_running = match Lock::try_take(dir) {
        Ok(Some(_)) => false,
        Ok(None) => true,
        Err(_) => false,
    };
    Ok(SpoolStatus {
        dir: dir.display().to_string(),
        queued_bytes: queued.iter().map(|q| q.size).sum(),
        queued,
        pusher_running,
        last_error: std::fs::read_to_string(dir.join(ERROR_FILE))
            .ok()
            .map(|s| s.trim().to_string()),
    })
}

/// The pusher's lock: an exclusive `flock` on `<spool>/pusher.lock`, released when the
/// process ends however it ends.
struct Lock(#[allow(dead_code)] File);

impl Lock {
    /// Takes the lock, or `None` when another process holds it.
    fn try_take(dir: &Path) -> Result<Option<Lock>> {
        let path = dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Lock(file))),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::io("lock", &path, e.into())),
        }
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync", dir, e))
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io("read", path, e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Whether `wal` is queued already: `Ok(true)` with the same content, `Ok(false)` when it is
/// not (a `.partial` is never the same: the newer one replaces it).
///
/// # Errors
/// [`Error::VerificationFailed`] when it is queued with other content.
fn queued_already(dir: &Path, path: &Path, wal: &WalName) -> Result<bool> {
    let queued = queue_dir(dir).join(&wal.name);
    if !wal.has_checksum() || !queued.exists() {
        return Ok(false);
    }
    // PostgreSQL asks again after a crash: the same file is queued, other content is not.
    if sha256_of(&queued)? == sha256_of(path)? {
        return Ok(true);
    }
    Err(Error::VerificationFailed(format!(
        "{} is queued in {} with other content: two clusters share the spool, or a data directory restored without a new timeline archives into it. Nothing was overwritten; find out which file is right before removing {}",
        wal.name,
        queue_dir(dir).display(),
        queued.display()
    )))
}

/// Copies `path` into the queue durably (fsynced, renamed into place, the directory fsynced).
fn enqueue(dir: &Path, path: &Path, wal: &WalName) -> Result<()> {
    let queue = queue_dir(dir);
    if !queue.is_dir() {
        std::fs::create_dir_all(&queue).map_err(|e| Error::io("create", &queue, e))?;
        // The queue's own entry must survive a crash too.
        fsync_dir(dir)?;
    }
    let dest = queue.join(&wal.name);
    let temp = queue.join(format!("{TEMP_PREFIX}{}-{}", wal.name, std::process::id()));
    let copied = (|| {
        let mut from = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut to = File::create(&temp).map_err(|e| Error::io("create", &temp, e))?;
        std::io::copy(&mut from, &mut to).map_err(|e| Error::io("copy into", &temp, e))?;
        to.sync_all().map_err(|e| Error::io("sync", &temp, e))?;
        std::fs::rename(&temp, &dest).map_err(|e| Error::io("rename into place", &dest, e))?;
        fsync_dir(&queue)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    copied
}

/// Starts the pusher command in the background, in its own process group, unless a pusher
/// runs (a pusher that is just ending checks the queue again after releasing its lock).
fn ensure_pusher(options: &SpoolOptions) {
    let Some((program, args)) = options.pusher.split_first() else {
        return;
    };
    match Lock::try_take(&options.dir) {
        Ok(Some(lock)) => drop(lock),
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the spool's pusher");
            return;
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(options.dir.join(LOG));
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    match log {
        Ok(f) => cmd.stderr(f),
        Err(_) => cmd.stderr(std::process::Stdio::null()),
    };
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Err(e) = cmd.spawn() {
        tracing::warn!(program = %program.to_string_lossy(), error = %e, "cannot start the spool's pusher");
    }
}

/// [`archive_wal`](super::archive_wal) with a spool: queued durably and returned, or (queue
/// at its bound) stored now.
pub(crate) async fn spool_wal(
    sinks: &[DynBackupSink],
    path: &Path,
    wal: WalName,
    spool: &SpoolOptions,
    options: &ArchiveOptions,
) -> Result<ArchiveReport> {
    std::fs::create_dir_all(&spool.dir).map_err(|e| Error::io("create", &spool.dir, e))?;
    let header = read_head(path).await?;
    // Refused now, not by the pusher: a file whose cluster cannot be told.
    let system_identifier = system_identifier(&wal, header, options)?;
    let (dir, file, name) = (spool.dir.clone(), path.to_path_buf(), wal.clone());
    let (queued_bytes, same) = tokio::task::spawn_blocking(move || {
        let same = queued_already(&dir, &file, &name)?;
        let bytes: u64 = queued(&dir)?.iter().map(|q| q.size).sum();
        Ok::<_, Error>((bytes, same))
    })
    .await
    .map_err(|e| Error::generic("archive-wal", e))??;
    if !same && queued_bytes >= spool.max_bytes {
        tracing::warn!(
            spool = %spool.dir.display(), queued_bytes, max_bytes = spool.max_bytes,
            "the WAL spool is full: uploading before returning"
        );
        ensure_pusher(spool);
        let direct = ArchiveOptions {
            spool: None,
            ..options.clone()
        };
        return store(sinks, path, wal, &direct).await;
    }
    let (dir, file, name) = (spool.dir.clone(), path.to_path_buf(), wal.clone());
    let size = tokio::task::spawn_blocking(move || {
        if !same {
            enqueue(&dir, &file, &name)?;
        }
        Ok::<_, Error>(
            std::fs::metadata(&file)
                .map_err(|e| Error::io("inspect", &file, e))?
                .len(),
        )
    })
    .await
    .map_err(|e| Error::generic("archive-wal", e))??;
    ensure_pusher(spool);
    let queued_at = queue_dir(&spool.dir).join(&wal.name).display().to_string();
    Ok(ArchiveReport {
        system_identifier,
        wal,
        sha256: None,
        size,
        destinations: sinks
            .iter()
            .map(|s| ArchivedTo {
                destination: s.describe(),
                key: queued_at.clone(),
                outcome: ArchiveOutcome::Spooled,
            })
            .collect(),
    })
}

/// How [`push_spool`] runs.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// How the files are stored (its `spool` is ignored).
    pub archive: ArchiveOptions,
    /// How long an idle pusher waits for more files before it ends.
    pub linger: Duration,
    /// How long a pusher keeps retrying a failing upload before it ends (the next
    /// `archive-wal` starts another).
    pub give_up_after: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            archive: ArchiveOptions::default(),
            linger: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// What [`push_spool`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    /// Another pusher runs: this one did nothing.
    pub busy: bool,
    /// Files uploaded (and removed from the queue).
    pub pushed: u64,
}

/// Uploads the spool's queue in WAL order, each file to every destination, removing it from
/// the queue once it is stored everywhere; ends once the queue stayed empty for
/// [`PushOptions::linger`]. Only one pusher runs per spool (a second returns at once,
/// [`PushReport::busy`]).
///
/// # Errors
/// The spool cannot be read or locked; the last upload failure after
/// [`PushOptions::give_up_after`] of failures (the file stays queued; the failure is kept in
/// `pusher.error` for `status`).
pub async fn push_spool(
    sinks: &[DynBackupSink],
    dir: &Path,
    options: &PushOptions,
) -> Result<PushReport> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut report = PushReport::default();
    let Some(mut lock) = Lock::try_take(dir)? else {
        report.busy = true;
        return Ok(report);
    };
    let archive = ArchiveOptions {
        spool: None,
        ..options.archive.clone()
    };
    remove_stale_temps(dir);
    let mut failing_since: Option<Instant> = None;
    let mut idle_since: Option<Instant> = None;
    loop {
        let next = queued(dir)?.into_iter().next();
        let Some(next) = next else {
            let idle = *idle_since.get_or_insert_with(Instant::now);
            if idle.elapsed() < options.linger {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            // Released, then looked at again: an archive-wal that queued a file meanwhile saw
            // the lock held and started no pusher.
            drop(lock);
            if queued(dir)?.is_empty() {
                return Ok(report);
            }
            match Lock::try_take(dir)? {
                Some(l) => lock = l,
                None => return Ok(report),
            }
            continue;
        };
        idle_since = None;
        let path = queue_dir(dir).join(&next.name);
        let result = match wal_file_name(&path) {
            Ok(wal) => store(sinks, &path, wal, &archive).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(stored) => {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                fsync_dir(&queue_dir(dir))?;
                let _ = std::fs::remove_file(dir.join(ERROR_FILE));
                failing_since = None;
                report.pushed += 1;
                tracing::info!(wal = %next.name, destinations = stored.destinations.len(), "spooled WAL file uploaded");
            }
            Err(e) => {
                let _ = std::fs::write(
                    dir.join(ERROR_FILE),
                    format!("{}: {}: {e}\n", chrono::Utc::now().to_rfc3339(), next.name),
                );
                tracing::warn!(wal = %next.name, error = %e, "uploading a spooled WAL file failed; retrying");
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= options.give_up_after {
                    return Err(e);
                }
                let backoff =
                    Duration::from_millis((200u64 << since.elapsed().as_secs().min(4)).min(5_000));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Removes copies into the queue whose process is gone (killed mid-copy).
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(queue_dir(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TEMP_PREFIX)
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_order_is_wal_order_and_copies_are_durable_and_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let spool = t.path().join("spool");
        for name in [
            "000000020000000000000005",
            "00000002.history",
            "000000010000000000000004",
        ] {
            let p = src.join(name);
            std::fs::write(&p, name.as_bytes()).unwrap();
            let wal = WalName::parse(name).unwrap();
            assert!(!queued_already(&spool, &p, &wal).unwrap());
            enqueue(&spool, &p, &wal).unwrap();
        }
        let names: Vec<String> = queued(&spool)
            .unwrap()
            .into_iter()
            .map(|q| q.name)
            .collect();
        assert_eq!(
            names,
            [
                "000000010000000000000004",
                "00000002.history",
                "000000020000000000000005"
            ]
        );
        // The same file again: nothing to do; other content: refused, the queued one kept.
        let p = src.join("000000010000000000000004");
        let wal = WalName::parse("000000010000000000000004").unwrap();
        assert!(queued_already(&spool, &p, &wal).unwrap());
        std::fs::write(&p, b"other").unwrap();
        let e = queued_already(&spool, &p, &wal).unwrap_err().to_string();
        assert!(e.contains("queued in"), "{e}");
        assert_eq!(
            std::fs::read(queue_dir(&spool).join("000000010000000000000004")).unwrap(),
            b"000000010000000000000004"
        );
        // A copy of a killed process is cleaned up; one of a live process is not.
        let dead = queue_dir(&spool).join(format!(
            "{TEMP_PREFIX}000000010000000000000009-{}",
            u32::MAX
        ));
        let live = queue_dir(&spool).join(format!(
            "{TEMP_PREFIX}00000001000000000000000A-{}",
            std::process::id()
        ));
        std::fs::write(&dead, b"x").unwrap();
        std::fs::write(&live, b"x").unwrap();
        remove_stale_temps(&spool);
        assert!(!dead.exists());
        assert!(live.exists());
        assert_eq!(queued(&spool).unwrap().len(), 3);
        let status = spool_status(&spool).unwrap();
        assert!(!status.pusher_running);
        assert_eq!(status.queued_bytes, 24 + 16 + 24);
        let _held = Lock::try_take(&spool).unwrap().unwrap();
        assert!(Lock::try_take(&spool).unwrap().is_none());
        assert!(spool_status(&spool).unwrap().pusher_running);
    }
}
