//! [`TransferOptions`]: how one destination moves large objects — multipart upload part size and
//! parts in flight, parallel ranged download part size and parts in flight.
//!
//! Every field is optional: what is not set is chosen by the sink (uploads: 8 MiB parts, 4 in
//! flight; downloads: from the object's size, see [`TransferOptions::download_plan`]). The same
//! options come from a destination URL's query (`s3://b/p?download_concurrency=8&download_part_size=16MiB`)
//! and from a configuration file's `[job.destination.transfer]` table (kebab-case keys).

use std::fmt;
use std::str::FromStr;

use kars_backup_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Smallest part of a ranged download (smaller parts cost more requests than they save).
pub const MIN_DOWNLOAD_PART_SIZE: u64 = 1024 * 1024;
/// Part size of ranged downloads when none is set, for objects under [`LARGE_OBJECT`].
pub const DEFAULT_DOWNLOAD_PART_SIZE: u64 = 4 * 1024 * 1024;
/// Part size of ranged downloads when none is set, for objects of [`LARGE_OBJECT`] or more:
/// fewer requests cost the store less CPU (on a 1 GiB download from SeaweedFS on 2 cores,
/// 8 MiB × 3 took 1.24–1.44 s and 55–60 MB RSS, 4 MiB × 8 1.5–2.2 s and 90–100 MB).
pub const LARGE_DOWNLOAD_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Objects this large or larger are read in [`LARGE_DOWNLOAD_PART_SIZE`] parts.
pub const LARGE_OBJECT: u64 = 64 * 1024 * 1024;
/// Memory a ranged download may hold when its concurrency is chosen automatically: parts in
/// flight × part size stays within it (with a part size set, at least two parts are in flight).
pub const DOWNLOAD_MEMORY_BUDGET: u64 = 24 * 1024 * 1024;
/// Most parts in flight chosen automatically.
pub const MAX_AUTO_DOWNLOAD_CONCURRENCY: usize = 8;
/// Upper bound of an explicit concurrency (uploads or downloads).
pub const MAX_CONCURRENCY: usize = 64;

/// A number of bytes, written as an integer or with a binary unit: `8388608`, `8MiB`, `8 MiB`,
/// `8M`, `512KiB`, `1GiB` (`K`/`M`/`G` and `KB`/`MB`/`GB` are binary units here too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "ByteSizeRepr", into = "String")]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (unit, n) in UNITS {
            if self.0 >= n && self.0 % n == 0 {
                return write!(f, "{}{unit}", self.0 / n);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl FromStr for ByteSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let bad = || {
            Error::InvalidInput(format!(
                "invalid size {s:?}: use a number of bytes or a number with KiB, MiB or GiB (e.g. 16MiB)"
            ))
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(factor).map(ByteSize).ok_or_else(bad)
    }
}

impl From<ByteSize> for String {
    fn from(b: ByteSize) -> String {
        b.to_string()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ByteSizeRepr {
    Bytes(u64),
    Text(String),
}

impl TryFrom<ByteSizeRepr> for ByteSize {
    type Error = Error;

    fn try_from(r: ByteSizeRepr) -> Result<Self> {
        match r {
            ByteSizeRepr::Bytes(n) => Ok(ByteSize(n)),
            ByteSizeRepr::Text(s) => s.parse(),
        }
    }
}

/// Part sizes and parallelism of one destination's transfers; `None` lets the sink choose.
///
/// ```
/// use kars_backup_storage::{ByteSize, TransferOptions};
/// let t: TransferOptions = toml::from_str("download-part-size = \"16MiB\"\ndownload-concurrency = 6").unwrap();
/// assert_eq!(t.download_part_size, Some(ByteSize(16 << 20)));
/// let plan = t.download_plan(1 << 30).unwrap();
/// assert_eq!((plan.part_size, plan.concurrency), (16 << 20, 6));
/// // Small objects are read with one request.
/// assert!(TransferOptions::default().download_plan(4 << 20).is_none());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TransferOptions {
    /// Part size of multipart uploads (S3: at least 5 MiB; default 8 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_part_size: Option<ByteSize>,
    /// Parts of one upload sent at the same time (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_concurrency: Option<usize>,
    /// Part size of parallel ranged downloads (default 8 MiB for objects of 64 MiB or more, else
    /// 4 MiB; at least 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_part_size: Option<ByteSize>,
    /// Ranged parts of one download fetched at the same time; `1` reads with one request
    /// (default: as many as fit in 24 MiB, 2 to 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_concurrency: Option<usize>,
}

/// How one object is read in parallel: see [`TransferOptions::download_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangedPlan {
    /// Bytes per ranged request (the last part may be shorter).
    pub part_size: u64,
    /// Parts fetched at the same time; also how many parts' bytes may be held in memory.
    pub concurrency: usize,
}

impl RangedPlan {
    /// How many parts an object of `size` bytes has.
    pub fn parts(&self, size: u64) -> u64 {
        size.div_ceil(self.part_size.max(1))
    }
}

/// The URL query keys [`TransferOptions`] reads.
pub const QUERY_KEYS: [&str; 4] = [
    "upload_part_size",
    "upload_concurrency",
    "download_part_size",
    "download_concurrency",
];

impl TransferOptions {
    /// Sets the option named by a URL query key (`upload_part_size`, `upload_concurrency`,
    /// `download_part_size`, `download_concurrency`). Returns `Ok(false)` for another key.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a value that is not a size or a count.
    pub fn set_from_query(&mut self, key: &str, value: &str) -> Result<bool> {
        let count = |v: &str| -> Result<usize> {
            v.trim()
                .parse::<usize>()
                .map_err(|_| Error::InvalidInput(format!("parameter {key}={v:?} must be a number")))
        };
        let mut next = *self;
        match key {
            "upload_part_size" => next.upload_part_size = Some(value.parse()?),
            "upload_concurrency" => next.upload_concurrency = Some(count(value)?),
            "download_part_size" => next.download_part_size = Some(value.parse()?),
            "download_concurrency" => next.download_concurrency = Some(count(value)?),
            _ => return Ok(false),
        }
        next.validate()?;
        *self = next;
        Ok(true)
    }

    /// Takes a URL query key that is not the backend's own: a transfer option (see
    /// [`Self::set_from_query`]), else an error naming `url_kind` (`an s3:// URL`) and every key
    /// it knows (`own_keys`, then these), followed by `hint` (where credentials come from).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown key or a bad value.
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    pub(crate) fn take_query(
        &mut self,
        key: &str,
        value: &str,
        url_kind: &str,
        own_keys: &str,
        hint: &str,
    ) -> Result<()> {
        if self.set_from_query(key, value)? {
            return Ok(());
        }
        Err(Error::InvalidInput(format!(
            "unknown parameter {key:?} in {url_kind}; known: {own_keys}, {} ({hint})",
            QUERY_KEYS.join(", ")
        )))
    }

    /// Options set here win over `base`'s.
    pub fn or(self, base: TransferOptions) -> TransferOptions {
        TransferOptions {
            upload_part_size: self.upload_part_size.or(base.upload_part_size),
            upload_concurrency: self.upload_concurrency.or(base.upload_concurrency),
            download_part_size: self.download_part_size.or(base.download_part_size),
            download_concurrency: self.download_concurrency.or(base.download_concurrency),
        }
    }

    /// The options as URL query pairs (for a destination URL that carries them).
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(v) = self.upload_part_size {
            out.push(("upload_part_size", v.to_string()));
        }
        if let Some(v) = self.upload_concurrency {
            out.push(("upload_concurrency", v.to_string()));
        }
        if let Some(v) = self.download_part_size {
            out.push(("download_part_size", v.to_string()));
        }
        if let Some(v) = self.download_concurrency {
            out.push(("download_concurrency", v.to_string()));
        }
        out
    }

    /// Checks the ranges: concurrencies from 1 to 64, a download part of at least 1 MiB.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the option.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("upload-concurrency", self.upload_concurrency),
            ("download-concurrency", self.download_concurrency),
        ] {
            if let Some(n) = v {
                if n == 0 || n > MAX_CONCURRENCY {
                    return Err(Error::InvalidInput(format!(
                        "{name} = {n}: give 1 to {MAX_CONCURRENCY}"
                    )));
                }
            }
        }
        if let Some(p) = self.download_part_size {
            if p.0 < MIN_DOWNLOAD_PART_SIZE {
                return Err(Error::InvalidInput(format!(
                    "download-part-size = {p}: give at least 1MiB"
                )));
            }
        }
        if let Some(p) = self.upload_part_size {
            if p.0 == 0 || p.0 > u64::from(u32::MAX) {
                return Err(Error::InvalidInput(format!(
                    "upload-part-size = {p}: give 5MiB to 4GiB"
                )));
            }
        }
        Ok(())
    }

    /// How to read an object of `size` bytes: `None` for one plain request (objects smaller
    /// than two parts, or a concurrency of 1), else the part size and parts in flight.
    ///
    /// Chosen automatically: 8 MiB parts for objects of 64 MiB or more, else 4 MiB, and as many
    /// in flight as fit in 24 MiB (3 or 6; with a larger part size set, at least 2), never more
    /// than the object has parts. Memory held by a download stays within
    /// `concurrency × part_size`, whatever the object's size.
    pub fn download_plan(&self, size: u64) -> Option<RangedPlan> {
        let automatic = if size >= LARGE_OBJECT {
            LARGE_DOWNLOAD_PART_SIZE
        } else {
            DEFAULT_DOWNLOAD_PART_SIZE
        };
        let part_size = self
            .download_part_size
            .map_or(automatic, |p| p.0)
            .max(MIN_DOWNLOAD_PART_SIZE);
        let parts = size.div_ceil(part_size);
        if parts < 2 {
            return None;
        }
        let concurrency = match self.download_concurrency {
            Some(n) => n,
            None => ((DOWNLOAD_MEMORY_BUDGET / part_size) as usize)
                .clamp(2, MAX_AUTO_DOWNLOAD_CONCURRENCY),
        }
        .min(usize::try_from(parts).unwrap_or(usize::MAX));
        if concurrency < 2 {
            return None;
        }
        Some(RangedPlan {
            part_size,
            concurrency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("8MiB".parse::<ByteSize>().unwrap(), ByteSize(8 << 20));
        assert_eq!(" 8 mib ".parse::<ByteSize>().unwrap(), ByteSize(8 << 20));
        assert_eq!("512K".parse::<ByteSize>().unwrap(), ByteSize(512 << 10));
        assert_eq!("1GB".parse::<ByteSize>().unwrap(), ByteSize(1 << 30));
        assert_eq!("1234".parse::<ByteSize>().unwrap(), ByteSize(1234));
        for bad in ["", "MiB", "8 TiB", "-1", "1.5MiB", "99999999999999999999"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize(16 << 20).to_string(), "16MiB");
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn options_read_toml_and_reject_unknown_keys() {
        let t: TransferOptions =
            toml::from_str("upload-part-size = 16777216\ndownload-part-size = \"32 MiB\"").unwrap();
        assert_eq!(t.upload_part_size, Some(ByteSize(16 << 20)));
        assert_eq!(t.download_part_size, Some(ByteSize(32 << 20)));
        assert!(toml::from_str::<TransferOptions>("part-size = 1").is_err());
        assert!(toml::from_str::<TransferOptions>("download-part-size = \"lots\"").is_err());
    }

    #[test]
    fn query_keys_set_and_validate() {
        let mut t = TransferOptions::default();
        assert!(t.set_from_query("download_concurrency", "6").unwrap());
        assert!(t.set_from_query("download_part_size", "16MiB").unwrap());
        assert!(!t.set_from_query("region", "x").unwrap());
        assert!(t.set_from_query("download_concurrency", "0").is_err());
        assert!(t.set_from_query("download_concurrency", "many").is_err());
        let mut small = TransferOptions::default();
        assert!(small.set_from_query("download_part_size", "4KiB").is_err());
        assert_eq!(
            t.query_pairs(),
            vec![
                ("download_part_size", "16MiB".to_string()),
                ("download_concurrency", "6".to_string())
            ]
        );
    }

    #[test]
    fn plans_follow_the_object_size() {
        let auto = TransferOptions::default();
        assert_eq!(auto.download_plan(0), None);
        assert_eq!(auto.download_plan(DEFAULT_DOWNLOAD_PART_SIZE), None);
        let two = auto.download_plan(DEFAULT_DOWNLOAD_PART_SIZE + 1).unwrap();
        assert_eq!(two.concurrency, 2);
        assert_eq!(two.parts(DEFAULT_DOWNLOAD_PART_SIZE + 1), 2);
        let small = auto.download_plan(LARGE_OBJECT - 1).unwrap();
        assert_eq!(small.part_size, DEFAULT_DOWNLOAD_PART_SIZE);
        assert_eq!(small.concurrency, 6);
        let big = auto.download_plan(4 << 30).unwrap();
        assert_eq!(big.part_size, LARGE_DOWNLOAD_PART_SIZE);
        assert_eq!(big.concurrency, 3);
        assert!(big.part_size * big.concurrency as u64 <= DOWNLOAD_MEMORY_BUDGET);
        // Larger parts, fewer in flight: the memory budget holds.
        let large_parts = TransferOptions {
            download_part_size: Some(ByteSize(32 << 20)),
            ..Default::default()
        };
        assert_eq!(large_parts.download_plan(4 << 30).unwrap().concurrency, 2);
        let mid_parts = TransferOptions {
            download_part_size: Some(ByteSize(8 << 20)),
            ..Default::default()
        };
        assert_eq!(mid_parts.download_plan(4 << 30).unwrap().concurrency, 3);
        let small_parts = TransferOptions {
            download_part_size: Some(ByteSize(2 << 20)),
            ..Default::default()
        };
        assert_eq!(small_parts.download_plan(4 << 30).unwrap().concurrency, 8);
        // An explicit concurrency of 1 is one plain request.
        let one = TransferOptions {
            download_concurrency: Some(1),
            ..Default::default()
        };
        assert_eq!(one.download_plan(4 << 30), None);
        assert_eq!(
            TransferOptions {
                download_concurrency: Some(3),
                ..Default::default()
            }
            .or(one)
            .download_concurrency,
            Some(3)
        );
    }
}
