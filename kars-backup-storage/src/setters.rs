//! The builder setters that the object-store backends (S3, GCS, Azure) share, written once.
//!
//! `builder_setters!(prefix, endpoint, …)` inside an `impl` block expands to the named `with_…`
//! methods; the builder must have the fields of the same names.

/// Expands to the named setters of an object-store builder (see the module docs).
macro_rules! builder_setters {
    ($($setter:ident $(($arg:expr))?),* $(,)?) => {
        $( builder_setters!(@ $setter $($arg)?); )*
    };
    (@prefix) => {
        /// Stores under this key prefix inside the bucket (or container).
        pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
            self.prefix = prefix.into();
            self
        }
    };
    (@endpoint) => {
        /// A custom endpoint: an emulator (`http://127.0.0.1:…`) or a private service URL.
        pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
            self.endpoint = Some(endpoint.into());
            self
        }
    };
    (@allow_http) => {
        /// Permits plain-HTTP endpoints.
        pub fn with_allow_http(mut self, allow: bool) -> Self {
            self.allow_http = Some(allow);
            self
        }
    };
    (@retry) => {
        /// Retries with backoff of transient failures (default: 5 retries within 2 minutes).
        pub fn with_retry(mut self, retry: object_store::RetryConfig) -> Self {
            self.retry = Some(retry);
            self
        }
    };
    (@part_size) => {
        /// Multipart part (block) size of uploads (default 8 MiB).
        pub fn with_part_size(mut self, bytes: usize) -> Self {
            self.part_size = Some(bytes);
            self
        }
    };
    (@part_size $min:expr) => {
        /// Multipart part size of uploads (default 8 MiB; raised to the store's minimum).
        pub fn with_part_size(mut self, bytes: usize) -> Self {
            self.part_size = Some(bytes.max($min));
            self
        }
    };
    (@max_concurrency) => {
        /// Parts in flight per upload (default 4).
        pub fn with_max_concurrency(mut self, parts: usize) -> Self {
            self.max_concurrency = Some(parts);
            self
        }
    };
    (@transfer) => {
        /// Part sizes and concurrency of uploads and ranged downloads; options set here win over
        /// the URL's and over `with_part_size`/`with_max_concurrency`.
        pub fn with_transfer(mut self, transfer: $crate::transfer::TransferOptions) -> Self {
            self.transfer = transfer.or(self.transfer);
            self
        }
    };
}
