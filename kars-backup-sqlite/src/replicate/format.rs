//! The stored format of a chain: database checksums, segments and snapshots.
//!
//! Documented for operators in `docs/operators/replication.md` ("Stored format"). All integers are
//! big-endian. Every object is compressed with zstd and then, when asked, encrypted (age or
//! OpenPGP, recognised by its first bytes on reading).
//!
//! - **Database checksum**: the XOR over the database's pages of CRC-64/GO-ISO(pgno as 4
//!   bytes ‖ page), as Litestream's LTX does. It is updated page by page, so a chain of
//!   segments is checked against it without the database.
//! - **Segment**: `KARSSEG1`, page size, first and last txid, the checksum before, the WAL
//!   position after (for a replicator resuming), the commits (txid, observed time in µs, database
//!   size in pages, checksum after, pages as pgno ‖ image), and a CRC-64 of everything before it.
//! - **Snapshot**: `KARSSNP1`, page size, page count, txid, time (µs), the WAL position, every
//!   page in order, then the database checksum and a CRC-64 of everything before it.

use std::io::{self, Read, Write};

use crc_fast::{CrcAlgorithm, Digest};
use kars_backup_core::{DynDecryptor, DynEncryptor, EncryptionScheme, Sealed};

use super::wal::{WalHeader, WalPosition};

const SEGMENT_MAGIC: &[u8; 8] = b"KARSSEG1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"KARSSNP1";
/// zstd level of segments and snapshots. Level 1 compressed the benchmark's KARS-like segments
/// (successive images of the same pages) 1.6x as fast as level 3 and 4% smaller, its
/// snapshot 2.4x as fast and 3% smaller: the replicator seals a segment every second.
const ZSTD_LEVEL: i32 = 1;

/// The hash of one page in the database checksum.
pub fn page_hash(pgno: u32, page: &[u8]) -> u64 {
    let mut d = crc64();
    d.update(&pgno.to_be_bytes());
    d.update(page);
    d.finalize()
}

/// The database checksum, kept page by page (8 bytes per page).
#[derive(Debug, Clone, Default)]
pub struct DbChecksum {
    hashes: Vec<u64>,
    sum: u64,
}

impl DbChecksum {
    /// Sets page `pgno` (1-based) to `page`.
    pub fn set_page(&mut self, pgno: u32, page: &[u8]) {
        let i = pgno as usize - 1;
        if self.hashes.len() <= i {
            self.hashes.resize(i + 1, 0);
        }
        self.sum ^= self.hashes[i];
        self.hashes[i] = page_hash(pgno, page);
        self.sum ^= self.hashes[i];
    }

    /// Sets the database size: pages past it leave the checksum.
    pub fn set_size(&mut self, pages: u32) {
        let n = pages as usize;
        for h in self.hashes.iter().skip(n) {
            self.sum ^= h;
        }
        self.hashes.truncate(n);
    }

    /// The checksum.
    pub fn value(&self) -> u64 {
        self.sum
    }

    /// The number of pages.
    pub fn pages(&self) -> u32 {
        self.hashes.len() as u32
    }
}

/// One committed transaction as a segment stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Its transaction id in the generation (1, 2, …).
    pub txid: u64,
    /// When the replicator first saw it committed (UTC µs since the epoch); never before the
    /// commit.
    pub observed_us: i64,
    /// The database size in pages after it.
    pub db_size: u32,
    /// The database checksum after it.
    pub checksum_after: u64,
    /// The pages it wrote (last image of each), by page number.
    pub pages: Vec<(u32, Vec<u8>)>,
}

impl Commit {
    /// Appends its record (as in a segment) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put64(out, self.txid);
        put64(out, self.observed_us as u64);
        put32(out, self.db_size);
        put32(out, self.pages.len() as u32);
        put64(out, self.checksum_after);
        for (pgno, page) in &self.pages {
            put32(out, *pgno);
            out.extend_from_slice(page);
        }
    }
}

/// The size of a segment's header (before its commits).
pub const SEGMENT_HEADER_SIZE: usize = 8 + 4 + 8 + 8 + 8 + POSITION_SIZE + 4;

/// A segment's header: magic, page size, first and last txid, checksum before, WAL position
/// after, number of commits ([`SEGMENT_HEADER_SIZE`] bytes). The commits' records
/// ([`Commit::encode_into`]) follow, then a CRC-64 of everything before it ([`crc64`]).
pub fn segment_header(
    page_size: u32,
    first: u64,
    last: u64,
    checksum_before: u64,
    wal_after: Option<&WalPosition>,
    commits: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_SIZE);
    out.extend_from_slice(SEGMENT_MAGIC);
    put32(&mut out, page_size);
    put64(&mut out, first);
    put64(&mut out, last);
    put64(&mut out, checksum_before);
    put_position(&mut out, wal_after);
    put32(&mut out, commits);
    out
}

/// A streaming CRC-64/GO-ISO, as segments and snapshots end with (`crc-fast`: carry-less
/// multiplication where the CPU has it, which the database checksum's per-page hashes need at
/// high commit rates).
pub fn crc64() -> Digest {
    Digest::new(CrcAlgorithm::Crc64GoIso)
}

/// The CRC-64/GO-ISO of `data`.
fn crc64_of(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64GoIso, data)
}

/// A segment: consecutive commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The page size.
    pub page_size: u32,
    /// The database checksum before its first commit.
    pub checksum_before: u64,
    /// The WAL position after its last commit, when it came from a WAL (for resuming).
    pub wal_after: Option<WalPosition>,
    /// The commits, in order.
    pub commits: Vec<Commit>,
}

impl Segment {
    /// The first txid.
    pub fn first(&self) -> u64 {
        self.commits.first().map_or(0, |c| c.txid)
    }

    /// The last txid.
    pub fn last(&self) -> u64 {
        self.commits.last().map_or(0, |c| c.txid)
    }

    /// The checksum after the last commit.
    pub fn checksum_after(&self) -> u64 {
        self.commits
            .last()
            .map_or(self.checksum_before, |c| c.checksum_after)
    }

    /// The plain (uncompressed) size.
    pub fn plain_size(&self) -> usize {
        let pages: usize = self
            .commits
            .iter()
            .map(|c| c.pages.len() * (4 + self.page_size as usize) + 32)
            .sum();
        64 + pages
    }

    /// Encodes the segment (plain; see [`seal`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.plain_size());
        out.extend_from_slice(&segment_header(
            self.page_size,
            self.first(),
            self.last(),
            self.checksum_before,
            self.wal_after.as_ref(),
            self.commits.len() as u32,
        ));
        for c in &self.commits {
            c.encode_into(&mut out);
        }
        let crc = crc64_of(&out);
        put64(&mut out, crc);
        out
    }

    /// Decodes a plain segment, checking its structure and CRC.
    ///
    /// # Errors
    /// A description of what is wrong.
    pub fn decode(data: &[u8]) -> Result<Segment, String> {
        if data.len() < 8 + 8 {
            return Err("too short to be a segment".into());
        }
        let (body, crc) = data.split_at(data.len() - 8);
        if crc64_of(body) != u64::from_be_bytes(crc.try_into().expect("8 bytes")) {
            return Err("its CRC-64 does not match its content (damaged)".into());
        }
        let mut r = Cursor(body);
        if r.take(8)? != SEGMENT_MAGIC {
            return Err("it does not start with KARSSEG1".into());
        }
        let page_size = r.u32()?;
        let first = r.u64()?;
        let last = r.u64()?;
        let checksum_before = r.u64()?;
        let wal_after = r.position()?;
        let n = r.u32()?;
        let mut commits = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            let txid = r.u64()?;
            let observed_us = r.u64()? as i64;
            let db_size = r.u32()?;
            let npages = r.u32()?;
            let checksum_after = r.u64()?;
            let mut pages = Vec::with_capacity(npages.min(1 << 16) as usize);
            for _ in 0..npages {
                let pgno = r.u32()?;
                pages.push((pgno, r.take(page_size as usize)?.to_vec()));
            }
            commits.push(Commit {
                txid,
                observed_us,
                db_size,
                checksum_after,
                pages,
            });
        }
        if !r.0.is_empty() {
            return Err("bytes after its last commit".into());
        }
        let segment = Segment {
            page_size,
            checksum_before,
            wal_after,
            commits,
        };
        if segment.first() != first || segment.last() != last {
            return Err(format!(
                "its header says transactions {first}..={last} but it holds {}..={}",
                segment.first(),
                segment.last()
            ));
        }
        Ok(segment)
    }
}

/// A commit record's header in a segment (its pages follow: pgno ‖ image each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitHeader {
    /// Its transaction id.
    pub txid: u64,
    /// Its observed time (UTC µs).
    pub observed_us: i64,
    /// The database size in pages after it.
    pub db_size: u32,
    /// The number of pages that follow.
    pub pages: u32,
    /// The database checksum after it.
    pub checksum_after: u64,
}

/// The size of a commit record's header.
const COMMIT_HEADER_SIZE: usize = 8 + 8 + 4 + 4 + 8;
/// Where `checksum_after` sits in a commit record's header.
const CHECKSUM_AFTER_OFFSET: u64 = 8 + 8 + 4 + 4;

impl CommitHeader {
    fn encode(&self) -> [u8; COMMIT_HEADER_SIZE] {
        let mut out = [0u8; COMMIT_HEADER_SIZE];
        out[..8].copy_from_slice(&self.txid.to_be_bytes());
        out[8..16].copy_from_slice(&(self.observed_us as u64).to_be_bytes());
        out[16..20].copy_from_slice(&self.db_size.to_be_bytes());
        out[20..24].copy_from_slice(&self.pages.to_be_bytes());
        out[24..].copy_from_slice(&self.checksum_after.to_be_bytes());
        out
    }
}

/// A segment's header, as [`SegmentReader`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The page size.
    pub page_size: u32,
    /// The first txid.
    pub first: u64,
    /// The last txid.
    pub last: u64,
    /// The database checksum before its first commit.
    pub checksum_before: u64,
    /// The WAL position after its last commit, when it came from a WAL.
    pub wal_after: Option<WalPosition>,
    /// The number of commits.
    pub commits: u32,
}

/// Reads a plain segment commit by commit and page by page, without holding it whole; the
/// CRC-64 is checked by [`SegmentReader::finish`]. Errors are `io::Error`s describing what is
/// wrong (truncated, damaged).
pub struct SegmentReader<R: Read> {
    input: R,
    digest: Digest,
    /// The header.
    pub header: SegmentHeader,
    commits_left: u32,
    pages_left: u32,
    skip: Vec<u8>,
}

impl<R: Read> std::fmt::Debug for SegmentReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader")
            .field("header", &self.header)
            .field("commits_left", &self.commits_left)
            .finish_non_exhaustive()
    }
}

fn truncated(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::other("it ends in the middle of a record (truncated)")
    } else {
        e
    }
}

impl<R: Read> SegmentReader<R> {
    /// Reads the header.
    ///
    /// # Errors
    /// Reading failed, or the header is not a segment's.
    pub fn new(mut input: R) -> io::Result<Self> {
        let mut buf = [0u8; SEGMENT_HEADER_SIZE];
        input.read_exact(&mut buf).map_err(truncated)?;
        let mut r = Cursor(&buf);
        let magic = r.take(8).map_err(io::Error::other)?;
        if magic != SEGMENT_MAGIC {
            return Err(io::Error::other("it does not start with KARSSEG1"));
        }
        let header = (|| -> Result<SegmentHeader, String> {
            Ok(SegmentHeader {
                page_size: r.u32()?,
                first: r.u64()?,
                last: r.u64()?,
                checksum_before: r.u64()?,
                wal_after: r.position()?,
                commits: r.u32()?,
            })
        })()
        .map_err(io::Error::other)?;
        if !(512..=65_536).contains(&header.page_size) {
            return Err(io::Error::other(format!(
                "its page size {} is not valid",
                header.page_size
            )));
        }
        let mut digest = crc64();
        digest.update(&buf);
        Ok(SegmentReader {
            input,
            digest,
            header,
            commits_left: header.commits,
            pages_left: 0,
            skip: Vec::new(),
        })
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf).map_err(truncated)?;
        self.digest.update(buf);
        Ok(())
    }

    fn skip_pages(&mut self) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.skip);
        buf.resize(self.header.page_size as usize, 0);
        while self.next_page(&mut buf)?.is_some() {}
        self.skip = buf;
        Ok(())
    }

    /// The next commit's header (the pages of the one before that were not read are skipped);
    /// `None` after the last one.
    ///
    /// # Errors
    /// Reading failed or the segment is truncated.
    pub fn next_commit(&mut self) -> io::Result<Option<CommitHeader>> {
        self.skip_pages()?;
        if self.commits_left == 0 {
            return Ok(None);
        }
        let mut buf = [0u8; COMMIT_HEADER_SIZE];
        self.read(&mut buf)?;
        let word = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        let half = |i: usize| u32::from_be_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        let commit = CommitHeader {
            txid: word(0),
            observed_us: word(8) as i64,
            db_size: half(16),
            pages: half(20),
            checksum_after: word(24),
        };
        self.commits_left -= 1;
        self.pages_left = commit.pages;
        Ok(Some(commit))
    }

    /// The current commit's next page into `page` (the page size long); its page number, or
    /// `None` after its last page.
    ///
    /// # Errors
    /// Reading failed or the segment is truncated.
    pub fn next_page(&mut self, page: &mut [u8]) -> io::Result<Option<u32>> {
        if self.pages_left == 0 {
            return Ok(None);
        }
        let mut pgno = [0u8; 4];
        self.read(&mut pgno)?;
        self.read(page)?;
        self.pages_left -= 1;
        Ok(Some(u32::from_be_bytes(pgno)))
    }

    /// Reads what is left and checks the CRC-64 and that nothing follows it.
    ///
    /// # Errors
    /// The segment is damaged or truncated, or reading failed.
    pub fn finish(mut self) -> io::Result<()> {
        while self.next_commit()?.is_some() {}
        let mut crc = [0u8; 8];
        self.input.read_exact(&mut crc).map_err(truncated)?;
        if self.digest.finalize() != u64::from_be_bytes(crc) {
            return Err(io::Error::other(
                "its CRC-64 does not match its content (damaged)",
            ));
        }
        let mut more = [0u8; 1];
        loop {
            match self.input.read(&mut more) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(io::Error::other("bytes after its CRC-64")),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The plain bytes of a segment that a [`SegmentSpool`] keeps in memory before it moves them to
/// a spool file (a second's commits at a few hundred transactions a second stay in memory).
const SPOOL_MEMORY: usize = 4 << 20;

/// A segment assembled commit by commit and page by page, in memory up to [`SPOOL_MEMORY`]
/// and in a plain spool file past that, then sealed (compressed, encrypted) into a file for
/// upload.
pub struct SegmentSpool {
    spool: Spool,
    dir: std::path::PathBuf,
    header: SegmentHeader,
    written: u64,
    /// Where the current commit's header is, and the checksum after it says.
    commit_at: Option<(u64, u64)>,
    pages_left: u32,
}

impl std::fmt::Debug for SegmentSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentSpool")
            .field("header", &self.header)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// A sealed segment ready for upload.
#[derive(Debug)]
pub struct SealedSegment {
    /// The sealed file (deleted when dropped).
    pub path: tempfile::TempPath,
    /// Its size.
    pub size: u64,
    /// The segment's header.
    pub header: SegmentHeader,
}

/// Where a [`SegmentSpool`] keeps its plain bytes.
enum Spool {
    Memory(Vec<u8>),
    File {
        file: io::BufWriter<std::fs::File>,
        path: tempfile::TempPath,
    },
}

fn temp_file(dir: &std::path::Path) -> io::Result<(std::fs::File, tempfile::TempPath)> {
    Ok(tempfile::Builder::new()
        .prefix(".kars-replica-segment-")
        .tempfile_in(dir)?
        .into_parts())
}

impl SegmentSpool {
    /// Starts a segment, spooled to a file in `dir` if it grows past what is kept in memory.
    ///
    /// # Errors
    /// None today (kept for spools that start with a file).
    pub fn new(dir: &std::path::Path, page_size: u32, checksum_before: u64) -> io::Result<Self> {
        let mut plain = spool_buffer();
        plain.extend_from_slice(&[0u8; SEGMENT_HEADER_SIZE]);
        Ok(SegmentSpool {
            spool: Spool::Memory(plain),
            dir: dir.to_path_buf(),
            header: SegmentHeader {
                page_size,
                first: 0,
                last: 0,
                checksum_before,
                wal_after: None,
                commits: 0,
            },
            written: SEGMENT_HEADER_SIZE as u64,
            commit_at: None,
            pages_left: 0,
        })
    }

    /// The header so far (first and last txid, commits).
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Appends plain bytes, moving them to a spool file once they pass [`SPOOL_MEMORY`].
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Spool::Memory(plain) = &mut self.spool {
            if plain.len() + bytes.len() <= SPOOL_MEMORY {
                plain.extend_from_slice(bytes);
                return Ok(());
            }
            let (file, path) = temp_file(&self.dir)?;
            let mut file = io::BufWriter::with_capacity(256 * 1024, file);
            file.write_all(plain)?;
            self.spool = Spool::File { file, path };
        }
        match &mut self.spool {
            Spool::File { file, .. } => file.write_all(bytes),
            Spool::Memory(_) => unreachable!("moved to a file above"),
        }
    }

    /// Plain bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// Whether no commit was written.
    pub fn is_empty(&self) -> bool {
        self.header.commits == 0
    }

    /// Starts a commit of `commit.pages` pages; its checksum after may be set later, with
    /// [`SegmentSpool::end_commit`] (which then writes it into the header).
    ///
    /// # Errors
    /// Writing failed, or the previous commit misses pages.
    pub fn begin_commit(&mut self, commit: &CommitHeader) -> io::Result<()> {
        if self.pages_left != 0 {
            return Err(io::Error::other(
                "a commit began before the last one's pages",
            ));
        }
        if self.header.commits == 0 {
            self.header.first = commit.txid;
        }
        self.header.last = commit.txid;
        self.header.commits += 1;
        self.commit_at = Some((self.written, commit.checksum_after));
        self.pages_left = commit.pages;
        self.write(&commit.encode())?;
        self.written += COMMIT_HEADER_SIZE as u64;
        Ok(())
    }

    /// Writes the current commit's next page.
    ///
    /// # Errors
    /// Writing failed, or the commit has all its pages.
    pub fn page(&mut self, pgno: u32, page: &[u8]) -> io::Result<()> {
        if self.pages_left == 0 || page.len() != self.header.page_size as usize {
            return Err(io::Error::other("a page that its commit does not announce"));
        }
        self.pages_left -= 1;
        self.write(&pgno.to_be_bytes())?;
        self.write(page)?;
        self.written += 4 + page.len() as u64;
        Ok(())
    }

    /// Ends the current commit, setting its checksum after when it is not the one given to
    /// [`SegmentSpool::begin_commit`].
    ///
    /// # Errors
    /// Writing failed, or pages are missing.
    pub fn end_commit(&mut self, checksum_after: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.pages_left != 0 {
            return Err(io::Error::other("a commit ended before its last page"));
        }
        let (at, announced) = self
            .commit_at
            .take()
            .ok_or_else(|| io::Error::other("no commit to end"))?;
        if announced == checksum_after {
            return Ok(());
        }
        let at = at + CHECKSUM_AFTER_OFFSET;
        match &mut self.spool {
            Spool::Memory(plain) => {
                let at = at as usize;
                plain[at..at + 8].copy_from_slice(&checksum_after.to_be_bytes());
                Ok(())
            }
            Spool::File { file, .. } => {
                file.flush()?;
                file.get_ref()
                    .write_all_at(&checksum_after.to_be_bytes(), at)
            }
        }
    }

    /// Sets the WAL position after the last commit.
    pub fn set_wal_after(&mut self, wal_after: Option<WalPosition>) {
        self.header.wal_after = wal_after;
    }

    /// Writes the header and seals header, commits and CRC-64 into a new file in the spool's
    /// directory: zstd, then encryption with `encryptor`.
    ///
    /// # Errors
    /// Writing failed, or a commit is not complete.
    pub fn seal(self, encryptor: Option<&DynEncryptor>) -> io::Result<SealedSegment> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        if self.pages_left != 0 || self.commit_at.is_some() {
            return Err(io::Error::other("the last commit is not complete"));
        }
        let h = self.header;
        let head = segment_header(
            h.page_size,
            h.first,
            h.last,
            h.checksum_before,
            h.wal_after.as_ref(),
            h.commits,
        );
        let (out, path) = temp_file(&self.dir)?;
        let (mut file, spool_path) = match self.spool {
            Spool::Memory(mut plain) => {
                plain[..SEGMENT_HEADER_SIZE].copy_from_slice(&head);
                let crc = crc64_of(&plain);
                plain.extend_from_slice(&crc.to_be_bytes());
                let mut writer = encrypting_writer(
                    Box::new(io::BufWriter::with_capacity(256 * 1024, out)),
                    encryptor,
                )?;
                compress_with(plain, |compressed| writer.write_all(compressed))?;
                writer.finish()?;
                let size = std::fs::metadata(&path)?.len();
                return Ok(SealedSegment {
                    path,
                    size,
                    header: h,
                });
            }
            Spool::File { file, path } => (
                file.into_inner().map_err(io::IntoInnerError::into_error)?,
                path,
            ),
        };
        file.write_all_at(&head, 0)?;
        file.seek(SeekFrom::Start(0))?;
        let mut writer = sealing_writer(
            Box::new(io::BufWriter::with_capacity(256 * 1024, out)),
            encryptor,
        )?;
        let mut digest = crc64();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            digest.update(&buf[..n]);
            writer.write_all(&buf[..n])?;
        }
        writer.write_all(&digest.finalize().to_be_bytes())?;
        writer.finish()?;
        drop(spool_path);
        let size = std::fs::metadata(&path)?.len();
        Ok(SealedSegment {
            path,
            size,
            header: h,
        })
    }
}

/// The header of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The page size.
    pub page_size: u32,
    /// The database size in pages.
    pub page_count: u32,
    /// The last transaction it contains.
    pub txid: u64,
    /// When its state was read (UTC µs).
    pub time_us: i64,
    /// The WAL position it was read at.
    pub wal: Option<WalPosition>,
}

impl SnapshotHeader {
    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        put32(&mut out, self.page_size);
        put32(&mut out, self.page_count);
        put64(&mut out, self.txid);
        put64(&mut out, self.time_us as u64);
        put_position(&mut out, self.wal.as_ref());
        out
    }

    /// The size of an encoded header.
    pub const SIZE: usize = 8 + 4 + 4 + 8 + 8 + POSITION_SIZE;

    /// Decodes a header.
    ///
    /// # Errors
    /// A description of what is wrong.
    pub fn decode(data: &[u8]) -> Result<SnapshotHeader, String> {
        let mut r = Cursor(data);
        if r.take(8)? != SNAPSHOT_MAGIC {
            return Err("it does not start with KARSSNP1".into());
        }
        Ok(SnapshotHeader {
            page_size: r.u32()?,
            page_count: r.u32()?,
            txid: r.u64()?,
            time_us: r.u64()? as i64,
            wal: r.position()?,
        })
    }
}

/// Writes a snapshot: header, pages in order, then the checksum and a CRC-64 of everything.
pub struct SnapshotWriter<W: Write> {
    out: W,
    digest: Digest,
    checksum: DbChecksum,
    header: SnapshotHeader,
    written: u32,
}

impl<W: Write> std::fmt::Debug for SnapshotWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("header", &self.header)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot with its header.
    ///
    /// # Errors
    /// Writing failed.
    pub fn new(mut out: W, header: SnapshotHeader) -> io::Result<Self> {
        let bytes = header.encode();
        out.write_all(&bytes)?;
        let mut digest = crc64();
        digest.update(&bytes);
        Ok(SnapshotWriter {
            out,
            digest,
            checksum: DbChecksum::default(),
            header,
            written: 0,
        })
    }

    /// Writes the next page (pages come in order, 1 to the page count).
    ///
    /// # Errors
    /// Writing failed.
    pub fn page(&mut self, page: &[u8]) -> io::Result<()> {
        self.written += 1;
        self.checksum.set_page(self.written, page);
        self.digest.update(page);
        self.out.write_all(page)
    }

    /// Writes the trailer; returns the writer and the database checksum with its page hashes.
    ///
    /// # Errors
    /// Writing failed, or fewer pages were written than the header says.
    pub fn finish(mut self) -> io::Result<(W, DbChecksum)> {
        if self.written != self.header.page_count {
            return Err(io::Error::other(format!(
                "the snapshot has {} pages but its header says {}",
                self.written, self.header.page_count
            )));
        }
        let sum = self.checksum.value().to_be_bytes();
        self.digest.update(&sum);
        self.out.write_all(&sum)?;
        self.out.write_all(&self.digest.finalize().to_be_bytes())?;
        Ok((self.out, self.checksum))
    }
}

/// Reads a snapshot written by [`SnapshotWriter`], page by page, checking it.
pub struct SnapshotReader<R: Read> {
    input: R,
    digest: Digest,
    checksum: DbChecksum,
    /// The header.
    pub header: SnapshotHeader,
    read: u32,
}

impl<R: Read> std::fmt::Debug for SnapshotReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("header", &self.header)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the header.
    ///
    /// # Errors
    /// Reading failed, or the header is not valid.
    pub fn new(mut input: R) -> io::Result<Self> {
        let mut buf = [0u8; SnapshotHeader::SIZE];
        input.read_exact(&mut buf)?;
        let header = SnapshotHeader::decode(&buf).map_err(io::Error::other)?;
        let mut digest = crc64();
        digest.update(&buf);
        Ok(SnapshotReader {
            input,
            digest,
            checksum: DbChecksum::default(),
            header,
            read: 0,
        })
    }

    /// Reads the next page into `page`; false after the last one (the trailer is then checked).
    ///
    /// # Errors
    /// Reading failed, or the trailer does not match the pages.
    pub fn next_page(&mut self, page: &mut [u8]) -> io::Result<bool> {
        if self.read == self.header.page_count {
            let mut trailer = [0u8; 16];
            self.input.read_exact(&mut trailer)?;
            self.digest.update(&trailer[..8]);
            let sum = u64::from_be_bytes(trailer[..8].try_into().expect("8 bytes"));
            let crc = u64::from_be_bytes(trailer[8..].try_into().expect("8 bytes"));
            if sum != self.checksum.value() {
                return Err(io::Error::other(
                    "the database checksum in its trailer does not match its pages",
                ));
            }
            let digest = std::mem::replace(&mut self.digest, crc64());
            if crc != digest.finalize() {
                return Err(io::Error::other("its CRC-64 does not match its content"));
            }
            return Ok(false);
        }
        self.input.read_exact(page)?;
        self.read += 1;
        self.checksum.set_page(self.read, page);
        self.digest.update(page);
        Ok(true)
    }

    /// The checksum of the pages read so far (all of them after the last).
    pub fn into_checksum(self) -> DbChecksum {
        self.checksum
    }
}

/// Compresses (zstd) and encrypts (when `encryptor` is given) a plain object.
///
/// # Errors
/// Compression or encryption failed.
pub fn seal(plain: &[u8], encryptor: Option<&DynEncryptor>) -> io::Result<Vec<u8>> {
    let compressed = compress(plain)?;
    let Some(encryptor) = encryptor else {
        return Ok(compressed);
    };
    let buf = SharedBuf::default();
    let mut w = encryptor.encrypt(Box::new(buf.clone()))?;
    w.write_all(&compressed)?;
    w.finish()?;
    Ok(buf.take())
}

/// A compressing (and encrypting) writer over `out`, for streamed snapshots.
///
/// # Errors
/// Starting the encryption failed.
pub fn sealing_writer(
    out: Box<dyn Write + Send>,
    encryptor: Option<&DynEncryptor>,
) -> io::Result<Box<dyn kars_backup_core::compress::FinishWrite>> {
    let inner = encrypting_writer(out, encryptor)?;
    Ok(Box::new(ZstdSeal(Some(zstd::Encoder::new(
        inner, ZSTD_LEVEL,
    )?))))
}

/// An encrypting writer over `out` with `encryptor`, or `out` as it is.
fn encrypting_writer(
    out: Box<dyn Write + Send>,
    encryptor: Option<&DynEncryptor>,
) -> io::Result<Box<dyn kars_backup_core::compress::FinishWrite>> {
    Ok(match encryptor {
        Some(e) => e.encrypt(out)?,
        None => Box::new(Plain(out)),
    })
}

/// What sealing in memory reuses from one segment to the next, per thread: new ones would be
/// allocated (and cleared, and faulted in) every second.
#[derive(Default)]
struct Sealer {
    /// The zstd context.
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// The compressed bytes.
    out: Vec<u8>,
    /// A spool's plain bytes, for the next [`SegmentSpool`].
    spare: Vec<u8>,
}

thread_local! {
    static SEALER: std::cell::RefCell<Sealer> = std::cell::RefCell::new(Sealer::default());
}

/// An empty buffer for a spool's plain bytes (the last sealed one's, on this thread).
fn spool_buffer() -> Vec<u8> {
    let spare = SEALER.with(|s| std::mem::take(&mut s.borrow_mut().spare));
    if spare.capacity() == 0 {
        Vec::with_capacity(256 * 1024)
    } else {
        spare
    }
}

/// Compresses `plain` into one zstd frame and hands it to `write`, with this thread's reused
/// context and buffers; `plain` is kept for the next spool.
fn compress_with(
    mut plain: Vec<u8>,
    write: impl FnOnce(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    SEALER.with(|s| {
        let mut s = s.borrow_mut();
        let Sealer {
            compressor,
            out,
            spare,
        } = &mut *s;
        let compressor = match compressor {
            Some(c) => c,
            None => compressor.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(plain.len()));
        compressor.compress_to_buffer(&plain[..], out)?;
        write(out)?;
        plain.clear();
        *spare = plain;
        Ok(())
    })
}

/// `plain` compressed into one zstd frame, with this thread's reused context.
fn compress(plain: &[u8]) -> io::Result<Vec<u8>> {
    let mut compressed = Vec::new();
    compress_with(plain.to_vec(), |c| {
        compressed.extend_from_slice(c);
        Ok(())
    })?;
    Ok(compressed)
}

/// The reading side of [`seal`] and [`sealing_writer`]: decrypts when the bytes are encrypted
/// (with `decryptor`), then decompresses. `name` is the key, for errors.
///
/// # Errors
/// [`kars_backup_core::Error::KeyMissing`] for an encrypted object without a decryptor, the
/// decryptor's errors, and I/O errors.
pub fn opening_reader(
    name: &str,
    input: Box<dyn Read + Send>,
    decryptor: Option<&DynDecryptor>,
) -> kars_backup_core::Result<Box<dyn Read + Send>> {
    Ok(open_sealed(name, input, decryptor)?.0)
}

/// [`opening_reader`], also saying whether the object was encrypted.
///
/// # Errors
/// As [`opening_reader`].
pub fn open_sealed(
    name: &str,
    mut input: Box<dyn Read + Send>,
    decryptor: Option<&DynDecryptor>,
) -> kars_backup_core::Result<(Box<dyn Read + Send>, bool)> {
    let mut magic = [0u8; 40];
    let mut n = 0;
    while n < magic.len() {
        match input.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(kars_backup_core::Error::generic(name, e)),
        }
    }
    let head = magic[..n].to_vec();
    let input: Box<dyn Read + Send> = Box::new(io::Cursor::new(head.clone()).chain(input));
    let encrypted = EncryptionScheme::detect(&head).is_some();
    let plain = match EncryptionScheme::detect(&head) {
        None => input,
        Some(scheme) => match decryptor {
            Some(d) => d.decrypt(
                Sealed {
                    name,
                    scheme,
                    info: None,
                },
                input,
            )?,
            None => {
                return Err(kars_backup_core::Error::KeyMissing {
                    name: name.to_string(),
                    reason: format!(
                        "it is encrypted with {scheme} and no decryption keys were given (--identity or --passphrase-file)"
                    ),
                });
            }
        },
    };
    let decoder =
        zstd::Decoder::new(plain).map_err(|e| kars_backup_core::Error::generic(name, e))?;
    Ok((Box::new(decoder), encrypted))
}

/// A `Write` into a shared buffer (the encryptor wants an owned writer).
#[derive(Debug, Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Plain(Box<dyn Write + Send>);

impl Write for Plain {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl kars_backup_core::compress::FinishWrite for Plain {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

struct ZstdSeal(Option<zstd::Encoder<'static, Box<dyn kars_backup_core::compress::FinishWrite>>>);

impl Write for ZstdSeal {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(e) => e.write(buf),
            None => Err(io::Error::other("write after finish")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Some(e) => e.flush(),
            None => Ok(()),
        }
    }
}

impl kars_backup_core::compress::FinishWrite for ZstdSeal {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        match self.0.take() {
            Some(e) => e.finish()?.finish(),
            None => Ok(()),
        }
    }
}

const POSITION_SIZE: usize = 4 + 4 * 7;

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_position(out: &mut Vec<u8>, p: Option<&WalPosition>) {
    match p {
        None => out.extend_from_slice(&[0u8; POSITION_SIZE]),
        Some(p) => {
            let h = &p.header;
            put32(out, 1 | (u32::from(h.big_endian) << 1));
            for v in [
                h.page_size,
                h.checkpoint_seq,
                h.salt1,
                h.salt2,
                p.frames,
                p.checksum.0,
                p.checksum.1,
            ] {
                put32(out, v);
            }
        }
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("it ends in the middle of a record (truncated)".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn position(&mut self) -> Result<Option<WalPosition>, String> {
        let flags = self.u32()?;
        let v: Vec<u32> = (0..7).map(|_| self.u32()).collect::<Result<_, _>>()?;
        if flags & 1 == 0 {
            return Ok(None);
        }
        // The header checksum is not stored: it is the seed of frame 1, which a resuming
        // replicator never needs (it resumes after a frame, from that frame's checksum).
        Ok(Some(WalPosition {
            header: WalHeader {
                big_endian: flags & 2 != 0,
                page_size: v[0],
                checkpoint_seq: v[1],
                salt1: v[2],
                salt2: v[3],
                checksum: (0, 0),
            },
            frames: v[4],
            checksum: (v[5], v[6]),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored format's CRC-64/GO-ISO: `crc-fast` (SIMD) gives exactly what the `crc`
    /// crate's table-driven one gives, for whole inputs and streamed in pieces.
    #[test]
    fn crc64_is_crc_64_go_iso() {
        let reference = crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO);
        assert_eq!(crc64_of(b"123456789"), 0xb909_56c7_75a4_1001);
        assert_eq!(reference.checksum(b"123456789"), 0xb909_56c7_75a4_1001);
        let mut data = vec![0u8; 70_000];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for len in [
            0, 1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 63, 64, 127, 128, 255, 256, 257, 511, 512, 1000,
            4096, 4100, 65_536, 70_000,
        ] {
            let input = &data[..len];
            let want = reference.checksum(input);
            assert_eq!(crc64_of(input), want, "{len} bytes");
            for split in [0, 1, 4, len / 3, len / 2, len.saturating_sub(1)] {
                let split = split.min(len);
                let mut d = crc64();
                d.update(&input[..split]);
                d.update(&input[split..]);
                assert_eq!(d.finalize(), want, "{len} bytes split at {split}");
            }
        }
        for pgno in [1u32, 2, 1000, u32::MAX] {
            for size in [512usize, 4096, 65_536] {
                let page = &data[..size];
                let mut d = reference.digest();
                d.update(&pgno.to_be_bytes());
                d.update(page);
                assert_eq!(page_hash(pgno, page), d.finalize(), "page {pgno} of {size}");
            }
        }
    }

    fn sample() -> Segment {
        Segment {
            page_size: 512,
            checksum_before: 7,
            wal_after: None,
            commits: vec![
                Commit {
                    txid: 5,
                    observed_us: 1_700_000_000_000_001,
                    db_size: 3,
                    checksum_after: 9,
                    pages: vec![(1, vec![1; 512]), (3, vec![3; 512])],
                },
                Commit {
                    txid: 6,
                    observed_us: 1_700_000_000_000_002,
                    db_size: 2,
                    checksum_after: 10,
                    pages: vec![],
                },
            ],
        }
    }

    #[test]
    fn segments_round_trip_and_damage_is_detected() {
        let s = sample();
        let mut bytes = s.encode();
        assert_eq!(Segment::decode(&bytes).unwrap(), s);
        let sealed = seal(&bytes, None).unwrap();
        let mut plain = Vec::new();
        opening_reader("k", Box::new(io::Cursor::new(sealed)), None)
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, bytes);
        bytes[100] ^= 1;
        assert!(Segment::decode(&bytes).unwrap_err().contains("CRC"));
    }

    /// `s` written through a spool (each commit announced with checksum 0, set at its end)
    /// and sealed; the plain bytes read back.
    fn spooled(dir: &std::path::Path, s: &Segment) -> Vec<u8> {
        let mut spool = SegmentSpool::new(dir, s.page_size, s.checksum_before).unwrap();
        for c in &s.commits {
            spool
                .begin_commit(&CommitHeader {
                    txid: c.txid,
                    observed_us: c.observed_us,
                    db_size: c.db_size,
                    pages: c.pages.len() as u32,
                    checksum_after: 0,
                })
                .unwrap();
            for (pgno, page) in &c.pages {
                spool.page(*pgno, page).unwrap();
            }
            spool.end_commit(c.checksum_after).unwrap();
        }
        let sealed = spool.seal(None).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert_eq!(names.len(), 1, "only the sealed file is left: {names:?}");
        let bytes = std::fs::read(&sealed.path).unwrap();
        assert_eq!(sealed.size, bytes.len() as u64);
        let mut plain = Vec::new();
        opening_reader("k", Box::new(io::Cursor::new(bytes)), None)
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        plain
    }

    #[test]
    fn a_spool_past_its_memory_moves_to_a_file_and_seals_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let page = |n: u32| (n, vec![n as u8; 65_536]);
        let s = Segment {
            page_size: 65_536,
            checksum_before: 3,
            wal_after: None,
            commits: vec![
                // In memory, its checksum set there.
                Commit {
                    txid: 1,
                    observed_us: 10,
                    db_size: 80,
                    checksum_after: 11,
                    pages: (1..=10).map(page).collect(),
                },
                // Past SPOOL_MEMORY in its middle: the rest and its checksum go to the file.
                Commit {
                    txid: 2,
                    observed_us: 20,
                    db_size: 80,
                    checksum_after: 12,
                    pages: (11..=80).map(page).collect(),
                },
            ],
        };
        assert!(s.plain_size() > SPOOL_MEMORY);
        assert_eq!(spooled(dir.path(), &s), s.encode());
    }

    #[test]
    fn spooled_segments_are_byte_for_byte_segments_and_stream_back() {
        let s = sample();
        let dir = tempfile::tempdir().unwrap();
        let plain = spooled(dir.path(), &s);
        assert_eq!(plain, s.encode());

        let mut r = SegmentReader::new(&plain[..]).unwrap();
        assert_eq!((r.header.first, r.header.last, r.header.commits), (5, 6, 2));
        let first = r.next_commit().unwrap().unwrap();
        assert_eq!((first.txid, first.pages, first.checksum_after), (5, 2, 9));
        let mut page = vec![0; 512];
        assert_eq!(r.next_page(&mut page).unwrap(), Some(1));
        assert_eq!(page, vec![1; 512]);
        // The second page is skipped by asking for the next commit.
        assert_eq!(r.next_commit().unwrap().unwrap().txid, 6);
        r.finish().unwrap();
        let mut bad = plain.clone();
        bad[SEGMENT_HEADER_SIZE + 40] ^= 1;
        let err = SegmentReader::new(&bad[..]).unwrap().finish().unwrap_err();
        assert!(err.to_string().contains("CRC"), "{err}");
        let err = SegmentReader::new(&plain[..plain.len() - 20])
            .unwrap()
            .finish()
            .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn the_checksum_follows_pages_and_truncation() {
        let mut a = DbChecksum::default();
        a.set_page(1, &[1; 64]);
        a.set_page(2, &[2; 64]);
        a.set_page(3, &[3; 64]);
        a.set_page(2, &[9; 64]);
        a.set_size(2);
        let mut b = DbChecksum::default();
        b.set_page(2, &[9; 64]);
        b.set_page(1, &[1; 64]);
        assert_eq!(a.value(), b.value());
        assert_eq!(a.value(), page_hash(1, &[1; 64]) ^ page_hash(2, &[9; 64]));
    }

    #[test]
    fn snapshots_round_trip() {
        let header = SnapshotHeader {
            page_size: 512,
            page_count: 3,
            txid: 0,
            time_us: 1,
            wal: None,
        };
        let mut w = SnapshotWriter::new(Vec::new(), header).unwrap();
        for i in 0..3u8 {
            w.page(&[i; 512]).unwrap();
        }
        let (bytes, sum) = w.finish().unwrap();
        let mut r = SnapshotReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header, header);
        let mut page = vec![0; 512];
        while r.next_page(&mut page).unwrap() {}
        assert_eq!(r.into_checksum().value(), sum.value());
        let mut bad = bytes.clone();
        bad[SnapshotHeader::SIZE + 3] ^= 1;
        let mut r = SnapshotReader::new(&bad[..]).unwrap();
        let err = loop {
            match r.next_page(&mut page) {
                Ok(true) => {}
                Ok(false) => panic!("damage not found"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
