//! [`wal_path`]: the WAL a restore from a base backup replays, followed across timelines, and
//! the first segment missing on the way.

use std::collections::HashMap;

use kars_backup_core::{DynBackupSink, DynDecryptor, Error, Result};

use super::chain::{HistoryEntry, chains_from_listing, parse_history};
use super::fetch::{FetchOptions, FetchOutcome, fetch_wal};
use super::keys::{StoredWal, WalKind, WalName, wal_prefix};

/// One timeline's part of a [`WalPath`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PathStep {
    /// The timeline.
    pub timeline: u32,
    /// Its first segment replayed.
    pub first: String,
    /// Its last segment available without a gap (`None` when none is).
    pub last: Option<String>,
}

/// The WAL a restore can replay from a start segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WalPath {
    /// The timeline restored onto (the newest archived unless one was asked for).
    pub timeline: u32,
    /// The timelines crossed, in order.
    pub steps: Vec<PathStep>,
    /// The last segment available without a gap from the start.
    pub last: Option<String>,
    /// Whether `last` is only there as a `.partial` (a streaming receiver's newest WAL).
    pub last_is_partial: bool,
    /// The first segment missing while later WAL of the path is archived: a restore cannot
    /// get past it (`None`: the archive is complete up to `last`).
    pub first_missing: Option<String>,
}

/// `X/Y` → LSN.
fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Follows the WAL from `start` (the base backup's first segment, e.g. from its backup label's
/// `START WAL LOCATION … (file …)`) to the end of the archive at `sink`, on `timeline` (default:
/// the newest with a history file, else the start's), through the switch points of the history
/// files: segments before a switch come from the parent timeline, from the switch's segment on
/// from the child.
///
/// # Errors
/// [`Error::InvalidInput`] for a bad start name; [`Error::NotFound`] when the timeline's
/// history file is not archived; storage and decryption failures.
pub async fn wal_path(
    sink: &DynBackupSink,
    system_identifier: u64,
    start: &str,
    timeline: Option<u32>,
    decryptor: Option<DynDecryptor>,
    segment_size: u64,
) -> Result<WalPath> {
    let start = WalName::parse(start)
        .filter(|w| w.kind == WalKind::Segment)
        .ok_or_else(|| Error::InvalidInput(format!("{start:?} is not a WAL segment name")))?;
    // One listing of the cluster's archive answers every question below (a listing per
    // segment would cost thousands of requests on object stores).
    let objects = sink.list(Some(&wal_prefix(system_identifier))).await?;
    let chains = chains_from_listing(&objects, segment_size);
    let chain = chains
        .iter()
        .find(|c| c.system_identifier == system_identifier);
    // (timeline, segment number) → only a `.partial` is stored.
    let mut stored: HashMap<(u32, u64), bool> = HashMap::new();
    for meta in &objects {
        let Some(s) =
            StoredWal::parse(&meta.key).filter(|s| s.system_identifier == system_identifier)
        else {
            continue;
        };
        let key = (s.wal.timeline, s.wal.segno(segment_size));
        match s.wal.kind {
            WalKind::Segment => {
                stored.insert(key, false);
            }
            WalKind::Partial => {
                stored.entry(key).or_insert(true);
            }
            WalKind::History | WalKind::Backup => {}
        }
    }
    let target = timeline.unwrap_or_else(|| {
        chain
            .and_then(|c| {
                c.timelines
                    .iter()
                    .filter(|t| t.history)
                    .map(|t| t.timeline)
                    .max()
            })
            .unwrap_or(start.timeline)
            .max(start.timeline)
    });
    let history = if target > start.timeline {
        read_history(sink, system_identifier, target, decryptor).await?
    } else {
        Vec::new()
    };
    // Timeline i begins where the history says its parent ended.
    let mut begins: Vec<(u32, u64)> = Vec::new();
    let mut begin = 0u64;
    for entry in &history {
        begins.push((entry.parent, begin));
        begin = parse_lsn(&entry.switch_lsn).map_or(begin, |l| l / segment_size);
    }
    begins.push((target, begin));
    begins.retain(|(tli, _)| *tli >= start.timeline);

    let start_segno = start.segno(segment_size);
    let mut path = WalPath {
        timeline: target,
        steps: Vec::new(),
        last: None,
        last_is_partial: false,
        first_missing: None,
    };
    let mut segno = start_segno;
    for (i, (tli, tli_begin)) in begins.iter().enumerate() {
        let end = begins.get(i + 1).map(|(_, b)| *b);
        if end.is_some_and(|e| e <= segno) {
            continue;
        }
        segno = segno.max(*tli_begin);
        let mut step = PathStep {
            timeline: *tli,
            first: WalName::segment(*tli, segno, segment_size).name,
            last: None,
        };
        loop {
            if end.is_some_and(|e| segno >= e) {
                break;
            }
            let name = WalName::segment(*tli, segno, segment_size);
            match stored.get(&(*tli, segno)) {
                Some(partial) => {
                    path.last = Some(name.name.clone());
                    path.last_is_partial = *partial;
                    step.last = Some(name.name.clone());
                    segno += 1;
                    if path.last_is_partial {
                        break;
                    }
                }
                None => {
                    // Missing: a gap if anything later on this path is archived.
                    let later = chain.is_some_and(|c| {
                        c.timelines.iter().any(|t| {
                            t.timeline >= *tli
                                && t.last
                                    .as_deref()
                                    .and_then(WalName::parse)
                                    .is_some_and(|l| l.segno(segment_size) > segno)
                        })
                    });
                    if later {
                        path.first_missing = Some(name.name);
                    }
                    break;
                }
            }
        }
        let stopped =
            path.first_missing.is_some() || path.last_is_partial || end.is_none_or(|e| segno < e);
        path.steps.push(step);
        if stopped {
            break;
        }
    }
    Ok(path)
}

/// Reads and parses a timeline's history file from the archive.
async fn read_history(
    sink: &DynBackupSink,
    system_identifier: u64,
    timeline: u32,
    decryptor: Option<DynDecryptor>,
) -> Result<Vec<HistoryEntry>> {
    let name = format!("{timeline:08X}.history");
    let dir = tempfile::tempdir().map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
    let dest = dir.path().join(&name);
    let options = FetchOptions {
        decryptor,
        system_identifier: Some(system_identifier),
        ..FetchOptions::default()
    };
    match fetch_wal(std::slice::from_ref(sink), &name, &dest, &options).await? {
        FetchOutcome::Fetched(_) => {}
        FetchOutcome::NotFound => {
            return Err(Error::NotFound {
                what: format!(
                    "{name} at {}: without it a restore cannot follow timeline {timeline}",
                    sink.describe()
                ),
            });
        }
    }
    let text = std::fs::read_to_string(&dest).map_err(|e| Error::io("read", &dest, e))?;
    Ok(parse_history(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse() {
        assert_eq!(parse_lsn("0/3000148"), Some(0x300_0148));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("x"), None);
    }
}
