//! Measures upload throughput to an S3 endpoint (the moto emulator of `scripts/services.sh`)
//! against writing the same bytes to local disk through `LocalSink`, and the process's peak RSS.
//!
//! `KARS_TEST_S3_ENDPOINT=… KARS_TEST_S3_BUCKET=… cargo run -p kars-backup-storage --features s3 \
//!   --example upload_throughput -- [MiB]` (default 1024). See `benches/upload_throughput.sh`.
//!
//! Optional environment: `BENCH_S3_NAME` (the emulator's name in the output), `BENCH_S3_KEY` /
//! `BENCH_S3_SECRET` (the emulator's fixed development credentials; default `test`/`test`),
//! `BENCH_PART_MIB` (part size, default 8), `BENCH_CONCURRENCY` (parts in flight, default 4).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kars_backup_core::sink::PutOptions;
use kars_backup_core::{BackupSink, DynBackupSink};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Incompressible 1 MiB chunks, made once and reused (cheap `Bytes` clones).
fn chunks() -> Vec<Bytes> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..16)
        .map(|_| {
            let v: Vec<u8> = (0..1024 * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            Bytes::from(v)
        })
        .collect()
}

/// Uploads `mib` MiB in fresh 1 MiB chunks (as the compression stage hands them over); returns
/// MiB/s and the seconds spent in `complete`.
async fn upload(sink: &dyn BackupSink, mib: usize, chunks: &[Bytes]) -> (f64, f64) {
    let started = Instant::now();
    let mut up = sink.put("bench.bin", PutOptions::default()).await.unwrap();
    for i in 0..mib {
        up.put_part(Bytes::copy_from_slice(&chunks[i % chunks.len()]))
            .await
            .unwrap();
    }
    let completing = Instant::now();
    let meta = up.complete().await.unwrap();
    let complete_secs = completing.elapsed().as_secs_f64();
    assert_eq!(meta.size, (mib * 1024 * 1024) as u64);
    let secs = started.elapsed().as_secs_f64();
    sink.delete("bench.bin").await.unwrap();
    (mib as f64 / secs, complete_secs)
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("size in MiB"))
        .unwrap_or(1024);
    let endpoint = std::env::var("KARS_TEST_S3_ENDPOINT").expect("KARS_TEST_S3_ENDPOINT");
    let bucket = std::env::var("KARS_TEST_S3_BUCKET").expect("KARS_TEST_S3_BUCKET");
    let chunks = chunks();
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("temporary directory");
    let local: DynBackupSink = Arc::new(kars_backup_storage::LocalSink::new(dir.path()).unwrap());
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let name = env("BENCH_S3_NAME", "S3 emulator");
    let part_mib: usize = env("BENCH_PART_MIB", "8").parse().expect("BENCH_PART_MIB");
    let concurrency: usize = env("BENCH_CONCURRENCY", "4")
        .parse()
        .expect("BENCH_CONCURRENCY");
    let s3: DynBackupSink = Arc::new(
        kars_backup_storage::s3::S3Builder::new(bucket)
            .with_prefix(format!("bench-{}", kars_backup_core::new_run_id()))
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_path_style(true)
            .with_region("us-east-1")
            .with_credentials(env("BENCH_S3_KEY", "test"), env("BENCH_S3_SECRET", "test"))
            .with_part_size(part_mib * 1024 * 1024)
            .with_max_concurrency(concurrency)
            .build()
            .unwrap(),
    );
    let base_rss = peak_rss_mib();
    let (local_rate, _) = upload(local.as_ref(), mib, &chunks).await;
    let after_local = peak_rss_mib();
    let (s3_rate, s3_complete) = upload(s3.as_ref(), mib, &chunks).await;
    let transfer_rate = mib as f64 / (mib as f64 / s3_rate - s3_complete);
    let after_s3 = peak_rss_mib();
    println!("size: {mib} MiB");
    println!("local disk (LocalSink, fsync): {local_rate:.0} MiB/s");
    println!(
        "{name} (ObjectStoreSink multipart, {part_mib} MiB parts, {concurrency} in flight): {s3_rate:.0} MiB/s ({s3_complete:.1} s of it in CompleteMultipartUpload)"
    );
    println!(
        "S3 / local: {:.0}% (the transfer without CompleteMultipartUpload: {transfer_rate:.0} MiB/s, {:.0}%)",
        100.0 * s3_rate / local_rate,
        100.0 * transfer_rate / local_rate
    );
    println!(
        "peak RSS (VmHWM): {base_rss:.0} MiB before (16 MiB of test chunks), {after_local:.0} MiB after local, {after_s3:.0} MiB after S3"
    );
}
