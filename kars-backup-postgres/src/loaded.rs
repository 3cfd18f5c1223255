//! What a load found out while loading, which the verification reuses instead of scanning
//! again: the row counts the server reported for each `COPY`, and the amcheck checks already run.

use std::collections::{HashMap, HashSet};

/// What the load found: row counts reported by the server for tables loaded by exactly one
/// `COPY` into the table itself, keyed `schema.table` as `quote_ident` writes it, and the
/// amcheck checks already run.
#[derive(Debug, Default, Clone)]
pub(crate) struct LoadedCounts {
    pub(crate) rows: HashMap<String, u64>,
    pub(crate) early: Option<EarlyChecks>,
}

/// amcheck checks run during the load, on each loaded table's B-tree indexes once built.
#[derive(Debug, Default, Clone)]
pub(crate) struct EarlyChecks {
    /// The load created the extension (the verification drops it again).
    pub(crate) created: bool,
    /// With `heapallindexed`.
    pub(crate) heap: bool,
    /// The indexes checked, by OID.
    pub(crate) checked: HashSet<u32>,
    /// What the failed checks said.
    pub(crate) errors: Vec<String>,
}
