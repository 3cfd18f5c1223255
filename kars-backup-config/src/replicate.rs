//! `[job.replicate]`: continuous replication of an SQLite job's database, which `kars-backup
//! daemon` runs next to the scheduled snapshots. The table holds the replicator's own settings
//! (the library's [`ReplicationSettings`], the `replicate` command's flags: `sync-interval`,
//! `snapshot-interval`, `enable-wal`) and the daemon's (`enabled`, `lag-alert`,
//! `wal-reset-alert`) side by side; each value's error is placed at the value.

use std::fmt;
use std::time::Duration;

use kars_backup_sqlite::replicate::{ReplicateOptions, ReplicationSettings, parse_interval};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The default of `lag-alert` (unless the job's `rpo` is shorter).
pub const DEFAULT_LAG_ALERT: Duration = Duration::from_secs(60);

/// The default of `wal-reset-alert`: this many WAL resets within an hour alert.
pub const DEFAULT_WAL_RESET_ALERT: u32 = 3;

/// `[job.replicate]` of an SQLite job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateConfig {
    /// The daemon replicates the database (`enabled`, default: true).
    pub enabled: bool,
    /// The replicator's settings (`sync-interval`, `snapshot-interval`, `enable-wal`), the
    /// `replicate` flags' type.
    pub settings: ReplicationSettings,
    /// Alert when a destination lags this far behind the database (`lag-alert`, e.g. `30s`;
    /// default: the job's `rpo` when shorter than 60 s, else 60 s).
    pub lag_alert: Option<Duration>,
    /// Alert when this many WAL resets (each a new snapshot) happen within an hour
    /// (`wal-reset-alert`, default 3; 0: never).
    pub wal_reset_alert: u32,
}

impl ReplicateConfig {
    /// The lag past which a destination alerts: `lag-alert`, else the shorter of the job's
    /// `rpo` (when it sets one) and [`DEFAULT_LAG_ALERT`].
    pub fn lag_alert_for(&self, rpo: Option<chrono::Duration>) -> Duration {
        self.lag_alert.unwrap_or_else(|| {
            rpo.and_then(|r| r.to_std().ok())
                .filter(|r| !r.is_zero())
                .map_or(DEFAULT_LAG_ALERT, |r| r.min(DEFAULT_LAG_ALERT))
        })
    }

    /// The replicator's options with this table's settings (defaults filled in).
    pub fn options(&self) -> ReplicateOptions {
        self.settings.resolve(ReplicateOptions::default())
    }
}

/// The keys of the table that are not [`ReplicationSettings`]' own.
const OWN: [&str; 3] = ["enabled", "lag-alert", "wal-reset-alert"];

#[derive(Default)]
struct Own {
    enabled: Option<bool>,
    lag_alert: Option<Duration>,
    wal_reset_alert: Option<u32>,
}

impl Own {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "enabled" => self.enabled = Some(map.next_value()?),
            "lag-alert" => self.lag_alert = Some(map.next_value::<Interval>()?.0),
            "wal-reset-alert" => self.wal_reset_alert = Some(map.next_value()?),
            _ => unreachable!("only OWN keys are read here"),
        }
        Ok(())
    }
}

/// An interval as `replicate`'s flags take it (`250ms`, `30s`, `5m`).
struct Interval(Duration);

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_interval(&text)
            .map(Interval)
            .map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ReplicateConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Table;
        impl<'de> Visitor<'de> for Table {
            type Value = ReplicateConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [job.replicate] table")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ReplicateConfig, A::Error> {
                let mut own = Own::default();
                let settings = ReplicationSettings::deserialize(Split {
                    map,
                    own: &mut own,
                    fields: &[],
                })?;
                Ok(ReplicateConfig {
                    enabled: own.enabled.unwrap_or(true),
                    settings,
                    lag_alert: own.lag_alert,
                    wal_reset_alert: own.wal_reset_alert.unwrap_or(DEFAULT_WAL_RESET_ALERT),
                })
            }
        }
        d.deserialize_map(Table)
    }
}

/// The table's entries as [`ReplicationSettings`] sees them: the [`OWN`] keys are taken out on
/// the way (into `own`), the rest passed through, so that the file's deserializer places every
/// error at its key or value.
struct Split<'a, A> {
    map: A,
    own: &'a mut Own,
    fields: &'static [&'static str],
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for Split<'_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.fields = fields;
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Split<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = Some(seed);
        loop {
            let key = self.map.next_key_seed(Router {
                seed: &mut seed,
                fields: self.fields,
            })?;
            match key {
                None => return Ok(None),
                Some(Routed::Theirs(v)) => return Ok(Some(v)),
                Some(Routed::Own(key)) => self.own.read(key, &mut self.map)?,
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

enum Routed<T> {
    Own(&'static str),
    Theirs(T),
}

/// Reads a key: one of [`OWN`], or one of `fields` handed to the settings' own key seed, or an
/// unknown key (an error naming every key the table takes).
struct Router<'a, K> {
    seed: &'a mut Option<K>,
    fields: &'static [&'static str],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for Router<'_, K> {
    type Value = Routed<K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let key = String::deserialize(d)?;
        if let Some(own) = OWN.iter().find(|k| **k == key) {
            return Ok(Routed::Own(own));
        }
        if !self.fields.is_empty() && !self.fields.contains(&key.as_str()) {
            let expected: Vec<String> = self
                .fields
                .iter()
                .chain(OWN.iter())
                .map(|k| format!("`{k}`"))
                .collect();
            return Err(de::Error::custom(format!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            )));
        }
        let seed = self
            .seed
            .take()
            .ok_or_else(|| de::Error::custom("a key was read twice"))?;
        seed.deserialize(key.into_deserializer())
            .map(Routed::Theirs)
    }
}

/// `250ms`, `1s`, `90s`, `5m`, `36h`, `7d`: the largest whole unit.
pub(crate) fn interval_text(d: Duration) -> String {
    let ms = d.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (size, unit) in units {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_back() {
        for text in ["250ms", "1s", "90s", "5m", "36h", "7d"] {
            assert_eq!(interval_text(parse_interval(text).unwrap()), text);
        }
    }

    #[test]
    fn the_lag_alert_defaults_to_the_shorter_of_the_rpo_and_a_minute() {
        let c = ReplicateConfig {
            enabled: true,
            settings: ReplicationSettings::default(),
            lag_alert: None,
            wal_reset_alert: 3,
        };
        assert_eq!(c.lag_alert_for(None), DEFAULT_LAG_ALERT);
        assert_eq!(
            c.lag_alert_for(Some(chrono::Duration::hours(24))),
            DEFAULT_LAG_ALERT
        );
        assert_eq!(
            c.lag_alert_for(Some(chrono::Duration::seconds(10))),
            Duration::from_secs(10)
        );
        let c = ReplicateConfig {
            lag_alert: Some(Duration::from_secs(5)),
            ..c
        };
        assert_eq!(
            c.lag_alert_for(Some(chrono::Duration::seconds(10))),
            Duration::from_secs(5)
        );
    }
}
