//! The encryptor of a backup: `--encrypt-to` recipients ([`Recipient`]: age or OpenPGP) or a
//! passphrase file, one scheme per archive.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use kars_backup_core::{DynEncryptor, Error, Result};

use crate::age::AgeEncryptor;
use crate::gpg::Gpg;
use crate::key::read_passphrase_file;
use crate::openpgp::OpenPgpEncryptor;

/// One `--encrypt-to` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// An age X25519 recipient, `age1…`.
    Age(String),
    /// An OpenPGP key in gpg's keyring: key id, fingerprint or e-mail (`gpg:admin@example.com`).
    GpgKeyring(String),
    /// An OpenPGP public key file (`gpg:/etc/kars/admin.asc`: a value with a `/`, or an
    /// existing file).
    GpgKeyFile(std::path::PathBuf),
}

impl FromStr for Recipient {
    type Err = Error;

    /// Parses `age1…`, `gpg:KEYID|FINGERPRINT|EMAIL` or `gpg:/path/to/key.asc`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(id) = s.strip_prefix("gpg:").or_else(|| s.strip_prefix("pgp:")) {
            let id = id.trim();
            if id.is_empty() {
                return Err(Error::InvalidInput(
                    "gpg: needs a key: gpg:KEYID, gpg:admin@example.com or gpg:/path/key.asc"
                        .into(),
                ));
            }
            if id.contains('/') || Path::new(id).is_file() {
                return Ok(Recipient::GpgKeyFile(id.into()));
            }
            return Ok(Recipient::GpgKeyring(id.to_string()));
        }
        if s.starts_with("age1") {
            return Ok(Recipient::Age(s.to_string()));
        }
        Err(Error::InvalidInput(format!(
            "--encrypt-to {s:?}: give an age recipient (age1…, from age-keygen) or an OpenPGP key as gpg:KEYID, gpg:EMAIL or gpg:/path/key.asc"
        )))
    }
}

/// The encryptor for `--encrypt-to` recipients and `--passphrase-file`: `None` when neither is
/// given. One archive has one scheme: age recipients, an age passphrase, or OpenPGP keys.
///
/// OpenPGP keys are resolved now (a missing key fails before the backup starts).
///
/// # Errors
/// [`Error::InvalidInput`] for bad recipients, unknown keys or a mix of schemes.
pub fn encryptor(
    recipients: &[String],
    passphrase_file: Option<&Path>,
) -> Result<Option<DynEncryptor>> {
    encryptor_with_gpg(recipients, passphrase_file, &Gpg::new())
}

/// [`encryptor`] looking OpenPGP keys up with this gpg (program, keyring).
///
/// # Errors
/// As [`encryptor`].
pub fn encryptor_with_gpg(
    recipients: &[String],
    passphrase_file: Option<&Path>,
    gpg: &Gpg,
) -> Result<Option<DynEncryptor>> {
    let parsed = recipients
        .iter()
        .map(|r| r.parse::<Recipient>())
        .collect::<Result<Vec<_>>>()?;
    let age: Vec<&str> = parsed
        .iter()
        .filter_map(|r| match r {
            Recipient::Age(a) => Some(a.as_str()),
            _ => None,
        })
        .collect();
    let pgp = parsed.len() - age.len();
    match (age.len(), pgp, passphrase_file) {
        (0, 0, None) => Ok(None),
        (0, 0, Some(file)) => Ok(Some(Arc::new(AgeEncryptor::with_passphrase(
            read_passphrase_file(file)?,
        )))),
        (_, _, Some(_)) => Err(Error::InvalidInput(
            "--passphrase-file encrypts with a passphrase alone (age): it cannot be combined with --encrypt-to".into(),
        )),
        (_, 0, None) => Ok(Some(Arc::new(AgeEncryptor::to_recipients(&age)?))),
        (0, _, None) => {
            let mut enc = OpenPgpEncryptor::new();
            for r in &parsed {
                match r {
                    Recipient::GpgKeyring(id) => enc.add_keyring_key(gpg, id)?,
                    Recipient::GpgKeyFile(path) => enc.add_key_file(path)?,
                    Recipient::Age(_) => {}
                }
            }
            Ok(Some(Arc::new(enc)))
        }
        _ => Err(Error::InvalidInput(
            "an archive is encrypted with one scheme: give either age recipients (age1…) or OpenPGP keys (gpg:…), not both".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recipients() {
        assert_eq!(
            "age1abc".parse::<Recipient>().unwrap(),
            Recipient::Age("age1abc".into())
        );
        assert_eq!(
            "gpg:admin@example.com".parse::<Recipient>().unwrap(),
            Recipient::GpgKeyring("admin@example.com".into())
        );
        assert_eq!(
            "gpg:/etc/kars/admin.asc".parse::<Recipient>().unwrap(),
            Recipient::GpgKeyFile("/etc/kars/admin.asc".into())
        );
        for bad in ["", "gpg:", "ssh-ed25519 AAAA", "admin@example.com"] {
            assert!(bad.parse::<Recipient>().is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_mixed_schemes_and_bad_age_recipients() {
        let mixed = encryptor(&["age1abc".into(), "gpg:x".into()], None);
        assert!(matches!(mixed, Err(Error::InvalidInput(_))));
        let bad = encryptor(&["age1notarecipient".into()], None);
        assert!(matches!(bad, Err(Error::InvalidInput(m)) if m.contains("not an age recipient")));
        assert!(encryptor(&[], None).unwrap().is_none());
    }
}
