//! For tests, ours and downstream: an in-memory sink, the sink conformance suite and the source
//! conformance suite ([`source::source_conformance`] with a [`source::SourceFixture`]).
//!
//! Enable with the `testing` feature. A new backend passes when
//! `kars_backup_core::testing::sink_conformance(&sink).await` returns `Ok(())`:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use kars_backup_core::testing::{InMemorySink, sink_conformance};
//! sink_conformance(&InMemorySink::new()).await.unwrap();
//! # }
//! ```

use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::sink::{BackupSink, GetOptions, PutOptions, SinkExt};

mod memory;
pub mod source;

pub use memory::InMemorySink;

/// The value of an environment variable naming a service that `scripts/services.sh up` starts
/// (an emulator endpoint, a bucket). When it is unset, a test should return early: outside CI
/// this prints `SKIPPED: …` with how to start the services; under `CI=true` it panics, because
/// a missing service must fail the run, never skip it.
pub fn service_var(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                "{var} is not set: under CI=true the services must run (eval \"$(scripts/services.sh up)\")"
            );
            eprintln!(
                "SKIPPED: {var} is not set; start the services with: eval \"$(scripts/services.sh up)\""
            );
            None
        }
    }
}

/// How big the streamed-upload check is; backends with slow emulators may lower it.
#[derive(Debug, Clone)]
pub struct ConformanceOptions {
    /// Size of the large streamed upload (default 64 MiB).
    pub large_object_bytes: usize,
    /// How many keys the long-listing check writes (default 1,050: past one page of 1,000).
    pub listing_keys: usize,
}

impl Default for ConformanceOptions {
    fn default() -> Self {
        ConformanceOptions {
            large_object_bytes: 64 * 1024 * 1024,
            listing_keys: 1050,
        }
    }
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Error::generic("conformance", format!($($msg)+)));
        }
    };
}

async fn read_all(sink: &dyn BackupSink, key: &str) -> Result<Vec<u8>> {
    let mut s = sink.get(key, GetOptions::default()).await?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

/// Runs the conformance suite with default options. The sink should be empty; the suite writes
/// under the prefix `conformance/` and removes what it wrote.
///
/// # Errors
/// The first contract violation, naming the check.
pub async fn sink_conformance(sink: &dyn BackupSink) -> Result<()> {
    sink_conformance_with(sink, &ConformanceOptions::default()).await
}

/// Runs the conformance suite (see [`sink_conformance`]).
///
/// # Errors
/// The first contract violation, naming the check.
pub async fn sink_conformance_with(
    sink: &dyn BackupSink,
    options: &ConformanceOptions,
) -> Result<()> {
    let p = "conformance";

    // Not-found semantics.
    let missing = format!("{p}/missing");
    ensure!(
        matches!(
            sink.get(&missing, GetOptions::default()).await,
            Err(Error::NotFound { .. })
        ),
        "get of a missing key must be NotFound"
    );
    ensure!(
        matches!(sink.head(&missing).await, Err(Error::NotFound { .. })),
        "head of a missing key must be NotFound"
    );
    sink.delete(&missing).await?;

    // Invalid keys are refused.
    for bad in ["/abs", "a/../b", "", "a//b"] {
        ensure!(
            sink.put(bad, PutOptions::default()).await.is_err(),
            "put must refuse the key {bad:?}"
        );
    }

    // Put, head, get, range get.
    let key = format!("{p}/small.bin");
    let data = Bytes::from_static(b"hello, backups");
    let meta = sink.put_bytes(&key, data.clone()).await?;
    ensure!(
        meta.size == data.len() as u64,
        "complete must report the size ({} != {})",
        meta.size,
        data.len()
    );
    ensure!(
        sink.head(&key).await?.size == data.len() as u64,
        "head must report the size"
    );
    ensure!(
        read_all(sink, &key).await? == data,
        "get must return what was put"
    );
    let mut ranged = sink
        .get(&key, GetOptions::default().with_range(7..14))
        .await?;
    let mut part = Vec::new();
    while let Some(c) = ranged.next().await {
        part.extend_from_slice(&c?);
    }
    ensure!(
        part == b"backups",
        "ranged get must return the range, got {:?}",
        String::from_utf8_lossy(&part)
    );

    // Overwrite replaces.
    sink.put_bytes(&key, Bytes::from_static(b"v2")).await?;
    ensure!(
        read_all(sink, &key).await? == b"v2",
        "a second put must replace the object"
    );

    // Empty object.
    let empty = format!("{p}/empty");
    sink.put_bytes(&empty, Bytes::new()).await?;
    ensure!(
        sink.head(&empty).await?.size == 0,
        "an empty object has size 0"
    );
    ensure!(
        read_all(sink, &empty).await?.is_empty(),
        "an empty object reads empty"
    );

    // Invisible until complete; abort leaves nothing.
    let pending = format!("{p}/pending.bin");
    let mut up = sink.put(&pending, PutOptions::default()).await?;
    up.put_part(Bytes::from(vec![1u8; 1000])).await?;
    ensure!(
        matches!(sink.head(&pending).await, Err(Error::NotFound { .. })),
        "an upload must be invisible before complete"
    );
    ensure!(
        !sink
            .list(Some(&format!("{p}/")))
            .await?
            .iter()
            .any(|o| o.key == pending),
        "an unfinished upload must not be listed"
    );
    up.abort().await?;
    ensure!(
        matches!(sink.head(&pending).await, Err(Error::NotFound { .. })),
        "an aborted upload must leave nothing"
    );
    // A dropped upload leaves nothing visible either.
    let mut dropped = sink.put(&pending, PutOptions::default()).await?;
    dropped.put_part(Bytes::from(vec![2u8; 1000])).await?;
    drop(dropped);
    ensure!(
        matches!(sink.head(&pending).await, Err(Error::NotFound { .. })),
        "a dropped upload must leave nothing under its key"
    );
    // Aborting over an existing object keeps the old one.
    let mut up = sink.put(&key, PutOptions::default()).await?;
    up.put_part(Bytes::from_static(b"v3")).await?;
    up.abort().await?;
    ensure!(
        read_all(sink, &key).await? == b"v2",
        "an aborted overwrite must keep the previous object"
    );

    // Large streamed upload, in odd-sized parts.
    let large = format!("{p}/large.bin");
    let mut up = sink.put(&large, PutOptions::default()).await?;
    let mut hasher_in = 0u64;
    let mut written = 0usize;
    let mut i = 0u64;
    while written < options.large_object_bytes {
        let n = (1_048_573).min(options.large_object_bytes - written);
        let chunk: Vec<u8> = (0..n).map(|j| ((i + j as u64) % 251) as u8).collect();
        hasher_in = hasher_in.wrapping_add(chunk.iter().map(|b| *b as u64).sum::<u64>());
        up.put_part(Bytes::from(chunk)).await?;
        written += n;
        i += n as u64;
    }
    let meta = up.complete().await?;
    ensure!(
        meta.size == options.large_object_bytes as u64,
        "large object size {} != {}",
        meta.size,
        options.large_object_bytes
    );
    // Read it plainly, with its size as a hint (a sink may read it as parallel ranges), and
    // with a wrong hint (only a hint: the bytes are the same).
    let size = options.large_object_bytes as u64;
    for get in [
        GetOptions::default(),
        GetOptions::default().with_size_hint(size),
        GetOptions::default().with_size_hint(size / 2),
    ] {
        let mut s = sink.get(&large, get.clone()).await?;
        let (mut sum, mut count, mut pos) = (0u64, 0usize, 0u64);
        let mut in_order = true;
        while let Some(c) = s.next().await {
            let c = c?;
            for b in c.iter() {
                in_order &= *b == (pos % 251) as u8;
                pos += 1;
            }
            sum = sum.wrapping_add(c.iter().map(|b| *b as u64).sum::<u64>());
            count += c.len();
        }
        ensure!(
            count == options.large_object_bytes && sum == hasher_in && in_order,
            "large object must read back identical ({get:?})"
        );
    }
    sink.delete(&large).await?;

    // Concurrent puts of different keys.
    let puts = (0..8).map(|n| {
        let key = format!("{p}/concurrent/{n}");
        async move {
            sink.put_bytes(&key, Bytes::from(vec![n as u8; 10_000 + n]))
                .await
        }
    });
    for r in futures::future::join_all(puts).await {
        r?;
    }
    for n in 0..8usize {
        let got = read_all(sink, &format!("{p}/concurrent/{n}")).await?;
        ensure!(
            got == vec![n as u8; 10_000 + n],
            "concurrent put {n} must read back"
        );
    }

    // Listing: prefix as a directory boundary, sorted, complete past one page.
    sink.put_bytes(&format!("{p}-sibling/x"), Bytes::from_static(b"x"))
        .await?;
    let listed = sink.list(Some(&format!("{p}/concurrent/"))).await?;
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    let expected: Vec<String> = (0..8).map(|n| format!("{p}/concurrent/{n}")).collect();
    ensure!(
        keys == expected,
        "list with a prefix must return exactly its keys in order, got {keys:?}"
    );
    let all = sink.list(Some(&format!("{p}/"))).await?;
    ensure!(
        !all.iter()
            .any(|o| o.key.starts_with(&format!("{p}-sibling"))),
        "a prefix ending in / must not match siblings"
    );
    let many = options.listing_keys;
    futures::stream::iter(0..many)
        .map(|n| {
            let key = format!("{p}/many/{n:05}");
            async move { sink.put_bytes(&key, Bytes::from_static(b"k")).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let listed = sink.list(Some(&format!("{p}/many/"))).await?;
    ensure!(
        listed.len() == many,
        "list must return all {many} keys, got {}",
        listed.len()
    );
    ensure!(
        listed.windows(2).all(|w| w[0].key < w[1].key),
        "list must be sorted by key"
    );

    // Delete is idempotent and removes.
    sink.delete(&key).await?;
    sink.delete(&key).await?;
    ensure!(
        matches!(sink.head(&key).await, Err(Error::NotFound { .. })),
        "a deleted key must be NotFound"
    );

    // Clean up.
    let leftovers: Vec<String> = sink
        .list(Some(&format!("{p}/")))
        .await?
        .into_iter()
        .chain(sink.list(Some(&format!("{p}-sibling/"))).await?)
        .map(|o| o.key)
        .collect();
    futures::stream::iter(leftovers)
        .map(|k| async move { sink.delete(&k).await })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        sink.list(Some(&format!("{p}/"))).await?.is_empty(),
        "everything deleted must be gone from the listing"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_sink_conforms() {
        sink_conformance(&InMemorySink::new()).await.unwrap();
    }
}
