//! One URL entry point for destinations: `file:///dir`, a plain path, and (with features)
//! `s3://`, `gs://`, `az://`.

use std::path::PathBuf;
use std::sync::Arc;

use kars_backup_core::{DynBackupSink, Error, Result};

use crate::local::LocalSink;

/// A parsed destination URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// A local directory.
    Local(PathBuf),
}

impl Destination {
    /// Parses a destination: `file:///abs/dir`, `file://relative/dir`, or a plain path.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown scheme, naming the supported ones.
    pub fn parse(url: &str) -> Result<Self> {
        if url.trim().is_empty() {
            return Err(Error::InvalidInput(
                "empty destination; give a directory or a URL such as file:///var/backups/kars"
                    .into(),
            ));
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{url:?} names no directory; use file:///abs/dir"
                )));
            }
            return Ok(Destination::Local(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(Error::InvalidInput(format!(
                "unsupported destination scheme {scheme:?} in {}; supported: file:///dir or a plain directory path",
                redact(url)
            )));
        }
        Ok(Destination::Local(PathBuf::from(url)))
    }
}

/// Builds a sink for a destination URL (see [`Destination::parse`]).
///
/// # Errors
/// [`Error::InvalidInput`] for a bad URL; [`Error::Io`] when a local directory cannot be created.
pub fn sink_from_url(url: &str) -> Result<DynBackupSink> {
    match Destination::parse(url)? {
        Destination::Local(path) => Ok(Arc::new(LocalSink::new(path)?)),
    }
}

/// Removes a password from a URL for display (`s3://user:secret@host` → `s3://user:***@host`).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_forms() {
        assert_eq!(
            Destination::parse("file:///var/b").unwrap(),
            Destination::Local("/var/b".into())
        );
        assert_eq!(
            Destination::parse("./backups").unwrap(),
            Destination::Local("./backups".into())
        );
        assert!(Destination::parse("").is_err());
        assert!(Destination::parse("file://").is_err());
    }

    #[test]
    fn unknown_schemes_are_named_and_redacted() {
        let e = Destination::parse("ftp://u:hunter2@h/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"ftp\""), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
