//! The work of the loading connections: table data (`COPY`) first, then each index or
//! constraint once its table is loaded (the largest table's first), then amcheck of the built
//! indexes; shared by the connections, with a wake-up when it changes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::setup::IndexWorkers;
use super::spill::Piece;

/// One table's `COPY` on its way to a loading connection.
pub(crate) struct CopyJob {
    /// The `COPY … FROM stdin` statement, without its `;`.
    pub(crate) statement: String,
    /// The table when the block loads exactly the table named in its entry (`TRUNCATE` + `FREEZE`
    /// possible, and its `COPY n` is the table's row count).
    pub(crate) own_table: Option<String>,
    pub(crate) data: mpsc::UnboundedReceiver<Piece>,
}

/// An index or constraint to build, with the table it is on when that could be read.
pub(crate) struct IndexJob {
    pub(crate) table: Option<String>,
    pub(crate) sql: String,
}

/// What the loading connections share: the work to do and what is still loading.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) copies: VecDeque<CopyJob>,
    pub(crate) indexes: VecDeque<IndexJob>,
    /// `COPY` targets queued or loading, with how many blocks.
    pub(crate) loading: HashMap<String, usize>,
    /// Bytes of table data read per `COPY` target, to build the largest tables' indexes first.
    pub(crate) sizes: HashMap<String, u64>,
    /// Parallel workers per index build.
    pub(crate) index_workers: Option<IndexWorkers>,
    /// Tables that got a `COPY`.
    pub(crate) copied: HashSet<String>,
    /// Index jobs queued or running, per table, and for tables that could not be read.
    pub(crate) indexing: HashMap<String, usize>,
    pub(crate) indexing_unknown: usize,
    /// `bt_index_check(…)` when indexes are checked during the load.
    pub(crate) check_sql: Option<String>,
    /// Tables whose indexes were listed for checks.
    pub(crate) checked: HashSet<String>,
    /// Indexes (OIDs) to check, and how many tables' indexes are being listed.
    pub(crate) index_checks: VecDeque<u32>,
    pub(crate) listing: usize,
    /// The reader is done: no more work comes.
    pub(crate) closed: bool,
    /// Something failed: stop.
    pub(crate) failed: bool,
}

/// A job for a loading connection.
pub(crate) enum Task {
    Copy(CopyJob),
    Index(IndexJob),
    /// List the B-tree indexes of this table for checks.
    ListChecks(String),
    /// amcheck this index.
    Check(u32),
}

impl Queue {
    /// The next job: table data first, then an index whose table is loaded, the largest table's
    /// first (an index whose table could not be read waits for all data).
    pub(crate) fn next(&mut self) -> Option<Task> {
        if let Some(c) = self.copies.pop_front() {
            return Some(Task::Copy(c));
        }
        let loading = &self.loading;
        let size = |ix: &IndexJob| ix.table.as_ref().and_then(|t| self.sizes.get(t)).copied();
        let ready = self
            .indexes
            .iter()
            .enumerate()
            .filter(|(_, ix)| match &ix.table {
                Some(t) => !loading.contains_key(t),
                None => loading.is_empty(),
            })
            .max_by_key(|(i, ix)| (size(ix).unwrap_or(0), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        if let Some(i) = ready {
            let mut ix = self.indexes.remove(i)?;
            if let Some(w) = self.index_workers {
                // The last build: the other connections are about to be idle, so it may use them.
                let last = self.closed && self.indexes.is_empty() && self.loading.is_empty();
                let workers = if last { w.last } else { w.busy };
                ix.sql = format!(
                    "SET max_parallel_maintenance_workers = {workers};\n{}",
                    ix.sql
                );
            }
            return Some(Task::Index(ix));
        }
        if let Some(oid) = self.index_checks.pop_front() {
            return Some(Task::Check(oid));
        }
        // A table whose data and indexes are all in (no more can come once the reader is done).
        if self.check_sql.is_none() || !self.closed || self.indexing_unknown > 0 {
            return None;
        }
        let t = self
            .copied
            .iter()
            .find(|t| {
                !self.loading.contains_key(*t)
                    && !self.indexing.contains_key(*t)
                    && !self.checked.contains(*t)
            })?
            .clone();
        self.checked.insert(t.clone());
        self.listing += 1;
        Some(Task::ListChecks(t))
    }

    pub(crate) fn finished(&self) -> bool {
        self.closed
            && self.copies.is_empty()
            && self.indexes.is_empty()
            && (self.check_sql.is_none()
                || (self.index_checks.is_empty()
                    && self.listing == 0
                    && self.copied.iter().all(|t| self.checked.contains(t))))
    }

    pub(crate) fn index_done(&mut self, table: &Option<String>) {
        match table {
            Some(t) => {
                if let Some(n) = self.indexing.get_mut(t) {
                    *n -= 1;
                    if *n == 0 {
                        self.indexing.remove(t);
                    }
                }
            }
            None => self.indexing_unknown = self.indexing_unknown.saturating_sub(1),
        }
    }
}

/// The queue and a wake-up for the connections waiting on it.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) queue: Mutex<Queue>,
    pub(crate) changed: tokio::sync::Notify,
}

impl Shared {
    pub(crate) fn update(&self, f: impl FnOnce(&mut Queue)) {
        f(&mut self.queue.lock().expect("load queue"));
        self.changed.notify_waiters();
    }
}
