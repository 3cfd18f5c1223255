//! [`BackupName`]: the runbook's file names, `asset-data-YYYYmmdd-HHMMSS.tar.gz`, in UTC.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

use crate::encrypt::{ENCRYPTION_SUFFIXES, EncryptionScheme};
use crate::error::{Error, Result};
use crate::layout;

/// File-name endings of archives that kars-backup and the runbook write, longest first. A
/// source of another engine names its payload `dump` (compressed by the pipeline: `dump.gz`,
/// `dump.zst`); its manifest's engine says what the payload is.
pub const ARCHIVE_EXTENSIONS: &[&str] = &[
    "tar.gz", "tar.zst", "dir.tar", "tar", "sql.gz", "sql.zst", "sql", "dump.gz", "dump.zst",
    "dump", "tgz",
];

/// Whether `extension` is an archive extension, optionally followed by an encryption suffix
/// (`tar.gz`, `tar.gz.age`, `sql.gz.gpg`).
fn known_extension(extension: &str) -> bool {
    ARCHIVE_EXTENSIONS.contains(&split_encryption(extension).0)
}

/// Splits an encryption suffix (`.age`, `.gpg`, `.pgp`, `.asc`) off a name or extension.
fn split_encryption(s: &str) -> (&str, Option<EncryptionScheme>) {
    for (suffix, scheme) in ENCRYPTION_SUFFIXES {
        if let Some(base) = s
            .strip_suffix(suffix)
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
        {
            return (base, Some(*scheme));
        }
    }
    (s, None)
}

/// The name of one backup archive: `<prefix>-<YYYYmmdd>-<HHMMSS>[-<n>].<extension>`.
///
/// The time is UTC. The optional `-n` tells apart two backups taken in the same second. The
/// runbook's date-only names (`backup-20241218.dump`) parse too, at midnight. Encrypted archives
/// end in `.age` or `.gpg` (also `.pgp`, `.asc` from other tools): `….tar.gz.age`.
///
/// ```
/// use kars_backup_core::BackupName;
/// let name: BackupName = "asset-data-20241218-020000.tar.gz".parse().unwrap();
/// assert_eq!(name.prefix(), "asset-data");
/// assert_eq!(name.extension(), "tar.gz");
/// assert_eq!(name.time().to_rfc3339(), "2024-12-18T02:00:00+00:00");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupName {
    prefix: String,
    time: DateTime<Utc>,
    has_time_of_day: bool,
    sequence: u32,
    extension: String,
}

impl BackupName {
    /// A name for a backup taken at `time` (sub-second precision is dropped).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the prefix is empty or holds a `/`, or the extension is unknown.
    pub fn new(prefix: &str, time: DateTime<Utc>, extension: &str) -> Result<Self> {
        if prefix.is_empty()
            || prefix.contains('/')
            || prefix.starts_with('.')
            || prefix.chars().any(|c| c.is_control())
        {
            return Err(Error::InvalidInput(format!(
                "backup name prefix {prefix:?} must be non-empty, must not start with '.' and must not contain '/'"
            )));
        }
        if !known_extension(extension) {
            return Err(Error::InvalidInput(format!(
                "unknown archive extension {extension:?}; known: {}",
                ARCHIVE_EXTENSIONS.join(", ")
            )));
        }
        let secs = time.timestamp();
        let time = DateTime::from_timestamp(secs, 0).unwrap_or(time);
        Ok(BackupName {
            prefix: prefix.to_string(),
            time,
            has_time_of_day: true,
            sequence: 0,
            extension: extension.to_string(),
        })
    }

    /// The same name with a sequence number, for a second backup in the same second.
    pub fn with_sequence(mut self, sequence: u32) -> Self {
        self.sequence = sequence;
        self
    }

    /// The prefix (`asset-data`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The backup's time, UTC.
    pub fn time(&self) -> DateTime<Utc> {
        self.time
    }

    /// The sequence number within one second (0 for the first).
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// The file-name ending (`tar.gz`).
    pub fn extension(&self) -> &str {
        &self.extension
    }

    /// The extension without an encryption suffix (`tar.gz` for `….tar.gz.age`).
    pub fn base_extension(&self) -> &str {
        split_encryption(&self.extension).0
    }

    /// The encryption its suffix announces (`.age`, `.gpg`), if any.
    pub fn encryption(&self) -> Option<EncryptionScheme> {
        split_encryption(&self.extension).1
    }

    /// The manifest's name: the archive's name plus `.meta` ([`layout::manifest_key`]).
    pub fn manifest_name(&self) -> String {
        layout::manifest_key(&self.to_string())
    }

    /// The in-progress marker's name: the archive's name plus `.pending`
    /// ([`layout::pending_key`]).
    pub fn pending_name(&self) -> String {
        layout::pending_key(&self.to_string())
    }
}

impl fmt::Display for BackupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.has_time_of_day {
            write!(f, "{}-{}", self.prefix, self.time.format("%Y%m%d-%H%M%S"))?;
        } else {
            write!(f, "{}-{}", self.prefix, self.time.format("%Y%m%d"))?;
        }
        if self.sequence > 0 {
            write!(f, "-{}", self.sequence)?;
        }
        write!(f, ".{}", self.extension)
    }
}

impl std::str::FromStr for BackupName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse(s).ok_or_else(|| {
            Error::InvalidInput(format!(
                "{s:?} is not a backup name; expected <prefix>-YYYYmmdd-HHMMSS.<{}>",
                ARCHIVE_EXTENSIONS.join("|")
            ))
        })
    }
}

impl Ord for BackupName {
    /// Oldest first; ties broken by sequence, then by the whole name.
    fn cmp(&self, other: &Self) -> Ordering {
        self.time
            .cmp(&other.time)
            .then(self.sequence.cmp(&other.sequence))
            .then_with(|| self.to_string().cmp(&other.to_string()))
    }
}

impl PartialOrd for BackupName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn parse(s: &str) -> Option<BackupName> {
    if s.contains('/') {
        return None;
    }
    let (body, encryption) = split_encryption(s);
    let base = ARCHIVE_EXTENSIONS.iter().find(|ext| {
        body.len() > ext.len() + 1
            && body.ends_with(*ext)
            && body[..body.len() - ext.len()].ends_with('.')
    })?;
    let stem = &body[..body.len() - base.len() - 1];
    let extension = match encryption {
        Some(_) => &s[stem.len() + 1..],
        None => *base,
    };
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    // parts are reversed: [last, …]
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    let date = |p: &str| NaiveDate::parse_from_str(p, "%Y%m%d").ok();
    let time = |p: &str| NaiveTime::parse_from_str(p, "%H%M%S").ok();
    let make = |prefix: &str, d: NaiveDate, t: Option<NaiveTime>, seq: u32| {
        if prefix.is_empty() || prefix.starts_with('.') {
            return None;
        }
        let dt = NaiveDateTime::new(d, t.unwrap_or(NaiveTime::MIN)).and_utc();
        Some(BackupName {
            prefix: prefix.to_string(),
            time: dt,
            has_time_of_day: t.is_some(),
            sequence: seq,
            extension: extension.to_string(),
        })
    };
    let rejoin = |rest: &[&str]| rest.iter().rev().copied().collect::<Vec<_>>().join("-");
    // <prefix>-DATE-TIME-SEQ
    if parts.len() >= 4
        && digits(parts[2], 8)
        && digits(parts[1], 6)
        && !parts[0].is_empty()
        && parts[0].len() <= 6
        && parts[0].bytes().all(|b| b.is_ascii_digit())
    {
        let seq: u32 = parts[0].parse().ok().filter(|n| *n > 0)?;
        return make(parts[3], date(parts[2])?, Some(time(parts[1])?), seq);
    }
    // <prefix>-DATE-TIME
    if parts.len() >= 3 && digits(parts[1], 8) && digits(parts[0], 6) {
        return make(
            &rejoin(&parts[2..]),
            date(parts[1])?,
            Some(time(parts[0])?),
            0,
        );
    }
    // <prefix>-DATE
    if parts.len() >= 2 && digits(parts[0], 8) {
        return make(&rejoin(&parts[1..]), date(parts[0])?, None, 0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_and_parses_runbook_names() {
        let t = Utc.with_ymd_and_hms(2024, 12, 18, 2, 0, 0).unwrap();
        let n = BackupName::new("asset-data", t, "tar.gz").unwrap();
        assert_eq!(n.to_string(), "asset-data-20241218-020000.tar.gz");
        assert_eq!(n.manifest_name(), "asset-data-20241218-020000.tar.gz.meta");
        let back: BackupName = n.to_string().parse().unwrap();
        assert_eq!(back, n);
        let seq = n.clone().with_sequence(2);
        assert_eq!(seq.to_string(), "asset-data-20241218-020000-2.tar.gz");
        assert_eq!(seq.to_string().parse::<BackupName>().unwrap(), seq);
        assert!(seq > n);
    }

    #[test]
    fn parses_other_runbook_forms() {
        let n: BackupName = "kars-postgres-20241218-020000.sql.gz".parse().unwrap();
        assert_eq!(n.prefix(), "kars-postgres");
        assert_eq!(n.extension(), "sql.gz");
        let n: BackupName = "backup-20241218.dump".parse().unwrap();
        assert_eq!(n.prefix(), "backup");
        assert_eq!(n.to_string(), "backup-20241218.dump");
        let n: BackupName = "backup-tables-20241218.sql".parse().unwrap();
        assert_eq!(n.prefix(), "backup-tables");
    }

    #[test]
    fn parses_encrypted_names() {
        let t = Utc.with_ymd_and_hms(2024, 12, 18, 2, 0, 0).unwrap();
        let n = BackupName::new("asset-data", t, "tar.gz.age").unwrap();
        assert_eq!(n.to_string(), "asset-data-20241218-020000.tar.gz.age");
        assert_eq!(n.to_string().parse::<BackupName>().unwrap(), n);
        assert_eq!(n.base_extension(), "tar.gz");
        assert_eq!(n.encryption(), Some(EncryptionScheme::Age));
        let seq = n.clone().with_sequence(3);
        assert_eq!(seq.to_string(), "asset-data-20241218-020000-3.tar.gz.age");
        assert_eq!(seq.to_string().parse::<BackupName>().unwrap(), seq);
        // The runbook's `gpg --encrypt` output.
        let n: BackupName = "backup-20241218.tar.gz.gpg".parse().unwrap();
        assert_eq!(n.prefix(), "backup");
        assert_eq!(n.extension(), "tar.gz.gpg");
        assert_eq!(n.encryption(), Some(EncryptionScheme::OpenPgp));
        let n: BackupName = "kars-postgres-20241218-020000.sql.gz.gpg".parse().unwrap();
        assert_eq!(n.base_extension(), "sql.gz");
        assert_eq!(n.to_string(), "kars-postgres-20241218-020000.sql.gz.gpg");
        let n: BackupName = "kars-postgres-20241218-020000.dump".parse().unwrap();
        assert_eq!(n.encryption(), None);
        for s in [
            "asset-data-20241218-020000.age",
            "asset-data-20241218-020000.tar.gz.age.meta",
            "asset-data-20241218-020000.zip.gpg",
            "asset-data-20241218-020000.tar.gz.age.age",
        ] {
            assert!(s.parse::<BackupName>().is_err(), "{s} parsed");
        }
        assert!(BackupName::new("x", t, "zip.age").is_err());
    }

    #[test]
    fn rejects_non_names() {
        for s in [
            "asset-data.tar.gz",
            "asset-data-2024121-020000.tar.gz",
            "asset-data-20241318-020000.tar.gz",
            "asset-data-20241218-020000.tar.gz.meta",
            "asset-data-20241218-020000.zip",
            "-20241218-020000.tar.gz",
            "dir/asset-data-20241218-020000.tar.gz",
            ".asset-data-20241218-020000.tar.gz",
            "README.md",
        ] {
            assert!(s.parse::<BackupName>().is_err(), "{s} parsed");
        }
    }

    #[test]
    fn rejects_bad_prefixes() {
        let t = Utc::now();
        assert!(BackupName::new("", t, "tar.gz").is_err());
        assert!(BackupName::new("a/b", t, "tar.gz").is_err());
        assert!(BackupName::new("x", t, "zip").is_err());
    }
}
