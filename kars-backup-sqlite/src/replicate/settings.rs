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
