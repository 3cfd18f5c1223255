//! The WAL archive's names: PostgreSQL's WAL file names ([`WalName`]) and the keys they are
//! stored under ([`StoredWal`]), below [`postgres_chain_prefix`]. Every key of the archive is
//! made and parsed here.
//!
//! ```text
//! <chain>/wal/<TLI>/<SEGMENT>-<SHA256>.zst[.age|.gpg]              complete segment
//! <chain>/wal/<TLI>/<SEGMENT>.partial.zst[.age|.gpg]                segment still being written
//! <chain>/wal/<TLI>/<TLI>.history-<SHA256>.zst[.age|.gpg]           timeline history
//! <chain>/wal/<TLI>/<SEGMENT>.<OFFSET>.backup-<SHA256>.zst[.age|.gpg] backup label
//! <chain>/wal/segment-size-<BYTES>                                  WAL segment size, when not 16 MiB
//! ```
//!
//! The segment-size marker is empty: its key says it all, so that one listing of the archive
//! tells how to number its segments.

use kars_backup_core::EncryptionScheme;
use kars_backup_core::layout::{CHAIN_PREFIX, postgres_chain_prefix};

/// The default WAL segment size (`initdb --wal-segsize` changes it).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// The compression suffix of every stored WAL file.
const ZSTD_SUFFIX: &str = ".zst";

/// What a WAL file is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalKind {
    /// A complete segment: `000000010000000000000003`.
    Segment,
    /// A segment still being written (`pg_receivewal`), or the last one of an old timeline:
    /// `000000010000000000000003.partial`.
    Partial,
    /// A timeline history file: `00000002.history`.
    History,
    /// A backup label: `000000010000000000000003.00000028.backup`.
    Backup,
}

/// A PostgreSQL WAL file name, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct WalName {
    /// The timeline.
    pub timeline: u32,
    /// The segment's `log` and `seg` parts (zero for history files).
    pub log: u32,
    /// See `log`.
    pub seg: u32,
    /// What it is.
    pub kind: WalKind,
    /// The name as PostgreSQL writes it.
    pub name: String,
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

fn segment_parts(s: &str) -> Option<(u32, u32, u32)> {
    if s.len() != 24 {
        return None;
    }
    Some((hex8(&s[..8])?, hex8(&s[8..16])?, hex8(&s[16..])?))
}

impl WalName {
    /// Parses a WAL file name (a segment, `.partial`, `.history` or `.backup`); `None` for
    /// anything else.
    ///
    /// ```
    /// use kars_backup_postgres::wal::{WalKind, WalName};
    /// let n = WalName::parse("000000020000000100000003").unwrap();
    /// assert_eq!((n.timeline, n.log, n.seg, n.kind), (2, 1, 3, WalKind::Segment));
    /// assert_eq!(WalName::parse("00000002.history").unwrap().kind, WalKind::History);
    /// assert!(WalName::parse("RECOVERYXLOG").is_none());
    /// ```
    pub fn parse(name: &str) -> Option<WalName> {
        let make = |kind, (timeline, log, seg)| WalName {
            timeline,
            log,
            seg,
            kind,
            name: name.to_string(),
        };
        if let Some(seg) = name.strip_suffix(".partial") {
            return Some(make(WalKind::Partial, segment_parts(seg)?));
        }
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(make(WalKind::History, (hex8(tli)?, 0, 0)));
        }
        if let Some(label) = name.strip_suffix(".backup") {
            let (seg, offset) = label.split_once('.')?;
            hex8(offset)?;
            return Some(make(WalKind::Backup, segment_parts(seg)?));
        }
        Some(make(WalKind::Segment, segment_parts(name)?))
    }

    /// The name of a segment: timeline, and number for `segment_size`.
    pub fn segment(timeline: u32, segno: u64, segment_size: u64) -> WalName {
        let per_log = segments_per_log(segment_size);
        let log = u32::try_from(segno / per_log).unwrap_or(u32::MAX);
        let seg = u32::try_from(segno % per_log).unwrap_or(u32::MAX);
        WalName {
            timeline,
            log,
            seg,
            kind: WalKind::Segment,
            name: format!("{timeline:08X}{log:08X}{seg:08X}"),
        }
    }

    /// The segment's number for `segment_size` (its position in the WAL, across timelines).
    pub fn segno(&self, segment_size: u64) -> u64 {
        u64::from(self.log) * segments_per_log(segment_size) + u64::from(self.seg)
    }

    /// The plain segment name (`.partial` and `.backup` stripped; history files keep theirs).
    pub fn segment_name(&self) -> String {
        match self.kind {
            WalKind::History => self.name.clone(),
            _ => format!("{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg),
        }
    }

    /// Whether the stored key carries the file's checksum (all but `.partial`, which is
    /// replaced as it grows).
    pub fn has_checksum(&self) -> bool {
        self.kind != WalKind::Partial
    }
}

fn segments_per_log(segment_size: u64) -> u64 {
    (0x1_0000_0000 / segment_size.max(1)).max(1)
}

/// The prefix of a cluster's WAL: `.kars-chains/postgres/<system-id>/wal/`.
pub fn wal_prefix(system_identifier: u64) -> String {
    format!("{}wal/", postgres_chain_prefix(system_identifier))
}

/// The prefix of one timeline's WAL: `…/wal/<TLI>/`.
pub fn timeline_prefix(system_identifier: u64, timeline: u32) -> String {
    format!("{}{timeline:08X}/", wal_prefix(system_identifier))
}

/// The key that records the WAL segment size of cluster `system_identifier` (written only for
/// sizes other than [`DEFAULT_SEGMENT_SIZE`]).
pub fn segment_size_key(system_identifier: u64, segment_size: u64) -> String {
    format!("{}{segment_size}", segment_size_prefix(system_identifier))
}

/// The prefix of [`segment_size_key`]s of cluster `system_identifier`.
pub(crate) fn segment_size_prefix(system_identifier: u64) -> String {
    format!("{}{SEGMENT_SIZE_MARKER}", wal_prefix(system_identifier))
}

/// The file name prefix of the segment-size marker.
const SEGMENT_SIZE_MARKER: &str = "segment-size-";

/// The cluster and segment size a [`segment_size_key`] records; `None` for any other key.
pub fn parse_segment_size_key(key: &str) -> Option<(u64, u64)> {
    let rest = key.strip_prefix(CHAIN_PREFIX)?.strip_prefix("postgres/")?;
    let (sysid, rest) = rest.split_once('/')?;
    let size = rest
        .strip_prefix("wal/")?
        .strip_prefix(SEGMENT_SIZE_MARKER)?;
    let sysid: u64 = sysid.parse().ok()?;
    let size: u64 = size.parse().ok()?;
    (size.is_power_of_two() && segment_size_key(sysid, size) == key).then_some((sysid, size))
}

/// One stored WAL file, as its key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWal {
    /// The cluster.
    pub system_identifier: u64,
    /// The WAL file.
    pub wal: WalName,
    /// SHA-256 of the original file, lowercase hex (`None` for `.partial`).
    pub sha256: Option<String>,
    /// How it is encrypted, if it is.
    pub encryption: Option<EncryptionScheme>,
    /// The key.
    pub key: String,
}

impl StoredWal {
    /// The key of `wal` of cluster `system_identifier`, with the file's checksum (ignored for
    /// `.partial`) and encryption.
    ///
    /// ```
    /// use kars_backup_postgres::wal::{StoredWal, WalName};
    /// let wal = WalName::parse("000000010000000000000003").unwrap();
    /// let s = StoredWal::new(7, wal, Some("ab".repeat(32)), None);
    /// assert_eq!(s.key, format!(".kars-chains/postgres/7/wal/00000001/000000010000000000000003-{}.zst", "ab".repeat(32)));
    /// assert_eq!(StoredWal::parse(&s.key), Some(s));
    /// ```
    pub fn new(
        system_identifier: u64,
        wal: WalName,
        sha256: Option<String>,
        encryption: Option<EncryptionScheme>,
    ) -> StoredWal {
        let sha256 = if wal.has_checksum() { sha256 } else { None };
        let mut key = timeline_prefix(system_identifier, wal.timeline);
        key.push_str(&wal.name);
        if let Some(sha) = &sha256 {
            key.push('-');
            key.push_str(sha);
        }
        key.push_str(ZSTD_SUFFIX);
        if let Some(e) = encryption {
            key.push_str(e.extension());
        }
        StoredWal {
            system_identifier,
            wal,
            sha256,
            encryption,
            key,
        }
    }

    /// Parses a key of the WAL archive; `None` for any other key (including temporary files).
    pub fn parse(key: &str) -> Option<StoredWal> {
        let rest = key.strip_prefix(CHAIN_PREFIX)?.strip_prefix("postgres/")?;
        let mut parts = rest.split('/');
        let system_identifier: u64 = parts.next()?.parse().ok()?;
        if parts.next()? != "wal" {
            return None;
        }
        let timeline = hex8(parts.next()?)?;
        let file = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let (file, encryption) = match EncryptionScheme::from_name(file) {
            Some(e) => (file.strip_suffix(e.extension())?, Some(e)),
            None => (file, None),
        };
        let file = file.strip_suffix(ZSTD_SUFFIX)?;
        let (name, sha256) = if file.ends_with(".partial") {
            (file, None)
        } else {
            let (name, sha) = file.rsplit_once('-')?;
            let hex = sha.len() == 64
                && sha
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex {
                return None;
            }
            (name, Some(sha.to_string()))
        };
        let wal = WalName::parse(name)?;
        if wal.timeline != timeline {
            return None;
        }
        let parsed = StoredWal::new(system_identifier, wal, sha256, encryption);
        (parsed.key == key).then_some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_number() {
        let s = WalName::parse("0000000100000002000000FF").unwrap();
        assert_eq!(s.segno(DEFAULT_SEGMENT_SIZE), 2 * 256 + 255);
        assert_eq!(
            WalName::segment(1, 2 * 256 + 255, DEFAULT_SEGMENT_SIZE).name,
            "0000000100000002000000FF"
        );
        let p = WalName::parse("000000010000000000000003.partial").unwrap();
        assert_eq!(p.kind, WalKind::Partial);
        assert_eq!(p.segment_name(), "000000010000000000000003");
        let b = WalName::parse("000000010000000000000003.00000028.backup").unwrap();
        assert_eq!(b.kind, WalKind::Backup);
        for bad in [
            "",
            "00000001000000000000003",
            "0000000100000000000000GG",
            "0000001.history",
            "000000010000000000000003.0000028.backup",
            "000000010000000000000003.x",
        ] {
            assert!(WalName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn segment_size_markers_round_trip() {
        let key = segment_size_key(42, 64 << 20);
        assert_eq!(key, ".kars-chains/postgres/42/wal/segment-size-67108864");
        assert_eq!(parse_segment_size_key(&key), Some((42, 64 << 20)));
        assert!(StoredWal::parse(&key).is_none());
        for bad in [
            ".kars-chains/postgres/42/wal/segment-size-3",
            ".kars-chains/postgres/42/wal/segment-size-",
            ".kars-chains/postgres/x/wal/segment-size-67108864",
            ".kars-chains/postgres/42/wal/00000001/segment-size-67108864",
        ] {
            assert_eq!(parse_segment_size_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_round_trip_and_reject_others() {
        let sha = "0123456789abcdef".repeat(4);
        for (name, enc) in [
            ("000000010000000000000003", None),
            (
                "000000010000000000000003.partial",
                Some(EncryptionScheme::Age),
            ),
            ("00000002.history", Some(EncryptionScheme::OpenPgp)),
            ("000000010000000000000003.00000028.backup", None),
        ] {
            let s = StoredWal::new(42, WalName::parse(name).unwrap(), Some(sha.clone()), enc);
            assert_eq!(StoredWal::parse(&s.key).as_ref(), Some(&s), "{}", s.key);
        }
        let partial = StoredWal::new(
            42,
            WalName::parse("000000010000000000000003.partial").unwrap(),
            None,
            None,
        );
        assert_eq!(
            partial.key,
            ".kars-chains/postgres/42/wal/00000001/000000010000000000000003.partial.zst"
        );
        for bad in [
            ".kars-chains/postgres/42/wal/00000001/000000010000000000000003.zst",
            ".kars-chains/postgres/42/wal/00000002/000000010000000000000003.partial.zst",
            ".kars-chains/postgres/42/wal/00000001/.kars-tmp-000000010000000000000003.partial.zst-1",
            ".kars-chains/postgres/x/wal/00000001/000000010000000000000003.partial.zst",
            "asset-data-20241218-020000.tar.gz",
        ] {
            assert!(StoredWal::parse(bad).is_none(), "{bad}");
        }
    }
}
