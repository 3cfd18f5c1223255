//! A downstream team's sink: a flat "drop box" directory (an NFS share, say), one file per object
//! named by the hex of its key, written under a temporary name and renamed into place (atomic).
//! Passes the public conformance suite: `cargo run -p kars-backup-storage --example custom_sink`.

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use kars_backup_core::sink::{GetOptions, PutOptions, validate_key};
use kars_backup_core::{BackupSink, ByteStream, Error, ObjectMeta, Result, Upload};
use tokio::io::AsyncWriteExt;

/// Objects as files named by the hex of their key, in one directory.
#[derive(Debug)]
struct DropBoxSink {
    dir: PathBuf,
}

impl DropBoxSink {
    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?; // refuse "/abs", "a/../b", "" …
        Ok(self.dir.join(hex::encode(key)))
    }
}

/// Maps an I/O result to the contract's errors: a missing file is `NotFound`.
fn io<T>(r: std::io::Result<T>, key: &str) -> Result<T> {
    r.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { what: key.into() },
        _ => Error::generic("dropbox", e),
    })
}

fn meta(key: &str, size: u64) -> ObjectMeta {
    let last_modified = None;
    ObjectMeta {
        key: key.into(),
        size,
        last_modified,
    }
}

#[derive(Debug)]
struct DropBoxUpload {
    file: tokio::fs::File,
    temp: PathBuf,
    target: PathBuf,
    size: u64,
    key: String,
}

#[async_trait]
impl Upload for DropBoxUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        self.size += data.len() as u64;
        io(self.file.write_all(&data).await, &self.key)
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        io(self.file.sync_all().await, &self.key)?;
        // The object becomes visible only now, all at once.
        io(tokio::fs::rename(&self.temp, &self.target).await, &self.key)?;
        Ok(meta(&self.key, self.size))
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(()) // Drop removes the temporary file.
    }
}

impl Drop for DropBoxUpload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temp); // an unfinished upload leaves nothing
    }
}

#[async_trait]
impl BackupSink for DropBoxSink {
    fn describe(&self) -> String {
        format!("dropbox://{}", self.dir.display())
    }

    async fn put(&self, key: &str, _: PutOptions) -> Result<Box<dyn Upload>> {
        let target = self.path(key)?;
        let temp = self
            .dir
            .join(format!(".tmp-{}", kars_backup_core::new_run_id()));
        let file = io(tokio::fs::File::create(&temp).await, key)?;
        let (size, key) = (0, key.to_string());
        Ok(Box::new(DropBoxUpload {
            file,
            temp,
            target,
            size,
            key,
        }))
    }

    async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream> {
        let data = Bytes::from(io(tokio::fs::read(self.path(key)?).await, key)?);
        let data = match options.range {
            Some(r) => data.slice(r.start as usize..(r.end as usize).min(data.len())),
            None => data,
        };
        Ok(Box::pin(futures::stream::iter([Ok(data)])))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let m = io(tokio::fs::metadata(self.path(key)?).await, key)?;
        Ok(meta(key, m.len()))
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut dir = io(tokio::fs::read_dir(&self.dir).await, "/")?;
        while let Some(entry) = io(dir.next_entry().await, "/")? {
            let name = hex::decode(entry.file_name().to_string_lossy().as_bytes());
            let Some(key) = name.ok().and_then(|k| String::from_utf8(k).ok()) else {
                continue; // not an object: a .tmp-* file of an unfinished upload
            };
            if prefix.is_none_or(|p| key.starts_with(p)) {
                out.push(meta(&key, io(entry.metadata().await, &key)?.len()));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => io(Err(e), key),
            _ => Ok(()),
        }
    }
}

/// Runs the conformance suite against a drop box in a temporary directory.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn main() -> Result<()> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let sink = DropBoxSink {
        dir: dir.path().into(),
    };
    kars_backup_core::testing::sink_conformance(&sink).await?;
    println!("{} passes the conformance suite", sink.describe());
    Ok(())
}
