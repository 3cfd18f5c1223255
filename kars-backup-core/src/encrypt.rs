//! Encryption of the stored bytes: the small interface the pipeline uses.
//!
//! The pipeline encrypts **after compression and before hashing**: the manifest's SHA-256 is
//! the checksum of the ciphertext, so `verify`, `copy` and `--verify-upload` check an encrypted
//! archive without any key. Restores run the other way: hash, then decrypt, then decompress.
//!
//! Core defines only the interface, so it carries no cryptography: an [`Encryptor`] wraps a
//! writer, a [`Decryptor`] wraps a reader, and [`EncryptionInfo`] is what the manifest records
//! (the scheme and the recipients' public identifiers, never a secret). The `kars-backup-encrypt`
//! crate implements them for age and OpenPGP; attach them with
//! [`BackupJob::with_encryptor`](crate::BackupJob::with_encryptor) and
//! [`Repository::with_decryptor`](crate::Repository::with_decryptor).

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::compress::FinishWrite;
use crate::error::Result;

/// How an archive is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionScheme {
    /// age v1 (`age-encryption.org/v1`): X25519 recipients, or a passphrase (scrypt).
    Age,
    /// OpenPGP, as `gpg --encrypt` writes it and `gpg --decrypt` reads it.
    #[serde(rename = "openpgp")]
    OpenPgp,
}

/// File-name suffixes of encrypted archives, with their scheme.
pub const ENCRYPTION_SUFFIXES: &[(&str, EncryptionScheme)] = &[
    ("age", EncryptionScheme::Age),
    ("gpg", EncryptionScheme::OpenPgp),
    ("pgp", EncryptionScheme::OpenPgp),
    ("asc", EncryptionScheme::OpenPgp),
];

impl EncryptionScheme {
    /// The suffix kars-backup appends to an encrypted archive's name (`.age`, `.gpg`).
    pub fn extension(&self) -> &'static str {
        match self {
            EncryptionScheme::Age => ".age",
            EncryptionScheme::OpenPgp => ".gpg",
        }
    }

    /// The scheme's name (`age`, `openpgp`).
    pub fn name(&self) -> &'static str {
        match self {
            EncryptionScheme::Age => "age",
            EncryptionScheme::OpenPgp => "openpgp",
        }
    }

    /// Recognises an encrypted stream from its first bytes (for archives without a manifest):
    /// age (binary or armored) and OpenPGP messages (binary packets starting with an encrypted
    /// session key, or ASCII armor). gzip, zstd, tar and `pg_dump` output never match.
    pub fn detect(magic: &[u8]) -> Option<EncryptionScheme> {
        if magic.starts_with(b"age-encryption.org/")
            || magic.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
        {
            return Some(EncryptionScheme::Age);
        }
        if magic.starts_with(b"-----BEGIN PGP MESSAGE-----") {
            return Some(EncryptionScheme::OpenPgp);
        }
        let first = *magic.first()?;
        if first & 0x80 == 0 {
            return None;
        }
        // Packet tag: new format keeps it in bits 0-5, old format in bits 2-5.
        let tag = if first & 0x40 != 0 {
            first & 0x3f
        } else {
            (first >> 2) & 0x0f
        };
        // 1: public-key encrypted session key, 3: symmetric-key encrypted session key.
        matches!(tag, 1 | 3).then_some(EncryptionScheme::OpenPgp)
    }

    /// The scheme an archive name's last suffix stands for (`….tar.gz.age`).
    pub fn from_name(name: &str) -> Option<EncryptionScheme> {
        let (_, suffix) = name.rsplit_once('.')?;
        ENCRYPTION_SUFFIXES
            .iter()
            .find(|(s, _)| *s == suffix)
            .map(|(_, scheme)| *scheme)
    }
}

impl fmt::Display for EncryptionScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One recipient as the manifest records it: public identifiers only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientInfo {
    /// `x25519` (an age recipient), `scrypt` (an age passphrase), `openpgp` (an OpenPGP key).
    pub kind: String,
    /// age: the recipient (`age1…`, public); scrypt: `passphrase`; OpenPGP: the primary key's
    /// fingerprint.
    pub id: String,
    /// OpenPGP: the fingerprint of the (sub)key the session key was encrypted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subkey: Option<String>,
    /// OpenPGP: the key's user id (`Admin <admin@example.com>`), as a hint for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl fmt::Display for RecipientInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind.as_str() {
            "scrypt" => f.write_str("a passphrase"),
            "openpgp" => {
                write!(f, "OpenPGP key {}", self.id)?;
                if let Some(u) = &self.user_id {
                    write!(f, " ({u})")?;
                }
                Ok(())
            }
            _ => f.write_str(&self.id),
        }
    }
}

/// What the manifest records about an archive's encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    /// The scheme.
    pub scheme: EncryptionScheme,
    /// Who can decrypt it.
    pub recipients: Vec<RecipientInfo>,
}

impl EncryptionInfo {
    /// The recipients, comma-separated, for messages.
    pub fn describe_recipients(&self) -> String {
        self.recipients
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Encrypts the stored bytes of a backup.
///
/// # Contract
/// - [`Encryptor::info`] returns public information only (recipients, fingerprints): it is
///   written into the manifest.
/// - [`Encryptor::encrypt`] wraps the writer of the stored bytes; the returned writer must
///   stream (memory must not grow with the archive) and write everything, including any
///   trailer, when finished. Called once per backup, on a blocking thread.
pub trait Encryptor: Send + Sync + fmt::Debug {
    /// The scheme and recipients, for the manifest and the archive's name.
    fn info(&self) -> EncryptionInfo;

    /// Wraps `out` in an encrypting writer.
    ///
    /// # Errors
    /// Writing a header to `out` failed, or the keys cannot be used.
    fn encrypt(&self, out: Box<dyn Write + Send>) -> io::Result<Box<dyn FinishWrite>>;
}

/// A shared [`Encryptor`].
pub type DynEncryptor = Arc<dyn Encryptor>;

/// Decrypts the stored bytes of a backup during a restore or a verification.
///
/// # Contract
/// - [`Decryptor::decrypt`] reads and unwraps the header before returning, so a missing or
///   wrong key fails here, before any payload reaches a staging target. It is called on a
///   blocking thread. Errors: [`Error::KeyMissing`](crate::Error::KeyMissing) when no key of
///   the archive's scheme was given at all, [`Error::DecryptionFailed`](crate::Error::DecryptionFailed)
///   when the keys given do not open it or the data is not a valid encrypted stream.
/// - The returned reader streams; it returns an error, never a clean end, when any part of
///   the ciphertext fails authentication (including the end: a truncated stream is an error).
pub trait Decryptor: Send + Sync + fmt::Debug {
    /// Opens the encrypted stream `input` of `archive`.
    ///
    /// # Errors
    /// See the trait's contract.
    fn decrypt(
        &self,
        archive: Sealed<'_>,
        input: Box<dyn Read + Send>,
    ) -> Result<Box<dyn Read + Send>>;
}

/// An encrypted archive as a [`Decryptor`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Sealed<'a> {
    /// The archive's name (for messages).
    pub name: &'a str,
    /// How it is encrypted (detected from its first bytes).
    pub scheme: EncryptionScheme,
    /// The manifest's record of its recipients, when there is a manifest.
    pub info: Option<&'a EncryptionInfo>,
}

/// A shared [`Decryptor`].
pub type DynDecryptor = Arc<dyn Decryptor>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_encrypted_streams_and_nothing_else() {
        assert_eq!(
            EncryptionScheme::detect(b"age-encryption.org/v1\n-> X25519"),
            Some(EncryptionScheme::Age)
        );
        assert_eq!(
            EncryptionScheme::detect(b"-----BEGIN AGE ENCRYPTED FILE-----\n"),
            Some(EncryptionScheme::Age)
        );
        // gpg 2.2: old-format PKESK (0x85), new-format PKESK (0xc1), SKESK (0x8c, 0xc3).
        for first in [0x85u8, 0x84, 0xc1, 0x8c, 0xc3] {
            assert_eq!(
                EncryptionScheme::detect(&[first, 0x01, 0x0c]),
                Some(EncryptionScheme::OpenPgp),
                "{first:#x}"
            );
        }
        for plain in [
            &[0x1f, 0x8b, 0x08][..],
            &[0x28, 0xb5, 0x2f, 0xfd],
            b"PGDMP",
            b"assets.db\0\0\0",
            b"--\n-- PostgreSQL database dump",
            &[0xa3, 0x01], // compressed-data packet: not encrypted
            b"",
        ] {
            assert_eq!(EncryptionScheme::detect(plain), None, "{plain:?}");
        }
    }

    #[test]
    fn names_and_info_serialise() {
        assert_eq!(
            EncryptionScheme::from_name("a-20241218.tar.gz.gpg"),
            Some(EncryptionScheme::OpenPgp)
        );
        assert_eq!(
            EncryptionScheme::from_name("a-20241218-020000.tar.gz.age"),
            Some(EncryptionScheme::Age)
        );
        assert_eq!(EncryptionScheme::from_name("a-20241218.tar.gz"), None);
        let info = EncryptionInfo {
            scheme: EncryptionScheme::OpenPgp,
            recipients: vec![RecipientInfo {
                kind: "openpgp".into(),
                id: "ABCD".into(),
                subkey: Some("EF01".into()),
                user_id: None,
            }],
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(
            json,
            r#"{"scheme":"openpgp","recipients":[{"kind":"openpgp","id":"ABCD","subkey":"EF01"}]}"#
        );
        assert_eq!(serde_json::from_str::<EncryptionInfo>(&json).unwrap(), info);
    }
}
