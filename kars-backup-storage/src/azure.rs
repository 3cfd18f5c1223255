//! Azure Blob Storage through object_store.
//!
//! URLs: `az://container/prefix` (also `azure://`) and
//! `https://ACCOUNT.blob.core.windows.net/container/prefix`, with optional query parameters
//! `account=…`, `endpoint=…` (a blob service URL), `allow_http=true` and `emulator=true` (Azurite:
//! its well-known development account; endpoint `http://127.0.0.1:10000/devstoreaccount1` unless
//! given, or `AZURITE_BLOB_STORAGE_URL`), and the [`TransferOptions`] keys
//! (`upload_part_size`, `upload_concurrency`, `download_part_size`, `download_concurrency`).
//! Credentials come from the standard environment
//! variables read by object_store: `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
//! `AZURE_STORAGE_SAS_KEY`, `AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`/`AZURE_TENANT_ID`, workload
//! and managed identity. Credentials never go in the URL.

use std::fmt;
use std::sync::Arc;

use kars_backup_core::{Error, Result};
use object_store::azure::MicrosoftAzureBuilder;

use crate::bucket_url::{BucketUrl, parse_bool};
use crate::object_store_sink::{DEFAULT_MAX_CONCURRENCY, DEFAULT_PART_SIZE, ObjectStoreSink};
use crate::redact::redact;
use crate::retry::default_retry;
use crate::transfer::TransferOptions;

/// Azurite's documented development account (public, the same in every installation).
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Builds an [`ObjectStoreSink`] for an Azure Blob Storage container.
///
/// ```
/// use kars_backup_core::BackupSink;
/// use kars_backup_storage::azure::AzureBuilder;
/// let sink = AzureBuilder::from_url("az://backups/kars?emulator=true").unwrap().build().unwrap();
/// assert_eq!(sink.describe(), "az://backups/kars");
/// ```
#[derive(Clone, Default)]
pub struct AzureBuilder {
    container: String,
    prefix: String,
    account: Option<String>,
    endpoint: Option<String>,
    allow_http: Option<bool>,
    emulator: bool,
    access_key: Option<String>,
    retry: Option<object_store::RetryConfig>,
    part_size: Option<usize>,
    max_concurrency: Option<usize>,
    transfer: TransferOptions,
}

impl fmt::Debug for AzureBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureBuilder")
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .field("account", &self.account)
            .field("endpoint", &self.endpoint)
            .field("emulator", &self.emulator)
            .field("access_key", &self.access_key.as_ref().map(|_| "***"))
            .field("transfer", &self.transfer)
            .finish_non_exhaustive()
    }
}

impl AzureBuilder {
    /// A builder for `container`.
    pub fn new(container: impl Into<String>) -> Self {
        AzureBuilder {
            container: container.into(),
            ..Default::default()
        }
    }

    /// Parses `az://container/prefix?…`, `azure://…` or
    /// `https://ACCOUNT.blob.core.windows.net/container/prefix`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for another form or an unknown parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut b = if url.starts_with("https://") || url.starts_with("http://") {
            let u = url::Url::parse(url).map_err(|e| {
                Error::InvalidInput(format!("invalid Azure URL {}: {e}", redact(url)))
            })?;
            let host = u.host_str().unwrap_or_default().to_string();
            let account = host.split('.').next().unwrap_or_default().to_string();
            let mut segments = u.path().trim_matches('/').splitn(2, '/');
            let container = segments.next().unwrap_or_default().to_string();
            if account.is_empty() || container.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{} names no account or container; use https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix",
                    redact(url)
                )));
            }
            let prefix = segments.next().unwrap_or_default().to_string();
            let mut b = AzureBuilder::new(container).with_prefix(prefix);
            b.account = Some(account);
            b.endpoint = Some(format!("{}://{host}", u.scheme()));
            b.with_query(
                u.query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned())),
            )?
        } else {
            let parsed = BucketUrl::parse(url, &["az", "azure"])?;
            AzureBuilder::new(parsed.bucket)
                .with_prefix(parsed.prefix)
                .with_query(parsed.query)?
        };
        if b.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            b.allow_http.get_or_insert(true);
        }
        Ok(b)
    }

    fn with_query(mut self, query: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        for (k, v) in query {
            match k.as_str() {
                "account" => self.account = Some(v),
                "endpoint" => self.endpoint = Some(v),
                "allow_http" => self.allow_http = Some(parse_bool(&k, &v)?),
                "emulator" | "use_emulator" => self.emulator = parse_bool(&k, &v)?,
                other => self.transfer.take_query(
                    other,
                    &v,
                    "an Azure URL",
                    "account, endpoint, allow_http, emulator",
                    "credentials come from AZURE_STORAGE_ACCOUNT_KEY and friends",
                )?,
            }
        }
        Ok(self)
    }

    builder_setters!(
        prefix,
        endpoint,
        allow_http,
        retry,
        part_size,
        max_concurrency,
        transfer,
    );

    /// The storage account.
    pub fn with_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// The account's shared key (instead of the environment's).
    pub fn with_access_key(mut self, key: impl Into<String>) -> Self {
        self.access_key = Some(key.into());
        self
    }

    /// Uses Azurite's development account (endpoint from [`Self::with_endpoint`], else
    /// `AZURITE_BLOB_STORAGE_URL`, else `http://127.0.0.1:10000`).
    pub fn with_emulator(mut self, emulator: bool) -> Self {
        self.emulator = emulator;
        self
    }

    /// Builds the sink. No request is made.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid configuration (the message never holds a secret).
    pub fn build(self) -> Result<ObjectStoreSink> {
        let mut b = MicrosoftAzureBuilder::from_env().with_container_name(&self.container);
        let mut endpoint = self.endpoint.clone();
        let mut account = self.account.clone();
        let mut access_key = self.access_key.clone();
        let mut allow_http = self.allow_http;
        if self.emulator {
            b = b.with_use_emulator(false);
            account.get_or_insert_with(|| EMULATOR_ACCOUNT.to_string());
            access_key.get_or_insert_with(|| EMULATOR_KEY.to_string());
            let acct = account.clone().unwrap_or_default();
            endpoint.get_or_insert_with(|| {
                let base = std::env::var("AZURITE_BLOB_STORAGE_URL")
                    .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
                format!("{}/{acct}", base.trim_end_matches('/'))
            });
            allow_http.get_or_insert(true);
        }
        if let Some(a) = &account {
            b = b.with_account(a);
        }
        if let Some(e) = endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(k) = access_key {
            b = b.with_access_key(k);
        }
        if let Some(a) = allow_http {
            b = b.with_allow_http(a);
        }
        b = b.with_retry(self.retry.clone().unwrap_or_else(default_retry));
        let store = b.build().map_err(|e| {
            Error::InvalidInput(format!("Azure destination az://{}: {e}", self.container))
        })?;
        ObjectStoreSink::new(Arc::new(store), format!("az://{}", self.container))?
            .with_prefix(&self.prefix)
            .map(|s| {
                s.with_part_size(self.part_size.unwrap_or(DEFAULT_PART_SIZE))
                    .with_max_concurrency(self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY))
                    .with_transfer(self.transfer)
            })
    }
}
