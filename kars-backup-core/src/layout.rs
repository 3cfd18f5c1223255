//! The repository layout: every key that kars-backup writes or reserves at a destination.
//!
//! ```text
//! <prefix>/asset-data-20241218-020000.tar.gz           archive
//! <prefix>/asset-data-20241218-020000.tar.gz.meta      its manifest, written last (the commit)
//! <prefix>/asset-data-20241218-020000.tar.gz.pending   marker of a run (or deletion) in progress
//! <prefix>/.kars-prune.lock                            held while a prune runs
//! <prefix>/.kars-drills/drill-<time>-<id>.json|.txt    restore drill reports
//! <prefix>/.kars-chains/sqlite/<database>/…            continuous chain of a SQLite database
//! <prefix>/.kars-chains/postgres/<system-id>/…         base backups' WAL archive of a cluster
//! ```
//!
//! Archives are named by [`BackupName`](crate::BackupName); this module owns everything around
//! them, so a listing, a prune, a drill and a copy agree on which key is what. Reserved keys are
//! neither backups nor foreign files: listings skip them and prune never deletes them.
//! Anything in a sub-directory other than the reserved ones is foreign (a prefix is a directory
//! boundary). Local sinks also keep their temporary upload files (`.kars-tmp-*`) to themselves.

/// The manifest's suffix: `<archive>.meta`.
pub const MANIFEST_SUFFIX: &str = ".meta";

/// The in-progress marker's suffix: `<archive>.pending`.
pub const PENDING_SUFFIX: &str = ".pending";

/// The key of the prune lock object at the root of a destination.
pub const PRUNE_LOCK: &str = ".kars-prune.lock";

/// Where drill reports are kept at a destination (a directory boundary).
pub const DRILL_PREFIX: &str = ".kars-drills/";

/// Where continuous chains are kept at a destination (a directory boundary): a base followed by
/// an unbroken sequence of change files, per database. See [`sqlite_chain_prefix`] and
/// [`postgres_chain_prefix`].
pub const CHAIN_PREFIX: &str = ".kars-chains/";

/// The prefix of one SQLite database's continuous chain: `.kars-chains/sqlite/<database>/`.
///
/// ```
/// assert_eq!(kars_backup_core::layout::sqlite_chain_prefix("asset-data"), ".kars-chains/sqlite/asset-data/");
/// ```
pub fn sqlite_chain_prefix(database: &str) -> String {
    format!("{CHAIN_PREFIX}sqlite/{database}/")
}

/// The prefix of one PostgreSQL cluster's WAL archive, by its system identifier:
/// `.kars-chains/postgres/<system-id>/`.
pub fn postgres_chain_prefix(system_identifier: u64) -> String {
    format!("{CHAIN_PREFIX}postgres/{system_identifier}/")
}

/// The manifest's key for an archive: the archive's name plus [`MANIFEST_SUFFIX`].
pub fn manifest_key(archive: &str) -> String {
    format!("{archive}{MANIFEST_SUFFIX}")
}

/// The in-progress marker's key for an archive: the archive's name plus [`PENDING_SUFFIX`].
pub fn pending_key(archive: &str) -> String {
    format!("{archive}{PENDING_SUFFIX}")
}

/// The key of a drill report (`json` or `txt`) under [`DRILL_PREFIX`].
pub fn drill_report_key(id: &str, extension: &str) -> String {
    format!("{DRILL_PREFIX}drill-{id}.{extension}")
}

/// What a key at a destination is, by its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole<'a> {
    /// Possibly an archive: the key itself (whether it is a backup name is
    /// [`BackupName`](crate::BackupName)'s to say).
    Archive(&'a str),
    /// A manifest of the archive named.
    Manifest(&'a str),
    /// An in-progress marker of the archive named.
    Pending(&'a str),
    /// One of kars-backup's own files ([`PRUNE_LOCK`], a drill report): neither a backup nor
    /// foreign.
    Reserved,
    /// In a sub-directory that kars-backup does not use: foreign.
    Nested,
}

/// Tells what a key is by its name.
///
/// ```
/// use kars_backup_core::layout::{KeyRole, classify_key};
/// assert_eq!(classify_key("a-20241218-020000.tar.gz.meta"), KeyRole::Manifest("a-20241218-020000.tar.gz"));
/// assert_eq!(classify_key(".kars-drills/drill-x.json"), KeyRole::Reserved);
/// assert_eq!(classify_key("old/a-20241218-020000.tar.gz"), KeyRole::Nested);
/// ```
pub fn classify_key(key: &str) -> KeyRole<'_> {
    if is_reserved(key) {
        KeyRole::Reserved
    } else if key.contains('/') {
        KeyRole::Nested
    } else if let Some(archive) = key.strip_suffix(MANIFEST_SUFFIX) {
        KeyRole::Manifest(archive)
    } else if let Some(archive) = key.strip_suffix(PENDING_SUFFIX) {
        KeyRole::Pending(archive)
    } else {
        KeyRole::Archive(key)
    }
}

/// Whether a key is one of kars-backup's own files (the prune lock, drill reports, continuous
/// chains).
pub fn is_reserved(key: &str) -> bool {
    key == PRUNE_LOCK || key.starts_with(DRILL_PREFIX) || key.starts_with(CHAIN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_told_apart() {
        let a = "asset-data-20241218-020000.tar.gz";
        assert_eq!(classify_key(a), KeyRole::Archive(a));
        assert_eq!(classify_key(&manifest_key(a)), KeyRole::Manifest(a));
        assert_eq!(classify_key(&pending_key(a)), KeyRole::Pending(a));
        assert_eq!(classify_key(PRUNE_LOCK), KeyRole::Reserved);
        assert_eq!(
            classify_key(&drill_report_key("20241218T020000.000Z-abc", "txt")),
            KeyRole::Reserved
        );
        assert_eq!(classify_key("kars-old/x.tar.gz"), KeyRole::Nested);
        assert_eq!(
            classify_key(&format!("{}0000000000000001.seg", sqlite_chain_prefix("a"))),
            KeyRole::Reserved
        );
        assert_eq!(
            classify_key(&postgres_chain_prefix(7_312_345_678_901_234_567)),
            KeyRole::Reserved
        );
    }
}
