//! [`LocalSink`]: a directory on local disk, private (0700 directories, 0600 files), written
//! atomically (temporary name, fsync, rename).

use std::io::SeekFrom;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use kars_backup_core::sink::validate_key;
use kars_backup_core::sink::{GetOptions, PutOptions};
use kars_backup_core::write_behind::WriteBehind;
use kars_backup_core::{BackupSink, ByteStream, Error, ObjectMeta, Result, Upload};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Name prefix of the temporary files of unfinished uploads; never listed.
pub const TEMP_PREFIX: &str = ".kars-tmp-";

/// A directory on local disk.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kars_backup_core::Result<()> {
/// use kars_backup_core::SinkExt;
/// use kars_backup_storage::LocalSink;
/// let dir = tempfile::tempdir().unwrap();
/// let sink = LocalSink::new(dir.path().join("backups"))?;
/// sink.put_bytes("hello.txt", bytes::Bytes::from_static(b"hi")).await?;
/// assert_eq!(sink.get_bytes("hello.txt").await?.as_ref(), b"hi");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LocalSink {
    root: PathBuf,
}

impl LocalSink {
    /// A sink storing under `root`, created (mode 0700) if missing.
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory when it cannot be created or is not a directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("resolve current directory for", &root, e))?
                .join(root)
        };
        create_private_dir_all(&root)?;
        let meta = std::fs::metadata(&root).map_err(|e| Error::io("inspect", &root, e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                "use as backup directory",
                &root,
                std::io::Error::other("it exists and is not a directory"),
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %root.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "backup directory is readable by other users; `chmod 700` it"
            );
        }
        Ok(LocalSink { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

fn create_private_dir_all(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            create_private_dir_all(parent)?;
        }
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(Error::io("create directory", path, e)),
    }
}

fn not_found(path: &Path) -> Error {
    Error::NotFound {
        what: path.display().to_string(),
    }
}

fn map_io(action: &'static str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        not_found(path)
    } else {
        Error::io(action, path, e)
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Bytes gathered before one write to disk: one blocking call per batch, not per chunk.
const WRITE_BATCH: usize = 4 * 1024 * 1024;

/// An upload into a temporary file: chunks are gathered into batches, each written on a blocking
/// thread while the next one gathers (so at most two batches are held), then fsync and rename.
#[derive(Debug)]
struct LocalUpload {
    /// The file, while no write is in flight.
    file: Option<(std::fs::File, WriteBehind)>,
    /// The write in flight; it hands the file back.
    writing: Option<tokio::task::JoinHandle<std::io::Result<(std::fs::File, WriteBehind)>>>,
    pending: Vec<Bytes>,
    pending_len: usize,
    temp: PathBuf,
    target: PathBuf,
    size: u64,
    if_not_exists: bool,
    key: String,
}

impl LocalUpload {
    /// The file (and how far its writeback was started), once the write in flight (if any) has
    /// finished.
    async fn take_file(&mut self) -> Result<(std::fs::File, WriteBehind)> {
        if let Some(h) = self.writing.take() {
            return h
                .await
                .map_err(|e| Error::generic("local", e))?
                .map_err(|e| Error::io("write", &self.temp, e));
        }
        self.file
            .take()
            .ok_or_else(|| Error::generic("local", "upload already finished"))
    }

    /// Starts writing the gathered chunks.
    async fn write_pending(&mut self) -> Result<()> {
        use std::io::Write;
        let (mut file, mut behind) = self.take_file().await?;
        let batch = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            for b in &batch {
                file.write_all(b)?;
                behind.written(&file, b.len() as u64);
            }
            Ok((file, behind))
        }));
        Ok(())
    }

    async fn finish(&mut self) -> Result<ObjectMeta> {
        self.write_pending().await?;
        let (file, _) = self.take_file().await?;
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| Error::generic("local", e))?
            .map_err(|e| Error::io("sync", &self.temp, e))?;
        if self.if_not_exists && tokio::fs::try_exists(&self.target).await.unwrap_or(false) {
            return Err(Error::AlreadyExists {
                what: self.target.display().to_string(),
            });
        }
        tokio::fs::rename(&self.temp, &self.target)
            .await
            .map_err(|e| Error::io("rename into place", &self.target, e))?;
        if let Some(dir) = self.target.parent() {
            sync_dir(dir).await;
        }
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            last_modified: Some(chrono::Utc::now()),
        })
    }
}

async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // A write still in flight goes to the unlinked file and is discarded with it.
        if self.temp.exists() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[async_trait]
impl Upload for LocalUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        if self.file.is_none() && self.writing.is_none() {
            return Err(Error::generic("local", "upload already finished"));
        }
        self.size += data.len() as u64;
        self.pending_len += data.len();
        self.pending.push(data);
        if self.pending_len >= WRITE_BATCH {
            self.write_pending().await?;
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        let result = self.finish().await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.temp).await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.pending.clear();
        let _ = self.take_file().await;
        match tokio::fs::remove_file(&self.temp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &self.temp, e)),
        }
    }
}

#[async_trait]
impl BackupSink for LocalSink {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn placement(&self) -> kars_backup_core::Placement {
        kars_backup_core::Placement::Local
    }

    async fn put(&self, key: &str, options: PutOptions) -> Result<Box<dyn Upload>> {
        let target = self.path_of(key)?;
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        let dir_for_create = dir.clone();
        tokio::task::spawn_blocking(move || create_private_dir_all(&dir_for_create))
            .await
            .map_err(|e| Error::generic("local", e))??;
        let base = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!("{TEMP_PREFIX}{base}-{}", unique_suffix()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .await
            .map_err(|e| Error::io("create", &temp, e))?;
        Ok(Box::new(LocalUpload {
            file: Some((file.into_std().await, WriteBehind::default())),
            writing: None,
            pending: Vec::new(),
            pending_len: 0,
            temp,
            target,
            size: 0,
            if_not_exists: options.if_not_exists,
            key: key.to_string(),
        }))
    }

    async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream> {
        let path = self.path_of(key)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| map_io("open", &path, e))?;
        let meta = file
            .metadata()
            .await
            .map_err(|e| map_io("inspect", &path, e))?;
        if !meta.is_file() {
            return Err(not_found(&path));
        }
        let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match options.range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.start))
                    .await
                    .map_err(|e| Error::io("seek", &path, e))?;
                Box::new(file.take(r.end.saturating_sub(r.start)))
            }
            None => Box::new(file),
        };
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
            .map(move |r| r.map_err(|e| Error::io("read", &path, e)));
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path_of(key)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| map_io("inspect", &path, e))?;
        if !meta.is_file() {
            return Err(not_found(&path));
        }
        Ok(object_meta(key.to_string(), &meta))
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            // Walk only the directory the prefix names (a WAL archive lists one timeline's
            // directory per segment, not the whole destination).
            let dir = prefix
                .as_deref()
                .and_then(|p| p.rsplit_once('/'))
                .map(|(d, _)| d)
                .filter(|d| validate_key(d).is_ok());
            match dir {
                Some(d) => match std::fs::metadata(root.join(d)) {
                    Ok(m) if m.is_dir() => walk(&root.join(d), d, &mut out)?,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("list", root.join(d), e)),
                },
                None => walk(&root, "", &mut out)?,
            }
            out.retain(|o: &ObjectMeta| prefix.as_deref().is_none_or(|p| o.key.starts_with(p)));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| Error::generic("local", e))?
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete", &path, e)),
        }
    }
}

fn object_meta(key: String, meta: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: meta.len(),
        last_modified: meta
            .modified()
            .ok()
            .map(chrono::DateTime::<chrono::Utc>::from),
    }
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let key = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry
            .file_type()
            .map_err(|e| Error::io("inspect", entry.path(), e))?;
        if ft.is_dir() {
            walk(&entry.path(), &key, out)?;
        } else if ft.is_file() {
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("inspect", entry.path(), e))?;
            out.push(object_meta(key, &meta));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kars_backup_core::SinkExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_sink_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::new(dir.path().join("b")).unwrap();
        kars_backup_core::testing::sink_conformance(&sink)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn directories_are_0700_and_files_0600() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b");
        let sink = LocalSink::new(&root).unwrap();
        sink.put_bytes("x/y.bin", Bytes::from_static(b"1"))
            .await
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&root.join("x")), 0o700);
        assert_eq!(mode(&root.join("x/y.bin")), 0o600);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unfinished_upload_is_hidden_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::new(dir.path()).unwrap();
        let mut up = sink.put("a.tar.gz", PutOptions::default()).await.unwrap();
        up.put_part(Bytes::from_static(b"partial")).await.unwrap();
        assert!(sink.list(None).await.unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file exists while uploading"
        );
        drop(up);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file removed on drop"
        );
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = LocalSink::new(&file).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        let err = LocalSink::new(file.join("sub")).unwrap_err().to_string();
        assert!(
            err.contains("f/sub") || err.contains(&file.display().to_string()),
            "{err}"
        );
    }
}
