//! The payload of a restore: what it is (plain SQL, a custom archive, a tar of a directory dump,
//! told by its first bytes), read from its start again after that look, fed into a program's
//! standard input or spooled to a private file.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kars_backup_core::PayloadReader;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::freeze::FreezeCopies;
use kars_backup_core::TaskError;

/// What the payload is, recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadKind {
    /// Plain SQL (`pg_dump`, `pg_dump | gzip` once decompressed).
    Plain,
    /// A custom-format archive (`pg_dump -Fc`, starts with `PGDMP`).
    Custom,
    /// A tar of a directory-format dump.
    DirectoryTar,
}

impl PayloadKind {
    pub(crate) fn sniff(first: &[u8]) -> PayloadKind {
        if first.starts_with(b"PGDMP") {
            PayloadKind::Custom
        } else if first.len() >= 262 && &first[257..262] == b"ustar" {
            PayloadKind::DirectoryTar
        } else {
            PayloadKind::Plain
        }
    }
}

/// Reads the first bytes of the payload (at least 512 unless it is shorter).
async fn read_head(payload: &mut PayloadReader, archive: &str) -> Result<Bytes> {
    let mut head = Vec::new();
    while head.len() < 512 {
        match payload.next_chunk().await {
            Ok(Some(c)) => head.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => {
                return Err(Error::InvalidArchive {
                    archive: archive.to_string(),
                    reason: format!("reading the archive failed: {e}"),
                });
            }
        }
    }
    if head.is_empty() {
        return Err(Error::InvalidArchive {
            archive: archive.to_string(),
            reason: format!("{archive} is empty"),
        });
    }
    Ok(Bytes::from(head))
}

/// A payload read from its start again: the head already read, then the rest.
pub(crate) struct Payload {
    head: Bytes,
    rest: PayloadReader,
    /// What it is.
    pub(crate) kind: PayloadKind,
}

impl Payload {
    /// Reads the payload's first bytes to tell what it is.
    pub(crate) async fn open(mut rest: PayloadReader, archive: &str) -> Result<Self> {
        let head = read_head(&mut rest, archive).await?;
        let kind = PayloadKind::sniff(&head);
        Ok(Payload { head, rest, kind })
    }

    /// The next chunk of the payload from its start (the head first); `None` at its end.
    pub(crate) async fn next_chunk(&mut self, archive: &str) -> Result<Option<Bytes>> {
        if !self.head.is_empty() {
            return Ok(Some(std::mem::take(&mut self.head)));
        }
        self.rest
            .next_chunk()
            .await
            .map_err(|e| Error::InvalidArchive {
                archive: archive.to_string(),
                reason: format!("reading the archive failed: {e}"),
            })
    }

    /// Writes the whole payload into a child's standard input; `Ok(false)` when the child stopped
    /// reading (its exit status tells why).
    /// With `freeze`, a plain dump's `COPY` statements are rewritten on the way (see
    /// [`FreezeCopies`]).
    pub(crate) async fn feed(
        mut self,
        stdin: &mut tokio::process::ChildStdin,
        archive: &str,
        mut freeze: Option<&mut FreezeCopies>,
    ) -> Result<bool> {
        let mut out = Vec::new();
        let mut write = async |chunk: &[u8], freeze: &mut Option<&mut FreezeCopies>| {
            let bytes = match freeze {
                Some(f) => {
                    out.clear();
                    f.push(chunk, &mut out);
                    &out[..]
                }
                None => chunk,
            };
            stdin.write_all(bytes).await.is_ok()
        };
        let head = std::mem::take(&mut self.head);
        if !write(&head, &mut freeze).await {
            return Ok(false);
        }
        loop {
            match self.rest.next_chunk().await {
                Ok(Some(c)) => {
                    if !write(&c, &mut freeze).await {
                        return Ok(false);
                    }
                }
                Ok(None) => {
                    if let Some(f) = freeze {
                        let mut last = Vec::new();
                        f.finish(&mut last);
                        if stdin.write_all(&last).await.is_err() {
                            return Ok(false);
                        }
                    }
                    return Ok(true);
                }
                Err(e) => {
                    return Err(Error::InvalidArchive {
                        archive: archive.to_string(),
                        reason: format!("reading the archive failed: {e}"),
                    });
                }
            }
        }
    }

    /// Writes the payload into a private file (for `pg_restore --jobs`, which needs a seekable
    /// archive, and for in-place restores).
    pub(crate) async fn spool(
        mut self,
        dir: &Path,
        archive: &str,
    ) -> Result<(PathBuf, PayloadKind)> {
        let kind = self.kind;
        if kind == PayloadKind::DirectoryTar {
            let target = dir.join("dump");
            let head = self.head;
            let rest = self.rest;
            let archive_name = archive.to_string();
            let t = target.clone();
            tokio::task::spawn_blocking(move || {
                extract_flat_tar(std::io::Cursor::new(head).chain(rest), &t, &archive_name)
            })
            .await
            .map_err(|e| {
                Error::Task(TaskError::new(
                    "extracting the dump directory",
                    e.to_string(),
                ))
            })??;
            return Ok((target, kind));
        }
        let path = dir.join(match kind {
            PayloadKind::Custom => "payload.dump",
            _ => "payload.sql",
        });
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Error::io("create", &path, e))?;
        file.write_all(&self.head)
            .await
            .map_err(|e| Error::io("write", &path, e))?;
        loop {
            match self.rest.next_chunk().await {
                Ok(Some(c)) => file
                    .write_all(&c)
                    .await
                    .map_err(|e| Error::io("write", &path, e))?,
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::InvalidArchive {
                        archive: archive.to_string(),
                        reason: format!("reading the archive failed: {e}"),
                    });
                }
            }
        }
        file.flush()
            .await
            .map_err(|e| Error::io("write", &path, e))?;
        Ok((path, kind))
    }
}

/// Extracts a tar holding a directory dump: regular files at the top level only.
fn extract_flat_tar(input: impl Read, dir: &Path, archive: &str) -> Result<()> {
    std::fs::create_dir(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let bad = |reason: String| Error::InvalidArchive {
        archive: archive.to_string(),
        reason,
    };
    let mut tar = tar::Archive::new(input);
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a tar of a directory dump: {e}")))?;
    let mut saw_toc = false;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("damaged tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("damaged tar: {e}")))?
            .into_owned();
        let name = match (path.components().count(), path.file_name()) {
            (1, Some(n)) => n.to_owned(),
            _ => {
                return Err(bad(format!(
                    "entry {} is not a plain file name",
                    path.display()
                )));
            }
        };
        if !entry.header().entry_type().is_file() {
            return Err(bad(format!(
                "entry {} is not a regular file",
                path.display()
            )));
        }
        saw_toc |= name == "toc.dat";
        let out = dir.join(&name);
        let mut file = std::fs::File::create(&out).map_err(|e| Error::io("create", &out, e))?;
        std::io::copy(&mut entry, &mut file).map_err(|e| Error::io("write", &out, e))?;
    }
    if !saw_toc {
        return Err(bad(
            "the tar holds no toc.dat: it is not a pg_dump directory dump".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_recognised() {
        assert_eq!(PayloadKind::sniff(b"PGDMP\x01\x0e"), PayloadKind::Custom);
        assert_eq!(
            PayloadKind::sniff(b"--\n-- PostgreSQL database dump"),
            PayloadKind::Plain
        );
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(PayloadKind::sniff(&tar), PayloadKind::DirectoryTar);
    }
}
