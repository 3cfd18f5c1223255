//! A git repository with Git LFS tracking, pushed to a remote: the runbook's fourth storage option.
//!
//! URL: `git+file:///srv/backups.git` (any git remote after `git+`: `git+ssh://…`,
//! `git+https://…`), optional query parameters `branch=main` and `path=kars` (a directory inside
//! the repository). A `file://` remote that does not exist is created (`git init --bare`).
//!
//! How it works (see `shared/notes/git-lfs.md` for the measured facts behind it): the sink keeps a
//! private working copy in a temporary directory, cloned without downloading LFS content. Every
//! object is an LFS file (`* filter=lfs` in `.gitattributes`). `complete` of an upload adds the
//! file, commits and pushes (the push runs git-lfs's pre-push hook, which copies the object to the
//! remote; `--no-verify` is never used), then, for `file://` remotes, checks that the remote
//! holds the LFS object with the right size before returning. Concurrent writes are committed
//! and pushed together (group commit). A failed push leaves the branch as it was and the working
//! copy is rebuilt from the remote. Deleting an object commits its removal and, for `file://`
//! remotes, removes the LFS object that nothing at the branch's head references any more (git's
//! own gc never does). Reads fetch the LFS object on demand.
//!
//! git runs with `GIT_CONFIG_NOSYSTEM=1` and `GIT_CONFIG_GLOBAL=/dev/null`, the LFS filter set on
//! the command line, no terminal prompts and stdin closed: the machine's git configuration can
//! neither help nor break it. Needs `git` and `git-lfs` on `PATH`.

use std::fmt;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::redact::redact;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use kars_backup_core::sink::{GetOptions, PutOptions, validate_key};
use kars_backup_core::{BackupSink, ByteStream, Error, ObjectMeta, Result, Upload};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::oneshot;

const GITATTRIBUTES: &str = "# Written by kars-backup: every backup file is stored with Git LFS.\n* filter=lfs diff=lfs merge=lfs -text\n.gitattributes !filter !diff !merge text\n";
const POINTER_VERSION: &str = "version https://git-lfs.github.com/spec/v1";

/// Builds a [`GitLfsSink`].
#[derive(Debug, Clone)]
pub struct GitLfsBuilder {
    remote: String,
    branch: String,
    path: String,
    work_root: Option<PathBuf>,
}

impl GitLfsBuilder {
    /// A builder for a git remote URL (`file:///srv/backups.git`, `ssh://…`).
    pub fn new(remote: impl Into<String>) -> Self {
        GitLfsBuilder {
            remote: remote.into(),
            branch: "main".into(),
            path: String::new(),
            work_root: None,
        }
    }

    /// Parses `git+REMOTE?branch=…&path=…`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a URL without `git+`, a bare path, or an unknown parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("git+").ok_or_else(|| {
            Error::InvalidInput(format!(
                "{} is not a git destination; use git+file:///srv/backups.git",
                redact(url)
            ))
        })?;
        let (remote, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        if !remote.contains("://") {
            return Err(Error::InvalidInput(format!(
                "{} names no URL scheme; git-lfs needs a URL remote such as git+file:///abs/path.git (a bare path fails to push)",
                redact(url)
            )));
        }
        let mut b = GitLfsBuilder::new(remote);
        if let Some(q) = query {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                match k.as_ref() {
                    "branch" => b.branch = v.into_owned(),
                    "path" | "prefix" => b.path = v.trim_matches('/').to_string(),
                    other => {
                        return Err(Error::InvalidInput(format!(
                            "unknown parameter {other:?} in a git+ URL; known: branch, path"
                        )));
                    }
                }
            }
        }
        if !b.path.is_empty() {
            validate_key(&b.path)?;
        }
        Ok(b)
    }

    /// The branch to commit to (default `main`).
    pub fn with_branch(mut self, branch: impl Into<String>) -> Self {
        self.branch = branch.into();
        self
    }

    /// A directory inside the repository holding the objects.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into().trim_matches('/').to_string();
        self
    }

    /// Where the working copy goes (default: a new temporary directory).
    pub fn with_work_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_root = Some(dir.into());
        self
    }

    /// Builds the sink. No git command runs until the first operation.
    ///
    /// # Errors
    /// [`Error::Io`] when the temporary directory cannot be created.
    pub fn build(self) -> Result<GitLfsSink> {
        let tmp = match &self.work_root {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| Error::io("create directory", d, e))?;
                tempfile::Builder::new()
                    .prefix("kars-git-lfs-")
                    .tempdir_in(d)
            }
            None => tempfile::Builder::new().prefix("kars-git-lfs-").tempdir(),
        }
        .map_err(|e| Error::io("create temporary directory", std::env::temp_dir(), e))?;
        let redacted = redact(&self.remote);
        let description = if self.path.is_empty() {
            format!("git+{redacted}")
        } else {
            format!("git+{redacted}?path={}", self.path)
        };
        Ok(GitLfsSink {
            inner: Arc::new(Inner {
                remote: self.remote,
                redacted,
                branch: self.branch,
                path: self.path,
                description,
                tmp,
                queue: Mutex::new(Vec::new()),
                state: tokio::sync::Mutex::new(State { ready: false }),
            }),
        })
    }
}

/// A git repository with LFS tracking as a [`BackupSink`] (see the module documentation).
#[derive(Clone)]
pub struct GitLfsSink {
    inner: Arc<Inner>,
}

impl fmt::Debug for GitLfsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitLfsSink")
            .field("description", &self.inner.description)
            .field("branch", &self.inner.branch)
            .finish_non_exhaustive()
    }
}

struct Inner {
    remote: String,
    redacted: String,
    branch: String,
    path: String,
    description: String,
    tmp: tempfile::TempDir,
    queue: Mutex<Vec<(Change, Waiter)>>,
    state: tokio::sync::Mutex<State>,
}

/// Told the outcome of a queued change (the error as text: one failure fails the whole batch).
type Waiter = oneshot::Sender<std::result::Result<(), String>>;

struct State {
    ready: bool,
}

#[derive(Debug)]
enum Change {
    Put {
        rel: String,
        file: PathBuf,
        oid: String,
        size: u64,
    },
    Delete {
        rel: String,
    },
}

/// An LFS pointer's content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pointer {
    oid: String,
    size: u64,
}

/// SHA-256 of nothing: git-lfs stores an empty file as an empty blob, not as a pointer.
const EMPTY_OID: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn parse_pointer(data: &[u8]) -> Option<Pointer> {
    if data.is_empty() {
        return Some(Pointer {
            oid: EMPTY_OID.to_string(),
            size: 0,
        });
    }
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.lines();
    if lines.next()? != POINTER_VERSION {
        return None;
    }
    let (mut oid, mut size) = (None, None);
    for line in lines {
        if let Some(o) = line.strip_prefix("oid sha256:") {
            oid = Some(o.to_string());
        } else if let Some(s) = line.strip_prefix("size ") {
            size = s.parse().ok();
        }
    }
    Some(Pointer {
        oid: oid?,
        size: size?,
    })
}

fn pointer_text(oid: &str, size: u64) -> String {
    format!("{POINTER_VERSION}\noid sha256:{oid}\nsize {size}\n")
}

fn object_path(lfs_dir: &Path, oid: &str) -> PathBuf {
    lfs_dir.join(&oid[0..2]).join(&oid[2..4]).join(oid)
}

impl GitLfsSink {
    fn work(&self) -> PathBuf {
        self.inner.tmp.path().join("work")
    }

    fn rel(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(if self.inner.path.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.inner.path)
        })
    }

    fn what(&self, key: &str) -> String {
        format!("{}#{key}", self.inner.description)
    }

    fn file_remote(&self) -> Option<PathBuf> {
        self.inner.remote.strip_prefix("file://").map(PathBuf::from)
    }

    fn fail(&self, msg: impl Into<String>) -> Error {
        Error::generic(self.inner.description.clone(), msg.into())
    }

    /// Runs git in `dir`; returns stdout. Errors carry stderr with the remote URL redacted.
    async fn git(&self, dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args([
            "-c",
            "user.name=kars-backup",
            "-c",
            "user.email=kars-backup@localhost",
            "-c",
            "filter.lfs.process=git-lfs filter-process",
            "-c",
            "filter.lfs.smudge=git-lfs smudge -- %f",
            "-c",
            "filter.lfs.clean=git-lfs clean -- %f",
            "-c",
            "filter.lfs.required=true",
            "-c",
            "lfs.locksverify=false",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
        let out = cmd.output().await.map_err(|e| {
            self.fail(format!(
                "cannot run git ({e}); install git and git-lfs (Debian: apt-get install git git-lfs)"
            ))
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr)
                .replace(&self.inner.remote, &self.inner.redacted);
            let shown: Vec<&str> = args.iter().take(3).copied().collect();
            return Err(self.fail(format!(
                "`git {}` failed ({}): {}",
                shown.join(" "),
                out.status,
                stderr.trim()
            )));
        }
        Ok(out.stdout)
    }

    /// Makes the working copy match the remote branch (cloning it the first time).
    async fn prepare(&self, state: &mut State) -> Result<()> {
        if state.ready {
            return Ok(());
        }
        let work = self.work();
        if work.exists() {
            tokio::fs::remove_dir_all(&work)
                .await
                .map_err(|e| Error::io("remove", &work, e))?;
        }
        if let Some(remote) = self.file_remote() {
            if !remote.exists() {
                if let Some(parent) = remote.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| Error::io("create directory", parent, e))?;
                }
                let r = remote.to_string_lossy().into_owned();
                self.git(
                    self.inner.tmp.path(),
                    &["init", "-q", "--bare", "-b", &self.inner.branch, &r],
                )
                .await?;
            }
        }
        let tmp = self.inner.tmp.path();
        self.git(tmp, &["init", "-q", "-b", &self.inner.branch, "work"])
            .await?;
        self.git(&work, &["lfs", "install", "--local"]).await?;
        self.git(&work, &["remote", "add", "origin", &self.inner.remote])
            .await?;
        self.git(&work, &["fetch", "-q", "origin"]).await?;
        let tracking = format!("refs/remotes/origin/{}", self.inner.branch);
        if self
            .git(&work, &["rev-parse", "--verify", "-q", &tracking])
            .await
            .is_ok()
        {
            self.git(&work, &["reset", "-q", "--hard", &tracking])
                .await?;
        }
        state.ready = true;
        Ok(())
    }

    /// Queues a change and waits until it is committed and pushed (with whatever else is queued).
    async fn apply(&self, change: Change) -> Result<()> {
        let (tx, mut rx) = oneshot::channel();
        self.inner
            .queue
            .lock()
            .expect("queue poisoned")
            .push((change, tx));
        let mut state = self.inner.state.lock().await;
        if let Ok(r) = rx.try_recv() {
            return r.map_err(|m| self.fail(m));
        }
        let batch: Vec<_> = std::mem::take(&mut *self.inner.queue.lock().expect("queue poisoned"));
        let (changes, senders): (Vec<Change>, Vec<_>) = batch.into_iter().unzip();
        let mut result = self.commit_and_push(&mut state, &changes).await;
        if let Err(e) = &result {
            // The remote may have moved (another writer): rebuild from it and try once more.
            tracing::warn!(destination = %self.inner.description, error = %e, "git push failed; retrying from the remote's state");
            state.ready = false;
            result = self.commit_and_push(&mut state, &changes).await;
            if result.is_err() {
                state.ready = false;
            }
        }
        for c in &changes {
            if let Change::Put { file, .. } = c {
                let _ = tokio::fs::remove_file(file).await;
            }
        }
        let message = result.as_ref().err().map(|e| e.to_string());
        for s in senders {
            let _ = s.send(match &message {
                None => Ok(()),
                Some(m) => Err(m.clone()),
            });
        }
        drop(state);
        match rx.await {
            Ok(r) => r.map_err(|m| self.fail(m)),
            Err(_) => Err(self.fail("the commit of this change was lost")),
        }
    }

    async fn commit_and_push(&self, state: &mut State, changes: &[Change]) -> Result<()> {
        self.prepare(state).await?;
        let work = self.work();
        let attributes = work.join(".gitattributes");
        let mut paths: Vec<String> = Vec::new();
        if tokio::fs::read_to_string(&attributes).await.ok().as_deref() != Some(GITATTRIBUTES) {
            tokio::fs::write(&attributes, GITATTRIBUTES)
                .await
                .map_err(|e| Error::io("write", &attributes, e))?;
            paths.push(".gitattributes".into());
        }
        let mut removed_oids = Vec::new();
        for c in changes {
            match c {
                Change::Put { rel, file, .. } => {
                    let target = work.join(rel);
                    if let Some(dir) = target.parent() {
                        tokio::fs::create_dir_all(dir)
                            .await
                            .map_err(|e| Error::io("create directory", dir, e))?;
                    }
                    if let Ok(data) = tokio::fs::read(&target).await {
                        if let Some(p) = parse_pointer(&data) {
                            removed_oids.push(p.oid);
                        }
                    }
                    let _ = tokio::fs::remove_file(&target).await;
                    tokio::fs::hard_link(file, &target)
                        .await
                        .map_err(|e| Error::io("link into the working copy", &target, e))?;
                    paths.push(rel.clone());
                }
                Change::Delete { rel } => {
                    let target = work.join(rel);
                    if let Ok(data) = tokio::fs::read(&target).await {
                        if let Some(p) = parse_pointer(&data) {
                            removed_oids.push(p.oid);
                        }
                        tokio::fs::remove_file(&target)
                            .await
                            .map_err(|e| Error::io("remove", &target, e))?;
                        paths.push(rel.clone());
                    }
                }
            }
        }
        if paths.is_empty() {
            return Ok(());
        }
        let mut add = vec!["add", "-A", "--"];
        add.extend(paths.iter().map(String::as_str));
        self.git(&work, &add).await?;
        let staged = self
            .git(&work, &["diff", "--cached", "--name-only", "-z"])
            .await?;
        if staged.is_empty() {
            return Ok(());
        }
        let message = match changes {
            [Change::Put { rel, .. }] => format!("kars-backup: store {rel}"),
            [Change::Delete { rel }] => format!("kars-backup: delete {rel}"),
            _ => format!("kars-backup: {} changes", changes.len()),
        };
        self.git(&work, &["commit", "-q", "--no-gpg-sign", "-m", &message])
            .await?;
        let refspec = format!("HEAD:refs/heads/{}", self.inner.branch);
        // Never --no-verify: git-lfs's pre-push hook is what copies the LFS objects.
        self.git(&work, &["push", "-q", "origin", &refspec]).await?;
        self.git(&work, &["fetch", "-q", "origin"]).await?;

        // Confirm each object reached the remote with the right size before reporting success.
        if let Some(remote) = self.file_remote() {
            let lfs = remote.join("lfs").join("objects");
            for c in changes {
                if let Change::Put { rel, oid, size, .. } = c {
                    if *size == 0 {
                        continue;
                    }
                    let p = object_path(&lfs, oid);
                    match tokio::fs::metadata(&p).await {
                        Ok(m) if m.len() == *size => {}
                        Ok(m) => {
                            return Err(self.fail(format!(
                                "the remote holds {} bytes for {rel} (LFS object {oid}) instead of {size}",
                                m.len()
                            )));
                        }
                        Err(e) => {
                            return Err(self.fail(format!(
                                "after the push the remote has no LFS object for {rel} ({oid}): {e}"
                            )));
                        }
                    }
                }
            }
        }
        // Keep the working copy small: the LFS store holds the content, the tree the pointer.
        for c in changes {
            if let Change::Put { rel, oid, size, .. } = c {
                if *size == 0 {
                    continue;
                }
                let target = work.join(rel);
                let _ = tokio::fs::remove_file(&target).await;
                tokio::fs::write(&target, pointer_text(oid, *size))
                    .await
                    .map_err(|e| Error::io("write", &target, e))?;
            }
        }
        if !removed_oids.is_empty() {
            self.prune_objects(&removed_oids).await;
        }
        Ok(())
    }

    /// Removes LFS objects no file at the branch's head points to any more (file:// remotes).
    async fn prune_objects(&self, oids: &[String]) {
        let Ok(live) = self.pointers().await else {
            return;
        };
        let live: std::collections::HashSet<String> =
            live.into_iter().map(|(_, p)| p.oid).collect();
        let local = self.work().join(".git").join("lfs").join("objects");
        for oid in oids.iter().filter(|o| !live.contains(*o)) {
            let _ = tokio::fs::remove_file(object_path(&local, oid)).await;
            if let Some(remote) = self.file_remote() {
                let p = object_path(&remote.join("lfs").join("objects"), oid);
                if let Err(e) = tokio::fs::remove_file(&p).await {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %p.display(), error = %e, "could not remove an unreferenced LFS object");
                    }
                }
            }
        }
    }

    /// Every tracked file under the sink's path with its pointer: (path in repo, pointer).
    async fn pointers(&self) -> Result<Vec<(String, Pointer)>> {
        let work = self.work();
        let scope = if self.inner.path.is_empty() {
            ".".to_string()
        } else {
            format!("{}/", self.inner.path)
        };
        let out = self.git(&work, &["ls-files", "-z", "--", &scope]).await?;
        let mut result = Vec::new();
        for rel in out.split(|b| *b == 0).filter(|s| !s.is_empty()) {
            let rel = String::from_utf8_lossy(rel).into_owned();
            if rel == ".gitattributes" {
                continue;
            }
            let data = tokio::fs::read(work.join(&rel))
                .await
                .map_err(|e| Error::io("read", work.join(&rel), e))?;
            if let Some(p) = parse_pointer(&data) {
                result.push((rel, p));
            }
        }
        Ok(result)
    }

    async fn pointer_of(&self, key: &str) -> Result<Pointer> {
        let rel = self.rel(key)?;
        let mut state = self.inner.state.lock().await;
        self.prepare(&mut state).await?;
        let path = self.work().join(&rel);
        let tracked = self
            .git(
                &self.work(),
                &["ls-files", "-z", "--error-unmatch", "--", &rel],
            )
            .await
            .is_ok();
        let data = match tokio::fs::read(&path).await {
            Ok(d) if tracked => d,
            _ => {
                return Err(Error::NotFound {
                    what: self.what(key),
                });
            }
        };
        parse_pointer(&data).ok_or_else(|| self.fail(format!("{rel} is not a Git LFS pointer")))
    }
}

#[async_trait]
impl BackupSink for GitLfsSink {
    fn describe(&self) -> String {
        self.inner.description.clone()
    }

    async fn put(&self, key: &str, options: PutOptions) -> Result<Box<dyn Upload>> {
        let rel = self.rel(key)?;
        let dir = self.inner.tmp.path().join("uploads");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io("create directory", &dir, e))?;
        let file_path = dir.join(format!(
            "{}-{}",
            std::process::id(),
            kars_backup_core::new_run_id()
        ));
        let file = tokio::fs::File::create(&file_path)
            .await
            .map_err(|e| Error::io("create", &file_path, e))?;
        Ok(Box::new(GitLfsUpload {
            sink: self.clone(),
            key: key.to_string(),
            rel,
            path: file_path,
            file: Some(file),
            hasher: Sha256::new(),
            size: 0,
            if_not_exists: options.if_not_exists,
        }))
    }

    async fn get(&self, key: &str, options: GetOptions) -> Result<ByteStream> {
        let pointer = self.pointer_of(key).await?;
        if pointer.size == 0 {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let rel = self.rel(key)?;
        let local = object_path(
            &self.work().join(".git").join("lfs").join("objects"),
            &pointer.oid,
        );
        if !tokio::fs::try_exists(&local).await.unwrap_or(false) {
            let _state = self.inner.state.lock().await;
            self.git(&self.work(), &["lfs", "fetch", "origin", "--include", &rel])
                .await?;
        }
        let mut file = tokio::fs::File::open(&local).await.map_err(|e| {
            self.fail(format!(
                "the LFS object of {rel} ({}) is missing after fetching it: {e}",
                pointer.oid
            ))
        })?;
        let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match options.range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.start))
                    .await
                    .map_err(|e| Error::io("seek", &local, e))?;
                Box::new(file.take(r.end.saturating_sub(r.start)))
            }
            None => Box::new(file),
        };
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
            .map(move |r| r.map_err(|e| Error::io("read", &local, e)));
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let p = self.pointer_of(key).await?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: p.size,
            last_modified: None,
        })
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let mut state = self.inner.state.lock().await;
        // See what other writers pushed since.
        state.ready = false;
        self.prepare(&mut state).await?;
        let base = if self.inner.path.is_empty() {
            String::new()
        } else {
            format!("{}/", self.inner.path)
        };
        let mut out: Vec<ObjectMeta> = self
            .pointers()
            .await?
            .into_iter()
            .filter_map(|(rel, p)| {
                let key = rel.strip_prefix(&base)?.to_string();
                prefix
                    .is_none_or(|pre| key.starts_with(pre))
                    .then_some(ObjectMeta {
                        key,
                        size: p.size,
                        last_modified: None,
                    })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let rel = self.rel(key)?;
        self.apply(Change::Delete { rel }).await
    }
}

struct GitLfsUpload {
    sink: GitLfsSink,
    key: String,
    rel: String,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
    if_not_exists: bool,
}

impl fmt::Debug for GitLfsUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitLfsUpload")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Drop for GitLfsUpload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[async_trait]
impl Upload for GitLfsUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| self.sink.fail("upload already finished"))?;
        file.write_all(&data)
            .await
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.hasher.update(&data);
        self.size += data.len() as u64;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| self.sink.fail("upload already finished"))?;
        file.flush()
            .await
            .map_err(|e| Error::io("write", &self.path, e))?;
        drop(file);
        if self.if_not_exists && self.sink.head(&self.key).await.is_ok() {
            return Err(Error::AlreadyExists {
                what: self.sink.what(&self.key),
            });
        }
        let oid = hex::encode(std::mem::take(&mut self.hasher).finalize());
        self.sink
            .apply(Change::Put {
                rel: self.rel.clone(),
                file: self.path.clone(),
                oid,
                size: self.size,
            })
            .await?;
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            last_modified: Some(chrono::Utc::now()),
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file = None;
        let _ = tokio::fs::remove_file(&self.path).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let b = GitLfsBuilder::from_url("git+file:///srv/b.git?branch=backups&path=kars/").unwrap();
        assert_eq!(b.remote, "file:///srv/b.git");
        assert_eq!(b.branch, "backups");
        assert_eq!(b.path, "kars");
        assert!(GitLfsBuilder::from_url("git+/srv/b.git").is_err());
        assert!(GitLfsBuilder::from_url("git+file:///b.git?x=1").is_err());
    }

    #[test]
    fn pointers_round_trip() {
        let oid = "a".repeat(64);
        let p = parse_pointer(pointer_text(&oid, 42).as_bytes()).unwrap();
        assert_eq!(p, Pointer { oid, size: 42 });
        assert!(parse_pointer(b"hello").is_none());
    }
}
