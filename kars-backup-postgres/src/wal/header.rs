//! The system identifier of a cluster, read from a WAL segment's long page header or from the
//! data directory's `global/pg_control`.

use std::path::Path;

use kars_backup_core::{Error, Result};

/// `XLP_LONG_HEADER`: the page starts with the long header (the first page of a segment).
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of the long page header that are read: the short header (24 bytes with padding),
/// `xlp_sysid` (8), `xlp_seg_size` (4), `xlp_xlog_blcksz` (4).
pub(crate) const LONG_HEADER_LEN: usize = 40;

/// What the first page of a WAL segment says about its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `xlp_sysid`: the cluster's system identifier.
    pub system_identifier: u64,
    /// `xlp_seg_size`: the WAL segment size.
    pub segment_size: u32,
}

/// Reads the long page header at the start of a segment; `None` when the bytes are not one
/// (a file of zeros, a history file). Little-endian, as on every platform PostgreSQL packages.
pub fn segment_header(first_page: &[u8]) -> Option<SegmentHeader> {
    let head = first_page.get(..LONG_HEADER_LEN)?;
    let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap_or_default());
    let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or_default());
    // xlp_magic is 0xD0xx or 0xD1xx for every release since 9.x (PostgreSQL 15: 0xD110).
    let magic = u16_at(0);
    if magic >> 12 != 0xD || u16_at(2) & XLP_LONG_HEADER == 0 {
        return None;
    }
    let system_identifier = u64_at(24);
    let segment_size = u32_at(32);
    (system_identifier != 0 && segment_size.is_power_of_two()).then_some(SegmentHeader {
        system_identifier,
        segment_size,
    })
}

/// The system identifier in `<pgdata>/global/pg_control` (its first field).
///
/// # Errors
/// [`Error::InvalidInput`] when the file cannot be read, naming it.
pub fn pg_control_system_identifier(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global").join("pg_control");
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot read the cluster's system identifier from {}: {e}; run in the data directory (archive_command and restore_command do) or give --system-id",
            path.display()
        ))
    })?;
    let id = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .filter(|id| *id != 0)
        .ok_or_else(|| {
            Error::InvalidInput(format!("{} is not a pg_control file", path.display()))
        })?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_long_header() {
        let mut page = vec![0u8; 8192];
        page[..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&0x0006u16.to_le_bytes());
        page[24..32].copy_from_slice(&7_312_345_678_901_234_567u64.to_le_bytes());
        page[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        assert_eq!(
            segment_header(&page),
            Some(SegmentHeader {
                system_identifier: 7_312_345_678_901_234_567,
                segment_size: 16 << 20
            })
        );
        page[2] = 0;
        assert_eq!(segment_header(&page), None);
        assert_eq!(segment_header(&[0u8; 8192]), None);
        assert_eq!(segment_header(b"1\t0/3000000\tno recovery target"), None);
    }
}
