//! [`Manifest`]: the JSON document stored as `<archive>.meta`, written last as the commit marker,
//! and the plain data it holds ([`DatabaseInfo`], [`TableInfo`], [`PayloadInfo`],
//! [`ArchiveInfo`]), which sources, verification and front ends share.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::compress::Compression;
use crate::encrypt::EncryptionInfo;
use crate::error::{Error, Result};
use crate::pipeline::Digested;

/// The manifest format this version writes for unencrypted archives.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// The manifest format of encrypted archives (adds `archive.encryption`), and the newest this
/// version reads: a kars-backup that predates encryption refuses it ("upgrade kars-backup")
/// instead of trying to decompress ciphertext.
pub const MANIFEST_FORMAT_VERSION_ENCRYPTED: u32 = 2;

/// Everything known about one committed backup.
///
/// It holds what the runbook's `.meta` file holds (date, database type, size, version label,
/// host/container label) and what a restore needs to trust the archive: SHA-256 and size of the
/// stored bytes, the codec, and tables with row counts taken from the snapshot itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Manifest {
    /// Format version of this document ([`MANIFEST_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The archive's file name (`asset-data-20241218-020000.tar.gz`).
    pub name: String,
    /// The id of the run that wrote it; it also appears in logs and notifications.
    pub run_id: String,
    /// When the snapshot was taken (UTC).
    pub created_at: DateTime<Utc>,
    /// When the archive was complete (UTC).
    pub completed_at: DateTime<Utc>,
    /// `kars-backup` version that wrote it.
    pub tool_version: String,
    /// The engine (`sqlite`, `postgres`).
    pub engine: String,
    /// The source, with secrets redacted (a path or a URL without password).
    pub source: String,
    /// The host or container label (the runbook's "Container").
    pub host: String,
    /// A free version label of the application (the runbook's `git describe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_label: Option<String>,
    /// The databases in the archive (one, or several in volume mode).
    pub databases: Vec<DatabaseInfo>,
    /// The payload inside the compression: its format and uncompressed size.
    pub payload: PayloadInfo,
    /// The stored bytes: codec, size, checksum.
    pub archive: ArchiveInfo,
    /// Tier tags (`daily`, `weekly`, …), for retention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    /// For a physical base backup (PostgreSQL `pg_basebackup`): where it sits in the cluster's
    /// WAL, so a restore to an instant can pick it and the WAL that follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<PhysicalInfo>,
}

/// Where a physical base backup sits in its cluster's write-ahead log: the cluster (system
/// identifier), the timeline, the WAL range the backup needs, and when it became consistent.
///
/// A restore to an instant `T` picks the newest base backup whose [`end_time`](Self::end_time)
/// is at or before `T` and replays the archived WAL from [`start_wal`](Self::start_wal) on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalInfo {
    /// The cluster's system identifier (`pg_control_system()`), in decimal: WAL of another
    /// cluster never fits this backup.
    pub system_identifier: String,
    /// The timeline the backup was taken on.
    pub timeline: u32,
    /// The LSN where the backup starts (its checkpoint's redo point), `0/2000028`.
    pub start_lsn: String,
    /// The LSN where the backup ends: replay must reach it before the copy is consistent.
    pub stop_lsn: String,
    /// The first WAL segment the backup needs (`000000010000000000000002`).
    pub start_wal: String,
    /// The last WAL segment the backup needs (the one holding `stop_lsn`).
    pub stop_wal: String,
    /// The WAL segment size in bytes (16 MiB unless the cluster was made otherwise).
    pub wal_segment_size: u64,
    /// When the backup started (the server's clock).
    pub start_time: DateTime<Utc>,
    /// When the backup had ended (the server's clock, read after `pg_basebackup` returned): the
    /// earliest instant this backup can be restored to.
    pub end_time: DateTime<Utc>,
}

/// One table and its row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    /// The table's name (schema-qualified where the engine has schemas).
    pub name: String,
    /// Rows, counted in the snapshot.
    pub rows: u64,
}

/// A description of one database: engine version, size, tables with row counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// The database's name: its file name for SQLite, its name for PostgreSQL.
    pub name: String,
    /// The engine's version (`3.46.0`, `15.4`).
    pub engine_version: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Tables, sorted by name, with row counts.
    pub tables: Vec<TableInfo>,
    /// The integrity check's result (`ok`, or the problems found), when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_check: Option<String>,
    /// Engine-specific details (SQLite page size and journal mode, PostgreSQL encoding, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl DatabaseInfo {
    /// The row count of a table, if the table is listed.
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables.iter().find(|t| t.name == table).map(|t| t.rows)
    }
}

/// The payload: what the source wrote before compression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadInfo {
    /// `tar`, `sql`, `dump`, …
    pub format: String,
    /// Size in bytes before compression.
    pub size_bytes: u64,
}

/// The stored archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// How the payload was compressed.
    pub compression: Compression,
    /// SHA-256 of the stored bytes (the ciphertext, when encrypted), lowercase hex.
    pub sha256: String,
    /// BLAKE3 of the stored bytes, lowercase hex: what reads are checked with when present (less
    /// CPU than SHA-256); absent in manifests written before kars-backup recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Size of the stored bytes.
    pub size_bytes: u64,
    /// How the compressed payload was encrypted, and to whom (public identifiers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
}

impl ArchiveInfo {
    /// The checksum and size the stored bytes must have.
    pub fn digested(&self) -> Digested {
        Digested {
            sha256: self.sha256.clone(),
            blake3: self.blake3.clone(),
            size: self.size_bytes,
        }
    }
}

impl Manifest {
    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        v.push(b'\n');
        v
    }

    /// Parses a manifest, refusing newer format versions.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for a newer format, [`Error::InvalidArchive`] for text that
    /// is not a manifest.
    pub fn from_json(name: &str, bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let version: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidArchive {
                name: name.to_string(),
                reason: format!("not a kars-backup manifest: {e}"),
            })?;
        if version.format_version > MANIFEST_FORMAT_VERSION_ENCRYPTED || version.format_version == 0
        {
            return Err(Error::UnsupportedVersion {
                what: format!(
                    "manifest {name} has format version {}, this kars-backup {} reads up to {MANIFEST_FORMAT_VERSION_ENCRYPTED}; upgrade kars-backup",
                    version.format_version,
                    env!("CARGO_PKG_VERSION")
                ),
            });
        }
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidArchive {
            name: name.to_string(),
            reason: format!("manifest is damaged: {e}"),
        })
    }

    /// Total rows over all tables of all databases.
    pub fn total_rows(&self) -> u64 {
        self.databases
            .iter()
            .flat_map(|d| d.tables.iter())
            .map(|t| t.rows)
            .sum()
    }
}
