//! Noticing writes to the `-wal` file: an inotify watch where the system has one, else a
//! `stat()` of the file every poll interval.
//!
//! The watch is only there while the WAL is quiet: while the last read found commits the
//! caller reads again after its poll interval without asking, and the watch is removed, so
//! that the application's writes do not queue inotify events nobody waits for (a cost in its
//! commits) and a busy replicator makes no call for them. After a read that found nothing the
//! watch is added again, and one more read follows (a write between the two reads is not lost),
//! then the caller waits for an event.
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
    /// The inotify instance and its watch on the file, when there is one.
    Inotify { fd: OwnedFd, wd: Option<i32> },
    /// The file's size and modification time at the last look.
    Stat(Option<(u64, SystemTime)>),
}

impl WalWatch {
    /// Watches `path` with inotify, or polls it every `poll_interval` where that fails (no
    /// inotify, its limits reached, no such file yet).
    pub(crate) fn new(path: &Path, poll_interval: Duration) -> WalWatch {
        let how = match Self::inotify(path) {
            Ok((fd, wd)) => How::Inotify { fd, wd: Some(wd) },
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

    fn inotify(path: &Path) -> rustix::io::Result<(OwnedFd, i32)> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let wd = inotify::add_watch(&fd, path, EVENTS)?;
        Ok((fd, wd))
    }

    /// Whether the file is watched by inotify (rather than polled).
    pub(crate) fn is_inotify(&self) -> bool {
        matches!(self.how, How::Inotify { .. })
    }

    /// Whether the file may have changed since the last call (true), else waits until it may
    /// have (true) or `timeout` passed (false). `busy`: the last read found commits, so the
    /// caller reads again in any case (true at once, nothing watched or looked at).
    pub(crate) fn wait(&mut self, busy: bool, timeout: Duration) -> bool {
        match &mut self.how {
            How::Inotify { fd, wd } => {
                if busy {
                    if let Some(w) = wd.take() {
                        // Its events still queued (and the IN_IGNORED of the removal) only
                        // cause one read too many.
                        match inotify::remove_watch(&*fd, w) {
                            // Already gone with its file (its IN_IGNORED is queued).
                            Ok(()) | Err(Errno::INVAL) => {}
                            Err(e) => return self.fall_back(e),
                        }
                    }
                    return true;
                }
                if wd.is_none() {
                    match inotify::add_watch(&*fd, &self.path, EVENTS) {
                        Ok(w) => *wd = Some(w),
                        Err(e) => return self.fall_back(e),
                    }
                    // Writes since the last read were not watched.
                    return true;
                }
                match take_events(fd, wd) {
                    Ok(true) => return true,
                    Ok(false) => {}
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
                match take_events(fd, wd) {
                    Ok(any) => any,
                    Err(e) => self.fall_back(e),
                }
            }
            How::Stat(last) => {
                if busy {
                    return true;
                }
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

/// Takes the queued events with one `read`: whether there were any. The watch `wd` is
/// forgotten when its file went away (deleted or moved; the next wait adds it again).
fn take_events(fd: &OwnedFd, wd: &mut Option<i32>) -> Result<bool, Errno> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    loop {
        match reader.next() {
            Ok(event) => {
                if Some(event.wd()) == *wd
                    && event.events().intersects(
                        ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF,
                    )
                {
                    *wd = None;
                }
            }
            Err(Errno::AGAIN) => return Ok(false),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
        if reader.is_buffer_empty() {
            // Whatever came after this read is taken by the next wait.
            return Ok(true);
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
        assert!(!watch.wait(false, QUIET), "nothing was written");
        let mut f = append(&path);
        assert!(watch.wait(false, LONG));
        assert!(!watch.wait(false, QUIET), "the events were taken");
        // A write while the thread waits wakes it.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            f.write_all(b"frame").unwrap();
        });
        let t = std::time::Instant::now();
        assert!(watch.wait(false, LONG));
        assert!(t.elapsed() < Duration::from_secs(4));
        writer.join().unwrap();
        // Truncation (a TRUNCATE checkpoint) too.
        append(&path).set_len(0).unwrap();
        assert!(watch.wait(false, LONG));
    }

    #[test]
    fn busy_it_watches_nothing_and_catches_up_when_quiet() {
        let (_dir, path) = wal(Some(b"x"));
        let mut watch = WalWatch::new(&path, Duration::from_millis(10));
        append(&path);
        let t = std::time::Instant::now();
        assert!(watch.wait(true, LONG), "busy: read again at once");
        assert!(t.elapsed() < Duration::from_secs(1));
        append(&path);
        assert!(
            watch.wait(false, LONG),
            "watched again: the write in between is read"
        );
        // At most one wake-up too many (the removed watch's last events), then quiet.
        assert!((0..3).any(|_| !watch.wait(false, QUIET)));
        append(&path);
        assert!(watch.wait(false, LONG));
        assert!(!watch.wait(false, QUIET));
    }

    #[test]
    fn a_replaced_file_is_watched_again() {
        let (_dir, path) = wal(Some(b"x"));
        let mut watch = WalWatch::new(&path, Duration::from_millis(10));
        std::fs::remove_file(&path).unwrap();
        assert!(watch.wait(false, LONG), "the deletion is a change");
        std::fs::write(&path, b"y").unwrap();
        assert!(watch.wait(false, LONG), "watched again: may have changed");
        assert!(watch.is_inotify());
        append(&path);
        assert!(watch.wait(false, LONG));
        assert!(!watch.wait(false, QUIET));
    }

    #[test]
    fn a_file_deleted_while_busy_is_watched_again() {
        let (_dir, path) = wal(Some(b"x"));
        let mut watch = WalWatch::new(&path, Duration::from_millis(10));
        std::fs::remove_file(&path).unwrap();
        // Removing the watch finds it gone with its file: still inotify.
        assert!(watch.wait(true, LONG));
        assert!(watch.is_inotify());
        std::fs::write(&path, b"y").unwrap();
        assert!(watch.wait(false, LONG), "watched again: may have changed");
        assert!((0..3).any(|_| !watch.wait(false, QUIET)));
        append(&path);
        assert!(watch.wait(false, LONG));
        assert!(watch.is_inotify());
    }

    #[test]
    fn without_a_file_it_polls() {
        let (_dir, path) = wal(None);
        let mut watch = WalWatch::new(&path, Duration::from_millis(5));
        assert!(!watch.is_inotify());
        assert!(!watch.wait(false, QUIET));
        std::fs::write(&path, b"x").unwrap();
        assert!(watch.wait(false, QUIET));
        assert!(!watch.wait(false, QUIET));
    }
}
