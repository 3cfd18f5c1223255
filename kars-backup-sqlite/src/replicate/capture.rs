//! Capturing committed transactions from the WAL without ever losing one.
//!
//! The replicator keeps two connections of its own (`wal_autocheckpoint=0`) and always holds a
//! read transaction on one of them (the **pin**). A reader pinned at a WAL read mark stops any
//! checkpoint from copying frames past that mark into the database and stops the WAL from being
//! restarted (overwritten from its start); a reader on read mark 0 (taken when the WAL was fully
//! checkpointed) stops every checkpoint. So frames are never overwritten before they were read:
//!
//! - The pin is moved forward only after the WAL was read past where it was taken, and the new
//!   read transaction is opened on the other connection **before** the old one ends.
//! - With a pin on read mark 0 the WAL can restart exactly once, at the end of frames already
//!   read: a new WAL cycle whose checkpoint sequence is the next one continues the chain. Any
//!   other change of the header (a reset while the replicator was not running) is a **reset**:
//!   the replicator starts a new generation from a fresh snapshot.
//! - The WAL stays bounded by the replicator's own checkpoints: `BEGIN IMMEDIATE` (skipped when
//!   the application holds the write lock), read everything to the WAL's end, end the pin,
//!   `PRAGMA wal_checkpoint(PASSIVE)`, pin again, `ROLLBACK`: the WAL restarts at the
//!   application's next write, after everything was read. Never RESTART or TRUNCATE.
//!
//! A database state is read page-exact while pinned: the database file overlaid with the WAL's
//! committed frames up to a position. Checkpoints can only copy frames the overlay already
//! takes from the WAL, so what the file holds for the other pages cannot change while reading.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::wal::{self, FrameReader, WalHeader, WalPosition};
use crate::error::{Error, Result};
use crate::inspect::check_database_file;

/// How long the replicator's own checkpoint waits for the write lock before skipping a round.
const CHECKPOINT_LOCK_WAIT: Duration = Duration::from_millis(50);
/// How long `--enable-wal` tries to get the exclusive lock the switch needs.
const ENABLE_WAL_WAIT: Duration = Duration::from_secs(60);
/// The busy timeout of the replicator's connections otherwise.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A transaction whose pages pass this many bytes keeps only their places in the WAL.
pub(crate) const MAX_HELD_TRANSACTION: usize = 4 << 20;

/// One transaction read from the WAL: where its pages are (the last frame of each) and the
/// database size. A small transaction's images come along (read once, into the scan's image
/// buffer); a large one's stay in the WAL (the pin keeps them there) and are read one at a time
/// when the commit is written into a segment, so a transaction of any size costs a few bytes
/// per page here.
#[derive(Debug)]
pub(crate) struct CapturedCommit {
    /// The database size in pages after it.
    pub(crate) db_size: u32,
    /// The pages, by page number, with the offset of each image in the `-wal` file.
    pub(crate) pages: Vec<(u32, u64)>,
    /// Where each image is in the scan's image buffer, in the order of `pages`, unless the
    /// transaction passed [`MAX_HELD_TRANSACTION`].
    pub(crate) images: Option<Vec<usize>>,
}

/// What a read of the WAL found.
#[derive(Debug)]
pub(crate) enum Scan<'c> {
    /// Commits after the position (maybe none); `end` is the position to continue from.
    Commits {
        /// The commits.
        commits: Vec<CapturedCommit>,
        /// Where to continue.
        end: Option<WalPosition>,
        /// The `-wal` file the commits' pages are read from (while the pin holds them).
        wal: Option<&'c File>,
    },
    /// The WAL was reset in a way that may have lost frames: a new generation is needed.
    Reset {
        /// Why.
        reason: String,
    },
}

/// The replicator's connections and its pin on the WAL.
#[derive(Debug)]
pub(crate) struct Capture {
    db: PathBuf,
    wal_path: PathBuf,
    conns: [Connection; 2],
    pinned: usize,
    db_file: File,
    /// The `-wal` file, kept open between scans (opened at the first scan that finds it). While
    /// the replicator's connections are open SQLite never deletes it; [`Capture::check_wal`]
    /// reopens it if it was replaced all the same.
    wal: OnceCell<File>,
}

/// Checks that `db` is in WAL mode, switching it when `enable_wal` (persistent, waiting for the
/// other connections' locks up to `ENABLE_WAL_WAIT`).
///
/// # Errors
/// [`Error::NotWal`] when it is not in WAL mode and `enable_wal` is false, or the switch failed.
pub(crate) fn ensure_wal(db: &Path, enable_wal: bool) -> Result<()> {
    check_database_file(db)?;
    let conn = open(db)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| Error::sqlite("read the journal mode of", db, e))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    if !enable_wal {
        return Err(Error::NotWal {
            path: db.to_path_buf(),
            mode,
        });
    }
    // The switch needs the exclusive lock. A writer in rollback-journal mode holds a lock
    // nearly all the time while it is busy, and SQLite's busy handler retries at growing
    // intervals that can keep missing the gaps between its transactions: retry at once, for
    // up to `ENABLE_WAL_WAIT`.
    conn.busy_timeout(Duration::ZERO)
        .map_err(|e| Error::sqlite("set the busy timeout of", db, e))?;
    let deadline = std::time::Instant::now() + ENABLE_WAL_WAIT;
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
            Ok(m) if m.eq_ignore_ascii_case("wal") => {
                tracing::info!(db = %db.display(), from = %mode, "switched the database to WAL mode");
                return Ok(());
            }
            Ok(m) => last = m,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Err(Error::NotWal {
        path: db.to_path_buf(),
        mode: format!("{mode} journal mode (switching to WAL failed: {last}) and"),
    })
}

fn open(db: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::sqlite("open", db, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| Error::sqlite("set the busy timeout of", db, e))?;
    // The last connection to close would checkpoint the WAL and delete it, and the next
    // replicator could not continue the chain: leave it for the application.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| Error::sqlite("configure a connection to", db, e))?;
    Ok(conn)
}

/// The `-wal` file of a database.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push("-wal");
    PathBuf::from(s)
}

fn same_cycle(a: &WalHeader, b: &WalHeader) -> bool {
    a.salt1 == b.salt1
        && a.salt2 == b.salt2
        && a.checkpoint_seq == b.checkpoint_seq
        && a.page_size == b.page_size
}

impl Capture {
    /// Opens the replicator's connections on a database in WAL mode and pins the WAL.
    ///
    /// # Errors
    /// SQLite errors.
    pub(crate) fn open(db: &Path) -> Result<Capture> {
        let conns = [open(db)?, open(db)?];
        for c in &conns {
            c.execute_batch("PRAGMA wal_autocheckpoint=0")
                .map_err(|e| Error::sqlite("configure a connection to", db, e))?;
        }
        let db_file = File::open(db).map_err(|e| Error::io("open", db, e))?;
        let capture = Capture {
            db: db.to_path_buf(),
            wal_path: wal_path(db),
            conns,
            pinned: 0,
            db_file,
            wal: OnceCell::new(),
        };
        capture.begin_read(0)?;
        Ok(capture)
    }

    fn begin_read(&self, i: usize) -> Result<()> {
        self.conns[i]
            .execute_batch("BEGIN")
            .and_then(|()| {
                self.conns[i].query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .map(|_| ())
            .map_err(|e| Error::sqlite("pin the WAL of", &self.db, e))
    }

    fn end_read(&self, i: usize) -> Result<()> {
        self.conns[i]
            .execute_batch("COMMIT")
            .map_err(|e| Error::sqlite("end the read transaction on", &self.db, e))
    }

    /// Moves the pin to the current end of the WAL: the new read transaction begins on the
    /// other connection before the old one ends. Call only after the WAL was read to its end.
    ///
    /// # Errors
    /// SQLite errors.
    pub(crate) fn advance_pin(&mut self) -> Result<()> {
        let other = 1 - self.pinned;
        self.begin_read(other)?;
        let old = std::mem::replace(&mut self.pinned, other);
        self.end_read(old)
    }

    /// The `-wal` file's path.
    pub(crate) fn wal_path(&self) -> &Path {
        &self.wal_path
    }

    /// The `-wal` file kept open, opened now if it was not yet; `None` while there is none.
    fn held_wal(&self) -> Result<Option<&File>> {
        if self.wal.get().is_none()
            && let Some(f) = self.open_wal()?
        {
            let _ = self.wal.set(f);
        }
        Ok(self.wal.get())
    }

    /// Reopens the `-wal` file at the next scan if the one kept open is no longer the one at its
    /// path (deleted or replaced: not SQLite's doing while the replicator's connections are
    /// open, but a stale file would hide every commit); true when it was replaced.
    pub(crate) fn check_wal(&mut self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(held) = self.wal.get() else {
            return false;
        };
        let same = match (held.metadata(), std::fs::metadata(&self.wal_path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            tracing::debug!(wal = %self.wal_path.display(), "the -wal file was replaced; reopening it");
            self.wal = OnceCell::new();
        }
        !same
    }

    fn open_wal(&self) -> Result<Option<File>> {
        use std::os::unix::fs::OpenOptionsExt;
        // Without access-time updates where the replicator may (it owns the file): the WAL
        // changes all the time, so every read would dirty its inode.
        let no_atime = rustix::fs::OFlags::NOATIME.bits() as i32;
        let opened = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(no_atime)
            .open(&self.wal_path)
        {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(&self.wal_path),
            other => other,
        };
        match opened {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", &self.wal_path, e)),
        }
    }

    /// Reads the commits after `from` (`None`: nothing of any WAL read yet), at most about
    /// `max_bytes` of pages (always whole transactions; images held for at most about that
    /// much in `images`, which is cleared first, see [`CapturedCommit`]).
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn read_commits(
        &self,
        from: Option<WalPosition>,
        max_bytes: usize,
        images: &mut Vec<u8>,
    ) -> Result<Scan<'_>> {
        images.clear();
        let Some(file) = self.held_wal()? else {
            return Ok(Scan::Commits {
                commits: Vec::new(),
                end: from,
                wal: None,
            });
        };
        let header = wal::read_header(file).map_err(|e| Error::io("read", &self.wal_path, e))?;
        let Some(header) = header else {
            // Empty or truncated (a TRUNCATE checkpoint): nothing to read until the next write.
            return Ok(Scan::Commits {
                commits: Vec::new(),
                end: from,
                wal: None,
            });
        };
        let start = match from {
            Some(p) if same_cycle(&p.header, &header) => WalPosition {
                header: WalHeader {
                    checksum: header.checksum,
                    ..p.header
                },
                ..p
            },
            // The one restart a pinned reader allows, at the end of what was read.
            Some(p) if header.checkpoint_seq == p.header.checkpoint_seq.wrapping_add(1) => {
                header.start()
            }
            Some(p) => {
                return Ok(Scan::Reset {
                    reason: format!(
                        "the WAL was reset behind the replicator (checkpoint sequence {} -> {}, new salts)",
                        p.header.checkpoint_seq, header.checkpoint_seq
                    ),
                });
            }
            None => header.start(),
        };
        let mut reader =
            FrameReader::new(file, start).map_err(|e| Error::io("read", &self.wal_path, e))?;
        let mut commits = Vec::new();
        // Page -> (offset in the WAL, where its image is in `images`).
        let mut pages: BTreeMap<u32, (u64, Option<usize>)> = BTreeMap::new();
        let mut held = true;
        let mut txn_bytes = 0usize;
        let mut bytes = 0usize;
        let mut end = start;
        let frame_size = header.frame_size();
        while let Some(frame) = reader
            .next_frame()
            .map_err(|e| Error::io("read", &self.wal_path, e))?
        {
            bytes += frame.page.len();
            txn_bytes += frame.page.len();
            let offset = wal::WAL_HEADER_SIZE
                + u64::from(frame.after.frames - 1) * frame_size
                + wal::FRAME_HEADER_SIZE;
            if held && (txn_bytes > MAX_HELD_TRANSACTION || bytes > max_bytes) {
                held = false;
                for (_, image) in pages.values_mut() {
                    *image = None;
                }
            }
            let image = held.then(|| {
                images.extend_from_slice(frame.page);
                images.len() - frame.page.len()
            });
            pages.insert(frame.pgno, (offset, image));
            if frame.commit_size != 0 {
                end = frame.after;
                let mut offsets = Vec::with_capacity(pages.len());
                let mut held_at = held.then(|| Vec::with_capacity(pages.len()));
                for (pgno, (offset, image)) in std::mem::take(&mut pages) {
                    offsets.push((pgno, offset));
                    if let (Some(held_at), Some(image)) = (&mut held_at, image) {
                        held_at.push(image);
                    }
                }
                commits.push(CapturedCommit {
                    db_size: frame.commit_size,
                    pages: offsets,
                    images: held_at,
                });
                held = true;
                txn_bytes = 0;
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        drop(reader);
        Ok(Scan::Commits {
            commits,
            end: Some(end),
            wal: Some(file),
        })
    }

    /// Reads the database state page by page into `page` (pages 1 to the size, in order):
    /// at the WAL position `at` when given (`Ok(None)` if the WAL no longer holds exactly those
    /// frames), else at the WAL's last commit. Returns the position read at and the page count.
    ///
    /// # Errors
    /// I/O errors and `page`'s errors.
    pub(crate) fn read_state(
        &self,
        at: Option<WalPosition>,
        sink: &mut dyn StateSink,
    ) -> Result<Option<(Option<WalPosition>, u32)>> {
        for _ in 0..3 {
            match self.read_state_once(at, sink)? {
                Attempt::Done(r) => return Ok(Some(r)),
                Attempt::Mismatch => return Ok(None),
                Attempt::Restarted => {
                    tracing::debug!(db = %self.db.display(), "the WAL restarted while reading a state; reading it again");
                }
            }
        }
        Err(Error::io(
            "read a stable state of",
            &self.db,
            io::Error::other("the WAL restarted three times while reading"),
        ))
    }

    fn read_state_once(
        &self,
        at: Option<WalPosition>,
        sink: &mut dyn StateSink,
    ) -> Result<Attempt> {
        let wal_err = |e| Error::io("read", &self.wal_path, e);
        let db_err = |e| Error::io("read", &self.db, e);
        let mut db_header = [0u8; 100];
        self.db_file
            .read_exact_at(&mut db_header, 0)
            .map_err(db_err)?;
        let page_size = match u16::from_be_bytes([db_header[16], db_header[17]]) {
            1 => 65_536u32,
            n => u32::from(n),
        };
        let header_size = u32::from_be_bytes(db_header[28..32].try_into().expect("4 bytes"));
        let mut file = self.open_wal()?;
        let header = match &mut file {
            Some(f) => wal::read_header(f).map_err(wal_err)?,
            None => None,
        };
        // The frames to overlay: page -> frame index (1-based), up to the position.
        let mut index: HashMap<u32, u32> = HashMap::new();
        let mut position = header.map(|h| h.start());
        let mut size = header_size;
        if let (Some(f), Some(h)) = (&file, header) {
            let limit = match at {
                Some(p) if same_cycle(&p.header, &h) => Some(p),
                Some(_) => return Ok(Attempt::Mismatch),
                None => None,
            };
            let mut reader = FrameReader::new(f, h.start()).map_err(wal_err)?;
            let mut group: Vec<(u32, u32)> = Vec::new();
            while let Some(frame) = reader.next_frame().map_err(wal_err)? {
                group.push((frame.pgno, frame.after.frames));
                if frame.commit_size != 0 {
                    index.extend(group.drain(..));
                    position = Some(frame.after);
                    size = frame.commit_size;
                }
                if let Some(l) = limit
                    && frame.after.frames == l.frames
                {
                    if frame.after.checksum != l.checksum || frame.commit_size == 0 {
                        return Ok(Attempt::Mismatch);
                    }
                    break;
                }
            }
            if let Some(l) = limit
                && position.map(|p| p.frames) != Some(l.frames)
            {
                return Ok(Attempt::Mismatch);
            }
        } else if at.is_some() {
            return Ok(Attempt::Mismatch);
        }
        sink.begin(position, size, page_size)
            .map_err(|e| Error::io("write the state of", &self.db, e))?;
        let ps = page_size as usize;
        let mut buf = vec![0u8; ps];
        let frame_size = u64::from(page_size) + wal::FRAME_HEADER_SIZE;
        for pgno in 1..=size {
            match (index.get(&pgno), &file) {
                (Some(&frame), Some(f)) => {
                    let offset = wal::WAL_HEADER_SIZE
                        + u64::from(frame - 1) * frame_size
                        + wal::FRAME_HEADER_SIZE;
                    match f.read_exact_at(&mut buf, offset) {
                        Ok(()) => {}
                        // Truncated (a TRUNCATE checkpoint while the pin was on read mark 0,
                        // every frame already in the database): read again.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            return Ok(Attempt::Restarted);
                        }
                        Err(e) => return Err(wal_err(e)),
                    }
                }
                _ => {
                    self.db_file
                        .read_exact_at(&mut buf, u64::from(pgno - 1) * ps as u64)
                        .map_err(db_err)?;
                }
            }
            sink.page(pgno, &buf)
                .map_err(|e| Error::io("write the state of", &self.db, e))?;
        }
        if !index.is_empty()
            && let Some(f) = &mut file
        {
            let now = wal::read_header(f).map_err(wal_err)?;
            if now.map(|n| (n.salt1, n.salt2)) != header.map(|h| (h.salt1, h.salt2)) {
                return Ok(Attempt::Restarted);
            }
        }
        Ok(Attempt::Done((position, size)))
    }

    /// The replicator's own checkpoint: takes the write lock (skipping the round, `Ok(false)`,
    /// when the application holds it), lets `ship` read everything to the WAL's end, ends the
    /// pin, runs a PASSIVE checkpoint, pins again and releases the write lock. `Ok(true)` when
    /// every frame was checkpointed (the WAL restarts at the next write).
    ///
    /// # Errors
    /// SQLite errors and `ship`'s.
    pub(crate) fn checkpoint(
        &mut self,
        ship: &mut dyn FnMut(&Capture) -> Result<()>,
    ) -> Result<bool> {
        let w = 1 - self.pinned;
        let writer = &self.conns[w];
        writer
            .busy_timeout(CHECKPOINT_LOCK_WAIT)
            .map_err(|e| Error::sqlite("set the busy timeout of", &self.db, e))?;
        let locked = writer.execute_batch("BEGIN IMMEDIATE");
        let _ = writer.busy_timeout(BUSY_TIMEOUT);
        match locked {
            Ok(()) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(Error::sqlite("lock for a checkpoint", &self.db, e)),
        }
        let result: Result<bool> = (|| {
            ship(self)?;
            self.end_read(self.pinned)?;
            let checkpoint = self.conns[self.pinned]
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(|e| Error::sqlite("checkpoint", &self.db, e));
            // Pin again before the write lock goes: the WAL restarts at the next write.
            self.begin_read(self.pinned)?;
            let (busy, log, done) = checkpoint?;
            tracing::debug!(db = %self.db.display(), busy, log, done, "checkpoint");
            // Busy (another checkpoint ran) or partial (an application reader on an older
            // mark): the WAL will not restart; the next round tries again.
            Ok(busy == 0 && log == done)
        })();
        let rollback = self.conns[w]
            .execute_batch("ROLLBACK")
            .map_err(|e| Error::sqlite("end the checkpoint's transaction on", &self.db, e));
        let complete = result?;
        rollback?;
        Ok(complete)
    }
}

enum Attempt {
    Done((Option<WalPosition>, u32)),
    Mismatch,
    Restarted,
}

/// Receives a database state read page by page.
pub(crate) trait StateSink {
    /// A (new) read begins: position, page count, page size. Called again when a read restarts.
    fn begin(
        &mut self,
        position: Option<WalPosition>,
        pages: u32,
        page_size: u32,
    ) -> std::io::Result<()>;
    /// The next page.
    fn page(&mut self, pgno: u32, page: &[u8]) -> std::io::Result<()>;
}
