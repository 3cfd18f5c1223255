//! OpenPGP encryption with rpgp (pure Rust, streaming): messages `gpg --decrypt` reads
//! (SEIPD v1 with MDC, AES-256, as gpg 2.2 writes them).

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use kars_backup_core::compress::FinishWrite;
use kars_backup_core::{EncryptionInfo, EncryptionScheme, Encryptor, Error, RecipientInfo, Result};
use pgp::composed::{Deserializable, MessageBuilder, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::SignatureType;
use pgp::types::KeyDetails;

use crate::gpg::Gpg;

/// One OpenPGP recipient: the key the session key is encrypted to.
#[derive(Clone)]
struct Recipient {
    primary: String,
    user_id: Option<String>,
    fingerprint: String,
    key: EncryptionKey,
}

#[derive(Clone)]
enum EncryptionKey {
    Subkey(SignedPublicSubKey),
    Primary(SignedPublicKey),
}

/// Encrypts archives to OpenPGP keys: the output is what `gpg --encrypt -r KEY` writes, and
/// `gpg --decrypt` reads it.
///
/// Keys come from the gpg keyring ([`OpenPgpEncryptor::add_keyring_key`]: gpg resolves the id,
/// checks revocation and expiry, and exports the public key) or from a public key file
/// ([`OpenPgpEncryptor::add_key_file`]). The session key is encrypted to each key's newest usable
/// encryption subkey.
#[derive(Default)]
pub struct OpenPgpEncryptor {
    recipients: Vec<Recipient>,
}

impl fmt::Debug for OpenPgpEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenPgpEncryptor")
            .field(
                "recipients",
                &self
                    .recipients
                    .iter()
                    .map(|r| r.fingerprint.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn fingerprint_of(k: &impl KeyDetails) -> String {
    format!("{:X}", k.fingerprint())
}

impl OpenPgpEncryptor {
    /// No recipients yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no recipient was added.
    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty()
    }

    /// Adds the key `id` (key id, fingerprint or e-mail) from gpg's keyring (`GNUPGHOME`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when gpg does not know the key, the id is ambiguous, or the key
    /// has no usable encryption (sub)key.
    pub fn add_keyring_key(&mut self, gpg: &Gpg, id: &str) -> Result<()> {
        let listed = gpg.list_key(id)?;
        let Some((wanted, _)) = listed
            .encryption_keys
            .iter()
            .max_by_key(|(_, created)| *created)
            .cloned()
        else {
            return Err(Error::InvalidInput(format!(
                "gpg:{id} ({}) has no usable encryption key (all revoked, expired or signing-only)",
                listed.fingerprint
            )));
        };
        let bytes = gpg.export(&listed.fingerprint)?;
        let key = parse_key(&bytes[..], &format!("gpg:{id}"))?;
        let primary = fingerprint_of(&key.primary_key);
        let chosen = if primary == wanted {
            EncryptionKey::Primary(key.clone())
        } else {
            key.public_subkeys
                .iter()
                .find(|s| fingerprint_of(&s.key) == wanted)
                .cloned()
                .map(EncryptionKey::Subkey)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "gpg:{id}: the exported key lacks its encryption subkey {wanted}"
                    ))
                })?
        };
        self.recipients.push(Recipient {
            primary,
            user_id: listed.user_id,
            fingerprint: wanted,
            key: chosen,
        });
        Ok(())
    }

    /// Adds the public key in a file (ASCII-armored or binary, as `gpg --export [-a]` writes).
    /// Its self-signatures must verify; the newest subkey whose binding allows encryption (and
    /// that is not revoked) is used. Expiry is not checked for key files: prefer the keyring.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the file cannot be read or holds no usable key.
    pub fn add_key_file(&mut self, path: &Path) -> Result<()> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| {
            Error::InvalidInput(format!("cannot read the OpenPGP key file {shown}: {e}"))
        })?;
        let (key, _) = SignedPublicKey::from_reader_single(BufReader::new(file)).map_err(|e| {
            Error::InvalidInput(format!(
                "{shown} is not an OpenPGP public key ({e}); export one with gpg --export -a KEY"
            ))
        })?;
        key.verify_bindings().map_err(|e| {
            Error::InvalidInput(format!(
                "the OpenPGP key in {shown} has invalid self-signatures: {e}"
            ))
        })?;
        let primary = fingerprint_of(&key.primary_key);
        let subkey = key
            .public_subkeys
            .iter()
            .filter(|s| {
                let latest = s
                    .signatures
                    .iter()
                    .max_by_key(|sig| sig.created().map(|t| t.as_secs()).unwrap_or(0));
                latest.is_some_and(|sig| {
                    sig.typ() == Some(SignatureType::SubkeyBinding)
                        && (sig.key_flags().encrypt_comms() || sig.key_flags().encrypt_storage())
                })
            })
            .max_by_key(|s| s.key.created_at().as_secs());
        let (fingerprint, chosen) = match subkey {
            Some(s) => (fingerprint_of(&s.key), EncryptionKey::Subkey(s.clone())),
            None if key.primary_key.algorithm().can_encrypt() => {
                (primary.clone(), EncryptionKey::Primary(key.clone()))
            }
            None => {
                return Err(Error::InvalidInput(format!(
                    "the OpenPGP key {primary} in {shown} has no encryption subkey"
                )));
            }
        };
        let user_id = key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned());
        self.recipients.push(Recipient {
            primary,
            user_id,
            fingerprint,
            key: chosen,
        });
        Ok(())
    }
}

fn parse_key(bytes: &[u8], what: &str) -> Result<SignedPublicKey> {
    SignedPublicKey::from_reader_single(bytes)
        .map(|(k, _)| k)
        .map_err(|e| Error::InvalidInput(format!("{what}: cannot read the exported key: {e}")))
}

impl Encryptor for OpenPgpEncryptor {
    fn info(&self) -> EncryptionInfo {
        EncryptionInfo {
            scheme: EncryptionScheme::OpenPgp,
            recipients: self
                .recipients
                .iter()
                .map(|r| RecipientInfo {
                    kind: "openpgp".into(),
                    id: r.primary.clone(),
                    subkey: (r.fingerprint != r.primary).then(|| r.fingerprint.clone()),
                    user_id: r.user_id.clone(),
                })
                .collect(),
        }
    }

    fn encrypt(&self, mut out: Box<dyn Write + Send>) -> io::Result<Box<dyn FinishWrite>> {
        if self.recipients.is_empty() {
            return Err(io::Error::other("OpenPGP encryption without recipients"));
        }
        // rpgp pulls its input from a reader: the writer hands chunks to a thread running it.
        // The thread encrypts the session key to every recipient first and reports back, so a
        // key rpgp cannot use fails here, before any data flows.
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let (ready_tx, ready_rx) = sync_channel::<io::Result<()>>(1);
        let recipients = self.recipients.clone();
        let thread = std::thread::Builder::new()
            .name("openpgp-encrypt".into())
            .spawn(move || -> io::Result<()> {
                let mut rng = rand::thread_rng();
                let mut builder = MessageBuilder::from_reader(
                    "",
                    ChunkReader {
                        rx,
                        current: Vec::new(),
                        offset: 0,
                        ended: false,
                    },
                )
                .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
                for r in &recipients {
                    let added = match &r.key {
                        EncryptionKey::Subkey(k) => builder.encrypt_to_key(&mut rng, k).map(|_| ()),
                        EncryptionKey::Primary(k) => {
                            builder.encrypt_to_key(&mut rng, k).map(|_| ())
                        }
                    };
                    if let Err(e) = added {
                        let msg = format!("OpenPGP key {}: {e}", r.fingerprint);
                        let _ = ready_tx.send(Err(io::Error::other(msg.clone())));
                        return Err(io::Error::other(msg));
                    }
                }
                let _ = ready_tx.send(Ok(()));
                builder
                    .to_writer(&mut rng, &mut out)
                    .map_err(|e| io::Error::other(format!("OpenPGP encryption: {e}")))?;
                out.flush()
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the OpenPGP encryption thread stopped"))??;
        Ok(Box::new(PgpWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            thread: Some(thread),
        }))
    }
}

const CHUNK: usize = 256 * 1024;

struct PgpWriter {
    tx: Option<SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl PgpWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let sent = self.tx.as_ref().map(|tx| tx.send(chunk).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The encryption thread stopped: its error says why.
        Err(self.join().err().unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::BrokenPipe, "OpenPGP encryption stopped")
        }))
    }

    fn join(&mut self) -> io::Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("OpenPGP encryption thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Write for PgpWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FinishWrite for PgpWriter {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.send()?;
        self.buf = Vec::new();
        let ended = self.tx.as_ref().map(|tx| tx.send(Vec::new()).is_ok());
        let joined = self.join();
        match ended {
            Some(true) => joined,
            _ => Err(joined.err().unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::BrokenPipe, "OpenPGP encryption stopped")
            })),
        }
    }
}

impl Drop for PgpWriter {
    fn drop(&mut self) {
        // Without the end marker the reader fails, and so does the encryption thread.
        self.tx = None;
    }
}

struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    current: Vec<u8>,
    offset: usize,
    ended: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.offset >= self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                // An empty chunk is the end marker; a closed channel without it is an abort.
                Ok(c) if c.is_empty() => self.ended = true,
                Ok(c) => {
                    self.current = c;
                    self.offset = 0;
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the backup stopped before the end of the archive",
                    ));
                }
            }
        }
        let n = out.len().min(self.current.len() - self.offset);
        out[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}
