//! The streaming pipeline between a database and its sinks.
//!
//! Backup: source → [`PayloadWriter`] → compression thread (hashing and counting the stored
//! bytes) → uploads to every destination at once. Restore: sink → hashing → decompression thread →
//! [`PayloadReader`] → the source's staging. Every stage is joined by a small bounded channel, so
//! memory does not grow with the database, and reading, compressing and uploading overlap.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::compress::{self, Compression, FinishWrite};
use crate::encrypt::{DynDecryptor, DynEncryptor, EncryptionInfo, EncryptionScheme, Sealed};
use crate::error::{Error, Result};
use crate::progress::DynProgress;
use crate::sink::ByteStream;

/// Size of the chunks passed between stages.
pub const CHUNK_SIZE: usize = 1024 * 1024;
/// Chunks buffered between two stages.
pub const CHANNEL_DEPTH: usize = 4;

/// Where a source writes its payload (a tar, an SQL dump, …).
///
/// Use the async [`PayloadWriter::write_all`] from async code, or the [`std::io::Write`] impl from a
/// blocking thread (`tokio::task::spawn_blocking`); never the `Write` impl on an async worker.
/// Call [`PayloadWriter::finish`] (or [`PayloadWriter::finish_blocking`]) at the end: a writer
/// dropped without it marks the payload as incomplete and the backup fails.
pub struct PayloadWriter {
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    buf: BytesMut,
    written: u64,
    progress: DynProgress,
}

impl fmt::Debug for PayloadWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadWriter")
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

fn pipeline_closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the backup pipeline stopped (a destination or the compressor failed)",
    )
}

impl PayloadWriter {
    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Appends bytes (async).
    ///
    /// # Errors
    /// `BrokenPipe` when the pipeline behind it failed.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.written += n as u64;
            self.progress.advance(n as u64);
            if self.buf.len() >= CHUNK_SIZE {
                let chunk = self.buf.split().freeze();
                self.send_async(chunk).await?;
            }
        }
        Ok(())
    }

    /// Appends a chunk without copying it (async).
    ///
    /// # Errors
    /// `BrokenPipe` when the pipeline behind it failed.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if !self.buf.is_empty() {
            let pending = self.buf.split().freeze();
            self.send_async(pending).await?;
        }
        self.written += chunk.len() as u64;
        self.progress.advance(chunk.len() as u64);
        self.send_async(chunk).await
    }

    async fn send_async(&mut self, chunk: Bytes) -> io::Result<()> {
        let tx = self.tx.as_ref().ok_or_else(pipeline_closed)?;
        tx.send(Ok(chunk)).await.map_err(|_| pipeline_closed())
    }

    fn send_blocking(&mut self, chunk: Bytes) -> io::Result<()> {
        let tx = self.tx.as_ref().ok_or_else(pipeline_closed)?;
        tx.blocking_send(Ok(chunk)).map_err(|_| pipeline_closed())
    }

    /// Ends the payload (async). Returns the number of bytes written.
    ///
    /// # Errors
    /// `BrokenPipe` when the pipeline behind it failed.
    pub async fn finish(mut self) -> io::Result<u64> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send_async(chunk).await?;
        }
        // An empty chunk is the end marker: a channel closed without it means the source died.
        self.send_async(Bytes::new()).await?;
        self.tx = None;
        Ok(self.written)
    }

    /// Ends the payload from a blocking thread. Returns the number of bytes written.
    ///
    /// # Errors
    /// `BrokenPipe` when the pipeline behind it failed.
    pub fn finish_blocking(mut self) -> io::Result<u64> {
        self.flush()?;
        self.send_blocking(Bytes::new())?;
        self.tx = None;
        Ok(self.written)
    }
}

impl Write for PayloadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (CHUNK_SIZE - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        self.progress.advance(n as u64);
        if self.buf.len() >= CHUNK_SIZE {
            let chunk = self.buf.split().freeze();
            self.send_blocking(chunk)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send_blocking(chunk)?;
        }
        Ok(())
    }
}

/// Where a source reads a payload from during a restore.
///
/// Read it with the [`std::io::Read`] impl from a blocking thread, or with
/// [`PayloadReader::next_chunk`] from async code.
pub struct PayloadReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    read: u64,
    limit: Option<u64>,
    cancel: Option<CancellationToken>,
}

impl fmt::Debug for PayloadReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadReader")
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl PayloadReader {
    /// The next chunk, `None` at the end (async).
    ///
    /// # Errors
    /// A download, checksum or decompression failure upstream.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        self.check_cancelled()?;
        if !self.current.is_empty() {
            let c = std::mem::take(&mut self.current);
            return Ok(Some(c));
        }
        let next = match &self.cancel {
            Some(cancel) => tokio::select! {
                next = self.rx.recv() => next,
                () = cancel.cancelled() => return Err(interrupted()),
            },
            None => self.rx.recv().await,
        };
        match next {
            None => Ok(None),
            Some(Ok(c)) => self.account(c).map(Some),
            Some(Err(e)) => Err(e),
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Makes reads fail (with "the restore was interrupted") once `cancel` is cancelled, so a
    /// source's staging stops at its next read and cleans up as for any failed read.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = Some(cancel);
        self
    }

    fn check_cancelled(&self) -> io::Result<()> {
        match &self.cancel {
            Some(c) if c.is_cancelled() => Err(interrupted()),
            _ => Ok(()),
        }
    }

    fn account(&mut self, c: Bytes) -> io::Result<Bytes> {
        self.read += c.len() as u64;
        if let Some(limit) = self.limit {
            if self.read > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the payload is larger than the {limit} bytes its manifest declares; the archive was tampered with"
                    ),
                ));
            }
        }
        Ok(c)
    }

    /// A reader over an in-memory payload (for tests and for callers that have the bytes).
    pub fn from_bytes(data: Bytes) -> Self {
        let (tx, rx) = mpsc::channel(1);
        if !data.is_empty() {
            tx.try_send(Ok(data)).expect("fresh channel has room");
        }
        PayloadReader {
            rx,
            current: Bytes::new(),
            read: 0,
            limit: None,
            cancel: None,
        }
    }
}

/// The error of a read after the restore was cancelled (not `ErrorKind::Interrupted`, which
/// readers retry).
fn interrupted() -> io::Error {
    io::Error::other("the restore was interrupted")
}

impl Read for PayloadReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        self.check_cancelled()?;
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(c)) => self.current = self.account(c)?,
                Some(Err(e)) => return Err(e),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Checksums and size of a stream of stored bytes: what a manifest records, and what a read of
/// the stored bytes is checked against.
///
/// A backup records the SHA-256 (what operators check with `sha256sum`, and what older
/// kars-backup versions read) and the BLAKE3 of its archive. A read is checked with one of them:
/// BLAKE3 when the manifest has it (3.5× less CPU than SHA-256 on this project's machines, with
/// SHA extensions), SHA-256 for manifests written before BLAKE3 was recorded. Both are 256-bit
/// cryptographic hashes: a corrupted or tampered archive fails either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    /// SHA-256, lowercase hex; empty when this digest only has the BLAKE3 of bytes that were
    /// checked with it (see [`Digested::confirmed`]).
    pub sha256: String,
    /// BLAKE3, lowercase hex (absent in manifests written before it was recorded).
    pub blake3: Option<String>,
    /// Number of bytes.
    pub size: u64,
}

impl Digested {
    /// Checks these stored bytes against what a manifest `expected`: the size, and the BLAKE3 when
    /// both have one, else the SHA-256.
    ///
    /// # Errors
    /// [`Error::ChecksumMismatch`] naming `name` when checksum or size differ, or when no
    /// checksum was computed that the manifest records (a digester made for another manifest).
    pub fn check(&self, expected: &Digested, name: impl Into<String>) -> Result<()> {
        let (want, got) = match (&expected.blake3, &self.blake3) {
            (Some(want), Some(got)) => (want.as_str(), got.as_str()),
            _ => (expected.sha256.as_str(), self.sha256.as_str()),
        };
        if self.size == expected.size && !got.is_empty() && want == got {
            return Ok(());
        }
        Err(Error::ChecksumMismatch {
            name: name.into(),
            expected: want.to_string(),
            actual: if got.is_empty() {
                "(not computed)".to_string()
            } else {
                got.to_string()
            },
            expected_size: expected.size,
            actual_size: self.size,
        })
    }

    /// After a successful [`Digested::check`]: these bytes' digest with the checksums that were not
    /// computed taken from `expected` (the bytes are the manifest's, so its SHA-256 is theirs).
    pub fn confirmed(self, expected: &Digested) -> Digested {
        Digested {
            sha256: if self.sha256.is_empty() {
                expected.sha256.clone()
            } else {
                self.sha256
            },
            blake3: self.blake3.or_else(|| expected.blake3.clone()),
            size: self.size,
        }
    }
}

/// Computes a [`Digested`] over stored bytes fed chunk by chunk (uploads, downloads, copies and
/// read-back checks hash the same way).
///
/// [`Digester::new`] computes both checksums (for a new manifest); [`Digester::checking`] only the
/// one a check against a manifest needs.
#[derive(Debug, Clone)]
pub struct Digester {
    sha256: Option<Sha256>,
    blake3: Option<blake3::Hasher>,
    size: u64,
}

impl Default for Digester {
    fn default() -> Self {
        Digester::new()
    }
}

impl Digester {
    /// A digester of both checksums that has seen no bytes.
    pub fn new() -> Self {
        Digester {
            sha256: Some(Sha256::new()),
            blake3: Some(blake3::Hasher::new()),
            size: 0,
        }
    }

    /// A digester of the one checksum a check against `expected` uses: BLAKE3 when the manifest
    /// records it, else SHA-256; both when nothing is expected (the bytes' digest is reported).
    pub fn checking(expected: Option<&Digested>) -> Self {
        match expected {
            Some(e) if e.blake3.is_some() => Digester {
                sha256: None,
                blake3: Some(blake3::Hasher::new()),
                size: 0,
            },
            Some(_) => Digester {
                sha256: Some(Sha256::new()),
                blake3: None,
                size: 0,
            },
            None => Digester::new(),
        }
    }

    /// Adds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.blake3 {
            h.update(chunk);
        }
        self.size += chunk.len() as u64;
    }

    /// The checksums and size of everything added.
    pub fn finish(self) -> Digested {
        Digested {
            sha256: self
                .sha256
                .map(|h| hex::encode(h.finalize()))
                .unwrap_or_default(),
            blake3: self.blake3.map(|h| h.finalize().to_hex().to_string()),
            size: self.size,
        }
    }
}

/// What the compression stage produced.
#[derive(Debug, Clone)]
pub struct CompressedSummary {
    /// Checksum and size of the stored (compressed) bytes.
    pub stored: Digested,
    /// Size of the payload before compression.
    pub payload_size: u64,
}

/// Starts the compression stage of a backup.
///
/// Returns the writer for the source, the receiver of stored-byte chunks for the uploads, and the
/// stage's handle, which yields checksum and sizes once the source finished and all bytes went out.
pub fn start_compression(
    compression: Compression,
    threads: usize,
    progress: DynProgress,
) -> (
    PayloadWriter,
    mpsc::Receiver<Bytes>,
    JoinHandle<io::Result<CompressedSummary>>,
) {
    start_compression_with(compression, threads, None, progress)
}

/// [`start_compression`] with encryption: payload → compression → `encryptor` → SHA-256 and
/// counting of the stored (encrypted) bytes.
pub fn start_compression_with(
    compression: Compression,
    threads: usize,
    encryptor: Option<DynEncryptor>,
    progress: DynProgress,
) -> (
    PayloadWriter,
    mpsc::Receiver<Bytes>,
    JoinHandle<io::Result<CompressedSummary>>,
) {
    let (raw_tx, mut raw_rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let handle = tokio::task::spawn_blocking(move || {
        let sender = HashingSender {
            tx: out_tx,
            digester: Digester::new(),
            buf: BytesMut::with_capacity(CHUNK_SIZE),
        };
        let shared = Arc::new(Mutex::new(Some(sender)));
        let hashing: Box<dyn Write + Send> = Box::new(SharedWriter(shared.clone()));
        // The encryptor sits between the compressor and the hashing: it is finished after the
        // compressor wrote its trailer, so both are shared slots taken out at the end.
        let (compressed_out, encrypting) = match &encryptor {
            None => (hashing, None),
            Some(e) => {
                let slot = Arc::new(Mutex::new(Some(e.encrypt(hashing)?)));
                let out: Box<dyn Write + Send> = Box::new(SharedFinishWriter(slot.clone()));
                (out, Some(slot))
            }
        };
        let mut encoder = compress::compressor(compression, threads, compressed_out);
        let mut payload_size = 0u64;
        let mut ended = false;
        while let Some(chunk) = raw_rx.blocking_recv() {
            let chunk = chunk?;
            if chunk.is_empty() {
                ended = true;
                break;
            }
            payload_size += chunk.len() as u64;
            encoder.write_all(&chunk)?;
        }
        if !ended {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the source stopped before the end of its payload",
            ));
        }
        encoder.finish()?;
        if let Some(slot) = encrypting {
            let encrypter = slot
                .lock()
                .map_err(|_| io::Error::other("encryption stage poisoned"))?
                .take()
                .ok_or_else(|| io::Error::other("encryption stage finished twice"))?;
            encrypter.finish()?;
        }
        let sender = shared
            .lock()
            .map_err(|_| io::Error::other("compression stage poisoned"))?
            .take()
            .ok_or_else(|| io::Error::other("compression stage finished twice"))?;
        let stored = sender.finish()?;
        Ok(CompressedSummary {
            stored,
            payload_size,
        })
    });
    let writer = PayloadWriter {
        tx: Some(raw_tx),
        buf: BytesMut::with_capacity(CHUNK_SIZE),
        written: 0,
        progress,
    };
    (writer, out_rx, handle)
}

/// The compressor's output while an encryptor is in the slot.
struct SharedFinishWriter(Arc<Mutex<Option<Box<dyn FinishWrite>>>>);

impl Write for SharedFinishWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| io::Error::other("encryption stage poisoned"))?;
        guard.as_mut().ok_or_else(pipeline_closed)?.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct HashingSender {
    tx: mpsc::Sender<Bytes>,
    digester: Digester,
    buf: BytesMut,
}

impl HashingSender {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_SIZE {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            // Hashed a chunk at a time: BLAKE3 is fastest on large inputs (SIMD over many blocks).
            self.digester.update(&self.buf);
            let chunk = self.buf.split().freeze();
            self.tx
                .blocking_send(chunk)
                .map_err(|_| pipeline_closed())?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<Digested> {
        self.flush()?;
        Ok(self.digester.finish())
    }
}

struct SharedWriter(Arc<Mutex<Option<HashingSender>>>);

impl Write for SharedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| io::Error::other("compression stage poisoned"))?;
        let sender = guard.as_mut().ok_or_else(pipeline_closed)?;
        sender.write(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The check of a downloaded archive: its digest, and whether it matched the manifest.
#[derive(Debug, Clone)]
pub struct DownloadCheck {
    /// Checksum and size of the bytes read.
    pub stored: Digested,
}

/// Starts the download side of a restore: hashes the stored bytes, decompresses them on a blocking
/// thread, and hands the payload to a [`PayloadReader`].
///
/// The returned handle reads the stream to its end even when the reader stops early, and fails with
/// [`Error::ChecksumMismatch`] if `expected` is given and differs. When the digest does not match,
/// the reader gets an error instead of its end, so a consumer never sees a clean end of a
/// corrupted payload. `payload_limit` caps how many payload bytes the reader accepts (a
/// decompression bomb in a tampered archive fails instead of filling the disk).
pub fn start_download(
    name: String,
    stream: ByteStream,
    compression: Compression,
    expected: Option<Digested>,
    payload_limit: Option<u64>,
    progress: DynProgress,
) -> (PayloadReader, JoinHandle<Result<DownloadCheck>>) {
    let options = DownloadOptions {
        name,
        compression: Some(compression),
        encryption: None,
        decryptor: None,
        expected,
        payload_limit,
    };
    let (reader, _ready, check) = spawn_download(stream, options, progress);
    (reader, check)
}

/// What [`open_download`] reads: the archive's name, codec, encryption and expected digest.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The archive's name (for messages).
    pub name: String,
    /// The codec; `None` recognises it from the first bytes of the (decrypted) payload.
    pub compression: Option<Compression>,
    /// The archive's encryption: its scheme and, when a manifest exists, the manifest's record.
    pub encryption: Option<(EncryptionScheme, Option<EncryptionInfo>)>,
    /// The keys for an encrypted archive.
    pub decryptor: Option<DynDecryptor>,
    /// The manifest's checksum and size of the stored bytes.
    pub expected: Option<Digested>,
    /// The most payload bytes the reader accepts.
    pub payload_limit: Option<u64>,
}

/// Starts the download side of a restore with decryption: stored bytes → SHA-256 → decryption
/// → decompression → [`PayloadReader`], and returns once an encrypted archive's header has
/// been unwrapped, so a missing or wrong key fails here, before any payload reaches a target.
///
/// The handle behaves as [`start_download`]'s and, for an encrypted archive, also fails with
/// [`Error::DecryptionFailed`] when the ciphertext fails authentication anywhere (also after
/// the consumer stopped reading: the rest is read and authenticated). A consumer must stop
/// reading (drop the reader) before it awaits the handle.
///
/// # Errors
/// [`Error::KeyMissing`] for an encrypted archive without a decryptor, and the decryptor's
/// errors.
pub async fn open_download(
    stream: ByteStream,
    options: DownloadOptions,
    progress: DynProgress,
) -> Result<(PayloadReader, JoinHandle<Result<DownloadCheck>>)> {
    if let (Some((scheme, info)), None) = (&options.encryption, &options.decryptor) {
        return Err(key_missing(&options.name, *scheme, info.as_ref()));
    }
    let checked = options.expected.is_some();
    let (reader, ready, check) = spawn_download(stream, options, progress);
    match ready.await {
        Ok(Ok(())) => Ok((reader, check)),
        Ok(Err(e @ Error::DecryptionFailed { .. })) if checked => {
            // A header that does not open may be damaged bytes rather than a wrong key: the
            // stored bytes' checksum tells which (the check reads the archive to its end).
            drop(reader);
            match check.await {
                Ok(Err(damaged @ Error::ChecksumMismatch { .. })) => Err(damaged),
                _ => Err(e),
            }
        }
        Ok(Err(e)) => {
            check.abort();
            Err(e)
        }
        Err(_) => {
            check.abort();
            Err(Error::generic(
                "download",
                "the decryption stage stopped before reading the archive's header",
            ))
        }
    }
}

fn key_missing(name: &str, scheme: EncryptionScheme, info: Option<&EncryptionInfo>) -> Error {
    let to = info
        .map(|i| format!(" to {}", i.describe_recipients()))
        .unwrap_or_default();
    Error::KeyMissing {
        name: name.to_string(),
        reason: format!(
            "it is encrypted with {scheme}{to} and no decryption keys were given (library: Repository::with_decryptor with a kars-backup-encrypt decryptor)"
        ),
    }
}

type Ready = tokio::sync::oneshot::Receiver<Result<()>>;

fn spawn_download(
    stream: ByteStream,
    options: DownloadOptions,
    progress: DynProgress,
) -> (PayloadReader, Ready, JoinHandle<Result<DownloadCheck>>) {
    let DownloadOptions {
        name,
        compression,
        encryption,
        decryptor,
        expected,
        payload_limit,
    } = options;
    let encrypted = encryption.is_some();
    let (stored_tx, stored_rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let (payload_tx, payload_rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();

    // Decryption and decompression on a blocking thread; it returns why the ciphertext failed
    // authentication, if it did.
    let decompress_tx = payload_tx.clone();
    let stage_name = name.clone();
    let stage = tokio::task::spawn_blocking(move || -> Option<String> {
        if encryption.is_none() && compression == Some(Compression::None) {
            // The stored bytes are the payload: handed on as they are, without a copy.
            let _ = ready_tx.send(Ok(()));
            let mut stored_rx = stored_rx;
            while let Some(chunk) = stored_rx.blocking_recv() {
                let failed = chunk.is_err();
                if decompress_tx.blocking_send(chunk).is_err() || failed {
                    break;
                }
            }
            return None;
        }
        let input: Box<dyn Read + Send> = Box::new(ChannelReader::new(stored_rx));
        let (plain, failure) = match encryption {
            None => (input, None),
            Some((scheme, info)) => {
                let opened = match &decryptor {
                    Some(d) => {
                        let archive = Sealed {
                            name: &stage_name,
                            scheme,
                            info: info.as_ref(),
                        };
                        d.decrypt(archive, input)
                    }
                    None => Err(key_missing(&stage_name, scheme, info.as_ref())),
                };
                match opened {
                    Ok(r) => {
                        let slot = Arc::new(Mutex::new(None));
                        let tracked: Box<dyn Read + Send> = Box::new(Tracked {
                            inner: r,
                            failure: slot.clone(),
                        });
                        (tracked, Some(slot))
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return None;
                    }
                }
            }
        };
        let _ = ready_tx.send(Ok(()));
        let plain = Arc::new(Mutex::new(plain));
        let mut source: Box<dyn Read + Send> = Box::new(SharedReader(plain.clone()));
        let compression = match compression {
            Some(c) => Ok(c),
            None => {
                let mut head = [0u8; 8];
                match read_full(&mut source, &mut head) {
                    Ok(n) => {
                        source = Box::new(io::Cursor::new(head[..n].to_vec()).chain(source));
                        Ok(Compression::detect(&head[..n]))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let mut clean = true;
        match compression {
            Err(e) => {
                clean = false;
                let _ = decompress_tx.blocking_send(Err(e));
            }
            Ok(compression) => {
                let mut reader = compress::decompressor(compression, source);
                loop {
                    let mut buf = vec![0u8; 256 * 1024];
                    match read_full(&mut reader, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            buf.truncate(n);
                            if decompress_tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            clean = false;
                            let _ = decompress_tx.blocking_send(Err(e));
                            break;
                        }
                    }
                }
            }
        }
        let failure = failure?;
        // The end of an encrypted stream is authenticated too: read it to its end even when
        // the decompressor (or the consumer) stopped early, so tampering is reported as such.
        let mut rest = SharedReader(plain);
        if let Err(e) = io::copy(&mut rest, &mut io::sink()) {
            if clean {
                let _ = decompress_tx.blocking_send(Err(e));
            }
        }
        failure.lock().ok().and_then(|mut f| f.take())
    });
    drop(payload_tx);

    let check = tokio::spawn(async move {
        let mut stream = stream;
        let mut hasher = BackgroundHasher::new(Digester::checking(expected.as_ref()));
        let mut consumer_alive = true;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = stored_tx
                        .send(Err(io::Error::other(format!("download failed: {e}"))))
                        .await;
                    return Err(e);
                }
            };
            hasher.update(chunk.clone()).await?;
            progress.advance(chunk.len() as u64);
            if consumer_alive && stored_tx.send(Ok(chunk)).await.is_err() {
                consumer_alive = false;
            }
        }
        let mut stored = hasher.finish().await?;
        if let Some(expected) = expected {
            if let Err(err) = stored.check(&expected, name.clone()) {
                let _ = stored_tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        err.to_string(),
                    )))
                    .await;
                return Err(err);
            }
            stored = stored.confirmed(&expected);
        }
        // The end of the stored bytes: the decryption stage can authenticate the end now.
        drop(stored_tx);
        if encrypted {
            match stage.await {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    return Err(Error::DecryptionFailed { name, reason });
                }
                Err(e) => return Err(Error::generic("decryption", e)),
            }
        }
        Ok(DownloadCheck { stored })
    });

    let reader = PayloadReader {
        rx: payload_rx,
        current: Bytes::new(),
        read: 0,
        limit: payload_limit,
        cancel: None,
    };
    (reader, ready_rx, check)
}

/// Checksums and size of a stream of chunks ([`Digester`]), computed on a thread of its own, so
/// that hashing overlaps with receiving, writing and decompressing instead of running between
/// them (at most `2 × CHANNEL_DEPTH` batches of about 1 MiB wait for it).
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> kars_backup_core::Result<()> {
/// use kars_backup_core::pipeline::{BackgroundHasher, Digester};
/// let mut h = BackgroundHasher::new(Digester::new());
/// h.update(bytes::Bytes::from_static(b"abc")).await?;
/// let d = h.finish().await?;
/// assert_eq!(d.size, 3);
/// assert!(d.sha256.starts_with("ba7816bf"));
/// assert!(d.blake3.unwrap().starts_with("6437b3ac"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BackgroundHasher {
    tx: Option<mpsc::Sender<Vec<Bytes>>>,
    handle: JoinHandle<Digested>,
    /// Chunks gathered for the next hand-off (a transport's chunks can be small: one wake-up of
    /// the thread per [`HASH_BATCH`] bytes instead of one per chunk).
    pending: Vec<Bytes>,
    pending_len: usize,
}

/// Bytes handed to the hashing thread at a time.
const HASH_BATCH: usize = 1024 * 1024;

impl BackgroundHasher {
    /// Starts the hashing thread (a tokio blocking thread) with `digester`
    /// ([`Digester::checking`] for a read checked against a manifest).
    pub fn new(digester: Digester) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(CHANNEL_DEPTH * 2);
        let handle = tokio::task::spawn_blocking(move || {
            let mut digester = digester;
            while let Some(batch) = rx.blocking_recv() {
                for chunk in &batch {
                    digester.update(chunk);
                }
            }
            digester.finish()
        });
        BackgroundHasher {
            tx: Some(tx),
            handle,
            pending: Vec::new(),
            pending_len: 0,
        }
    }

    /// Adds a chunk (waits while the thread is behind).
    ///
    /// # Errors
    /// When the hashing thread died.
    pub async fn update(&mut self, chunk: Bytes) -> Result<()> {
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= HASH_BATCH {
            self.hand_on().await?;
        }
        Ok(())
    }

    async fn hand_on(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let tx = self.tx.as_ref().ok_or_else(hasher_gone)?;
        tx.send(batch).await.map_err(|_| hasher_gone())
    }

    /// The digest of everything added.
    ///
    /// # Errors
    /// When the hashing thread died.
    pub async fn finish(mut self) -> Result<Digested> {
        self.hand_on().await?;
        self.tx = None;
        (&mut self.handle).await.map_err(|_| hasher_gone())
    }
}

fn hasher_gone() -> Error {
    Error::generic("checksum", "the hashing thread stopped")
}

/// Remembers the first error of a decrypting reader (the ciphertext failed authentication).
struct Tracked {
    inner: Box<dyn Read + Send>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Read for Tracked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if let Ok(mut f) = self.failure.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        })
    }
}

/// A reader shared between the decompressor and the final drain.
struct SharedReader(Arc<Mutex<Box<dyn Read + Send>>>);

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("decryption stage poisoned"))?
            .read(buf)
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A blocking reader over chunks received from a channel (for codecs running on a blocking
/// thread behind an async download): an error sent through the channel is returned from
/// `read`, and the end of the channel is the end of the data.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    /// Reads what arrives through `rx`.
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl fmt::Debug for ChannelReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelReader").finish_non_exhaustive()
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(c)) => self.current = c,
                Some(Err(e)) => return Err(e),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::no_progress;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compresses_hashes_and_decompresses() {
        let (mut writer, mut rx, handle) =
            start_compression(Compression::default(), 2, no_progress());
        let collector = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(c) = rx.recv().await {
                all.extend_from_slice(&c);
            }
            all
        });
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 97) as u8).collect();
        writer.write_all(&data).await.unwrap();
        writer.finish().await.unwrap();
        let summary = handle.await.unwrap().unwrap();
        let stored = collector.await.unwrap();
        assert_eq!(summary.payload_size, data.len() as u64);
        assert_eq!(summary.stored.size, stored.len() as u64);
        assert_eq!(summary.stored.sha256, hex::encode(Sha256::digest(&stored)));
        assert_eq!(
            summary.stored.blake3.as_deref(),
            Some(blake3::hash(&stored).to_hex().as_str())
        );

        let stream: ByteStream = Box::pin(futures::stream::iter(
            stored
                .chunks(100_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let (mut reader, check) = start_download(
            "x".into(),
            stream,
            Compression::default(),
            Some(summary.stored.clone()),
            None,
            no_progress(),
        );
        let mut back = Vec::new();
        while let Some(c) = reader.next_chunk().await.unwrap() {
            back.extend_from_slice(&c);
        }
        assert_eq!(back, data);
        // Checked with BLAKE3 only; the report still carries the manifest's SHA-256.
        assert_eq!(check.await.unwrap().unwrap().stored, summary.stored);
    }

    fn digest_of(data: &[u8]) -> Digested {
        let mut d = Digester::new();
        d.update(data);
        d.finish()
    }

    #[test]
    fn a_check_uses_blake3_when_the_manifest_has_it_else_sha256() {
        let manifest = digest_of(b"stored bytes");
        // A new manifest: only BLAKE3 is computed, and it decides.
        let mut read = Digester::checking(Some(&manifest));
        read.update(b"stored bytes");
        let read = read.finish();
        assert!(read.sha256.is_empty());
        read.check(&manifest, "a").unwrap();
        assert_eq!(read.confirmed(&manifest), manifest);
        let mut wrong_blake3 = manifest.clone();
        wrong_blake3.blake3 = Some("00".repeat(32));
        let err = digest_of(b"stored bytes")
            .check(&wrong_blake3, "a")
            .unwrap_err();
        assert!(err.to_string().contains(&"00".repeat(32)), "{err}");

        // A manifest written before BLAKE3 was recorded: SHA-256 decides.
        let old = Digested {
            blake3: None,
            ..manifest.clone()
        };
        let mut read = Digester::checking(Some(&old));
        read.update(b"stored bytes");
        let read = read.finish();
        assert_eq!(read.blake3, None);
        read.check(&old, "a").unwrap();
        let tampered = digest_of(b"stored bytez");
        assert!(tampered.check(&old, "a").is_err());
        assert!(tampered.check(&manifest, "a").is_err());

        // A digester made for an old manifest cannot pass a check that needs BLAKE3 it lacks… but
        // falls back to SHA-256, which it has; one with neither fails.
        let none = Digested {
            sha256: String::new(),
            blake3: None,
            size: manifest.size,
        };
        assert!(none.check(&manifest, "a").is_err());
        // Sizes count too.
        let mut short = digest_of(b"stored bytes");
        short.size -= 1;
        assert!(short.check(&manifest, "a").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_writer_fails_the_stage() {
        let (mut writer, mut rx, handle) =
            start_compression(Compression::default(), 1, no_progress());
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        writer.write_all(b"partial").await.unwrap();
        drop(writer);
        assert!(handle.await.unwrap().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checksum_mismatch_reaches_the_reader_instead_of_the_end() {
        let stream: ByteStream = Box::pin(futures::stream::iter(vec![Ok(Bytes::from_static(
            b"plain payload",
        ))]));
        let (mut reader, check) = start_download(
            "x".into(),
            stream,
            Compression::None,
            Some(Digested {
                sha256: "00".repeat(32),
                blake3: None,
                size: 13,
            }),
            None,
            no_progress(),
        );
        let mut saw_error = false;
        loop {
            match reader.next_chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    saw_error = true;
                    break;
                }
            }
        }
        assert!(saw_error);
        assert!(matches!(
            check.await.unwrap(),
            Err(Error::ChecksumMismatch { .. })
        ));
    }
}
