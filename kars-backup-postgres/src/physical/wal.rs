//! WAL positions and names: LSNs (`0/2000028`), segment file names
//! (`000000010000000000000002`), and the `recovery_target_time` form PostgreSQL accepts.

use std::fmt;

use chrono::{DateTime, Utc};

/// A position in the write-ahead log (`XLogRecPtr`), written `X/Y` in hexadecimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `0/2000028`.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// The name of the WAL segment of timeline `timeline` that holds the byte at `lsn`.
pub fn segment_name(timeline: u32, lsn: Lsn, segment_size: u64) -> String {
    segment_file(timeline, lsn.0 / segment_size.max(1), segment_size)
}

/// The name of the WAL segment that holds the last byte before `lsn` (the segment a record
/// ending exactly at a segment boundary is in), as PostgreSQL's `XLByteToPrevSeg`.
pub fn previous_segment_name(timeline: u32, lsn: Lsn, segment_size: u64) -> String {
    segment_file(
        timeline,
        lsn.0.saturating_sub(1) / segment_size.max(1),
        segment_size,
    )
}

fn segment_file(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per_id = 0x1_0000_0000u64 / segment_size.max(1);
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segno / per_id.max(1),
        segno % per_id.max(1)
    )
}

/// The name of the segment after `name` on the same timeline.
pub fn next_segment_name(name: &str, segment_size: u64) -> Option<String> {
    if !is_segment_name(name) {
        return None;
    }
    let field = |r: std::ops::Range<usize>| u64::from_str_radix(&name[r], 16).ok();
    let timeline = field(0..8)? as u32;
    let per_id = 0x1_0000_0000u64 / segment_size.max(1);
    let segno = field(8..16)? * per_id + field(16..24)?;
    Some(segment_file(timeline, segno + 1, segment_size))
}

/// Whether `name` is a WAL segment file name (24 hexadecimal digits).
pub fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `t` as `recovery_target_time` takes it: `YYYY-MM-DD HH:MM:SS.ffffff+00` (PostgreSQL rejects
/// RFC 3339's `T…Z`; the microseconds are kept, since targets are compared at commit records
/// to the microsecond).
pub fn recovery_target_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn lsns_and_segments() {
        let lsn = Lsn::parse("0/2000028").unwrap();
        assert_eq!(lsn.0, 0x2000028);
        assert_eq!(lsn.to_string(), "0/2000028");
        let mb16 = 16 * 1024 * 1024;
        assert_eq!(segment_name(1, lsn, mb16), "000000010000000000000002");
        assert_eq!(
            segment_name(2, Lsn::parse("1/FF000000").unwrap(), mb16),
            "0000000200000001000000FF"
        );
        // A record that ends at a segment boundary is in the previous segment.
        assert_eq!(
            previous_segment_name(1, Lsn::parse("0/3000000").unwrap(), mb16),
            "000000010000000000000002"
        );
        assert_eq!(
            segment_name(1, Lsn::parse("0/3000000").unwrap(), 64 * 1024 * 1024),
            "000000010000000000000000"
        );
        assert!(is_segment_name("000000010000000000000002"));
        assert_eq!(
            next_segment_name("0000000100000000000000FF", mb16).as_deref(),
            Some("000000010000000100000000")
        );
        assert_eq!(
            next_segment_name("000000020000000000000007", mb16).as_deref(),
            Some("000000020000000000000008")
        );
        assert!(!is_segment_name("00000002.history"));
        assert!(Lsn::parse("nope").is_none());
    }

    #[test]
    fn target_times_keep_microseconds() {
        let t = Utc.timestamp_opt(1_764_950_258, 123_456_789).unwrap();
        assert_eq!(recovery_target_time(t), "2025-12-05 15:57:38.123456+00");
        let t = Utc.timestamp_opt(1_764_950_258, 0).unwrap();
        assert_eq!(recovery_target_time(t), "2025-12-05 15:57:38.000000+00");
    }
}
