//! Where a stored chain ends, and the local record that tells it for an encrypted chain.
//!
//! A restarted replicator continues the chain at its destinations when the database still
//! holds exactly the state the chain ends with ([`Tip`]). An unencrypted chain's end is read
//! from its last segment. An encrypted one cannot be read without the private key, which the
//! replicator does not have: it keeps a [`ResumeRecord`] instead, a small file beside the
//! database with the end of every segment it sealed lately (its key and size, generation,
//! last transaction, database checksum and WAL position after it: no page content, no key
//! material). A destination whose newest segment is one of them ends exactly there, because
//! that key and size are what this replicator wrote; anything else (no file, a file of another
//! chain or database, a destination ahead of or behind the file, a garbled file) finds
//! nothing and the replicator starts a new generation. The database is checked against the
//! tip either way before a chain is continued.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keys::ChainKeys;
use super::wal::{WalHeader, WalPosition};

/// The record's format version.
const FORMAT: u32 = 1;

/// How many sealed segments the record remembers: the destinations' newest segment is among
/// them unless every destination failed for about this many sync intervals.
const KEEP: usize = 16;

/// Where a chain stands at a destination: its newest generation's last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tip {
    /// The generation.
    pub(crate) generation: String,
    /// Its last transaction.
    pub(crate) last_txid: u64,
    /// The database checksum after it.
    pub(crate) checksum: u64,
    /// The WAL position after it (the header's checksum left out, as in a segment).
    pub(crate) wal: WalPosition,
}

impl Tip {
    /// A tip at `wal`, compared without the WAL header's checksum (segments do not store it).
    pub(crate) fn new(generation: String, last_txid: u64, checksum: u64, wal: WalPosition) -> Tip {
        let mut wal = wal;
        wal.header.checksum = (0, 0);
        Tip {
            generation,
            last_txid,
            checksum,
            wal,
        }
    }
}

/// One sealed segment's end, as stored in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SealedEnd {
    key: String,
    size: u64,
    generation: String,
    last_txid: u64,
    checksum: u64,
    wal: SavedPosition,
}

/// A [`WalPosition`] in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SavedPosition {
    big_endian: bool,
    page_size: u32,
    checkpoint_seq: u32,
    salt1: u32,
    salt2: u32,
    frames: u32,
    checksum: (u32, u32),
}

impl From<WalPosition> for SavedPosition {
    fn from(p: WalPosition) -> Self {
        SavedPosition {
            big_endian: p.header.big_endian,
            page_size: p.header.page_size,
            checkpoint_seq: p.header.checkpoint_seq,
            salt1: p.header.salt1,
            salt2: p.header.salt2,
            frames: p.frames,
            checksum: p.checksum,
        }
    }
}

impl SavedPosition {
    /// The position recorded (the header's checksum left out, as in a segment).
    fn position(self) -> WalPosition {
        let p = self;
        WalPosition {
            header: WalHeader {
                big_endian: p.big_endian,
                page_size: p.page_size,
                checkpoint_seq: p.checkpoint_seq,
                salt1: p.salt1,
                salt2: p.salt2,
                checksum: (0, 0),
            },
            frames: p.frames,
            checksum: p.checksum,
        }
    }
}

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RecordFile {
    format: u32,
    /// The chain's prefix at the destinations.
    chain: String,
    /// Oldest first.
    sealed: Vec<SealedEnd>,
}

/// The ends of the segments a replicator sealed lately, kept in a file beside the database so
/// that a restart continues an encrypted chain (see the [module](self) documentation).
#[derive(Debug)]
pub(crate) struct ResumeRecord {
    path: PathBuf,
    chain: String,
    sealed: VecDeque<SealedEnd>,
    /// A failed write was logged (once: the replicator goes on without it).
    warned: bool,
}

impl ResumeRecord {
    /// The record of `db` replicated to `destinations` (their descriptions): `<db>-kars-resume-
    /// <8 hex digits of the destinations>.json` beside the database, so that two replicators of
    /// one database to different places keep their own.
    pub(crate) fn path_for(db: &Path, destinations: &[String]) -> PathBuf {
        let mut sorted: Vec<&str> = destinations.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let hash = crc_fast::checksum(
            crc_fast::CrcAlgorithm::Crc32Iscsi,
            sorted.join("\n").as_bytes(),
        );
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(format!("-kars-resume-{hash:08x}.json"));
        db.with_file_name(name)
    }

    /// Reads the record at `path` for the chain `keys`; empty when there is none or it is not
    /// this chain's (logged: the replicator then starts a new generation).
    pub(crate) fn load(path: PathBuf, keys: &ChainKeys) -> ResumeRecord {
        let chain = keys.prefix().to_string();
        let sealed = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<RecordFile>(&bytes) {
                Ok(f) if f.format == FORMAT && f.chain == chain => f.sealed.into(),
                Ok(_) => {
                    tracing::info!(path = %path.display(), "the resume record is of another chain or format; ignoring it");
                    VecDeque::new()
                }
                Err(e) => {
                    tracing::info!(path = %path.display(), error = %e, "the resume record cannot be read; ignoring it");
                    VecDeque::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => {
                tracing::info!(path = %path.display(), error = %e, "the resume record cannot be read; ignoring it");
                VecDeque::new()
            }
        };
        ResumeRecord {
            path,
            chain,
            sealed,
            warned: false,
        }
    }

    /// Where the chain ends if its newest segment is `key` of `size` bytes, as sealed here.
    pub(crate) fn find(&self, key: &str, size: u64) -> Option<Tip> {
        self.sealed
            .iter()
            .rev()
            .find(|e| e.key == key && e.size == size)
            .map(|e| {
                Tip::new(
                    e.generation.clone(),
                    e.last_txid,
                    e.checksum,
                    e.wal.position(),
                )
            })
    }

    /// Remembers a segment sealed as `key` (`size` bytes) that ends at `tip`, before it is
    /// uploaded anywhere.
    pub(crate) fn sealed(&mut self, key: &str, size: u64, tip: &Tip) {
        self.sealed.push_back(SealedEnd {
            key: key.to_string(),
            size,
            generation: tip.generation.clone(),
            last_txid: tip.last_txid,
            checksum: tip.checksum,
            wal: tip.wal.into(),
        });
        while self.sealed.len() > KEEP {
            self.sealed.pop_front();
        }
        self.save();
    }

    /// Forgets every segment (a new generation starts: its snapshot comes first).
    pub(crate) fn clear(&mut self) {
        if !self.sealed.is_empty() {
            self.sealed.clear();
            self.save();
        }
    }

    /// Writes the file whole (a temporary file renamed over it). Not synced: a record older
    /// than the destinations only means a new generation at the next start.
    fn save(&mut self) {
        let file = RecordFile {
            format: FORMAT,
            chain: self.chain.clone(),
            sealed: self.sealed.iter().cloned().collect(),
        };
        let mut temp = self.path.clone().into_os_string();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let written = serde_json::to_vec(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temp, bytes))
            .and_then(|()| std::fs::rename(&temp, &self.path));
        match written {
            Ok(()) => self.warned = false,
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the resume record; an encrypted chain starts a new generation at the next start");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(salt1: u32, frames: u32) -> WalPosition {
        WalPosition {
            header: WalHeader {
                big_endian: false,
                page_size: 4096,
                checkpoint_seq: 3,
                salt1,
                salt2: 77,
                checksum: (5, 6),
            },
            frames,
            checksum: (11, 12),
        }
    }

    #[test]
    fn a_sealed_end_is_found_by_key_and_size_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let keys = ChainKeys::new("app.db");
        let path = ResumeRecord::path_for(&db, &["file:///b".into(), "file:///a".into()]);
        assert_eq!(
            path,
            ResumeRecord::path_for(&db, &["file:///a".into(), "file:///b".into()]),
            "the destinations' order does not matter"
        );
        assert_ne!(path, ResumeRecord::path_for(&db, &["file:///a".into()]));
        let mut record = ResumeRecord::load(path.clone(), &keys);
        assert_eq!(record.find("k1", 10), None);
        let tip = Tip::new("g".into(), 7, 99, position(1, 20));
        assert_eq!(tip.wal.header.checksum, (0, 0));
        record.sealed("k1", 10, &tip);
        for i in 0..KEEP {
            let t = Tip::new("g".into(), 8 + i as u64, 100, position(1, 21));
            record.sealed(&format!("k{}", i + 2), 10, &t);
        }
        let record = ResumeRecord::load(path.clone(), &keys);
        assert_eq!(record.find("k1", 10), None, "bounded: the oldest is gone");
        let tip = Tip::new("g".into(), 8, 100, position(1, 21));
        assert_eq!(record.find("k2", 10), Some(tip));
        assert_eq!(
            record.find("k2", 11),
            None,
            "another size is another object"
        );
        // Another chain's record, or a garbled one, finds nothing.
        let other = ResumeRecord::load(path.clone(), &ChainKeys::new("other.db"));
        assert_eq!(other.find("k2", 10), None);
        std::fs::write(&path, b"{\"format\":1,").unwrap();
        assert_eq!(ResumeRecord::load(path.clone(), &keys).find("k2", 10), None);
        // Nothing secret in it: positions, checksums, keys.
        let mut record = ResumeRecord::load(path.clone(), &keys);
        record.sealed("k3", 10, &Tip::new("g".into(), 9, 1, position(2, 1)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"last-txid\":9"), "{text}");
        record.clear();
        assert_eq!(ResumeRecord::load(path, &keys).find("k3", 10), None);
    }
}
