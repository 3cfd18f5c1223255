//! age: X25519 recipients (`age1…`), passphrases (scrypt), identity files.

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use ::age::secrecy::SecretString;
use kars_backup_core::compress::FinishWrite;
use kars_backup_core::{EncryptionInfo, EncryptionScheme, Encryptor, Error, RecipientInfo, Result};

/// scrypt's work factor (log2 N) for passphrases: the `age` tool's. The crate would time the
/// machine and could pick 2^19 or more, which needs 512 MB and more for the key derivation.
const SCRYPT_WORK_FACTOR: u8 = 18;

/// Encrypts archives with age: to X25519 recipients, or with a passphrase (scrypt).
///
/// The output is what `age -r age1…` (or `age -p`) writes; `age -d -i key.txt` decrypts it.
pub struct AgeEncryptor {
    target: Target,
}

enum Target {
    Recipients(Vec<::age::x25519::Recipient>),
    Passphrase(SecretString),
}

impl fmt::Debug for AgeEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Recipients(r) => f
                .debug_struct("AgeEncryptor")
                .field(
                    "recipients",
                    &r.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                )
                .finish(),
            Target::Passphrase(_) => f
                .debug_struct("AgeEncryptor")
                .field("passphrase", &"<redacted>")
                .finish(),
        }
    }
}

impl AgeEncryptor {
    /// Encrypts to these age recipients (`age1…`, as `age-keygen` prints them).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty list or a string that is not an age recipient.
    pub fn to_recipients<S: AsRef<str>>(recipients: &[S]) -> Result<Self> {
        if recipients.is_empty() {
            return Err(Error::InvalidInput(
                "age encryption needs at least one recipient (age1…)".into(),
            ));
        }
        let parsed = recipients
            .iter()
            .map(|r| {
                let r = r.as_ref().trim();
                r.parse::<::age::x25519::Recipient>().map_err(|e| {
                    Error::InvalidInput(format!(
                        "{r:?} is not an age recipient ({e}); use the public key age-keygen prints (age1…)"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AgeEncryptor {
            target: Target::Recipients(parsed),
        })
    }

    /// Encrypts with a passphrase: scrypt with work factor 2^18, as the `age` tool writes it
    /// (about 256 MB and half a second of key derivation, once per backup).
    pub fn with_passphrase(passphrase: SecretString) -> Self {
        AgeEncryptor {
            target: Target::Passphrase(passphrase),
        }
    }
}

impl Encryptor for AgeEncryptor {
    fn info(&self) -> EncryptionInfo {
        let recipients = match &self.target {
            Target::Recipients(r) => r
                .iter()
                .map(|r| RecipientInfo {
                    kind: "x25519".into(),
                    id: r.to_string(),
                    subkey: None,
                    user_id: None,
                })
                .collect(),
            Target::Passphrase(_) => vec![RecipientInfo {
                kind: "scrypt".into(),
                id: "passphrase".into(),
                subkey: None,
                user_id: None,
            }],
        };
        EncryptionInfo {
            scheme: EncryptionScheme::Age,
            recipients,
        }
    }

    fn encrypt(&self, out: Box<dyn Write + Send>) -> io::Result<Box<dyn FinishWrite>> {
        let encryptor = match &self.target {
            Target::Recipients(r) => {
                ::age::Encryptor::with_recipients(r.iter().map(|r| r as &dyn ::age::Recipient))
                    .map_err(|e| io::Error::other(format!("age: {e}")))?
            }
            Target::Passphrase(p) => {
                let mut recipient = ::age::scrypt::Recipient::new(p.clone());
                recipient.set_work_factor(SCRYPT_WORK_FACTOR);
                ::age::Encryptor::with_recipients(std::iter::once(&recipient as _))
                    .map_err(|e| io::Error::other(format!("age: {e}")))?
            }
        };
        Ok(Box::new(AgeWriter(encryptor.wrap_output(out)?)))
    }
}

struct AgeWriter(::age::stream::StreamWriter<Box<dyn Write + Send>>);

impl Write for AgeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FinishWrite for AgeWriter {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut out = self.0.finish()?;
        out.flush()
    }
}

/// The age keys of a restore: identities (from identity files) and a passphrase.
#[derive(Default)]
pub struct AgeKeys {
    identities: Vec<Box<dyn ::age::Identity + Send + Sync>>,
    files: Vec<String>,
    passphrase: Option<SecretString>,
}

impl fmt::Debug for AgeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeKeys")
            .field("identity_files", &self.files)
            .field("identities", &self.identities.len())
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl AgeKeys {
    /// Adds the identities of an age identity file (`age-keygen -o key.txt`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the file cannot be read or holds no identity (its content
    /// never appears in the message).
    pub fn add_identity_file(&mut self, path: &Path) -> Result<()> {
        let shown = path.display().to_string();
        let file = ::age::IdentityFile::from_file(shown.clone()).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read the age identity file {shown}: {e}; give a file written by age-keygen"
            ))
        })?;
        let identities = file
            .into_identities()
            .map_err(|e| Error::InvalidInput(format!("age identity file {shown}: {e}")))?;
        if identities.is_empty() {
            return Err(Error::InvalidInput(format!(
                "the age identity file {shown} holds no identity (AGE-SECRET-KEY-1…)"
            )));
        }
        self.identities.extend(identities);
        self.files.push(shown);
        Ok(())
    }

    /// Sets the passphrase for passphrase-encrypted archives.
    pub fn set_passphrase(&mut self, passphrase: SecretString) {
        self.passphrase = Some(passphrase);
    }

    /// Whether any key was given.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.passphrase.is_none()
    }

    /// Unwraps the header of the age stream `input` and returns the plaintext reader.
    pub(crate) fn decrypt(
        &self,
        name: &str,
        info: Option<&EncryptionInfo>,
        input: Box<dyn Read + Send>,
    ) -> Result<Box<dyn Read + Send>> {
        let failed = |reason: String| Error::DecryptionFailed {
            name: name.to_string(),
            reason,
        };
        let to = info
            .map(|i| format!(" to {}", i.describe_recipients()))
            .unwrap_or_default();
        // Binary or ASCII-armored (`age -a`), recognised by the reader.
        let armored = ::age::armor::ArmoredReader::new(BufReader::with_capacity(256 * 1024, input));
        let decryptor = ::age::Decryptor::new_buffered(armored)
            .map_err(|e| failed(format!("not a readable age file: {e}")))?;
        let reader = if decryptor.is_scrypt() {
            let Some(passphrase) = &self.passphrase else {
                return Err(Error::KeyMissing {
                    name: name.to_string(),
                    reason: "it is encrypted with an age passphrase; give it with --passphrase-file FILE".into(),
                });
            };
            let identity = ::age::scrypt::Identity::new(passphrase.clone());
            decryptor
                .decrypt(std::iter::once(&identity as &dyn ::age::Identity))
                .map_err(|e| match e {
                    ::age::DecryptError::DecryptionFailed | ::age::DecryptError::NoMatchingKeys => {
                        failed("the passphrase is wrong (check the --passphrase-file)".into())
                    }
                    e => failed(format!("age: {e}")),
                })?
        } else {
            if self.identities.is_empty() {
                return Err(Error::KeyMissing {
                    name: name.to_string(),
                    reason: format!(
                        "it is encrypted with age{to}; give the matching identity file with --identity FILE (age-keygen's key file)"
                    ),
                });
            }
            decryptor
                .decrypt(
                    self.identities
                        .iter()
                        .map(|i| i.as_ref() as &dyn ::age::Identity),
                )
                .map_err(|e| match e {
                    ::age::DecryptError::NoMatchingKeys => failed(format!(
                        "none of the identities in {} is a recipient of it{}; give the identity file of one of its recipients",
                        self.files.join(", "),
                        info.map(|i| format!(" (it is encrypted to {})", i.describe_recipients()))
                            .unwrap_or_default()
                    )),
                    e => failed(format!("age: {e}")),
                })?
        };
        Ok(Box::new(AuthenticatedReader(reader)))
    }
}

/// The plaintext of an age stream, with errors that say what they mean.
struct AuthenticatedReader<R>(R);

impl<R: Read> Read for AuthenticatedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the age ciphertext failed authentication ({e}): the archive was tampered with or truncated"
                    ),
                )
            } else {
                e
            }
        })
    }
}
