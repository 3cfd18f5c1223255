//! age identity files: create one for a job ([`generate_identity_file`], `kars-backup key init`)
//! and derive its recipient ([`identity_file_recipients`], `kars-backup key show`, the
//! configuration's `[job.encryption] identity-file`).
//!
//! The file is what `age-keygen -o FILE` writes (so `age -d -i FILE` opens the archives):
//!
//! ```text
//! # created: 2026-12-05T09:30:18Z
//! # public key: age1…
//! AGE-SECRET-KEY-1…
//! ```
//!
//! Also passphrase files ([`read_passphrase_file`]): the passphrase is their first line.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ::age::secrecy::{ExposeSecret, SecretString};
use kars_backup_core::{Error, Result};

/// Where `kars-backup key init` puts the identity without `--out`:
/// `$XDG_CONFIG_HOME/kars-backup/age-identity.txt`, else `~/.config/kars-backup/age-identity.txt`;
/// `None` when neither variable is set.
pub fn default_identity_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("kars-backup").join("age-identity.txt"))
}

/// Creates a new age X25519 identity in a new file at `path` and returns its recipient
/// (`age1…`, public: what backups are encrypted to).
///
/// Missing parent directories are created with mode 0700; the file is created with mode 0600
/// and never replaces an existing file. The secret key is written to the file only: it is
/// never returned, logged or put in an error.
///
/// # Errors
/// [`Error::AlreadyExists`] when `path` exists (an identity is never overwritten: the backups
/// encrypted to it would be lost); [`Error::Io`] when the directory or file cannot be created.
pub fn generate_identity_file(path: &Path) -> Result<String> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::AlreadyExists {
            what: format!(
                "{}: an identity file is never overwritten (backups encrypted to it could no longer be opened); choose another --out, or `kars-backup key show --identity {}` for its recipient",
                path.display(),
                path.display()
            ),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io("create directory", dir, e))?;
        }
    }
    let identity = ::age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("create identity file", path, e))?;
    // The mode asked for is masked by the umask; make sure it is 0600 whatever the umask.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("set permissions of", path, e))?;
    let secret = identity.to_string();
    let written = writeln!(
        file,
        "# created: {created}\n# public key: {recipient}\n{}",
        secret.expose_secret()
    )
    .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(Error::io("write identity file", path, e));
    }
    Ok(recipient)
}

/// The recipients (`age1…`) of the age identities in an identity file, in file order.
///
/// # Errors
/// [`Error::InvalidInput`] when the file cannot be read or holds no age X25519 identity (the
/// file's content never appears in the message).
pub fn identity_file_recipients(path: &Path) -> Result<Vec<String>> {
    let shown = path.display();
    let file = ::age::IdentityFile::from_file(shown.to_string()).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot read the age identity file {shown}: {e}; create one with `kars-backup key init --out {shown}` (or age-keygen)"
        ))
    })?;
    let mut listed = Vec::new();
    file.write_recipients_file(&mut listed).map_err(|e| {
        Error::InvalidInput(format!(
            "the age identity file {shown} gives no recipient ({e}); it must hold AGE-SECRET-KEY-1… lines"
        ))
    })?;
    let recipients: Vec<String> = String::from_utf8_lossy(&listed)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if recipients.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the age identity file {shown} holds no identity (AGE-SECRET-KEY-1…)"
        )));
    }
    Ok(recipients)
}

/// Reads a passphrase file: its first line, without the line ending. The passphrase never
/// appears in messages.
///
/// # Errors
/// [`Error::InvalidInput`] when the file cannot be read or its first line is empty.
pub fn read_passphrase_file(path: &Path) -> Result<SecretString> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read the passphrase file {}: {e}",
                path.display()
            ))
        })?;
    let first = text.lines().next().unwrap_or("").to_string();
    // Overwrite the copy that held the whole file.
    text.clear();
    text.shrink_to_fit();
    if first.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the passphrase file {} is empty (its first line is the passphrase)",
            path.display()
        )));
    }
    Ok(SecretString::from(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_generated_identity_is_private_readable_by_age_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/keys/age-identity.txt");
        let recipient = generate_identity_file(&path).unwrap();
        assert!(recipient.starts_with("age1"), "{recipient}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().mode() & 0o777,
            0o600,
            "the file is private"
        );
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700,
            "the directory created for it is private"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("# public key: {recipient}")),
            "{text}"
        );
        assert!(text.contains("AGE-SECRET-KEY-1"));
        assert_eq!(identity_file_recipients(&path).unwrap(), vec![recipient]);

        let before = std::fs::read(&path).unwrap();
        let err = generate_identity_file(&path).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "left as it was");
    }

    #[test]
    fn reading_a_bad_identity_file_names_it_and_shows_no_content() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "not-a-key-but-secret-looking\n").unwrap();
        let err = identity_file_recipients(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.txt"), "{err}");
        assert!(!err.contains("secret-looking"), "{err}");
        let missing = identity_file_recipients(&dir.path().join("missing.txt"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("kars-backup key init"), "{missing}");
    }

    #[test]
    fn passphrase_files_give_the_first_line_and_refuse_empty_ones() {
        use ::age::secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "correct horse\nsecond line\n").unwrap();
        assert_eq!(
            read_passphrase_file(&p).unwrap().expose_secret(),
            "correct horse"
        );
        std::fs::write(&p, "\n").unwrap();
        let err = read_passphrase_file(&p).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        assert!(read_passphrase_file(&dir.path().join("missing")).is_err());
    }
}
