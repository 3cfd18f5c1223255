//! The check of a base backup against its own `backup_manifest` while it is extracted: each
//! member's size and CRC-32C are taken as its bytes go by (the data is read once), and compared
//! with the manifest, the tar's last member, when the stream ends. What `pg_verifybackup
//! --no-parse-wal` checks, without reading the extracted files again.

use std::collections::HashMap;
use std::io::Read;

use crc_fast::{CrcAlgorithm, Digest as Crc};
use sha2::{Digest, Sha256};

use crate::physical::tar_scan::{TarVisitor, TarWalker, is_regular};

/// The manifest is refused beyond this size (pg_basebackup writes about 150 bytes per file).
const MAX_MANIFEST: usize = 512 * 1024 * 1024;

/// Files `pg_verifybackup` does not check either: the manifest itself, the WAL directory and
/// the files a restore is allowed to change.
fn ignored(path: &str) -> bool {
    matches!(
        path,
        "backup_manifest" | "postgresql.auto.conf" | "recovery.signal" | "standby.signal"
    ) || path == "pg_wal"
        || path.starts_with("pg_wal/")
}

/// The member being read.
enum Current {
    File { name: String, size: u64 },
    Manifest,
    Other,
}

/// A tar stream's members, sized and checksummed as they go by.
pub(crate) struct ManifestCheck {
    walker: TarWalker,
    members: Members,
}

struct Members {
    current: Current,
    /// The CRC-32C of the current file so far.
    crc: Crc,
    /// Regular members: size and CRC-32C.
    files: HashMap<String, (u64, u32)>,
    manifest: Option<Vec<u8>>,
    too_large: bool,
}

impl std::fmt::Debug for ManifestCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestCheck")
            .field("files", &self.members.files.len())
            .finish_non_exhaustive()
    }
}

impl Default for ManifestCheck {
    fn default() -> Self {
        ManifestCheck {
            walker: TarWalker::default(),
            members: Members {
                current: Current::Other,
                crc: Crc::new(CrcAlgorithm::Crc32Iscsi),
                files: HashMap::new(),
                manifest: None,
                too_large: false,
            },
        }
    }
}

impl TarVisitor for Members {
    fn member(&mut self, name: &str, typeflag: u8, _size: u64) {
        self.current = if !is_regular(typeflag) {
            Current::Other
        } else if name == "backup_manifest" {
            self.manifest = Some(Vec::new());
            Current::Manifest
        } else {
            self.crc.reset();
            Current::File {
                name: name.to_string(),
                size: 0,
            }
        };
    }

    fn data(&mut self, data: &[u8]) {
        match &mut self.current {
            Current::File { size, .. } => {
                self.crc.update(data);
                *size += data.len() as u64;
            }
            Current::Manifest => {
                if let Some(m) = &mut self.manifest {
                    if m.len() + data.len() > MAX_MANIFEST {
                        self.too_large = true;
                    } else {
                        m.extend_from_slice(data);
                    }
                }
            }
            Current::Other => {}
        }
    }

    fn end(&mut self) {
        if let Current::File { name, size } = std::mem::replace(&mut self.current, Current::Other) {
            self.files.insert(name, (size, self.crc.finalize() as u32));
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Every file matches the manifest (size and checksum), and the manifest its own checksum.
    Verified {
        /// Files checked.
        files: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// The manifest's checksums are of another algorithm than CRC-32C (base backups taken
    /// before kars-backup used CRC-32C: SHA-256); the sizes and the file list were checked,
    /// the checksums are left to `pg_verifybackup`.
    OtherAlgorithm(String),
}

impl ManifestCheck {
    /// Feeds the next piece of the tar stream.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.walker.feed(&mut self.members, data);
    }

    /// Compares what went by with the manifest.
    ///
    /// # Errors
    /// What does not match, naming the file: a missing or extra file, another size or checksum,
    /// a manifest that is missing, unreadable or fails its own checksum.
    pub(crate) fn finish(self) -> Result<Checked, String> {
        let m = self.members;
        if m.too_large {
            return Err(format!(
                "its backup_manifest is larger than {} MiB",
                MAX_MANIFEST >> 20
            ));
        }
        let manifest = m
            .manifest
            .ok_or_else(|| "it holds no backup_manifest".to_string())?;
        check_manifest_checksum(&manifest)?;
        let parsed: Manifest = serde_json::from_slice(&manifest)
            .map_err(|e| format!("its backup_manifest cannot be read: {e}"))?;
        let mut files = m.files;
        let mut other_algorithm = None;
        let mut bytes = 0u64;
        let mut count = 0usize;
        for f in parsed.files {
            let path = match (f.path, f.encoded_path) {
                (Some(p), _) => p,
                (None, Some(hexed)) => hex::decode(&hexed)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .map_err(|_| format!("backup_manifest: bad Encoded-Path {hexed}"))?,
                (None, None) => return Err("backup_manifest: a file without a path".into()),
            };
            if ignored(&path) {
                files.remove(&path);
                continue;
            }
            let Some((size, crc)) = files.remove(&path) else {
                return Err(format!(
                    "{path} is in its backup_manifest but not in the backup"
                ));
            };
            if size != f.size {
                return Err(format!(
                    "{path} has {size} bytes, its backup_manifest says {}",
                    f.size
                ));
            }
            match f.algorithm.as_deref() {
                Some("CRC32C") => {
                    let ours = hex::encode(crc.to_le_bytes());
                    let theirs = f.checksum.unwrap_or_default().to_ascii_lowercase();
                    if ours != theirs {
                        return Err(format!(
                            "{path} does not match its backup_manifest: CRC-32C {ours}, the manifest says {theirs} ({size} bytes)"
                        ));
                    }
                }
                None | Some("NONE") => {}
                Some(other) => {
                    other_algorithm.get_or_insert_with(|| other.to_string());
                }
            }
            bytes += size;
            count += 1;
        }
        let mut extra: Vec<String> = files.into_keys().filter(|p| !ignored(p)).collect();
        if !extra.is_empty() {
            extra.sort();
            return Err(format!(
                "{} {} in the backup but not in its backup_manifest",
                extra.first().map(String::as_str).unwrap_or_default(),
                if extra.len() == 1 {
                    "is".to_string()
                } else {
                    format!("and {} more files are", extra.len() - 1)
                }
            ));
        }
        Ok(match other_algorithm {
            Some(a) => Checked::OtherAlgorithm(a),
            None => Checked::Verified {
                files: count,
                bytes,
            },
        })
    }
}

/// The manifest's own checksum: SHA-256 of everything up to the line that holds it.
fn check_manifest_checksum(manifest: &[u8]) -> Result<(), String> {
    let newlines: Vec<usize> = memchr::memrchr_iter(b'\n', manifest).take(2).collect();
    let [_, penultimate] = newlines[..] else {
        return Err("its backup_manifest is cut short".into());
    };
    let last_line = String::from_utf8_lossy(&manifest[penultimate + 1..]);
    let expected = last_line
        .split("\"Manifest-Checksum\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .ok_or_else(|| "its backup_manifest has no Manifest-Checksum".to_string())?;
    let actual = hex::encode(Sha256::digest(&manifest[..=penultimate]));
    if !expected.eq_ignore_ascii_case(&actual) {
        return Err(format!(
            "its backup_manifest fails its own checksum (SHA-256 {actual}, it says {expected})"
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Manifest {
    #[serde(rename = "Files")]
    files: Vec<ManifestFile>,
}

#[derive(serde::Deserialize)]
struct ManifestFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

/// A reader that feeds what passes through it to a [`ManifestCheck`].
pub(crate) struct CheckingReader<R> {
    inner: R,
    check: ManifestCheck,
}

impl<R> CheckingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        CheckingReader {
            inner,
            check: ManifestCheck::default(),
        }
    }

    /// The check, once the stream was read.
    pub(crate) fn into_check(self) -> ManifestCheck {
        self.check
    }
}

impl<R: Read> Read for CheckingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.check.feed(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physical::tar_scan::tar_of;

    fn manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut m = String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
        let lines: Vec<String> = files
            .iter()
            .map(|(p, data)| {
                let crc = crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, data) as u32;
                format!(
                    "{{ \"Path\": \"{p}\", \"Size\": {}, \"Last-Modified\": \"2026-12-05 19:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                    data.len(),
                    hex::encode(crc.to_le_bytes())
                )
            })
            .collect();
        m.push_str(&lines.join(",\n"));
        m.push_str("\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n");
        let sum = hex::encode(Sha256::digest(m.as_bytes()));
        m.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
        m.into_bytes()
    }

    fn check(tar: &[u8]) -> Result<Checked, String> {
        let mut c = ManifestCheck::default();
        for piece in tar.chunks(777) {
            c.feed(piece);
        }
        c.finish()
    }

    #[test]
    fn matches_and_mismatches_name_the_file() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let files: [(&str, &[u8]); 3] = [
            ("backup_label", b"START WAL LOCATION: 0/2000028\n"),
            ("base/1/1259", &big),
            ("global/pg_control", &[7u8; 8192]),
        ];
        let m = manifest(&files);
        let mut members = files.to_vec();
        members.push(("pg_wal/000000010000000000000001", b"ignored"));
        members.push(("backup_manifest", &m));
        assert_eq!(
            check(&tar_of(&members)),
            Ok(Checked::Verified {
                files: 3,
                bytes: big.len() as u64 + 8192 + 30
            })
        );

        let mut tampered = big.clone();
        tampered[5000] ^= 1;
        members[1] = ("base/1/1259", &tampered);
        let e = check(&tar_of(&members)).unwrap_err();
        assert!(e.starts_with("base/1/1259 does not match"), "{e}");

        members[1] = ("base/1/1259", &big[..1000]);
        let e = check(&tar_of(&members)).unwrap_err();
        assert!(e.contains("base/1/1259 has 1000 bytes"), "{e}");

        members[1] = ("base/1/9999", &big);
        let e = check(&tar_of(&members)).unwrap_err();
        assert!(
            e.contains("base/1/1259 is in its backup_manifest but not in the backup"),
            "{e}"
        );

        members[1] = ("base/1/1259", &big);
        members.insert(2, ("base/1/extra", b"x"));
        let e = check(&tar_of(&members)).unwrap_err();
        assert!(e.contains("base/1/extra is in the backup but not"), "{e}");

        members.remove(2);
        let mut bad = m.clone();
        let at = bad.len() / 2;
        bad[at] = b' ';
        let last = members.len() - 1;
        members[last] = ("backup_manifest", &bad);
        let e = check(&tar_of(&members)).unwrap_err();
        assert!(e.contains("fails its own checksum"), "{e}");

        members.pop();
        let e = check(&tar_of(&members)).unwrap_err();
        assert!(e.contains("no backup_manifest"), "{e}");
    }
}
