//! [`BucketUrl`]: `scheme://bucket/prefix?k=v`, the shape of the object-store URLs (`s3://`,
//! `gs://`, `az://`), parsed once for [`Destination::parse`](crate::Destination::parse) and the
//! backends' `from_url`.

use kars_backup_core::sink::validate_key;
use kars_backup_core::{Error, Result};

use crate::redact::redact;

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
            validate_key(&prefix)?;
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
