//! Parallel ranged downloads: one large object read as consecutive parts fetched at the same
//! time through any [`BackupSink`], delivered in order.
//!
//! [`read_in_parts`] keeps at most `concurrency` parts in flight, each a ranged
//! [`BackupSink::get`] on its own task; the stream yields the first part's bytes as they arrive,
//! then the next part's, and starts a new part each time one has been handed on, so memory stays
//! within `concurrency × part_size` whatever the object's size. A part that fails with a
//! transient error or ends early is requested again from the byte where it stopped (up to
//! [`PART_RETRIES`] times, with backoff); any other failure ends the stream with that error and
//! stops the other parts. Consumers check the whole object's checksum as before: parts are not
//! pinned to one version of the object, so an object replaced during the read shows up as a
//! checksum mismatch.
//!
//! [`RangedSink`] wraps any sink so that its unranged reads of large objects go through
//! [`read_in_parts`]; [`crate::ObjectStoreSink`] and the GCS sink do the same themselves.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kars_backup_core::sink::{GetOptions, PutOptions};
use kars_backup_core::{BackupSink, ByteStream, DynBackupSink, Error, ObjectMeta, Result, Upload};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::transfer::{RangedPlan, TransferOptions};

/// How many times one part is requested again after a transient failure.
pub const PART_RETRIES: u32 = 4;
/// Bytes of a part gathered before they are handed on (fewer, larger chunks downstream).
const HAND_ON: usize = 1024 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Reads `key` (of `size` bytes) through `sink` as parallel ranged reads, in order.
///
/// `size` must be the object's real size (from [`BackupSink::head`]): a part the store answers
/// shorter is retried, then fails; bytes beyond a part's range fail the read.
pub fn read_in_parts(sink: DynBackupSink, key: &str, size: u64, plan: RangedPlan) -> ByteStream {
    let state = Parts {
        sink,
        key: Arc::from(key),
        size,
        plan: RangedPlan {
            part_size: plan.part_size.max(1),
            concurrency: plan.concurrency.max(1),
        },
        next: 0,
        in_flight: VecDeque::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        let item = s.next_chunk().await?;
        Some((item, s))
    }))
}

/// What an unranged read of a sink with `transfer` options does: `Some` stream of parallel
/// ranged reads when the caller gave a size hint and the object is large enough, else `None`
/// (read it with one request). Asks the sink for the object's real size first.
///
/// # Errors
/// The sink's `head` errors ([`Error::NotFound`] for a missing key).
pub async fn get_in_parts(
    sink: DynBackupSink,
    key: &str,
    options: &GetOptions,
    transfer: &TransferOptions,
) -> Result<Option<ByteStream>> {
    if options.range.is_some() {
        return Ok(None);
    }
    let Some(hint) = options.size_hint else {
        return Ok(None);
    };
    if transfer.download_plan(hint).is_none() {
        return Ok(None);
    }
    let size = sink.head(key).await?.size;
    Ok(transfer
        .download_plan(size)
        .map(|plan| read_in_parts(sink, key, size, plan)))
}

struct Parts {
    sink: DynBackupSink,
    key: Arc<str>,
    size: u64,
    plan: RangedPlan,
    /// Start of the next part to request.
    next: u64,
    in_flight: VecDeque<Part>,
    done: bool,
}

/// One part being fetched: its bytes arrive on `rx`; the task is stopped when the part is
/// dropped.
struct Part {
    range: Range<u64>,
    received: u64,
    rx: mpsc::UnboundedReceiver<Result<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Part {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Parts {
    fn fill(&mut self) {
        while self.in_flight.len() < self.plan.concurrency && self.next < self.size {
            let range = self.next..(self.next + self.plan.part_size).min(self.size);
            self.next = range.end;
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(fetch_part(
                self.sink.clone(),
                self.key.clone(),
                range.clone(),
                tx,
            ));
            self.in_flight.push_back(Part {
                range,
                received: 0,
                rx,
                task,
            });
        }
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            self.fill();
            let Some(part) = self.in_flight.front_mut() else {
                self.done = true;
                return None;
            };
            match part.rx.recv().await {
                Some(Ok(chunk)) => {
                    part.received += chunk.len() as u64;
                    return Some(Ok(chunk));
                }
                Some(Err(e)) => return Some(Err(self.fail(e))),
                None if part.received == part.range.end - part.range.start => {
                    self.in_flight.pop_front();
                }
                None => {
                    // The part's task ended without its bytes or an error (it panicked).
                    let e = Error::generic(
                        self.sink.describe(),
                        format!(
                            "the ranged read of bytes {}..{} of {} stopped after {} bytes",
                            part.range.start, part.range.end, self.key, part.received
                        ),
                    );
                    return Some(Err(self.fail(e)));
                }
            }
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.done = true;
        self.in_flight.clear();
        e
    }
}

/// Fetches one part, sending its bytes as they arrive; on a transient failure or an early end,
/// asks again from the first byte not received yet.
async fn fetch_part(
    sink: DynBackupSink,
    key: Arc<str>,
    range: Range<u64>,
    tx: mpsc::UnboundedSender<Result<Bytes>>,
) {
    let mut offset = range.start;
    let mut attempt = 0;
    let mut backoff = FIRST_BACKOFF;
    let mut buf = PartBuffer {
        buf: BytesMut::new(),
        tx,
    };
    while offset < range.end {
        let (error, retryable) = match fetch_from(&sink, &key, offset..range.end, &mut buf).await {
            Fetch::ReaderGone => return,
            Fetch::Done(n) => {
                offset += n;
                if offset == range.end {
                    return;
                }
                let e = Error::generic(
                    sink.describe(),
                    format!(
                        "{key}: the store ended bytes {}..{} at {offset}",
                        range.start, range.end
                    ),
                );
                (e, true)
            }
            Fetch::Failed {
                received,
                error,
                retryable,
            } => {
                offset += received;
                (error, retryable)
            }
        };
        if !retryable || attempt >= PART_RETRIES {
            let _ = buf.tx.send(Err(error));
            return;
        }
        tracing::debug!(destination = %sink.describe(), key = %key, offset, attempt, error = %error, "ranged read failed; asking again from where it stopped");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// How one ranged request went.
enum Fetch {
    /// It ended after this many bytes (maybe fewer than asked for).
    Done(u64),
    /// It failed after this many bytes.
    Failed {
        received: u64,
        error: Error,
        retryable: bool,
    },
    /// The stream's reader was dropped.
    ReaderGone,
}

/// A part's bytes, handed on in chunks of at least [`FORWARD_AS_IS`] bytes: the transport's
/// large buffers as they are (no copy), its small ones copied together into buffers of
/// [`HAND_ON`] bytes, so downstream stages get few, large chunks, and a small chunk held
/// downstream does not keep a large transport buffer alive.
struct PartBuffer {
    buf: BytesMut,
    tx: mpsc::UnboundedSender<Result<Bytes>>,
}

/// A chunk from the transport at least this large is handed on without being copied.
const FORWARD_AS_IS: usize = 128 * 1024;

impl PartBuffer {
    /// Adds bytes; false when the reader is gone.
    fn push(&mut self, chunk: Bytes) -> bool {
        if chunk.len() >= FORWARD_AS_IS {
            return self.hand_on() && self.tx.send(Ok(chunk)).is_ok();
        }
        let mut chunk = &chunk[..];
        while !chunk.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve(HAND_ON);
            }
            let n = (HAND_ON - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.buf.len() >= HAND_ON && !self.hand_on() {
                return false;
            }
        }
        true
    }

    /// Hands on what has been gathered; false when the reader is gone.
    fn hand_on(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let full = std::mem::take(&mut self.buf).freeze();
        self.tx.send(Ok(full)).is_ok()
    }
}

/// One ranged request, its bytes handed on as they arrive.
async fn fetch_from(
    sink: &DynBackupSink,
    key: &str,
    range: Range<u64>,
    out: &mut PartBuffer,
) -> Fetch {
    let fetched = fetch_into(sink, key, range, out).await;
    if !out.hand_on() {
        return Fetch::ReaderGone;
    }
    fetched
}

async fn fetch_into(
    sink: &DynBackupSink,
    key: &str,
    range: Range<u64>,
    out: &mut PartBuffer,
) -> Fetch {
    let want = range.end - range.start;
    let failed = |received, error: Error| Fetch::Failed {
        received,
        retryable: error.is_retryable(),
        error,
    };
    let mut stream = match sink
        .get(key, GetOptions::default().with_range(range.clone()))
        .await
    {
        Ok(s) => s,
        Err(e) => return failed(0, e),
    };
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return failed(got, e),
        };
        if got + chunk.len() as u64 > want {
            return Fetch::Failed {
                received: got,
                error: Error::generic(
                    sink.describe(),
                    format!(
                        "{key}: asked for bytes {}..{} and the store sent more",
                        range.start, range.end
                    ),
                ),
                retryable: false,
            };
        }
        got += chunk.len() as u64;
        if !out.push(chunk) {
            return Fetch::ReaderGone;
        }
    }
    Fetch::Done(got)
}

/// Any sink whose unranged reads of large objects (given a size hint, as restores, copies and
/// read-back checks give) are parallel ranged reads; everything else is passed through.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> kars_backup_core::Result<()> {
/// use std::sync::Arc;
/// use kars_backup_core::{BackupSink, SinkExt, sink::GetOptions};
/// use kars_backup_storage::{LocalSink, RangedSink, TransferOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let local = LocalSink::new(dir.path())?;
/// let sink = RangedSink::new(Arc::new(local), TransferOptions::default());
/// let data = bytes::Bytes::from(vec![7u8; 20 << 20]);
/// sink.put_bytes("big", data.clone()).await?;
/// let mut s = sink.get("big", GetOptions::default().with_size_hint(data.len() as u64)).await?;
/// let mut n = 0;
/// use futures::StreamExt;
/// while let Some(c) = s.next().await { n += c?.len(); }
/// assert_eq!(n, data.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RangedSink {
    inner: DynBackupSink,
    transfer: TransferOptions,
}

impl RangedSink {
    /// Wraps `inner`; `transfer`'s download options choose parts and concurrency.
    pub fn new(inner: DynBackupSink, transfer: TransferOptions) -> Self {
        RangedSink { inner, transfer }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &DynBackupSink {
        &self.inner
    }
}

#[async_trait]
impl BackupSink for RangedSink {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(&self, key: &str, options: PutOptions) -> Result<Box<dyn Upload>> {
        self.inner.put(key, options).await
    }

    async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream> {
        match get_in_parts(self.inner.clone(), key, &options, &self.transfer).await? {
            Some(s) => Ok(s),
            None => self.inner.get(key, options).await,
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kars_backup_core::SinkExt;
    use kars_backup_core::fault::{FaultySink, Op};

    use crate::LocalSink;
    use crate::transfer::ByteSize;

    /// An object of `len` bytes whose every byte says where it is.
    fn pattern(len: usize) -> Bytes {
        Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>())
    }

    async fn read(mut s: ByteStream) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    fn plan(part: u64, concurrency: usize) -> RangedPlan {
        RangedPlan {
            part_size: part,
            concurrency,
        }
    }

    async fn local_with(len: usize) -> (tempfile::TempDir, DynBackupSink, Bytes) {
        let dir = tempfile::tempdir().unwrap();
        let sink: DynBackupSink = Arc::new(LocalSink::new(dir.path()).unwrap());
        let data = pattern(len);
        sink.put_bytes("obj", data.clone()).await.unwrap();
        (dir, sink, data)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_arrive_in_order_whatever_the_plan() {
        let len = 5 * 1024 * 1024 + 12_345;
        let (_dir, sink, data) = local_with(len).await;
        for (part, conc) in [
            (1 << 20, 1),
            (1 << 20, 3),
            (777_777, 8),
            (4 << 20, 2),
            (8 << 20, 4),
        ] {
            let got = read(read_in_parts(
                sink.clone(),
                "obj",
                len as u64,
                plan(part, conc),
            ))
            .await
            .unwrap();
            assert!(got == data.as_ref(), "part {part}, concurrency {conc}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_part_failing_mid_way_is_asked_for_again_from_where_it_stopped() {
        let len = 6 * 1024 * 1024 + 1;
        let (_dir, local, data) = local_with(len).await;
        let faulty = FaultySink::new(local)
            .fail(Op::GetChunk, 2)
            .fail(Op::GetChunk, 9)
            .fail(Op::Get, 4);
        let sink: DynBackupSink = Arc::new(faulty.clone());
        let got = read(read_in_parts(sink, "obj", len as u64, plan(1 << 20, 3)))
            .await
            .unwrap();
        assert!(got == data.as_ref(), "the bytes must be identical");
        // 7 parts, and one more request for each of the three failures.
        assert_eq!(faulty.count(Op::Get), 7 + 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_part_failing_for_good_ends_the_stream_with_its_error() {
        let len = 4 * 1024 * 1024;
        let (_dir, local, _) = local_with(len).await;
        let mut faulty = FaultySink::new(local);
        // Every request for the second part's bytes fails (the first part's succeed).
        for n in 2..=64 {
            faulty = faulty.fail(Op::Get, n);
        }
        let sink: DynBackupSink = Arc::new(faulty.clone());
        let t = std::time::Instant::now();
        let err = read(read_in_parts(sink, "obj", len as u64, plan(1 << 20, 1)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert_eq!(faulty.count(Op::Get), 1 + 1 + PART_RETRIES as usize);
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_object_is_not_retried() {
        let (_dir, local, _) = local_with(10).await;
        let faulty = FaultySink::new(local);
        let sink: DynBackupSink = Arc::new(faulty.clone());
        let err = read(read_in_parts(sink, "gone", 4 << 20, plan(1 << 20, 2)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert!(faulty.count(Op::Get) <= 2, "{}", faulty.count(Op::Get));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_object_shorter_than_its_size_fails_after_retries() {
        let (_dir, local, _) = local_with(3 << 20).await;
        let sink: DynBackupSink = local;
        let err = read(read_in_parts(sink, "obj", 4 << 20, plan(1 << 20, 2)))
            .await
            .unwrap_err();
        assert!(!err.to_string().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wrapper_reads_hinted_large_objects_in_parts_only() {
        let len = 3 * 1024 * 1024;
        let (_dir, local, data) = local_with(len).await;
        let faulty = FaultySink::new(local);
        let sink = RangedSink::new(
            Arc::new(faulty.clone()),
            TransferOptions {
                download_part_size: Some(ByteSize(1 << 20)),
                ..Default::default()
            },
        );
        let plain = read(sink.get("obj", GetOptions::default()).await.unwrap())
            .await
            .unwrap();
        assert!(plain == data.as_ref());
        assert_eq!(faulty.count(Op::Get), 1);
        let hinted = GetOptions::default().with_size_hint(len as u64);
        let parts = read(sink.get("obj", hinted).await.unwrap()).await.unwrap();
        assert!(parts == data.as_ref());
        assert_eq!(faulty.count(Op::Get), 1 + 3);
        assert_eq!(faulty.count(Op::Head), 1);
        kars_backup_core::testing::sink_conformance(&sink)
            .await
            .unwrap();
    }
}
