//! Throughput of the backup pipeline on 32 MiB of a realistic SQLite database.
//!
//! - `gzip/L{level}/t{threads}`: [`compress::compressor`] alone, output discarded.
//! - `pipeline/start_compression/t{threads}`: the backup side end to end (payload writer →
//!   parallel gzip → SHA-256 → the uploads' channel, drained), on a tokio multi-thread runtime.
//! - `pipeline/start_download`: the restore side (stored bytes → SHA-256 check → decompression →
//!   payload reader).
//!
//! Throughput is in payload (uncompressed) bytes. `cargo bench -p kars-backup-benches -- --quick`
//! takes a couple of minutes; drop `--quick` for 10 samples of each.

use std::hint::black_box;
use std::io::{self, Write};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use kars_backup_core::compress::{self, Compression};
use kars_backup_core::pipeline::{self, CHUNK_SIZE, Digested};
use kars_backup_core::progress::no_progress;
use kars_backup_core::sink::ByteStream;

/// Bytes of payload per iteration.
const PAYLOAD_BYTES: u64 = 32 << 20;

/// The payload: the first 32 MiB of a freshly generated sample database.
fn payload() -> &'static Bytes {
    static PAYLOAD: OnceLock<Bytes> = OnceLock::new();
    PAYLOAD.get_or_init(|| {
        let mut db = kars_backup_benches::sample_database_bytes(PAYLOAD_BYTES)
            .expect("generate the sample database");
        db.truncate(PAYLOAD_BYTES as usize);
        Bytes::from(db)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(PAYLOAD_BYTES));
}

/// Counts and discards what it is given.
struct Discard(u64);

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn gzip(c: &mut Criterion) {
    let data = payload();
    let mut group = c.benchmark_group("gzip");
    configure(&mut group);
    for level in [1, 6] {
        for threads in [1, 2] {
            group.bench_with_input(
                BenchmarkId::new(format!("L{level}"), format!("t{threads}")),
                &(level, threads),
                |b, &(level, threads)| {
                    b.iter(|| {
                        let mut w = compress::compressor(
                            Compression::Gzip { level },
                            threads,
                            Box::new(Discard(0)),
                        );
                        // The pipeline hands the compressor 1 MiB chunks.
                        for chunk in data.chunks(CHUNK_SIZE) {
                            w.write_all(chunk).expect("compress");
                        }
                        w.finish().expect("finish");
                    });
                },
            );
        }
    }
    group.finish();
}

/// Runs the backup side of the pipeline over `data`; returns the stored digest and, if `keep`,
/// the stored bytes (else they are only counted, as an upload to a fast sink would).
async fn backup(data: &Bytes, threads: usize, keep: bool) -> (Digested, Bytes) {
    let (mut writer, mut rx, handle) =
        pipeline::start_compression(Compression::default(), threads, no_progress());
    let uploads = tokio::spawn(async move {
        let (mut n, mut kept) = (0u64, Vec::new());
        while let Some(chunk) = rx.recv().await {
            n += chunk.len() as u64;
            if keep {
                kept.extend_from_slice(&chunk);
            }
        }
        (n, Bytes::from(kept))
    });
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + CHUNK_SIZE).min(data.len());
        writer
            .write_chunk(data.slice(offset..end))
            .await
            .expect("write payload");
        offset = end;
    }
    writer.finish().await.expect("finish payload");
    let summary = handle.await.expect("join").expect("compression");
    let (uploaded, kept) = uploads.await.expect("join");
    assert_eq!(uploaded, summary.stored.size);
    (summary.stored, kept)
}

fn start_compression(c: &mut Criterion) {
    let data = payload();
    let rt = runtime();
    let mut group = c.benchmark_group("pipeline");
    configure(&mut group);
    for threads in [1, 2] {
        group.bench_with_input(
            BenchmarkId::new("start_compression", format!("t{threads}")),
            &threads,
            |b, &threads| b.iter(|| black_box(rt.block_on(backup(data, threads, false)))),
        );
    }
    group.finish();
}

fn start_download(c: &mut Criterion) {
    let data = payload();
    let rt = runtime();
    // The stored archive and its digest, as a backup wrote them.
    let (expected, stored) = rt.block_on(backup(data, 2, true));

    let mut group = c.benchmark_group("pipeline");
    configure(&mut group);
    group.bench_function("start_download", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (mut reader, check) = pipeline::start_download(
                    "bench".into(),
                    chunked(&stored),
                    Compression::default(),
                    Some(expected.clone()),
                    None,
                    no_progress(),
                );
                let mut n = 0u64;
                while let Some(chunk) = reader.next_chunk().await.expect("payload") {
                    n += chunk.len() as u64;
                }
                check.await.expect("join").expect("checksum");
                assert_eq!(n, PAYLOAD_BYTES);
            });
        });
    });
    group.finish();
}

/// The stored bytes as a sink's download stream: 1 MiB chunks.
fn chunked(stored: &Bytes) -> ByteStream {
    let chunks: Vec<_> = (0..stored.len())
        .step_by(CHUNK_SIZE)
        .map(|i| Ok(stored.slice(i..(i + CHUNK_SIZE).min(stored.len()))))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

criterion_group!(benches, gzip, start_compression, start_download);
criterion_main!(benches);
