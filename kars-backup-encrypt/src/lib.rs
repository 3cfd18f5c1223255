//! Encryption of kars-backup archives: **age** and **OpenPGP**, implementing core's
//! [`Encryptor`](kars_backup_core::Encryptor) and [`Decryptor`](kars_backup_core::Decryptor).
//!
//! - [`encryptor`] builds the encryptor of a backup from `--encrypt-to` recipients
//!   (`age1…`, `gpg:KEY`) or a passphrase file; attach it with
//!   [`BackupJob::with_encryptor`](kars_backup_core::BackupJob::with_encryptor).
//! - [`DecryptionKeys`] holds what a restore may use — age identity files, an age passphrase,
//!   and gpg's keyring for OpenPGP — attach it with
//!   [`Repository::with_decryptor`](kars_backup_core::Repository::with_decryptor).
//! - [`generate_identity_file`] creates a new age identity (file 0600, as `age-keygen -o`
//!   writes it) and returns its recipient; [`identity_file_recipients`] derives the recipients
//!   of an identity file, so a job can name its identity file alone.
//!
//! | scheme | encryption | decryption |
//! |---|---|---|
//! | age X25519 | [`AgeEncryptor`] (crate `age`), `age -d -i key.txt` opens it | identity files ([`DecryptionKeys::with_identity_file`]) |
//! | age passphrase | scrypt, `age -d` opens it | [`DecryptionKeys::with_passphrase_file`] |
//! | OpenPGP | [`OpenPgpEncryptor`] (rpgp, pure Rust); keys from gpg's keyring or a key file; `gpg --decrypt` opens it | `gpg --decrypt` as a child process: gpg's keyring and agent, no secret passes through kars-backup |
//!
//! Everything streams: memory does not grow with the archive. The manifest records the scheme
//! and the recipients' public identifiers (age recipients, OpenPGP fingerprints), never a secret.
//!
//! ```no_run
//! # fn demo() -> kars_backup_core::Result<()> {
//! use std::sync::Arc;
//! use kars_backup_core::Repository;
//! use kars_backup_encrypt::{DecryptionKeys, encryptor};
//! let enc = encryptor(&["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into()], None)?;
//! let keys = DecryptionKeys::new().with_identity_file("/etc/kars/backup-key.txt".as_ref())?;
//! # let sink: kars_backup_core::DynBackupSink = unimplemented!();
//! let repo = Repository::new(sink).with_decryptor(Arc::new(keys));
//! # Ok(()) }
//! ```

mod age;
mod gpg;
mod key;
mod openpgp;
mod options;

use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

pub use ::age::secrecy::SecretString;
use kars_backup_core::{Decryptor, DynEncryptor, EncryptionInfo, EncryptionScheme, Error, Result};

pub use crate::age::{AgeEncryptor, AgeKeys};
pub use crate::gpg::Gpg;
pub use crate::key::{default_identity_path, generate_identity_file, identity_file_recipients};
pub use crate::openpgp::OpenPgpEncryptor;
pub use crate::options::{DecryptOptions, EncryptOptions, plaintext_policy};

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

/// Reads a passphrase file: its first line, without the line ending. The passphrase never
/// appears in messages.
///
/// # Errors
/// [`Error::InvalidInput`] when the file cannot be read or its first line is empty.
pub fn read_passphrase_file(path: &Path) -> Result<SecretString> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read the passphrase file {}: {e}",
                path.display()
            ))
        })?;
    let first = text.lines().next().unwrap_or("").to_string();
    // Overwrite the copy that held the whole file.
    text.clear();
    text.shrink_to_fit();
    if first.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the passphrase file {} is empty (its first line is the passphrase)",
            path.display()
        )));
    }
    Ok(SecretString::from(first))
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

/// The keys a restore or verification may use: age identities and passphrase, and gpg (with
/// its keyring, `GNUPGHOME`) for OpenPGP archives.
#[derive(Debug, Default)]
pub struct DecryptionKeys {
    age: AgeKeys,
    gpg: Gpg,
}

impl DecryptionKeys {
    /// No age keys; OpenPGP through `gpg` and its keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an age identity file (`age-keygen -o key.txt`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when it cannot be read or holds no identity.
    pub fn with_identity_file(mut self, path: &Path) -> Result<Self> {
        self.age.add_identity_file(path)?;
        Ok(self)
    }

    /// Sets the age passphrase.
    pub fn with_passphrase(mut self, passphrase: SecretString) -> Self {
        self.age.set_passphrase(passphrase);
        self
    }

    /// Sets the age passphrase from a file ([`read_passphrase_file`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when it cannot be read or is empty.
    pub fn with_passphrase_file(self, path: &Path) -> Result<Self> {
        Ok(self.with_passphrase(read_passphrase_file(path)?))
    }

    /// Uses this gpg program for OpenPGP archives.
    pub fn with_gpg(mut self, gpg: Gpg) -> Self {
        self.gpg = gpg;
        self
    }
}

impl Decryptor for DecryptionKeys {
    fn decrypt(
        &self,
        name: &str,
        scheme: EncryptionScheme,
        info: Option<&EncryptionInfo>,
        input: Box<dyn Read + Send>,
    ) -> Result<Box<dyn Read + Send>> {
        match scheme {
            EncryptionScheme::Age => self.age.decrypt(name, info, input),
            EncryptionScheme::OpenPgp => self.gpg.decrypt(name, info, input),
        }
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

    #[test]
    fn passphrase_files_give_the_first_line_and_refuse_empty_ones() {
        use ::age::secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "correct horse\nsecond line\n").unwrap();
        assert_eq!(
            read_passphrase_file(&p).unwrap().expose_secret(),
            "correct horse"
        );
        std::fs::write(&p, "\n").unwrap();
        let err = read_passphrase_file(&p).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        assert!(read_passphrase_file(&dir.path().join("missing")).is_err());
    }
}
