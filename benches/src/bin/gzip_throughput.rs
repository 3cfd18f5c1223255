//! Compresses a file with the pipeline's parallel gzip writer and prints the best of 3 runs:
//! `gzip-throughput FILE [LEVEL=6] [THREADS=2] [BLOCK_KIB=default]`.
//!
//! The file is streamed in 1 MiB reads (as the pipeline feeds the compressor), the output is
//! counted and discarded; run it under `/usr/bin/time -f '%e s %M KB'` for the peak RSS.

use std::fs::File;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kars_backup_core::compress::{DEFAULT_GZIP_BLOCK_SIZE, FinishWrite, ParallelGzipWriter};

struct Counter(Arc<AtomicU64>);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run(path: &str, level: u32, threads: usize, block: usize) -> io::Result<(f64, u64, u64)> {
    let written = Arc::new(AtomicU64::new(0));
    let mut writer = Box::new(ParallelGzipWriter::with_block_size(
        Box::new(Counter(written.clone())),
        level,
        threads,
        block,
    ));
    let mut input = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let start = Instant::now();
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        writer.write_all(&buf[..n])?;
    }
    writer.finish()?;
    Ok((
        start.elapsed().as_secs_f64(),
        total,
        written.load(Ordering::Relaxed),
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: gzip-throughput FILE [LEVEL=6] [THREADS=2] [BLOCK_KIB]");
        return ExitCode::from(2);
    };
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let level = arg(1, 6) as u32;
    let threads = arg(2, 2);
    let block = arg(3, DEFAULT_GZIP_BLOCK_SIZE >> 10) << 10;
    let mut best: Option<(f64, u64, u64)> = None;
    for _ in 0..3 {
        match run(path, level, threads, block) {
            Ok(r) => {
                if best.is_none_or(|b| r.0 < b.0) {
                    best = Some(r);
                }
            }
            Err(e) => {
                eprintln!("gzip-throughput: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (secs, input, output) = best.unwrap_or_default();
    let mb = |n: u64| n as f64 / 1e6;
    println!(
        "level {level} threads {threads} block {} KiB: {:.1} MB/s ({:.2} MB -> {:.2} MB in {secs:.2} s, best of 3)",
        block >> 10,
        mb(input) / secs,
        mb(input),
        mb(output),
    );
    ExitCode::SUCCESS
}
