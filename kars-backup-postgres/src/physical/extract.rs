//! The extraction of a base backup's tar into a new data directory, each file checked against
//! the backup's `backup_manifest` as its bytes go by ([`ManifestCheck`]).

use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

use crate::physical::manifest_check::{CheckingReader, ManifestCheck};

/// Bytes read and written at a time (the tar crate's own unpacking writes 8 KiB at a time).
const BUFFER: usize = 1024 * 1024;

/// Extracts the tar `reader` into `dir` (which exists): regular files are written here in
/// large pieces with their modes, everything else is left to the tar crate (directories,
/// links: with its checks). Returns what the manifest check saw; an existing file is an error.
///
/// # Errors
/// Reading, a member whose path leaves `dir`, writing.
pub(crate) fn extract<R: Read>(reader: R, dir: &Path) -> io::Result<ManifestCheck> {
    let mut archive = tar::Archive::new(CheckingReader::new(reader));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    let mut buf = vec![0u8; BUFFER];
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            entry.unpack_in(dir)?;
            continue;
        }
        let path = entry.path()?.into_owned();
        let inside = path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tar member {} leaves the data directory", path.display()),
            ));
        }
        let dest = dir.join(&path);
        let mode = entry.header().mode().unwrap_or(0o600) & 0o7777;
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&dest)
        };
        let mut file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                open()?
            }
            other => other?,
        };
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])?;
        }
        // The mode as stored, whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(archive.into_inner().into_check())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physical::tar_scan::tar_of;

    #[test]
    fn files_come_out_whole_with_their_modes_and_nothing_leaves_the_directory() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let tar = tar_of(&[("base/1/1259", &big), ("PG_VERSION", b"15\n")]);
        let t = tempfile::tempdir().unwrap();
        extract(tar.as_slice(), t.path()).unwrap();
        assert!(std::fs::read(t.path().join("base/1/1259")).unwrap() == big);
        let mode = std::fs::metadata(t.path().join("PG_VERSION"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Already there: refused.
        assert!(extract(tar.as_slice(), t.path()).is_err());

        let mut evil = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o600);
        let name = b"../escaped";
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        evil.append(&h, &b"x"[..]).unwrap();
        let evil = evil.into_inner().unwrap();
        let inner = t.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let e = extract(evil.as_slice(), &inner).unwrap_err();
        assert!(e.to_string().contains("leaves the data directory"), "{e}");
        assert!(!t.path().join("escaped").exists());
    }
}
