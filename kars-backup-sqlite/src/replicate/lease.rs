//! One replicator per destination: a lease object with an expiry renewed while it runs.
//!
//! The lease (`<chain>/lease.json`) is created with a conditional write (`if_not_exists`), so of
//! two replicators starting together one gets it. It names its holder (id, host, pid,
//! database) and expires [`ReplicateOptions::lease_ttl`](super::ReplicateOptions) after its
//! last renewal; the holder renews it at a third of that. A replicator finding a lease that
//! is not its own refuses, unless it has expired, or it was taken on this host for the same
//! database by a process that no longer exists (a replicator killed with SIGKILL and started
//! again): then it takes it over. A clean stop deletes it.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use kars_backup_core::sink::{DynBackupSink, PutOptions, SinkExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The lease's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder's unique id (one per replicator run).
    pub id: String,
    /// The holder's host.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// The replicated database's path on that host.
    pub database: String,
    /// Last renewal.
    pub renewed_at: DateTime<Utc>,
    /// When it expires unless renewed.
    pub expires_at: DateTime<Utc>,
}

impl LeaseInfo {
    fn holder(&self) -> String {
        format!(
            "replicator {} (pid {} on {}, database {}, renewed {})",
            self.id,
            self.pid,
            self.host,
            self.database,
            self.renewed_at.to_rfc3339()
        )
    }
}

/// A lease held at one destination.
#[derive(Debug)]
pub(crate) struct Lease {
    sink: DynBackupSink,
    key: String,
    info: LeaseInfo,
    ttl: Duration,
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

impl Lease {
    /// Takes the lease at `sink`.
    ///
    /// # Errors
    /// [`Error::LeaseHeld`] when another live replicator holds it; storage errors.
    pub(crate) async fn acquire(
        sink: DynBackupSink,
        key: String,
        database: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        let mut lease = Lease {
            sink,
            key,
            info: LeaseInfo {
                id: id.to_string(),
                host: kars_backup_core::host_label(),
                pid: std::process::id(),
                database: database.to_string(),
                renewed_at: Utc::now(),
                expires_at: Utc::now(),
            },
            ttl,
        };
        for _ in 0..3 {
            lease.stamp();
            let mut upload = lease
                .sink
                .put(&lease.key, {
                    let mut o = PutOptions::default();
                    o.if_not_exists = true;
                    o
                })
                .await?;
            upload.put_part(lease.body()).await?;
            match upload.complete().await {
                Ok(_) => return Ok(lease),
                Err(kars_backup_core::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let Some(held) = lease.read().await? else {
                continue;
            };
            let stale = held.expires_at < Utc::now()
                || (held.host == lease.info.host
                    && held.database == lease.info.database
                    && !process_alive(held.pid));
            if !stale {
                return Err(Error::LeaseHeld {
                    destination: lease.sink.describe(),
                    holder: held.holder(),
                    expires: held.expires_at.to_rfc3339(),
                });
            }
            tracing::warn!(destination = %lease.sink.describe(), holder = %held.holder(), "taking over a stale replication lease");
            lease.sink.delete(&lease.key).await?;
        }
        Err(Error::LeaseHeld {
            destination: lease.sink.describe(),
            holder: "another replicator taking it at the same time".into(),
            expires: "soon".into(),
        })
    }

    fn stamp(&mut self) {
        let now = Utc::now();
        self.info.renewed_at = now;
        self.info.expires_at = now
            + chrono::Duration::from_std(self.ttl)
                .unwrap_or_else(|_| chrono::Duration::seconds(30));
    }

    fn body(&self) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(&self.info).unwrap_or_default())
    }

    async fn read(&self) -> Result<Option<LeaseInfo>> {
        match self.sink.get_bytes(&self.key).await {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).unwrap_or(LeaseInfo {
                    id: "unreadable".into(),
                    host: "unknown".into(),
                    pid: 0,
                    database: "unknown".into(),
                    renewed_at: Utc::now(),
                    expires_at: Utc::now()
                        + chrono::Duration::from_std(self.ttl)
                            .unwrap_or_else(|_| chrono::Duration::seconds(30)),
                }),
            )),
            Err(kars_backup_core::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews the lease; fails when another replicator took it over.
    ///
    /// # Errors
    /// [`Error::LeaseHeld`] when it is no longer ours; storage errors.
    pub(crate) async fn renew(&mut self) -> Result<()> {
        match self.read().await? {
            Some(held) if held.id != self.info.id => {
                return Err(Error::LeaseHeld {
                    destination: self.sink.describe(),
                    holder: held.holder(),
                    expires: held.expires_at.to_rfc3339(),
                });
            }
            _ => {}
        }
        self.stamp();
        self.sink.put_bytes(&self.key, self.body()).await?;
        Ok(())
    }

    /// Deletes the lease if it is still ours.
    pub(crate) async fn release(self) {
        if let Ok(Some(held)) = self.read().await
            && held.id == self.info.id
            && let Err(e) = self.sink.delete(&self.key).await
        {
            tracing::warn!(destination = %self.sink.describe(), error = %e, "could not release the replication lease");
        }
    }
}
