//! One URL entry point for destinations: `file:///dir` or a plain path, and (with features)
//! `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` (or an Azure `https://` blob
//! URL) and `git+file:///path/repo.git` (Git LFS). The backends parse their own URLs (with
//! [`bucket_url`](crate::bucket_url)); this module only tells them apart, dispatches, and adds
//! [`TransferOptions`] to the URLs that take them.

use std::path::PathBuf;
use std::sync::Arc;

use kars_backup_core::{DynBackupSink, Error, Result};

#[cfg(feature = "azure")]
use crate::azure::AzureBuilder;
use crate::bucket_url::BucketUrl;
#[cfg(feature = "gcs")]
use crate::gcs::GcsBuilder;
#[cfg(feature = "git-lfs")]
use crate::git_lfs::GitLfsBuilder;
use crate::local::LocalSink;
use crate::redact::redact;
#[cfg(feature = "s3")]
use crate::s3::S3Builder;
use crate::transfer::TransferOptions;

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

/// Transfer options in a destination URL: whether a URL takes them is this module's to say.
impl TransferOptions {
    /// `url` with these options appended to its query, after the URL's own parameters, so that
    /// they win over the URL's (the builders read parameters in order). Nothing else in the URL
    /// changes (an Azure SAS signature stays byte for byte).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when options are set for a local directory, which has no parts.
    pub fn apply_to_url(&self, url: &str) -> Result<String> {
        let pairs = self.query_pairs();
        if pairs.is_empty() {
            return Ok(url.to_string());
        }
        if matches!(
            Destination::parse(url)?,
            Destination::Local(_) | Destination::GitLfs(_)
        ) {
            return Err(Error::InvalidInput(format!(
                "transfer options apply to s3://, gs:// and az:// destinations, not to {}",
                redact(url)
            )));
        }
        let (base, fragment) = match url.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (url, None),
        };
        let mut out = base.to_string();
        for (k, v) in pairs {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(k);
            out.push('=');
            out.push_str(&v);
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        Ok(out)
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
        Destination::S3(u) => Ok(Arc::new(S3Builder::from_url(&u)?.build()?)),
        #[cfg(feature = "azure")]
        Destination::Azure(u) => Ok(Arc::new(AzureBuilder::from_url(&u)?.build()?)),
        #[cfg(feature = "gcs")]
        Destination::Gcs(u) => Ok(Arc::new(GcsBuilder::from_url(&u)?.build()?)),
        #[cfg(feature = "git-lfs")]
        Destination::GitLfs(u) => Ok(Arc::new(GitLfsBuilder::from_url(&u)?.build()?)),
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
    fn options_go_into_remote_urls_only() {
        let t = TransferOptions {
            download_concurrency: Some(4),
            ..Default::default()
        };
        assert_eq!(
            t.apply_to_url("s3://b/p").unwrap(),
            "s3://b/p?download_concurrency=4"
        );
        assert_eq!(
            t.apply_to_url("s3://b/p?region=x&download_concurrency=2")
                .unwrap(),
            "s3://b/p?region=x&download_concurrency=2&download_concurrency=4"
        );
        let sas = "https://a.blob.core.windows.net/c/p?sv=2020&sig=a%2Bb%3D";
        assert!(t.apply_to_url(sas).unwrap().starts_with(sas));
        assert!(t.apply_to_url("/var/backups/kars").is_err());
        assert_eq!(
            TransferOptions::default()
                .apply_to_url("/var/backups/kars")
                .unwrap(),
            "/var/backups/kars"
        );
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
