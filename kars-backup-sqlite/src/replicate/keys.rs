//! Every key of a replicated database's chain, in one place.
//!
//! ```text
//! <chain>/lease.json                                              the writer's lease
//! <chain>/generations/<generation>/snapshots/<txid>-<time>.snap   a base (the whole database)
//! <chain>/generations/<generation>/segments/<first>-<last>-<time>.seg
//! ```
//!
//! `<chain>` is [`kars_backup_core::layout::sqlite_chain_prefix`] of the database's file name.
//! A generation (`20261205T100000.250000Z-<id>`) is one unbroken chain: a snapshot at transaction
//! `<txid>` (16 hex digits) followed by segments of transactions `<first>`..=`<last>`; times
//! are UTC with microseconds (`20261205T100000.250000Z`): a snapshot's is when its state was
//! read, a segment's is the observed time of its last commit. All parts are fixed-width, so
//! keys sort in chain order.

use chrono::{DateTime, NaiveDateTime, Utc};
use kars_backup_core::layout::sqlite_chain_prefix;

/// The time format in keys.
const TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.6fZ";

/// The keys of one database's chain at a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainKeys {
    prefix: String,
}

/// What a key of a chain is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainKey {
    /// The lease.
    Lease,
    /// A snapshot of a generation.
    Snapshot {
        /// The generation.
        generation: String,
        /// The last transaction it contains (0: the generation's first snapshot).
        txid: u64,
        /// When its state was read.
        time: DateTime<Utc>,
    },
    /// A segment of a generation.
    Segment {
        /// The generation.
        generation: String,
        /// Its first transaction.
        first: u64,
        /// Its last transaction.
        last: u64,
        /// The observed time of its last commit.
        time: DateTime<Utc>,
    },
}

impl ChainKeys {
    /// The chain of the database named `database` (its file name, `assets.db`).
    pub fn new(database: &str) -> Self {
        ChainKeys {
            prefix: sqlite_chain_prefix(database),
        }
    }

    /// The chain's prefix (a directory boundary).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lease object.
    pub fn lease(&self) -> String {
        format!("{}lease.json", self.prefix)
    }

    /// The prefix of every generation.
    pub fn generations(&self) -> String {
        format!("{}generations/", self.prefix)
    }

    /// A snapshot's key.
    pub fn snapshot(&self, generation: &str, txid: u64, time: DateTime<Utc>) -> String {
        format!(
            "{}generations/{generation}/snapshots/{txid:016x}-{}.snap",
            self.prefix,
            time.format(TIME_FORMAT)
        )
    }

    /// A segment's key.
    pub fn segment(&self, generation: &str, first: u64, last: u64, time: DateTime<Utc>) -> String {
        format!(
            "{}generations/{generation}/segments/{first:016x}-{last:016x}-{}.seg",
            self.prefix,
            time.format(TIME_FORMAT)
        )
    }

    /// What `key` is, if it belongs to this chain.
    pub fn parse(&self, key: &str) -> Option<ChainKey> {
        let rest = key.strip_prefix(&self.prefix)?;
        if rest == "lease.json" {
            return Some(ChainKey::Lease);
        }
        let rest = rest.strip_prefix("generations/")?;
        let (generation, rest) = rest.split_once('/')?;
        let generation = generation.to_string();
        if let Some(name) = rest
            .strip_prefix("snapshots/")
            .and_then(|n| n.strip_suffix(".snap"))
        {
            let (txid, time) = name.split_once('-')?;
            return Some(ChainKey::Snapshot {
                generation,
                txid: u64::from_str_radix(txid, 16).ok()?,
                time: parse_time(time)?,
            });
        }
        let name = rest.strip_prefix("segments/")?.strip_suffix(".seg")?;
        let mut parts = name.splitn(3, '-');
        let first = u64::from_str_radix(parts.next()?, 16).ok()?;
        let last = u64::from_str_radix(parts.next()?, 16).ok()?;
        let time = parse_time(parts.next()?)?;
        Some(ChainKey::Segment {
            generation,
            first,
            last,
            time,
        })
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// A new generation's id: its start time to the microsecond and a unique suffix, so ids sort by
/// start (a replicator restarted within the same second starts a later id: seconds alone let the
/// random suffix decide, and `--latest` could pick the older generation).
pub fn new_generation(now: DateTime<Utc>) -> String {
    let run = kars_backup_core::new_run_id();
    let suffix: String = run
        .chars()
        .rev()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("{}-{suffix}", now.format(TIME_FORMAT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_started_within_one_second_sort_by_start() {
        let t = parse_time("20261205T100000.000001Z").unwrap();
        let ids: Vec<String> = (0..50)
            .map(|i| new_generation(t + chrono::Duration::microseconds(i * 997)))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        assert!(ids[0].starts_with("20261205T100000.000001Z-"), "{}", ids[0]);
    }

    #[test]
    fn keys_round_trip_and_sort_in_chain_order() {
        let keys = ChainKeys::new("assets.db");
        let t = DateTime::parse_from_rfc3339("2026-12-05T10:00:00.250Z")
            .unwrap()
            .to_utc();
        let g = new_generation(t);
        assert!(g.starts_with("20261205T100000.250000Z-"), "{g}");
        let snap = keys.snapshot(&g, 0, t);
        assert_eq!(
            snap,
            format!(
                ".kars-chains/sqlite/assets.db/generations/{g}/snapshots/0000000000000000-20261205T100000.250000Z.snap"
            )
        );
        assert_eq!(
            keys.parse(&snap),
            Some(ChainKey::Snapshot {
                generation: g.clone(),
                txid: 0,
                time: t
            })
        );
        let seg = keys.segment(&g, 1, 0x1f, t);
        assert_eq!(
            keys.parse(&seg),
            Some(ChainKey::Segment {
                generation: g.clone(),
                first: 1,
                last: 0x1f,
                time: t
            })
        );
        assert!(keys.segment(&g, 9, 9, t) < keys.segment(&g, 10, 12, t));
        assert_eq!(keys.parse(&keys.lease()), Some(ChainKey::Lease));
        assert_eq!(keys.parse("asset-data-20241218-020000.tar.gz"), None);
    }
}
