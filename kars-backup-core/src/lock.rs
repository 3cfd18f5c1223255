//! The prune lock: one object at the root of a destination ([`PRUNE_LOCK`]) while a prune runs.
//!
//! A backup writes its `.pending` marker first and then looks for a live lock; a prune takes the
//! lock first and then looks for markers: one of the two always sees the other. The repository
//! checks it when a backup begins, prune takes and releases it; its key belongs to the
//! [`layout`](crate::layout).

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::PRUNE_LOCK;
use crate::run::host_label;
use crate::sink::{DynBackupSink, PutOptions, SinkExt};

/// A lock older than this is from a prune that died; it is taken over.
pub const STALE_LOCK_AFTER: Duration = Duration::hours(6);

/// The lock's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    /// The prune's run id.
    pub run_id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its host.
    pub host: String,
}

/// The prune lock of a destination, if one is held and not stale.
///
/// # Errors
/// The sink's errors.
pub async fn live_lock(sink: &DynBackupSink) -> Result<Option<LockInfo>> {
    let bytes = match sink.get_bytes(PRUNE_LOCK).await {
        Ok(b) => b,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<LockInfo>(&bytes) {
        Ok(lock) if Utc::now() - lock.started_at < STALE_LOCK_AFTER => Ok(Some(lock)),
        Ok(_) => Ok(None),
        // An unreadable lock is treated as held: never guess in favour of deleting.
        Err(_) => Ok(Some(LockInfo {
            run_id: "unknown".into(),
            started_at: Utc::now(),
            host: "unknown".into(),
        })),
    }
}

/// Takes the lock for the prune `run_id`, taking over a stale one.
///
/// # Errors
/// [`Error::Generic`] when another prune holds it; the sink's errors.
pub(crate) async fn take(sink: &DynBackupSink, run_id: &str) -> Result<()> {
    let info = LockInfo {
        run_id: run_id.to_string(),
        started_at: Utc::now(),
        host: host_label(),
    };
    let body = Bytes::from(serde_json::to_vec(&info).expect("lock serialises"));
    for _ in 0..2 {
        let mut upload = sink
            .put(
                PRUNE_LOCK,
                PutOptions {
                    if_not_exists: true,
                },
            )
            .await?;
        upload.put_part(body.clone()).await?;
        match upload.complete().await {
            Ok(_) => return Ok(()),
            Err(Error::AlreadyExists { .. }) => match live_lock(sink).await? {
                Some(held) => {
                    return Err(Error::generic(
                        sink.describe(),
                        format!(
                            "another prune (run {} on {}) has held the lock since {}; wait for it, or delete {PRUNE_LOCK} if it died",
                            held.run_id, held.host, held.started_at
                        ),
                    ));
                }
                None => {
                    tracing::warn!(destination = %sink.describe(), "taking over a stale prune lock");
                    sink.delete(PRUNE_LOCK).await?;
                }
            },
            Err(e) => return Err(e),
        }
    }
    Err(Error::generic(
        sink.describe(),
        "could not take the prune lock",
    ))
}

/// Releases the lock (a failure is logged: the lock goes stale after [`STALE_LOCK_AFTER`]).
pub(crate) async fn release(sink: &DynBackupSink) {
    if let Err(e) = sink.delete(PRUNE_LOCK).await {
        tracing::warn!(destination = %sink.describe(), error = %e, "could not release the prune lock");
    }
}
