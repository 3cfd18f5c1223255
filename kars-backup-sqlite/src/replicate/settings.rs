//! How a replication runs, as the operator gives it: a configuration file's `[job.replicate]`
//! or `kars-backup replicate`'s flags (`clap` feature). `Option` fields, so that "not given"
//! lets the next layer decide; [`ReplicationSettings::resolve`] fills a [`ReplicateOptions`].
//!
//! ```
//! use std::time::Duration;
//! use kars_backup_sqlite::replicate::{ReplicateOptions, ReplicationSettings};
//!
//! let settings = ReplicationSettings {
//!     sync_interval: Some(Duration::from_millis(250)),
//!     ..ReplicationSettings::default()
//! };
//! let options = settings.resolve(ReplicateOptions::default());
//! assert_eq!(options.sync_interval, Duration::from_millis(250));
//! assert_eq!(options.snapshot_interval, Duration::from_secs(24 * 3600)); // the default
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::compact::CompactOptions;
use super::replicator::{ReplicateOptions, parse_interval};

/// The operator's settings of a replication; what is not given keeps [`ReplicateOptions`]'
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Replication"))]
pub struct ReplicationSettings {
    /// How often the commits seen are uploaded as one segment (each commit keeps its own
    /// time): 250ms, 1s, 5s [default: 1s].
    #[serde(default, deserialize_with = "opt_interval")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "INTERVAL", value_parser = parse_interval))]
    pub sync_interval: Option<Duration>,

    /// How often a new snapshot is taken [default: 24h].
    #[serde(default, deserialize_with = "opt_interval")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "INTERVAL", value_parser = parse_interval))]
    pub snapshot_interval: Option<Duration>,

    /// Keep segments and snapshots so that any instant of this last stretch can be restored
    /// (back to the newest snapshot at or before its start); older ones are deleted at start
    /// and hourly: 7d, 36h [default: keep everything].
    #[serde(default, deserialize_with = "opt_interval")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "WINDOW", value_parser = parse_interval))]
    pub pitr_window: Option<Duration>,

    /// Merge the small segments of each stretch of this length into larger ones (each commit
    /// keeps its own time), at start and then once per stretch: 1h, 6h [default: 1h; unencrypted
    /// chains only].
    #[serde(default, deserialize_with = "opt_interval")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "SPAN", value_parser = parse_interval, conflicts_with = "no_compaction"))]
    pub compact_every: Option<Duration>,

    /// Do not compact segments.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_compaction: bool,

    /// Switch a rollback-journal database to WAL mode first (persistent; safe while the
    /// application runs) instead of refusing it.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long))]
    pub enable_wal: bool,
}

impl ReplicationSettings {
    /// `base` with every setting given here.
    #[must_use]
    pub fn resolve(&self, mut base: ReplicateOptions) -> ReplicateOptions {
        if let Some(d) = self.sync_interval {
            base.sync_interval = d;
        }
        if let Some(d) = self.snapshot_interval {
            base.snapshot_interval = d;
        }
        base.enable_wal |= self.enable_wal;
        if self.pitr_window.is_some() {
            base.pitr_window = self.pitr_window;
        }
        if self.no_compaction {
            base.compaction = None;
        } else if let Some(span) = self.compact_every {
            let compaction = base.compaction.get_or_insert_with(CompactOptions::default);
            compaction.span = span;
        }
        base
    }

    /// `self`'s settings where given, else `file`'s (a flag wins over the file).
    #[must_use]
    pub fn or(self, file: Option<&ReplicationSettings>) -> ReplicationSettings {
        let Some(file) = file else { return self };
        ReplicationSettings {
            sync_interval: self.sync_interval.or(file.sync_interval),
            snapshot_interval: self.snapshot_interval.or(file.snapshot_interval),
            enable_wal: self.enable_wal || file.enable_wal,
            pitr_window: self.pitr_window.or(file.pitr_window),
            compact_every: self.compact_every.or(file.compact_every),
            no_compaction: self.no_compaction || file.no_compaction,
        }
    }
}

fn opt_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse_interval(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_wins_over_the_file_which_wins_over_the_default() {
        let file: ReplicationSettings =
            serde_json::from_str(r#"{"sync-interval":"5s","snapshot-interval":"1h"}"#).unwrap();
        let flags = ReplicationSettings {
            sync_interval: Some(Duration::from_millis(250)),
            ..ReplicationSettings::default()
        };
        let options = flags.or(Some(&file)).resolve(ReplicateOptions::default());
        assert_eq!(options.sync_interval, Duration::from_millis(250));
        assert_eq!(options.snapshot_interval, Duration::from_secs(3600));
        assert!(!options.enable_wal);
        assert_eq!(options.pitr_window, None);
        assert_eq!(
            options.compaction.map(|c| c.span),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn the_window_and_compaction_come_from_the_file_or_the_flags() {
        let file: ReplicationSettings =
            serde_json::from_str(r#"{"pitr-window":"7d","compact-every":"6h"}"#).unwrap();
        let options = ReplicationSettings::default()
            .or(Some(&file))
            .resolve(ReplicateOptions::default());
        assert_eq!(options.pitr_window, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(
            options.compaction.map(|c| c.span),
            Some(Duration::from_secs(6 * 3600))
        );
        let off = ReplicationSettings {
            no_compaction: true,
            ..ReplicationSettings::default()
        };
        assert!(
            off.or(Some(&file))
                .resolve(ReplicateOptions::default())
                .compaction
                .is_none()
        );
    }

    #[test]
    fn a_bad_interval_in_the_file_is_an_error_naming_it() {
        let err = serde_json::from_str::<ReplicationSettings>(r#"{"sync-interval":"fast"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fast"), "{err}");
        let err = serde_json::from_str::<ReplicationSettings>(r#"{"sync":"1s"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
