//! How big a sample database is: [`SampleSize`].

/// How many rows the main tables of a sample database get; the other tables follow from them
/// (attestation campaigns, passkeys, tokens, …) or hold one row (settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleSize {
    /// Rows of `companies`.
    pub companies: u64,
    /// Rows of `users`.
    pub users: u64,
    /// Rows of `assets`.
    pub assets: u64,
    /// Rows of `audit_logs`.
    pub audit_logs: u64,
}

/// Approximate bytes an asset with its share of the other tables takes on disk.
const BYTES_PER_ASSET: u64 = 820;

impl SampleSize {
    /// A small database of about 1 MB.
    pub fn demo() -> Self {
        Self::for_bytes(1_000_000)
    }

    /// A database of roughly `bytes` bytes (within about 20%), for benchmarks.
    pub fn for_bytes(bytes: u64) -> Self {
        let assets = (bytes / BYTES_PER_ASSET).max(10);
        SampleSize {
            companies: (assets / 400).max(2),
            users: (assets / 15).max(5),
            assets,
            audit_logs: assets * 2,
        }
    }

    /// The rows of the four main tables together.
    pub fn total_rows(&self) -> u64 {
        self.companies + self.users + self.assets + self.audit_logs
    }
}
