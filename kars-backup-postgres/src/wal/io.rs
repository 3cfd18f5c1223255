//! Bridges between the blocking codecs (zstd, age, OpenPGP) and the async sinks: a writer that
//! sends chunks into a bounded channel (core's `ChannelReader` is the other end's counterpart
//! for downloads), and a hashing writer.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use kars_backup_core::compress::FinishWrite;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Chunk size of the channels: memory held is about `CHUNK * (capacity + 1)` per transfer.
pub(crate) const CHUNK: usize = 1024 * 1024;
/// Chunks in flight per channel.
pub(crate) const CHANNEL_CAPACITY: usize = 2;

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped")
}

/// A writer, used on a blocking thread, that sends what it is given in [`CHUNK`]-sized pieces.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
}

impl ChannelWriter {
    pub(crate) fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx.blocking_send(chunk).map_err(|_| closed())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (CHUNK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl FinishWrite for ChannelWriter {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.send()
    }
}

/// A writer that hashes (SHA-256) and counts what passes through it.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// SHA-256 (lowercase hex) and size.
    pub(crate) fn digest(self) -> (String, u64, W) {
        (hex::encode(self.hasher.finalize()), self.size, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
