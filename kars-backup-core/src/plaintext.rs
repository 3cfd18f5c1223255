//! Encrypted off-site copies by default: an unencrypted archive never leaves this host unless
//! the caller says so.
//!
//! A KARS database holds its users' password hashes and MFA secrets, SSO client secrets, SMTP
//! passwords and API tokens: a backup of it is a copy of its credentials. [`BackupJob`] and
//! copies between destinations therefore check [`PlaintextPolicy`] before anything is read or
//! written: with the default, [`PlaintextPolicy::LocalOnly`], an archive that is not encrypted
//! may go to local destinations ([`Placement::Local`], as the runbook's `tar xzf` expects) but
//! not to off-site ones (S3, GCS, Azure, Git LFS, any sink whose
//! [`placement`](crate::BackupSink::placement) is [`Placement::Cloud`]); the caller encrypts
//! ([`BackupJob::with_encryptor`]) or opts out ([`PlaintextPolicy::Anywhere`]).
//!
//! ```
//! use std::sync::Arc;
//! use kars_backup_core::{Placement, PlaintextPolicy, Repository, testing::InMemorySink};
//! let local = Repository::new(Arc::new(InMemorySink::new()));
//! let cloud = Repository::new(Arc::new(InMemorySink::new().with_placement(Placement::Cloud)));
//! let policy = PlaintextPolicy::default();
//! assert!(policy.check("asset-data-20241218-020000.tar.gz", false, &[&local]).is_ok());
//! assert!(policy.check("asset-data-20241218-020000.tar.gz", false, &[&local, &cloud]).is_err());
//! assert!(policy.check("asset-data-20241218-020000.tar.gz.age", true, &[&cloud]).is_ok());
//! assert!(PlaintextPolicy::Anywhere.check("x.tar.gz", false, &[&cloud]).is_ok());
//! ```
//!
//! [`BackupJob`]: crate::BackupJob
//! [`BackupJob::with_encryptor`]: crate::BackupJob::with_encryptor

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sink::DynBackupSink;
use crate::tier::Placement;

/// Where an unencrypted archive may be stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlaintextPolicy {
    /// Only at local destinations (the default): a backup or copy of an unencrypted archive to
    /// an off-site destination fails with [`Error::PlaintextRefused`] before anything is read.
    #[default]
    LocalOnly,
    /// Anywhere: the operator chose to store backups unencrypted (the CLI's `--no-encrypt`, the
    /// configuration's `encryption = "none"`).
    Anywhere,
}

impl PlaintextPolicy {
    /// Checks that the archive `what` (encrypted or not) may be stored at `destinations`
    /// ([`Repository`](crate::Repository)s, or anything else that is a view over a sink).
    ///
    /// # Errors
    /// [`Error::PlaintextRefused`] naming every off-site destination, when the archive is not
    /// encrypted and the policy is [`PlaintextPolicy::LocalOnly`].
    pub fn check<D: AsRef<DynBackupSink>>(
        self,
        what: &str,
        encrypted: bool,
        destinations: &[&D],
    ) -> Result<()> {
        let placed: Vec<(String, Placement)> = destinations
            .iter()
            .map(|d| (d.as_ref().describe(), d.as_ref().placement()))
            .collect();
        self.check_placements(what, encrypted, &placed)
    }

    /// [`PlaintextPolicy::check`] for destinations known by description (redacted) and
    /// placement, before any repository is opened (a front end checks its URLs first, so not
    /// even a directory is created for a run that is refused).
    ///
    /// # Errors
    /// As [`PlaintextPolicy::check`].
    pub fn check_placements(
        self,
        what: &str,
        encrypted: bool,
        destinations: &[(String, Placement)],
    ) -> Result<()> {
        if encrypted || self == PlaintextPolicy::Anywhere {
            return Ok(());
        }
        let off_site: Vec<&str> = destinations
            .iter()
            .filter(|(_, p)| *p != Placement::Local)
            .map(|(d, _)| d.as_str())
            .collect();
        if off_site.is_empty() {
            return Ok(());
        }
        Err(Error::PlaintextRefused {
            what: what.to_string(),
            destinations: off_site.join(", "),
        })
    }

    /// Whether an unencrypted archive would be stored at local destinations only by default, so
    /// that a front end may remind the operator (one line) that it is not encrypted.
    pub fn stores_plaintext_locally<D: AsRef<DynBackupSink>>(
        self,
        encrypted: bool,
        destinations: &[&D],
    ) -> bool {
        !encrypted
            && self == PlaintextPolicy::LocalOnly
            && !destinations.is_empty()
            && destinations
                .iter()
                .all(|d| d.as_ref().placement() == Placement::Local)
    }
}
