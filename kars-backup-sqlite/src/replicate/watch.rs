//! Noticing writes to the `-wal` file: an inotify watch where the system has one (no work at
//! all while the database is idle, one `read` per wake-up under load), else a `stat()` of the
//! file every poll interval.
//!
//! The watch only says that the file *may* have changed: the capture reads the WAL to find out
//! what. A write that lands after the events were taken and before the read shows up as a new
//! event, so the next wait returns at once: no commit is ever waited on for longer than the
//! caller's timeout, which the replicator keeps to its sync interval anyway.

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fd::OwnedFd;
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// Writes, truncation, and the file going away (its watch with it).
const EVENTS: WatchFlags = WatchFlags::MODIFY
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF);

/// Watches one `-wal` file.
#[derive(Debug)]
pub(crate) struct WalWatch {
    path: PathBuf,
    poll_interval: Duration,
    how: How,
}

#[derive(Debug)]
enum How {
    /// The inotify instance; `watching` is false after the watched file went away (the next
    /// wait adds the watch again, or falls back to polling).
    Inotify { fd: OwnedFd, watching: bool },
    /// The file's size and modification time at the last look.
    Stat(Option<(u64, SystemTime)>),
}

impl WalWatch {
    /// Watches `path` with inotify, or polls it every `poll_interval` where that fails (no
    /// inotify, its limits reached, no such file yet).
    pub(crate) fn new(path: &Path, poll_interval: Duration) -> WalWatch {
        let how = match Self::inotify(path) {
            Ok(fd) => How::Inotify { fd, watching: true },
            Err(e) => {
                tracing::info!(wal = %path.display(), error = %e, "cannot watch the -wal file; looking at it every poll interval instead");
                How::Stat(stat(path))
            }
        };
        WalWatch {
            path: path.to_path_buf(),
            poll_interval,
            how,
        }
    }

    fn inotify(path: &Path) -> rustix::io::Result<OwnedFd> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        inotify::add_watch(&fd, path, EVENTS)?;
        Ok(fd)
    }

    /// Whether the file is watched by inotify (rather than polled).
    pub(crate) fn is_inotify(&self) -> bool {
        matches!(self.how, How::Inotify { .. })
    }

    /// Waits until the file may have changed since the last call (true) or `timeout` passed
    /// (false). Polling, it looks at the file at most every poll interval.
    pub(crate) fn wait(&mut self, timeout: Duration) -> bool {
        match &mut self.how {
            How::Inotify { fd, watching } => {
                if !*watching {
                    match inotify::add_watch(&*fd, &self.path, EVENTS) {
                        Ok(_) => *watching = true,
                        Err(e) => {
                            tracing::info!(wal = %self.path.display(), error = %e, "the -wal file's watch was lost; looking at it every poll interval instead");
                            self.how = How::Stat(None);
                            return true;
                        }
                    }
                    // It may have changed while it was not watched.
                    return true;
                }
                match take_events(fd) {
                    Ok(Some(lost)) => {
                        *watching = !lost;
                        return true;
                    }
                    Ok(None) => {}
                    Err(e) => return self.fall_back(e),
                }
                let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
                let ready = {
                    let mut fds = [PollFd::new(&*fd, PollFlags::IN)];
                    match poll(&mut fds, Some(&timeout)) {
                        Ok(n) => n > 0,
                        Err(Errno::INTR) => true,
                        Err(e) => return self.fall_back(e),
                    }
                };
                if !ready {
                    return false;
                }
                match take_events(fd) {
                    Ok(Some(lost)) => {
                        *watching = !lost;
                        true
                    }
                    Ok(None) => false,
                    Err(e) => self.fall_back(e),
                }
            }
            How::Stat(last) => {
                let now = stat(&self.path);
                if now != *last {
                    *last = now;
                    return true;
                }
                std::thread::sleep(self.poll_interval.min(timeout));
                let now = stat(&self.path);
                let changed = now != *last;
                *last = now;
                changed
            }
        }
    }

    fn fall_back(&mut self, e: Errno) -> bool {
        tracing::info!(wal = %self.path.display(), error = %e, "watching the -wal file failed; looking at it every poll interval instead");
        self.how = How::Stat(None);
        true
    }
}

/// Takes the queued events with one `read`: `None` when there were none, else whether the
/// watch was lost (the file deleted or moved).
fn take_events(fd: &OwnedFd) -> Result<Option<bool>, Errno> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut lost = false;
    loop {
        match reader.next() {
            Ok(event) => {
                lost |= event
                    .events()
                    .intersects(ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF);
            }
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
        if reader.is_buffer_empty() {
            // Whatever came after this read is taken by the next wait.
            return Ok(Some(lost));
        }
    }
}

fn stat(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A directory with a `-wal` path in it, the file created with `content` when given.
    fn wal(content: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db-wal");
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        (dir, path)
    }

    fn append(path: &Path) -> std::fs::File {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(b"frame").unwrap();
        f
    }

    const QUIET: Duration = Duration::from_millis(20);
    const LONG: Duration = Duration::from_secs(5);

    #[test]
    fn a_write_wakes_the_watch_and_quiet_times_out() {
        let (_dir, path) = wal(Some(b"x"));
        let mut watch = WalWatch::new(&path, Duration::from_millis(10));
        assert!(watch.is_inotify(), "inotify is expected on Linux");
        assert!(!watch.wait(QUIET), "nothing was written");
        let mut f = append(&path);
        assert!(watch.wait(LONG));
        assert!(!watch.wait(QUIET), "the events were taken");
        // A write while the thread waits wakes it.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            f.write_all(b"frame").unwrap();
        });
        let t = std::time::Instant::now();
        assert!(watch.wait(LONG));
        assert!(t.elapsed() < Duration::from_secs(4));
        writer.join().unwrap();
        // Truncation (a TRUNCATE checkpoint) too.
        append(&path).set_len(0).unwrap();
        assert!(watch.wait(LONG));
    }

    #[test]
    fn a_replaced_file_is_watched_again() {
        let (_dir, path) = wal(Some(b"x"));
        let mut watch = WalWatch::new(&path, Duration::from_millis(10));
        std::fs::remove_file(&path).unwrap();
        assert!(watch.wait(LONG), "the deletion is a change");
        std::fs::write(&path, b"y").unwrap();
        assert!(watch.wait(LONG), "watched again: may have changed");
        assert!(watch.is_inotify());
        append(&path);
        assert!(watch.wait(LONG));
        assert!(!watch.wait(QUIET));
    }

    #[test]
    fn without_a_file_it_polls() {
        let (_dir, path) = wal(None);
        let mut watch = WalWatch::new(&path, Duration::from_millis(5));
        assert!(!watch.is_inotify());
        assert!(!watch.wait(QUIET));
        std::fs::write(&path, b"x").unwrap();
        assert!(watch.wait(QUIET));
        assert!(!watch.wait(QUIET));
    }
}
