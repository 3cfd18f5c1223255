//! Writing a large file that is fsynced at the end, with the disk kept busy meanwhile.
//!
//! A download or restore writes a whole archive or database into the page cache, then fsyncs it
//! before it is renamed into place. On its own the fsync flushes everything at the end, while
//! the CPU has nothing left to do (about 0.3–0.6 s per GiB on the project's machines).
//! [`WriteBehind`] asks the kernel to start writing each [`WRITE_BEHIND_STEP`] bytes back as
//! soon as they are written (on Linux, without waiting for the disk), so the flush overlaps with
//! receiving and the final fsync finds little left. It changes nothing about durability: the
//! file is still fsynced before it counts. Elsewhere than Linux it does nothing.
//!
//! ```
//! use std::io::Write;
//! use kars_backup_core::write_behind::WriteBehind;
//! let dir = tempfile::tempdir().unwrap();
//! let mut file = std::fs::File::create(dir.path().join("archive")).unwrap();
//! let mut behind = WriteBehind::default();
//! for _ in 0..4 {
//!     let chunk = vec![7u8; 4 << 20];
//!     file.write_all(&chunk).unwrap();
//!     behind.written(&file, chunk.len() as u64);
//! }
//! file.sync_all().unwrap();
//! ```

use std::fs::File;

/// Bytes written before their writeback is started.
pub const WRITE_BEHIND_STEP: u64 = 8 << 20;

/// Where a file's writeback has been started up to; see the module docs.
#[derive(Debug, Default, Clone)]
pub struct WriteBehind {
    /// Bytes written so far.
    written: u64,
    /// Bytes whose writeback has been started.
    started: u64,
}

impl WriteBehind {
    /// Records `len` more bytes appended to `file`, and starts the writeback of what was
    /// written since the last start once that is [`WRITE_BEHIND_STEP`] bytes or more.
    /// Best effort: a failure to start it is ignored (the final fsync reports real errors).
    pub fn written(&mut self, file: &File, len: u64) {
        self.written += len;
        if self.written - self.started >= WRITE_BEHIND_STEP {
            start_writeback(file, self.started, self.written - self.started);
            self.started = self.written;
        }
    }
}

/// On Linux, `posix_fadvise(POSIX_FADV_DONTNEED)` on a range starts the writeback of its dirty
/// pages without waiting for it (`WB_SYNC_NONE`), and drops only pages that are already clean:
/// the range was just written, so its pages stay cached. (`sync_file_range` would say it more
/// directly, but neither std nor rustix offers it, and the workspace forbids `unsafe`.)
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_starts_every_step_and_the_content_is_intact() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let mut behind = WriteBehind::default();
        let chunk: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for _ in 0..6 {
            file.write_all(&chunk).unwrap();
            behind.written(&file, chunk.len() as u64);
        }
        // 18 MB written: started at 9 MB and 18 MB.
        assert_eq!(behind.written, 18_000_000);
        assert_eq!(behind.started, 18_000_000);
        file.sync_all().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 18_000_000);
        assert!(back.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    }
}
