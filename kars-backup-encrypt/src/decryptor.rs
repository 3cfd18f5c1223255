//! The keys that open a backup's archive in a restore or verification: age identities and
//! passphrase, and gpg for OpenPGP.

use std::io::Read;
use std::path::Path;

use ::age::secrecy::SecretString;
use kars_backup_core::{Decryptor, EncryptionScheme, Result, Sealed};

use crate::age::AgeKeys;
use crate::gpg::Gpg;
use crate::key::read_passphrase_file;

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
    /// [`Error::InvalidInput`](kars_backup_core::Error::InvalidInput) when it cannot be read or
    /// holds no identity.
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
    /// [`Error::InvalidInput`](kars_backup_core::Error::InvalidInput) when it cannot be read or
    /// is empty.
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
        archive: Sealed<'_>,
        input: Box<dyn Read + Send>,
    ) -> Result<Box<dyn Read + Send>> {
        let Sealed { name, scheme, info } = archive;
        match scheme {
            EncryptionScheme::Age => self.age.decrypt(name, info, input),
            EncryptionScheme::OpenPgp => self.gpg.decrypt(name, info, input),
        }
    }
}
