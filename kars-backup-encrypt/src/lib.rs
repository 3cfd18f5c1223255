//! Encryption of kars-backup archives: **age** and **OpenPGP**, implementing core's
//! [`Encryptor`](kars_backup_core::Encryptor) and [`Decryptor`](kars_backup_core::Decryptor).
//!
//! - [`encryptor()`] builds the encryptor of a backup from `--encrypt-to` recipients
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
mod decryptor;
mod encryptor;
mod gpg;
mod key;
mod openpgp;
mod options;

pub use ::age::secrecy::SecretString;

pub use crate::age::{AgeEncryptor, AgeKeys};
pub use crate::decryptor::DecryptionKeys;
pub use crate::encryptor::{Recipient, encryptor, encryptor_with_gpg};
pub use crate::gpg::Gpg;
pub use crate::key::{
    default_identity_path, generate_identity_file, identity_file_recipients, read_passphrase_file,
};
pub use crate::openpgp::OpenPgpEncryptor;
pub use crate::options::{DecryptOptions, EncryptOptions, plaintext_policy};
