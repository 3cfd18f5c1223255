//! The crate's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

use kars_backup_core::IoError;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while setting up notifications or metrics. (Failed deliveries are not
/// errors: they are logged and returned as [`Delivery`](crate::Delivery) records, and never
/// fail a backup.)
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL does not parse or is not http(s). The URL is shown redacted.
    #[error("invalid {what} URL {url}: {reason}; use an http:// or https:// URL")]
    InvalidUrl {
        /// Which URL ("webhook", "ping start", …).
        what: &'static str,
        /// The URL, redacted (scheme and host only).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// An extra webhook header has an invalid name or value (the value is never shown).
    #[error("invalid webhook header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// Options that cannot work (an empty command, a ping without any URL).
    #[error("invalid notification options: {0}")]
    InvalidOptions(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client for notifications: {0}")]
    HttpClient(String),
    /// The metrics server cannot listen on its address.
    #[error("cannot listen for /metrics on {addr}: {source}; pick a free address in the config")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file operation failed (the metrics text file).
    #[error("cannot {0}")]
    Io(#[source] IoError),
    /// Text that is not in the Prometheus text exposition format.
    #[error("invalid metrics text at line {line}: {reason}")]
    InvalidMetricsText {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Bind { .. } | Error::Io(_))
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        Error::Io(IoError::new(action, path, e))
    }
}
