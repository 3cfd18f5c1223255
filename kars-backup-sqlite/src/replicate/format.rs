//! The stored format of a chain: database checksums, segments and snapshots.
//!
//! Documented for operators in `docs/operators/replication-format.md`. All integers are
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

use crc::{CRC_64_GO_ISO, Crc, Digest, Table};
use kars_backup_core::{DynDecryptor, DynEncryptor, EncryptionScheme, Sealed};

use super::wal::{WalHeader, WalPosition};

const CRC: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_GO_ISO);
const SEGMENT_MAGIC: &[u8; 8] = b"KARSSEG1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"KARSSNP1";
/// zstd level of segments and snapshots.
const ZSTD_LEVEL: i32 = 3;

/// The hash of one page in the database checksum.
pub fn page_hash(pgno: u32, page: &[u8]) -> u64 {
    let mut d = CRC.digest();
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
        out.extend_from_slice(SEGMENT_MAGIC);
        put32(&mut out, self.page_size);
        put64(&mut out, self.first());
        put64(&mut out, self.last());
        put64(&mut out, self.checksum_before);
        put_position(&mut out, self.wal_after.as_ref());
        put32(&mut out, self.commits.len() as u32);
        for c in &self.commits {
            put64(&mut out, c.txid);
            put64(&mut out, c.observed_us as u64);
            put32(&mut out, c.db_size);
            put32(&mut out, c.pages.len() as u32);
            put64(&mut out, c.checksum_after);
            for (pgno, page) in &c.pages {
                put32(&mut out, *pgno);
                out.extend_from_slice(page);
            }
        }
        let crc = CRC.checksum(&out);
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
        if CRC.checksum(body) != u64::from_be_bytes(crc.try_into().expect("8 bytes")) {
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
    digest: Digest<'static, u64, Table<16>>,
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
        let mut digest = CRC.digest();
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
    digest: Digest<'static, u64, Table<16>>,
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
        let mut digest = CRC.digest();
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
            let digest = std::mem::replace(&mut self.digest, CRC.digest());
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
    let compressed = zstd::bulk::compress(plain, ZSTD_LEVEL)?;
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
    let inner: Box<dyn kars_backup_core::compress::FinishWrite> = match encryptor {
        Some(e) => e.encrypt(out)?,
        None => Box::new(Plain(out)),
    };
    Ok(Box::new(ZstdSeal(Some(zstd::Encoder::new(
        inner, ZSTD_LEVEL,
    )?))))
}

/// The reading side of [`seal`] and [`sealing_writer`]: decrypts when the bytes are encrypted
/// (with `decryptor`), then decompresses. `name` is the key, for errors.
///
/// # Errors
/// [`kars_backup_core::Error::KeyMissing`] for an encrypted object without a decryptor, the
/// decryptor's errors, and I/O errors.
pub fn opening_reader(
    name: &str,
    mut input: Box<dyn Read + Send>,
    decryptor: Option<&DynDecryptor>,
) -> kars_backup_core::Result<Box<dyn Read + Send>> {
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
    Ok(Box::new(decoder))
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

    #[test]
    fn segments_round_trip_and_damage_is_detected() {
        let s = Segment {
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
        };
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
