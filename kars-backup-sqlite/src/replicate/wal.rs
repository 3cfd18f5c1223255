//! Reading an SQLite `-wal` file directly, validated as SQLite's own recovery does.
//!
//! A WAL file is a 32-byte header followed by frames of a 24-byte frame header and one page.
//! Every frame carries the header's salts and a checksum that is cumulative from the header's
//! own checksum; a frame whose salts or checksum do not match ends the valid part of the file,
//! and only frames up to the last valid **commit frame** (non-zero "database size after commit")
//! count. A reset WAL (new salts) leaves stale frames of the previous cycle behind the new ones:
//! their salts end the scan.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The size of the WAL header.
pub const WAL_HEADER_SIZE: u64 = 32;
/// The size of a frame header.
pub const FRAME_HEADER_SIZE: u64 = 24;
/// Magic number of a WAL whose checksums use little-endian words.
const MAGIC_LE: u32 = 0x377f_0682;
/// Magic number of a WAL whose checksums use big-endian words.
const MAGIC_BE: u32 = 0x377f_0683;
/// The only WAL format version.
const VERSION: u32 = 3_007_000;

/// The header of a WAL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// Checksums read the content as big-endian 32-bit words (magic `0x377f0683`).
    pub big_endian: bool,
    /// The database page size.
    pub page_size: u32,
    /// The checkpoint sequence number (incremented by every WAL reset).
    pub checkpoint_seq: u32,
    /// Salt 1 (incremented by every reset).
    pub salt1: u32,
    /// Salt 2 (random at every reset).
    pub salt2: u32,
    /// The header's checksum, which seeds the frames' cumulative checksum.
    pub checksum: (u32, u32),
}

impl WalHeader {
    /// Parses and validates a header: magic, version, page size and checksum. `None` when any
    /// fails (SQLite then ignores the whole file).
    pub fn parse(buf: &[u8; 32]) -> Option<WalHeader> {
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let big_endian = match word(0) {
            MAGIC_LE => false,
            MAGIC_BE => true,
            _ => return None,
        };
        let page_size = word(8);
        let page_size = if page_size == 1 { 65_536 } else { page_size };
        if word(4) != VERSION
            || !(512..=65_536).contains(&page_size)
            || !page_size.is_power_of_two()
        {
            return None;
        }
        let checksum = wal_checksum(big_endian, &buf[..24], (0, 0));
        if checksum != (word(24), word(28)) {
            return None;
        }
        Some(WalHeader {
            big_endian,
            page_size,
            checkpoint_seq: word(12),
            salt1: word(16),
            salt2: word(20),
            checksum,
        })
    }

    /// The size of one frame (header and page).
    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE + u64::from(self.page_size)
    }

    /// The position before the first frame.
    pub fn start(&self) -> WalPosition {
        WalPosition {
            header: *self,
            frames: 0,
            checksum: self.checksum,
        }
    }
}

/// A place in a WAL: after `frames` valid frames of the cycle `header`, with the cumulative
/// checksum there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPosition {
    /// The header of the WAL cycle.
    pub header: WalHeader,
    /// Frames before this position.
    pub frames: u32,
    /// The cumulative checksum of the last of them (the header's before the first).
    pub checksum: (u32, u32),
}

impl WalPosition {
    /// The byte offset of the next frame.
    pub fn offset(&self) -> u64 {
        WAL_HEADER_SIZE + u64::from(self.frames) * self.header.frame_size()
    }
}

/// SQLite's WAL checksum of `data` (a multiple of 8 bytes), continuing from `seed`.
pub fn wal_checksum(big_endian: bool, data: &[u8], seed: (u32, u32)) -> (u32, u32) {
    let (mut s1, mut s2) = seed;
    for c in data.chunks_exact(8) {
        let (a, b) = if big_endian {
            (
                u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            )
        } else {
            (
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        };
        s1 = s1.wrapping_add(a).wrapping_add(s2);
        s2 = s2.wrapping_add(b).wrapping_add(s1);
    }
    (s1, s2)
}

/// Reads the WAL header of `file`; `None` when the file is shorter than a header or the header
/// is not valid (an empty, truncated or never-written WAL).
///
/// # Errors
/// Reading failed.
pub fn read_header(file: &File) -> io::Result<Option<WalHeader>> {
    let mut buf = [0u8; 32];
    match file.read_exact_at(&mut buf, 0) {
        Ok(()) => Ok(WalHeader::parse(&buf)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// One valid frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The page number.
    pub pgno: u32,
    /// The database size in pages after the commit, on a commit frame; 0 otherwise.
    pub commit_size: u32,
    /// The page image.
    pub page: &'a [u8],
    /// The position after this frame.
    pub after: WalPosition,
}

/// Reads valid frames one after the other from a position. Frames after the last commit frame
/// are returned too (they are valid but uncommitted): callers group frames into transactions
/// and drop a trailing group without a commit frame.
#[derive(Debug)]
pub struct FrameReader<'f> {
    file: &'f File,
    pos: WalPosition,
    /// One frame: header and page.
    frame: Vec<u8>,
}

impl<'f> FrameReader<'f> {
    /// Starts reading the frames of `file` after `from`.
    ///
    /// # Errors
    /// None today (kept for readers that need to prepare the file).
    pub fn new(file: &'f File, from: WalPosition) -> io::Result<Self> {
        // One frame per read (one `pread`, no seek): past the last valid frame the file usually
        // holds stale frames of an earlier WAL cycle (SQLite restarts the WAL in place), which
        // reading ahead would read on every scan only to find them invalid.
        Ok(FrameReader {
            file,
            pos: from,
            frame: vec![0; FRAME_HEADER_SIZE as usize + from.header.page_size as usize],
        })
    }

    /// The position after the last frame returned.
    pub fn position(&self) -> WalPosition {
        self.pos
    }

    /// The next valid frame; `None` at the end of the file or at the first frame that is not
    /// valid (torn, wrong salts, wrong checksum).
    ///
    /// # Errors
    /// Reading failed.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
        let h = self.pos.header;
        match self.file.read_exact_at(&mut self.frame, self.pos.offset()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (fh, page) = self.frame.split_at(FRAME_HEADER_SIZE as usize);
        let word = |i: usize| u32::from_be_bytes([fh[i], fh[i + 1], fh[i + 2], fh[i + 3]]);
        let pgno = word(0);
        if pgno == 0 || word(8) != h.salt1 || word(12) != h.salt2 {
            return Ok(None);
        }
        let sum = wal_checksum(h.big_endian, &fh[..8], self.pos.checksum);
        let sum = wal_checksum(h.big_endian, page, sum);
        if sum != (word(16), word(20)) {
            return Ok(None);
        }
        self.pos = WalPosition {
            header: h,
            frames: self.pos.frames + 1,
            checksum: sum,
        };
        Ok(Some(Frame {
            pgno,
            commit_size: word(4),
            page,
            after: self.pos,
        }))
    }
}

/// The last valid commit of the WAL after `from`: its position and the database size then.
/// `None` when no committed frame follows `from`.
///
/// # Errors
/// Reading failed.
pub fn last_commit(file: &File, from: WalPosition) -> io::Result<Option<(WalPosition, u32)>> {
    let mut reader = FrameReader::new(file, from)?;
    let mut last = None;
    while let Some(frame) = reader.next_frame()? {
        if frame.commit_size != 0 {
            last = Some((frame.after, frame.commit_size));
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn wal_db(dir: &std::path::Path) -> (std::path::PathBuf, Connection) {
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB);",
        )
        .unwrap();
        (path, conn)
    }

    fn insert(conn: &Connection, from: i64, to: i64) {
        for i in from..=to {
            conn.execute(
                "INSERT INTO t VALUES (?1, zeroblob(700))",
                rusqlite::params![i],
            )
            .unwrap();
        }
    }

    /// Commits and the position of the last one, read from `from`.
    fn commits(path: &std::path::Path, from: Option<WalPosition>) -> (WalHeader, usize, u32) {
        let file = File::open(path.with_extension("db-wal")).unwrap();
        let header = read_header(&file).unwrap().expect("a valid header");
        let mut reader = FrameReader::new(&file, from.unwrap_or(header.start())).unwrap();
        let (mut n, mut frames) = (0, 0);
        while let Some(f) = reader.next_frame().unwrap() {
            if f.commit_size != 0 {
                n += 1;
                frames = f.after.frames;
            }
        }
        (header, n, frames)
    }

    /// Rows SQLite itself sees in a copy of the database and its WAL.
    fn rows_in_copy(path: &std::path::Path) -> i64 {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("c.db");
        std::fs::copy(path, &copy).unwrap();
        std::fs::copy(path.with_extension("db-wal"), copy.with_extension("db-wal")).unwrap();
        let c = Connection::open(&copy).unwrap();
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn reads_every_commit_sqlite_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = wal_db(dir.path());
        insert(&conn, 1, 40);
        let (header, n, frames) = commits(&path, None);
        // The journal_mode switch writes nothing to the WAL; CREATE TABLE is one commit.
        assert_eq!(n, 41);
        assert_eq!(header.page_size, 4096);
        let wal_len = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        assert_eq!(
            WAL_HEADER_SIZE + u64::from(frames) * header.frame_size(),
            wal_len
        );
        assert_eq!(rows_in_copy(&path), 40);
    }

    #[test]
    fn a_torn_last_frame_ends_at_the_previous_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = wal_db(dir.path());
        insert(&conn, 1, 10);
        let wal = path.with_extension("db-wal");
        let len = std::fs::metadata(&wal).unwrap().len();
        // Cut the last frame (the commit frame of row 10) in the middle of its page.
        let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
        f.set_len(len - 100).unwrap();
        let (_, n, _) = commits(&path, None);
        assert_eq!(n, 10, "CREATE TABLE and rows 1..=9");
        assert_eq!(rows_in_copy(&path), 9, "SQLite agrees");
        // A flipped bit in the middle of the WAL ends the chain there too.
        drop(conn);
    }

    #[test]
    fn a_corrupted_frame_ends_the_valid_part() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = wal_db(dir.path());
        insert(&conn, 1, 10);
        let wal = path.with_extension("db-wal");
        let mut bytes = std::fs::read(&wal).unwrap();
        let file = File::open(&wal).unwrap();
        let header = read_header(&file).unwrap().unwrap();
        // Damage a page byte in frame 5 (0-based 4).
        let at = (WAL_HEADER_SIZE + 4 * header.frame_size() + FRAME_HEADER_SIZE + 10) as usize;
        bytes[at] ^= 0x40;
        std::fs::write(&wal, &bytes).unwrap();
        let (_, _, frames) = commits(&path, None);
        assert!(frames <= 4, "{frames}");
        drop(conn);
    }

    #[test]
    fn a_reset_wal_has_new_salts_and_stale_frames_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = wal_db(dir.path());
        insert(&conn, 1, 30);
        let (before, n, _) = commits(&path, None);
        assert_eq!(n, 31);
        let _: (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        // The next write restarts the WAL from its beginning with new salts.
        insert(&conn, 31, 33);
        let (after, n, _) = commits(&path, None);
        assert_ne!((before.salt1, before.salt2), (after.salt1, after.salt2));
        assert_eq!(after.checkpoint_seq, before.checkpoint_seq + 1);
        assert_eq!(after.salt1, before.salt1.wrapping_add(1));
        assert_eq!(
            n, 3,
            "only the new cycle's commits; the old frames behind them are stale"
        );
        assert_eq!(rows_in_copy(&path), 33);
        // Continuing from a position: nothing after the last commit.
        let file = File::open(path.with_extension("db-wal")).unwrap();
        let header = read_header(&file).unwrap().unwrap();
        let (end, size) = last_commit(&file, header.start()).unwrap().unwrap();
        assert!(size >= 2);
        assert!(last_commit(&file, end).unwrap().is_none());
    }
}
