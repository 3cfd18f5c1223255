//! [`FaultySink`]: a wrapper that fails or stalls chosen requests of any sink, for tests of what
//! happens when storage breaks mid-way (feature `testing`).
//!
//! Requests are counted per kind ([`Op`]) across the wrapper's whole life, starting at 1:
//! `fail(Op::PutPart, 3)` fails the third `put_part` of any upload; `fail(Op::GetChunk, 2)` ends
//! the second chunk read by any download with an error.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use kars_backup_core::SinkExt;
//! use kars_backup_core::fault::{FaultySink, Op};
//! use kars_backup_core::testing::InMemorySink;
//! let sink = FaultySink::new(Arc::new(InMemorySink::new())).fail(Op::Complete, 1);
//! assert!(sink.put_bytes("a", bytes::Bytes::from_static(b"x")).await.is_err());
//! assert!(sink.put_bytes("a", bytes::Bytes::from_static(b"x")).await.is_ok());
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::sink::{
    BackupSink, ByteStream, DynBackupSink, GetOptions, ObjectMeta, PutOptions, Upload,
};
use crate::tier::Placement;

/// A kind of sink request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// [`BackupSink::put`] (starting an upload).
    Put,
    /// [`Upload::put_part`].
    PutPart,
    /// [`Upload::complete`].
    Complete,
    /// [`BackupSink::get`] (opening a download).
    Get,
    /// One chunk of a download's stream.
    GetChunk,
    /// [`BackupSink::head`].
    Head,
    /// [`BackupSink::list`].
    List,
    /// [`BackupSink::delete`].
    Delete,
}

/// What happens to a chosen request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It fails with a transient-looking error (connection reset).
    Fail,
    /// It waits this long, then runs normally.
    Stall(Duration),
}

#[derive(Debug, Default)]
struct Faults {
    rules: Mutex<Vec<(Op, usize, Fault)>>,
    counts: Mutex<HashMap<Op, usize>>,
}

impl Faults {
    /// Counts a request and applies its fault, if any.
    async fn hit(&self, op: Op, what: &str) -> Result<()> {
        let fault = {
            let mut counts = self.counts.lock().expect("poisoned");
            let n = counts.entry(op).or_insert(0);
            *n += 1;
            let n = *n;
            self.rules
                .lock()
                .expect("poisoned")
                .iter()
                .find(|(o, nth, _)| *o == op && *nth == n)
                .map(|(_, _, f)| *f)
        };
        match fault {
            None => Ok(()),
            Some(Fault::Stall(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Some(Fault::Fail) => Err(injected(op, what)),
        }
    }
}

fn injected(op: Op, what: &str) -> Error {
    Error::generic(
        "fault-injection",
        std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            format!("injected failure of {op:?} on {what}"),
        ),
    )
}

/// Wraps a sink and fails or stalls chosen requests (see the module documentation).
#[derive(Debug, Clone)]
pub struct FaultySink {
    inner: DynBackupSink,
    faults: Arc<Faults>,
}

impl FaultySink {
    /// Wraps `inner`; no faults until added.
    pub fn new(inner: DynBackupSink) -> Self {
        FaultySink {
            inner,
            faults: Arc::default(),
        }
    }

    /// Fails the `nth` request (from 1) of kind `op`.
    pub fn fail(self, op: Op, nth: usize) -> Self {
        self.with_fault(op, nth, Fault::Fail)
    }

    /// Stalls the `nth` request (from 1) of kind `op` for `duration`.
    pub fn stall(self, op: Op, nth: usize, duration: Duration) -> Self {
        self.with_fault(op, nth, Fault::Stall(duration))
    }

    /// Applies `fault` to the `nth` request (from 1) of kind `op`.
    pub fn with_fault(self, op: Op, nth: usize, fault: Fault) -> Self {
        self.faults
            .rules
            .lock()
            .expect("poisoned")
            .push((op, nth, fault));
        self
    }

    /// How many requests of kind `op` were made so far.
    pub fn count(&self, op: Op) -> usize {
        self.faults
            .counts
            .lock()
            .expect("poisoned")
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &DynBackupSink {
        &self.inner
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn Upload>,
    faults: Arc<Faults>,
    key: String,
}

#[async_trait]
impl Upload for FaultyUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        self.faults.hit(Op::PutPart, &self.key).await?;
        self.inner.put_part(data).await
    }

    async fn complete(self: Box<Self>) -> Result<ObjectMeta> {
        if let Err(e) = self.faults.hit(Op::Complete, &self.key).await {
            // A failed completion leaves nothing behind, like a real backend's would.
            let _ = self.inner.abort().await;
            return Err(e);
        }
        self.inner.complete().await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl BackupSink for FaultySink {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn placement(&self) -> Placement {
        self.inner.placement()
    }

    async fn put(&self, key: &str, options: PutOptions) -> Result<Box<dyn Upload>> {
        self.faults.hit(Op::Put, key).await?;
        let inner = self.inner.put(key, options).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            faults: self.faults.clone(),
            key: key.to_string(),
        }))
    }

    async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream> {
        self.faults.hit(Op::Get, key).await?;
        let stream = self.inner.get(key, options).await?;
        let faults = self.faults.clone();
        let key = key.to_string();
        Ok(Box::pin(stream.then(move |chunk| {
            let faults = faults.clone();
            let key = key.clone();
            async move {
                let chunk = chunk?;
                faults.hit(Op::GetChunk, &key).await?;
                Ok(chunk)
            }
        })))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.faults.hit(Op::Head, key).await?;
        self.inner.head(key).await
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
        self.faults.hit(Op::List, prefix.unwrap_or("")).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.faults.hit(Op::Delete, key).await?;
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SinkExt;
    use crate::testing::{InMemorySink, sink_conformance};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_faults_it_conforms() {
        let sink = FaultySink::new(Arc::new(InMemorySink::new()));
        sink_conformance(&sink).await.unwrap();
        assert!(sink.count(Op::PutPart) > 64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fails_the_nth_part_and_the_nth_chunk() {
        let sink = FaultySink::new(Arc::new(InMemorySink::new()))
            .fail(Op::PutPart, 2)
            .fail(Op::GetChunk, 1);
        let mut up = sink.put("k", PutOptions::default()).await.unwrap();
        up.put_part(Bytes::from_static(b"a")).await.unwrap();
        let err = up.put_part(Bytes::from_static(b"b")).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        up.abort().await.unwrap();
        sink.put_bytes("k", Bytes::from_static(b"abc"))
            .await
            .unwrap();
        assert!(sink.get_bytes("k").await.is_err());
        assert_eq!(sink.get_bytes("k").await.unwrap().as_ref(), b"abc");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalls() {
        let sink = FaultySink::new(Arc::new(InMemorySink::new())).stall(
            Op::Head,
            1,
            Duration::from_millis(200),
        );
        let t = std::time::Instant::now();
        assert!(sink.head("x").await.is_err());
        assert!(t.elapsed() >= Duration::from_millis(200));
    }
}
