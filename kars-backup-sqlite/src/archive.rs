//! The tar payload: writing entries with exact sizes, and extracting archives safely.
//!
//! Extraction accepts only regular files and directories with relative paths free of `..`;
//! absolute paths, `..`, symbolic and hard links, devices and FIFOs are refused with
//! [`Error::UnsafeEntry`], and nothing is ever written outside the destination directory.
//! An archive that ends without tar's end-of-archive blocks is reported as truncated.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use kars_backup_core::write_behind::WriteBehind;
use tar::{EntryType, Header, HeaderMode};

use crate::error::{Error, Result};

/// Size of the copy buffer used for entries.
const COPY_BUFFER: usize = 256 * 1024;

/// Writes a tar archive entry by entry.
pub(crate) struct ArchiveWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> ArchiveWriter<W> {
    /// A new archive written into `out`.
    pub(crate) fn new(out: W) -> Self {
        ArchiveWriter {
            builder: tar::Builder::new(out),
        }
    }

    /// Appends the file at `source` as `name`, with exactly `size` bytes (a file that grows
    /// meanwhile is cut, one that shrinks is padded with zeros and reported). The header's mode,
    /// owner and time come from `meta`.
    pub(crate) fn append_file(
        &mut self,
        name: &Path,
        source: &Path,
        meta: &Metadata,
        size: u64,
    ) -> Result<()> {
        let file = File::open(source).map_err(|e| Error::io("open", source, e))?;
        let mut header = Header::new_gnu();
        header.set_metadata_in_mode(meta, HeaderMode::Complete);
        header.set_entry_type(EntryType::Regular);
        header.set_size(size);
        let mut reader = ExactReader::new(file, size);
        self.builder
            .append_data(&mut header, name, &mut reader)
            .map_err(|e| Error::io("archive entry", name, e))?;
        if reader.padded > 0 {
            tracing::warn!(file = %source.display(), missing = reader.padded, "file shrank while it was archived; padded with zeros");
        }
        Ok(())
    }

    /// Appends a directory entry `name` with mode, owner and time from `meta`.
    pub(crate) fn append_dir(&mut self, name: &Path, meta: &Metadata) -> Result<()> {
        let mut header = Header::new_gnu();
        header.set_metadata_in_mode(meta, HeaderMode::Complete);
        header.set_entry_type(EntryType::Directory);
        header.set_size(0);
        self.builder
            .append_data(&mut header, name, io::empty())
            .map_err(|e| Error::io("archive entry", name, e))
    }

    /// Writes the end-of-archive blocks and returns the writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

/// Reads exactly `remaining` bytes: the inner reader's, then zeros if it ends early.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    padded: u64,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, size: u64) -> Self {
        ExactReader {
            inner,
            remaining: size,
            padded: 0,
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = if self.padded > 0 {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            buf[..want].fill(0);
            self.padded += want as u64;
            want
        } else {
            n
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// What an extraction wrote, as paths relative to the destination.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    /// Regular files, in archive order.
    pub(crate) files: Vec<PathBuf>,
    /// Directories, in archive order.
    pub(crate) dirs: Vec<PathBuf>,
    /// Bytes of file content written.
    pub(crate) bytes: u64,
}

/// How to extract.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExtractOptions {
    /// Give files and directories the owner stored in the archive (when permitted).
    pub(crate) preserve_owner: bool,
}

/// Extracts the tar archive read from `reader` into `dest` (an existing, private directory).
///
/// `skip` is asked about each entry's relative path; entries it returns true for are not written
/// (they are still read and checked).
///
/// # Errors
/// [`Error::UnsafeEntry`] for an entry that is not a plain relative file or directory,
/// [`Error::CorruptArchive`] for bytes that are not a (complete) tar archive, [`Error::Io`] when
/// writing into `dest` fails.
pub(crate) fn extract_safely<R: Read>(
    reader: R,
    dest: &Path,
    archive_name: &str,
    options: ExtractOptions,
    skip: impl Fn(&Path) -> bool,
) -> Result<Extracted> {
    let corrupt = |e: io::Error| {
        Error::corrupt(
            archive_name,
            format!("it cannot be read as a tar archive: {e}"),
        )
    };
    let mut archive = tar::Archive::new(EofTracker::new(reader));
    let mut extracted = Extracted::default();
    let mut dir_modes = Vec::new();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        let unsafe_entry = |reason: String| Error::UnsafeEntry {
            archive: archive_name.to_string(),
            entry: raw.clone(),
            reason,
        };
        if kind.is_pax_global_extensions() {
            continue;
        }
        let rel = safe_relative_path(&raw).map_err(|r| unsafe_entry(r.to_string()))?;
        if !(kind.is_file() || kind.is_dir()) {
            return Err(unsafe_entry(format!(
                "it is a {}; only regular files and directories are restored",
                describe_kind(kind)
            )));
        }
        let Some(rel) = rel else {
            if kind.is_dir() {
                continue; // the archive's root, `./`
            }
            return Err(unsafe_entry("a file entry needs a name".into()));
        };
        if skip(&rel) {
            tracing::warn!(entry = %raw, "archive entry skipped");
            continue;
        }
        let target = dest.join(&rel);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let owner = owner_of(entry.header(), options);
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(|e| Error::io("create directory", &target, e))?;
            dir_modes.push((target, mode, owner));
            extracted.dirs.push(rel);
            continue;
        }
        let mtime = entry.header().mtime().ok();
        let written = write_entry(&mut entry, &target, archive_name, &raw)?;
        finish_file(&target, mode | 0o600, mtime, owner)?;
        extracted.bytes += written;
        extracted.files.push(rel);
    }
    // Directories last, so a read-only directory in the archive does not block its own files.
    for (dir, mode, owner) in dir_modes {
        set_mode(&dir, mode | 0o700)?;
        set_owner(&dir, owner);
    }
    let mut rest = archive.into_inner();
    if rest.hit_eof {
        return Err(Error::corrupt(
            archive_name,
            "it ends before tar's end-of-archive marker: the archive is truncated",
        ));
    }
    io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        Error::corrupt(
            archive_name,
            format!("it is damaged after the end of the tar archive: {e}"),
        )
    })?;
    Ok(extracted)
}

/// Checks an entry path: `Ok(None)` for the archive root (`.`, `./`, empty), `Ok(Some(rel))` for
/// a plain relative path (`./` prefixes dropped), `Err(reason)` for an absolute path or `..`.
pub(crate) fn safe_relative_path(raw: &str) -> std::result::Result<Option<PathBuf>, &'static str> {
    if raw.starts_with('/') || raw.starts_with('\\') {
        return Err("its path is absolute");
    }
    let mut rel = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

fn describe_kind(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Symlink => "symbolic link",
        EntryType::Link => "hard link",
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "FIFO",
        EntryType::GNUSparse => "sparse file",
        EntryType::Continuous => "contiguous file",
        _ => "special entry",
    }
}

/// Copies one entry's content into a new file at `target` (never over an existing one), and
/// syncs it. Read errors mean a damaged archive; write errors are the disk's.
fn write_entry(entry: &mut impl Read, target: &Path, archive_name: &str, raw: &str) -> Result<u64> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    }
    let mut file = create_new(target).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            Error::UnsafeEntry {
                archive: archive_name.to_string(),
                entry: raw.to_string(),
                reason: "the path appears twice in the archive".into(),
            }
        } else {
            Error::io("create", target, e)
        }
    })?;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut written = 0u64;
    let mut behind = WriteBehind::default();
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::corrupt(
                    archive_name,
                    format!("entry {raw:?} cannot be read: {e}"),
                ));
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| Error::io("write", target, e))?;
        behind.written(&file, n as u64);
        written += n as u64;
    }
    file.sync_all().map_err(|e| Error::io("sync", target, e))?;
    Ok(written)
}

#[cfg(unix)]
fn create_new(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

fn finish_file(
    path: &Path,
    mode: u32,
    mtime: Option<u64>,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    if let Some(secs) = mtime {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        file.set_modified(time)
            .map_err(|e| Error::io("set the modification time of", path, e))?;
    }
    set_mode(path, mode)?;
    set_owner(path, owner);
    Ok(())
}

/// Sets Unix permission bits (no-op elsewhere).
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("set permissions of", path, e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Gives `path` an owner when one is wanted; failures (not root) are only logged.
pub(crate) fn set_owner(path: &Path, owner: Option<(u32, u32)>) {
    #[cfg(unix)]
    if let Some((uid, gid)) = owner
        && let Err(e) = std::os::unix::fs::chown(path, Some(uid), Some(gid))
    {
        tracing::debug!(path = %path.display(), uid, gid, error = %e, "owner not restored");
    }
    #[cfg(not(unix))]
    let _ = (path, owner);
}

fn owner_of(header: &Header, options: ExtractOptions) -> Option<(u32, u32)> {
    if !options.preserve_owner {
        return None;
    }
    let uid = u32::try_from(header.uid().ok()?).ok()?;
    let gid = u32::try_from(header.gid().ok()?).ok()?;
    Some((uid, gid))
}

/// A reader that remembers whether its inner reader reached its end.
struct EofTracker<R> {
    inner: R,
    hit_eof: bool,
}

impl<R> EofTracker<R> {
    fn new(inner: R) -> Self {
        EofTracker {
            inner,
            hit_eof: false,
        }
    }
}

impl<R: Read> Read for EofTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised() {
        assert_eq!(
            safe_relative_path("./a/b.db"),
            Ok(Some(PathBuf::from("a/b.db")))
        );
        assert_eq!(safe_relative_path("./"), Ok(None));
        assert_eq!(safe_relative_path("."), Ok(None));
        assert_eq!(safe_relative_path("a/./b"), Ok(Some(PathBuf::from("a/b"))));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(safe_relative_path("../evil").is_err());
        assert!(safe_relative_path("a/../../evil").is_err());
        assert!(safe_relative_path("/etc/passwd").is_err());
        assert!(safe_relative_path("\\evil").is_err());
    }

    #[test]
    fn exact_reader_cuts_and_pads() {
        let mut out = Vec::new();
        ExactReader::new(&b"abcdef"[..], 3)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc");
        let mut out = Vec::new();
        let mut r = ExactReader::new(&b"ab"[..], 4);
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab\0\0");
        assert_eq!(r.padded, 2);
    }
}
