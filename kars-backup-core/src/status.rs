//! Status: how fresh the newest committed backup of a destination is, against an RPO target.

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::drill::{DrillReport, DrillSummary};
use crate::encrypt::{EncryptionScheme, Sealed};
use crate::error::{Error, Result};
use crate::repository::{BackupEntry, EntryKind, Listing, Repository};
use crate::sink::GetOptions;

/// The runbook's recovery point objective: a backup at most 24 hours old.
pub use crate::objective::DEFAULT_RPO;

/// The freshness of one destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationStatus {
    /// The destination (redacted).
    pub destination: String,
    /// The newest committed backup's name, if any.
    pub newest: Option<String>,
    /// When it was taken.
    pub newest_time: Option<DateTime<Utc>>,
    /// Its age in seconds at `checked_at`.
    pub age_secs: Option<i64>,
    /// The RPO target in seconds.
    pub rpo_secs: i64,
    /// True when the newest backup is younger than the RPO target.
    pub within_rpo: bool,
    /// Committed backups at the destination.
    pub committed: usize,
    /// Incomplete uploads (failed or running) at the destination.
    pub incomplete: usize,
    /// When the status was taken.
    pub checked_at: DateTime<Utc>,
    /// The newest restore drill stored at the destination, if any (see [`crate::drill`]).
    pub last_drill: Option<DrillSummary>,
    /// Whether the keys given open the newest backup ([`check_keys`]); `None` when no keys
    /// were given or there is no backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyCheck>,
}

/// Whether the decryption keys given open a backup: its header is read and unwrapped, no more
/// (see [`check_keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyCheck {
    /// The backup checked.
    pub backup: String,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// True when it is not encrypted or the keys open it.
    pub opens: bool,
    /// What was found, or why the keys do not open it and what to do.
    pub detail: String,
}

/// How many bytes of an archive [`check_keys`] reads: the encryption header with many
/// recipients fits.
pub const KEY_CHECK_BYTES: u64 = 64 * 1024;

/// Checks whether `repo`'s decryption keys ([`Repository::with_decryptor`]) open `entry`: the
/// first [`KEY_CHECK_BYTES`] of the archive are read and its encryption header is unwrapped with
/// the keys, as a restore would start (an age passphrase runs its scrypt derivation once).
/// Losing the key loses the backups: `status` reports a backup that the keys given cannot open.
///
/// # Errors
/// The sink's errors reading the archive. A missing or wrong key is not an error: it is a
/// [`KeyCheck`] with `opens == false`.
pub async fn check_keys(repo: &Repository, entry: &BackupEntry) -> Result<KeyCheck> {
    let backup = entry.name.to_string();
    let info = entry
        .manifest
        .as_ref()
        .and_then(|m| m.archive.encryption.clone());
    let scheme = match &info {
        Some(i) => Some(i.scheme),
        None if entry.manifest.is_some() => None,
        // No manifest: the name tells (`….tar.gz.age`).
        None => EncryptionScheme::from_name(&backup),
    };
    let Some(scheme) = scheme else {
        return Ok(KeyCheck {
            backup,
            encrypted: false,
            opens: true,
            detail: "not encrypted".into(),
        });
    };
    let Some(decryptor) = repo.decryptor().cloned() else {
        return Ok(KeyCheck {
            backup,
            encrypted: true,
            opens: false,
            detail: format!("encrypted with {scheme} and no decryption keys were given"),
        });
    };
    let end = entry.size().clamp(1, KEY_CHECK_BYTES);
    let mut stream = repo
        .sink()
        .get(&backup, GetOptions::default().with_range(0..end))
        .await?;
    let mut head = Vec::with_capacity(end as usize);
    while let Some(chunk) = stream.next().await {
        head.extend_from_slice(&chunk?);
    }
    let name = backup.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let archive = Sealed {
            name: &name,
            scheme,
            info: info.as_ref(),
        };
        decryptor
            .decrypt(archive, Box::new(std::io::Cursor::new(head)))
            .map(drop)
    })
    .await
    .map_err(|e| Error::generic("key check", e))?;
    Ok(match opened {
        Ok(()) => KeyCheck {
            backup,
            encrypted: true,
            opens: true,
            detail: format!("encrypted with {scheme}; the keys given open it"),
        },
        Err(e @ (Error::KeyMissing { .. } | Error::DecryptionFailed { .. })) => KeyCheck {
            backup,
            encrypted: true,
            opens: false,
            detail: e.to_string(),
        },
        Err(e) => return Err(e),
    })
}

impl DestinationStatus {
    /// The same status with the destination's newest drill.
    pub fn with_last_drill(mut self, drill: Option<&DrillReport>) -> Self {
        self.last_drill = drill.map(DrillReport::summary);
        self
    }

    /// The status of a destination's listing at `now` against `rpo`.
    ///
    /// ```
    /// use chrono::{Duration, Utc};
    /// use kars_backup_core::repository::Listing;
    /// use kars_backup_core::status::DestinationStatus;
    /// let empty = DestinationStatus::of("memory://", &Listing::default(), Utc::now(), Duration::hours(24));
    /// assert!(!empty.within_rpo, "no backup at all misses every RPO");
    /// ```
    pub fn of(destination: &str, listing: &Listing, now: DateTime<Utc>, rpo: Duration) -> Self {
        let newest = listing.latest();
        let age = newest.map(|e| now - e.time());
        DestinationStatus {
            destination: destination.to_string(),
            newest: newest.map(|e| e.name.to_string()),
            newest_time: newest.map(|e| e.time()),
            age_secs: age.map(|a| a.num_seconds()),
            rpo_secs: rpo.num_seconds(),
            within_rpo: age.is_some_and(|a| a <= rpo),
            committed: listing.committed().count(),
            incomplete: listing
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::Incomplete)
                .count(),
            checked_at: now,
            last_drill: None,
            keys: None,
        }
    }

    /// The same status with the result of [`check_keys`] on its newest backup.
    pub fn with_keys(mut self, keys: Option<KeyCheck>) -> Self {
        self.keys = keys;
        self
    }

    /// True when keys were checked and do not open the newest backup.
    pub fn keys_fail(&self) -> bool {
        self.keys.as_ref().is_some_and(|k| !k.opens)
    }
}
