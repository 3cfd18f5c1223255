//! Amazon S3 and S3-compatible stores (MinIO, Ceph, moto, …) through object_store.
//!
//! URL: `s3://bucket/prefix`, with optional query parameters `endpoint=http://host:port`,
//! `region=…`, `allow_http=true`, `path_style=true|false`, and the [`TransferOptions`] keys
//! (`upload_part_size`, `upload_concurrency`, `download_part_size`, `download_concurrency`).
//! Everything else comes from the standard
//! environment variables read by object_store: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, and instance/web-identity credentials when no key is set.
//! Query parameters win over the environment; credentials never go in the URL.

use std::fmt;
use std::sync::Arc;

use kars_backup_core::{Error, Result};
use object_store::aws::AmazonS3Builder;

use crate::bucket_url::{BucketUrl, parse_bool};
use crate::object_store_sink::{DEFAULT_MAX_CONCURRENCY, DEFAULT_PART_SIZE, ObjectStoreSink};
use crate::retry::default_retry;
use crate::transfer::TransferOptions;

/// S3's smallest part of a multipart upload (all but the last).
const MIN_S3_PART_SIZE: usize = 5 * 1024 * 1024;

/// Builds an [`ObjectStoreSink`] for an S3 bucket.
///
/// ```
/// use kars_backup_storage::s3::S3Builder;
/// let sink = S3Builder::from_url("s3://backups/kars?endpoint=http://127.0.0.1:9000&allow_http=true")
///     .unwrap()
///     .with_credentials("minio", "minio123")
///     .build()
///     .unwrap();
/// use kars_backup_core::BackupSink;
/// assert_eq!(sink.describe(), "s3://backups/kars");
/// ```
#[derive(Clone, Default)]
pub struct S3Builder {
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    region: Option<String>,
    allow_http: Option<bool>,
    path_style: Option<bool>,
    credentials: Option<(String, String)>,
    retry: Option<object_store::RetryConfig>,
    part_size: Option<usize>,
    max_concurrency: Option<usize>,
    transfer: TransferOptions,
}

impl fmt::Debug for S3Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Builder")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .field("transfer", &self.transfer)
            .finish_non_exhaustive()
    }
}

impl S3Builder {
    /// A builder for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Builder {
            bucket: bucket.into(),
            ..Default::default()
        }
    }

    /// Parses `s3://bucket/prefix?endpoint=…&region=…&allow_http=…&path_style=…` (and the
    /// [`TransferOptions`] keys).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for another scheme, a missing bucket or an unknown parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = BucketUrl::parse(url, &["s3", "s3a"])?;
        let mut b = S3Builder::new(parsed.bucket).with_prefix(parsed.prefix);
        for (k, v) in parsed.query {
            match k.as_str() {
                "endpoint" | "endpoint_url" => b.endpoint = Some(v),
                "region" => b.region = Some(v),
                "allow_http" => b.allow_http = Some(parse_bool(&k, &v)?),
                "path_style" => b.path_style = Some(parse_bool(&k, &v)?),
                other => b.transfer.take_query(
                    other,
                    &v,
                    "an s3:// URL",
                    "endpoint, region, allow_http, path_style",
                    "credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
                )?,
            }
        }
        Ok(b)
    }

    builder_setters!(
        prefix,
        endpoint,
        allow_http,
        retry,
        part_size(MIN_S3_PART_SIZE),
        max_concurrency,
        transfer,
    );

    /// The bucket's region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Path-style (`endpoint/bucket/key`, the default) or virtual-hosted-style requests.
    pub fn with_path_style(mut self, path_style: bool) -> Self {
        self.path_style = Some(path_style);
        self
    }

    /// Static credentials (instead of the environment's).
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// Builds the sink. No request is made.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid configuration (the message never holds a secret).
    pub fn build(self) -> Result<ObjectStoreSink> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&self.bucket);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        if let Some(a) = self.allow_http {
            b = b.with_allow_http(a);
        }
        if let Some(p) = self.path_style {
            b = b.with_virtual_hosted_style_request(!p);
        }
        if let Some((k, s)) = &self.credentials {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        b = b.with_retry(self.retry.clone().unwrap_or_else(default_retry));
        let store = b.build().map_err(|e| {
            Error::InvalidInput(format!("S3 destination s3://{}: {e}", self.bucket))
        })?;
        let part_size = self
            .transfer
            .upload_part_size
            .map(|p| usize::try_from(p.bytes()).unwrap_or(usize::MAX))
            .or(self.part_size)
            .unwrap_or(DEFAULT_PART_SIZE)
            .max(MIN_S3_PART_SIZE);
        let concurrency = self
            .transfer
            .upload_concurrency
            .or(self.max_concurrency)
            .unwrap_or(DEFAULT_MAX_CONCURRENCY);
        ObjectStoreSink::new(Arc::new(store), format!("s3://{}", self.bucket))?
            .with_prefix(&self.prefix)
            .map(|s| {
                s.with_transfer(self.transfer)
                    .with_part_size(part_size)
                    .with_max_concurrency(concurrency)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_options_come_from_the_url_the_last_one_winning() {
        let b = S3Builder::from_url(
            "s3://b/p?download_concurrency=2&upload_part_size=16MiB&download_concurrency=6",
        )
        .unwrap();
        assert_eq!(b.transfer.download_concurrency, Some(6));
        let sink = b.with_credentials("k", "s").build().unwrap();
        assert_eq!(sink.transfer().download_concurrency, Some(6));
        let e = S3Builder::from_url("s3://b/p?download_concurrency=0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("download-concurrency"), "{e}");
        let e = S3Builder::from_url("s3://b/p?streams=4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("download_concurrency"), "{e}");
    }
}
