//! The WAL archive of a PostgreSQL cluster: continuous archiving for point-in-time recovery.
//!
//! - [`archive_wal`] stores one WAL file (PostgreSQL's `archive_command`): compressed (zstd),
//!   optionally encrypted, with the SHA-256 of the file in its key, atomically and durably at
//!   every destination; the same file again succeeds, other content under the same name fails.
//!   With [`SpoolOptions`] it queues the file durably in a local spool and returns at once;
//!   [`push_spool`] uploads the queue in the background, [`spool_status`] tells what waits.
//! - [`fetch_wal`] restores one (PostgreSQL's `restore_command`): checked, decrypted,
//!   decompressed into a temporary file and renamed; a missing file is
//!   [`FetchOutcome::NotFound`], never an error, and a failing destination is never taken for
//!   a missing file. A segment only shipped as `.partial` is served under its plain name.
//! - [`receive_wal`] streams the WAL with `pg_receivewal` and ships completed segments and the
//!   current `.partial` every second or two.
//! - [`list_chains`] tells, per cluster and timeline, the window of archived segments and the
//!   gaps in it; [`archiver_state`] what the server says (settings to change, the last file
//!   archived, failures); [`wal_path`] the WAL a restore from a base backup replays, across
//!   timelines, and the first segment missing on the way; [`prune_wal`] removes the WAL older
//!   than the oldest kept base backup.
//!
//! Keys are made and parsed in one place, [`StoredWal`]; the layout is described in
//! `docs/operators/wal-archive.md`.

mod archive;
mod archive_command;
mod chain;
mod fetch;
mod header;
mod io;
mod keys;
mod path;
mod prune;
mod receive;
mod server;
mod spool;

pub use archive::{
    ArchiveOptions, ArchiveOutcome, ArchiveReport, ArchivedTo, DEFAULT_SPOOL_MAX_BYTES,
    DEFAULT_WAL_ZSTD_LEVEL, SpoolOptions,
};
pub use archive_command::archive_wal;
pub use chain::{
    HistoryEntry, TimelineWindow, WalChain, WalGap, archived_segment_size, chains_from_listing,
    list_chains, parse_history, system_identifiers,
};
pub use fetch::{FetchOptions, FetchOutcome, FetchedWal, SPOOL_DIR, fetch_wal, find_stored};
pub use header::{SegmentHeader, pg_control_system_identifier, segment_header};
pub use keys::{
    DEFAULT_SEGMENT_SIZE, StoredWal, WalKind, WalName, parse_segment_size_key, segment_size_key,
    timeline_prefix, wal_prefix,
};
pub use path::{PathStep, WalPath, wal_path};
pub use prune::{WalPruneReport, prune_wal};
pub use receive::{
    ReceiveOptions, ReceiveReport, ReceiveSettings, default_spool_dir, parse_ship_interval,
    receive_wal,
};
pub use server::{ArchiverState, archiver_state, require_archiving};
pub use spool::{PushOptions, PushReport, Queued, SpoolStatus, push_spool, queued, spool_status};
