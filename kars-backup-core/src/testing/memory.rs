//! [`InMemorySink`]: a sink that keeps objects in memory, for tests and examples.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::Utc;

use crate::error::{Error, Result};
use crate::sink::{
    BackupSink, ByteStream, GetOptions, ObjectMeta, PutOptions, Upload, validate_key,
};
use crate::tier::Placement;
type Objects = Arc<Mutex<BTreeMap<String, (Bytes, chrono::DateTime<Utc>)>>>;

/// A sink that keeps objects in memory; for tests and examples. It is a local sink
/// ([`Placement::Local`]) unless made to stand for an off-site one with
/// [`InMemorySink::with_placement`].
#[derive(Debug, Clone, Default)]
pub struct InMemorySink {
    objects: Objects,
    off_site: bool,
}

impl InMemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same sink reporting this placement (e.g. [`Placement::Cloud`] to test what happens
    /// at an off-site destination).
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.off_site = placement == Placement::Cloud;
        self
    }
}

#[derive(Debug)]
struct MemoryUpload {
    key: String,
    buf: BytesMut,
    objects: Objects,
    if_not_exists: bool,
}

#[async_trait]
impl Upload for MemoryUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    async fn complete(self: Box<Self>) -> Result<ObjectMeta> {
        let mut objects = self.objects.lock().expect("poisoned");
        if self.if_not_exists && objects.contains_key(&self.key) {
            return Err(Error::AlreadyExists {
                what: format!("memory://{}", self.key),
            });
        }
        let now = Utc::now();
        let size = self.buf.len() as u64;
        objects.insert(self.key.clone(), (self.buf.freeze(), now));
        Ok(ObjectMeta {
            key: self.key,
            size,
            last_modified: Some(now),
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

fn not_found(key: &str) -> Error {
    Error::NotFound {
        what: format!("memory://{key}"),
    }
}

#[async_trait]
impl BackupSink for InMemorySink {
    fn describe(&self) -> String {
        "memory://".into()
    }

    fn placement(&self) -> Placement {
        if self.off_site {
            Placement::Cloud
        } else {
            Placement::Local
        }
    }

    async fn put(&self, key: &str, options: PutOptions) -> Result<Box<dyn Upload>> {
        validate_key(key)?;
        Ok(Box::new(MemoryUpload {
            key: key.to_string(),
            buf: BytesMut::new(),
            objects: self.objects.clone(),
            if_not_exists: options.if_not_exists,
        }))
    }

    async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream> {
        validate_key(key)?;
        let data = self
            .objects
            .lock()
            .expect("poisoned")
            .get(key)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| not_found(key))?;
        let data = match options.range {
            Some(r) => {
                let end = (r.end as usize).min(data.len());
                let start = (r.start as usize).min(end);
                data.slice(start..end)
            }
            None => data,
        };
        let chunks: Vec<Result<Bytes>> = (0..data.len())
            .step_by(64 * 1024)
            .map(|i| Ok(data.slice(i..(i + 64 * 1024).min(data.len()))))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        self.objects
            .lock()
            .expect("poisoned")
            .get(key)
            .map(|(b, t)| ObjectMeta {
                key: key.to_string(),
                size: b.len() as u64,
                last_modified: Some(*t),
            })
            .ok_or_else(|| not_found(key))
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let objects = self.objects.lock().expect("poisoned");
        Ok(objects
            .iter()
            .filter(|(k, _)| prefix.is_none_or(|p| k.starts_with(p)))
            .map(|(k, (b, t))| ObjectMeta {
                key: k.clone(),
                size: b.len() as u64,
                last_modified: Some(*t),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.objects.lock().expect("poisoned").remove(key);
        Ok(())
    }
}
