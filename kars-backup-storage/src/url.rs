//! One URL entry point for destinations: `file:///dir` or a plain path, and (with features)
//! `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` (or an Azure `https://` blob
//! URL) and `git+file:///path/repo.git` (Git LFS).

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
    /// An S3 (or S3-compatible) bucket: the URL as given (feature `s3`).
    S3(String),
    /// A Google Cloud Storage bucket: the URL as given (feature `gcs`).
    Gcs(String),
    /// An Azure Blob Storage container: the URL as given (feature `azure`).
    Azure(String),
    /// A git repository with LFS tracking: the URL as given (feature `git-lfs`).
    GitLfs(String),
}

const SUPPORTED: &str = "file:///dir (or a plain directory path), s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, https://ACCOUNT.blob.core.windows.net/container/prefix, git+file:///path/repo.git";

impl Destination {
    /// Local disk or off-site: what the runbook's storage tiers go by.
    ///
    /// ```
    /// use kars_backup_core::Placement;
    /// use kars_backup_storage::Destination;
    /// assert_eq!(Destination::parse("/var/backups/kars").unwrap().placement(), Placement::Local);
    /// assert_eq!(Destination::parse("s3://bucket/kars").unwrap().placement(), Placement::Cloud);
    /// ```
    pub fn placement(&self) -> kars_backup_core::Placement {
        match self {
            Destination::Local(_) => kars_backup_core::Placement::Local,
            _ => kars_backup_core::Placement::Cloud,
        }
    }

    /// Parses a destination URL.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown scheme (naming the supported ones) or a URL that
    /// names no bucket or directory.
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
        let Some((scheme, _)) = url.split_once("://") else {
            return Ok(Destination::Local(PathBuf::from(url)));
        };
        match scheme {
            "s3" | "s3a" => {
                BucketUrl::parse(url, &["s3", "s3a"])?;
                Ok(Destination::S3(url.to_string()))
            }
            "gs" | "gcs" => {
                BucketUrl::parse(url, &["gs", "gcs"])?;
                Ok(Destination::Gcs(url.to_string()))
            }
            "az" | "azure" => {
                BucketUrl::parse(url, &["az", "azure"])?;
                Ok(Destination::Azure(url.to_string()))
            }
            "https" | "http" if is_azure_blob_url(url) => Ok(Destination::Azure(url.to_string())),
            s if s.starts_with("git+") => Ok(Destination::GitLfs(url.to_string())),
            _ => Err(Error::InvalidInput(format!(
                "unsupported destination scheme {scheme:?} in {}; supported: {SUPPORTED}",
                redact(url)
            ))),
        }
    }
}

fn is_azure_blob_url(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.contains(".blob.")))
        .unwrap_or(false)
}

#[allow(dead_code)]
fn not_built(kind: &str, feature: &str, url: &str) -> Error {
    Error::InvalidInput(format!(
        "{} is a {kind} destination, but this build has no {kind} support; rebuild with the cargo feature `{feature}`",
        redact(url)
    ))
}

/// Builds a sink for a destination URL (see [`Destination::parse`]). No request is made: a
/// remote destination is contacted by its first operation.
///
/// # Errors
/// [`Error::InvalidInput`] for a bad URL or a backend this build does not include;
/// [`Error::Io`] when a local directory cannot be created.
pub fn sink_from_url(url: &str) -> Result<DynBackupSink> {
    match Destination::parse(url)? {
        Destination::Local(path) => Ok(Arc::new(LocalSink::new(path)?)),
        #[cfg(feature = "s3")]
        Destination::S3(u) => Ok(Arc::new(crate::s3::S3Builder::from_url(&u)?.build()?)),
        #[cfg(feature = "azure")]
        Destination::Azure(u) => Ok(Arc::new(crate::azure::AzureBuilder::from_url(&u)?.build()?)),
        #[cfg(feature = "gcs")]
        Destination::Gcs(u) => Ok(Arc::new(crate::gcs::GcsBuilder::from_url(&u)?.build()?)),
        #[cfg(feature = "git-lfs")]
        Destination::GitLfs(u) => Ok(Arc::new(
            crate::git_lfs::GitLfsBuilder::from_url(&u)?.build()?,
        )),
        #[allow(unreachable_patterns)]
        Destination::S3(u) => Err(not_built("S3", "s3", &u)),
        #[allow(unreachable_patterns)]
        Destination::Azure(u) => Err(not_built("Azure", "azure", &u)),
        #[allow(unreachable_patterns)]
        Destination::Gcs(u) => Err(not_built("GCS", "gcs", &u)),
        #[allow(unreachable_patterns)]
        Destination::GitLfs(u) => Err(not_built("Git LFS", "git-lfs", &u)),
    }
}

/// Removes secrets from a URL for display: a password (`s3://user:secret@host` →
/// `s3://user:***@host`) and query parameters that look like credentials (`sig`, `*key*`,
/// `*token*`, `*secret*`, `*password*`).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let mut changed = false;
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
                changed = true;
            }
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let lk = k.to_ascii_lowercase();
                        let secret = ["key", "token", "secret", "password", "credential"]
                            .iter()
                            .any(|s| lk.contains(s))
                            || lk == "sig";
                        if secret {
                            changed = true;
                            (k.into_owned(), "***".to_string())
                        } else {
                            (k.into_owned(), v.into_owned())
                        }
                    })
                    .collect();
                if changed {
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
            }
            if changed {
                u.to_string()
            } else {
                url.to_string()
            }
        }
        Err(_) => url.to_string(),
    }
}

/// `scheme://bucket/prefix?k=v`, the shape of the object-store URLs.
#[derive(Debug, Clone)]
#[cfg_attr(
    not(any(feature = "s3", feature = "azure", feature = "gcs")),
    allow(dead_code)
)]
pub(crate) struct BucketUrl {
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) query: Vec<(String, String)>,
}

impl BucketUrl {
    pub(crate) fn parse(url: &str, schemes: &[&str]) -> Result<Self> {
        let raw_path = url.split(['?', '#']).next().unwrap_or_default();
        if raw_path
            .split('/')
            .skip(3)
            .any(|c| c == "." || c == ".." || c.contains('\\'))
        {
            return Err(Error::InvalidInput(format!(
                "{}: a prefix may not contain '.' or '..' parts",
                redact(url)
            )));
        }
        let u = url::Url::parse(url)
            .map_err(|e| Error::InvalidInput(format!("invalid URL {}: {e}", redact(url))))?;
        if !schemes.contains(&u.scheme()) {
            return Err(Error::InvalidInput(format!(
                "{} is not a {} URL",
                redact(url),
                schemes.join("/")
            )));
        }
        if u.password().is_some() || !u.username().is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} carries credentials; give them through the environment instead",
                redact(url)
            )));
        }
        let bucket = u.host_str().unwrap_or_default().to_string();
        if bucket.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} names no bucket; use {}://BUCKET/prefix",
                redact(url),
                schemes[0]
            )));
        }
        let prefix = u.path().trim_matches('/').to_string();
        if !prefix.is_empty() {
            kars_backup_core::sink::validate_key(&prefix)?;
        }
        let query = u
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(BucketUrl {
            bucket,
            prefix,
            query,
        })
    }
}

#[cfg_attr(not(any(feature = "s3", feature = "azure")), allow(dead_code))]
pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::InvalidInput(format!(
            "parameter {key}={value:?} must be true or false"
        ))),
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
    fn parses_remote_forms() {
        assert!(matches!(
            Destination::parse("s3://b/p?endpoint=http://127.0.0.1:9000").unwrap(),
            Destination::S3(_)
        ));
        assert!(matches!(
            Destination::parse("gs://b/p").unwrap(),
            Destination::Gcs(_)
        ));
        assert!(matches!(
            Destination::parse("az://c/p").unwrap(),
            Destination::Azure(_)
        ));
        assert!(matches!(
            Destination::parse("https://acct.blob.core.windows.net/c/p").unwrap(),
            Destination::Azure(_)
        ));
        assert!(matches!(
            Destination::parse("git+file:///srv/b.git").unwrap(),
            Destination::GitLfs(_)
        ));
        assert!(Destination::parse("s3:///nobucket").is_err());
        assert!(Destination::parse("s3://b/a/../c").is_err());
        let e = Destination::parse("s3://AKIA:hunter2@b/p")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn unknown_schemes_are_named_and_redacted() {
        let e = Destination::parse("ftp://u:hunter2@h/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"ftp\""), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn redacts_secret_query_parameters() {
        let r = redact("https://a.blob.core.windows.net/c?sig=abc&sv=2020&account_key=zzz");
        assert!(!r.contains("abc") && !r.contains("zzz"), "{r}");
        assert!(r.contains("sv=2020"), "{r}");
    }
}
