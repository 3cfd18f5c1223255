//! The retry policy of the object-store backends.

use std::time::Duration;

/// Retries with exponential backoff (100 ms doubling up to 15 s), at most 5 times within 2 minutes.
pub fn default_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(120),
    }
}
