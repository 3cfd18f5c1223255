//! The encryption and decryption options of a job, defined once: the command line flattens
//! them (`clap` feature), the configuration file's `[job.encryption]` builds them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use kars_backup_core::recovery::Origin;
use kars_backup_core::{DynDecryptor, DynEncryptor, PlaintextPolicy, Result};

use crate::decryptor::DecryptionKeys;
use crate::encryptor::encryptor;

/// The command-line flags of [`EncryptOptions`] (without `--`), used by its `clap` derive and by
/// [`EncryptOptions::to_args`].
mod flags {
    /// `--encrypt-to RECIPIENT` (repeatable).
    pub(super) const ENCRYPT_TO: &str = "encrypt-to";
    /// `--passphrase-file FILE`.
    pub(super) const PASSPHRASE_FILE: &str = "passphrase-file";
    /// `--no-encrypt`.
    pub(super) const NO_ENCRYPT: &str = "no-encrypt";
}

/// How a backup encrypts its archive: recipients or a passphrase file (one scheme per archive),
/// or on purpose not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Encryption"))]
pub struct EncryptOptions {
    /// Encrypt the archive (after compression) to this recipient: an age recipient (`age1…`,
    /// from age-keygen), or an OpenPGP key from the gpg keyring (`gpg:KEYID`,
    /// `gpg:FINGERPRINT`, `gpg:admin@example.com`; GNUPGHOME is respected) or a public key file
    /// (`gpg:/path/key.asc`); repeatable, all of one scheme. The archive gets `.age` or `.gpg`.
    #[cfg_attr(feature = "clap", arg(long = flags::ENCRYPT_TO, value_name = "RECIPIENT"))]
    pub recipients: Vec<String>,

    /// Encrypt with the passphrase on the first line of this file (age, scrypt; `age -d`
    /// decrypts it). Not combined with --encrypt-to.
    #[cfg_attr(feature = "clap", arg(long = flags::PASSPHRASE_FILE, value_name = "FILE"))]
    pub passphrase_file: Option<PathBuf>,

    /// Store the archive unencrypted also at off-site destinations (S3, GCS, Azure, Git LFS),
    /// which is refused by default: a KARS backup holds password hashes, MFA secrets and API
    /// tokens. Local directories take unencrypted archives without it.
    #[cfg_attr(
        feature = "clap",
        arg(long = flags::NO_ENCRYPT, conflicts_with_all = ["recipients", "passphrase_file"])
    )]
    pub no_encrypt: bool,
}

impl EncryptOptions {
    /// The encryptor, if encryption was asked for (OpenPGP keys are looked up now).
    ///
    /// # Errors
    /// As [`encryptor()`].
    pub fn encryptor(&self) -> Result<Option<DynEncryptor>> {
        encryptor(&self.recipients, self.passphrase_file.as_deref())
    }

    /// Where unencrypted archives may go: anywhere with `no_encrypt`, else local only.
    pub fn plaintext(&self) -> PlaintextPolicy {
        plaintext_policy(self.no_encrypt)
    }

    /// The command-line arguments that give these options again (for a command this one
    /// starts, such as the WAL spool's pusher): recipients and the passphrase file's name, never
    /// a secret.
    pub fn to_args(&self) -> Vec<OsString> {
        let flag = |name: &str| OsString::from(format!("--{name}"));
        let mut args = Vec::new();
        for r in &self.recipients {
            args.extend([flag(flags::ENCRYPT_TO), r.into()]);
        }
        if let Some(file) = &self.passphrase_file {
            args.extend([flag(flags::PASSPHRASE_FILE), file.into()]);
        }
        if self.no_encrypt {
            args.push(flag(flags::NO_ENCRYPT));
        }
        args
    }

    /// Whether the archives are encrypted (recipients or a passphrase).
    pub fn encrypts(&self) -> bool {
        !self.recipients.is_empty() || self.passphrase_file.is_some()
    }
}

/// `no_encrypt` (`--no-encrypt`, `encryption = "none"`) as the library's policy.
pub fn plaintext_policy(no_encrypt: bool) -> PlaintextPolicy {
    if no_encrypt {
        PlaintextPolicy::Anywhere
    } else {
        PlaintextPolicy::LocalOnly
    }
}

/// The keys that open encrypted archives (restore, verify, drill, status). OpenPGP archives need
/// none: `gpg --decrypt` uses its keyring (GNUPGHOME) and agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Decryption"))]
pub struct DecryptOptions {
    /// An age identity file (`kars-backup key init`'s or age-keygen's key file) for archives
    /// encrypted to age recipients; repeatable.
    #[cfg_attr(feature = "clap", arg(long = "identity", value_name = "FILE"))]
    pub identities: Vec<PathBuf>,

    /// The passphrase of an age passphrase-encrypted archive: the first line of this file.
    #[cfg_attr(feature = "clap", arg(long = "passphrase-file", value_name = "FILE"))]
    pub passphrase_file: Option<PathBuf>,
}

impl DecryptOptions {
    /// Whether an age key was given (identity files or a passphrase file).
    pub fn any(&self) -> bool {
        !self.identities.is_empty() || self.passphrase_file.is_some()
    }

    /// The decryption keys: age identity files and passphrase (OpenPGP goes through gpg).
    ///
    /// # Errors
    /// An unreadable identity or passphrase file.
    pub fn decryptor(&self) -> Result<DynDecryptor> {
        let mut keys = DecryptionKeys::new();
        for identity in &self.identities {
            keys = keys.with_identity_file(identity)?;
        }
        if let Some(file) = &self.passphrase_file {
            keys = keys.with_passphrase_file(file)?;
        }
        Ok(Arc::new(keys))
    }

    /// The origins of a multi-destination restore, verify or drill, reading encrypted archives
    /// with these keys.
    ///
    /// # Errors
    /// As [`Self::decryptor`].
    pub fn apply_all(&self, origins: Vec<Origin>) -> Result<Vec<Origin>> {
        let keys = self.decryptor()?;
        Ok(origins
            .into_iter()
            .map(|mut origin| {
                origin.repo = origin.repo.with_decryptor(keys.clone());
                origin
            })
            .collect())
    }
}

impl kars_backup_core::merge::Merge for DecryptOptions {
    /// Keys add up (the flags' identity files first); a passphrase file given wins.
    fn merge(self, lower: Self) -> Self {
        DecryptOptions {
            identities: self
                .identities
                .into_iter()
                .chain(lower.identities)
                .collect(),
            passphrase_file: self.passphrase_file.or(lower.passphrase_file),
        }
    }
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        encryption: EncryptOptions,
    }

    #[test]
    fn to_args_parse_back_to_the_same_options() {
        let cases = [
            EncryptOptions::default(),
            EncryptOptions {
                recipients: vec!["age1a".into(), "gpg:admin@example.com".into()],
                ..EncryptOptions::default()
            },
            EncryptOptions {
                passphrase_file: Some("/etc/kars/pass phrase".into()),
                ..EncryptOptions::default()
            },
            EncryptOptions {
                no_encrypt: true,
                ..EncryptOptions::default()
            },
        ];
        for options in cases {
            let args = std::iter::once(OsString::from("kars")).chain(options.to_args());
            let parsed = Command::try_parse_from(args).unwrap().encryption;
            assert_eq!(parsed, options);
        }
    }
}
