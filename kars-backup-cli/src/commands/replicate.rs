//! `kars-backup replicate`.

use kars_backup::core::PlaintextPolicy;
use kars_backup::sqlite::SqliteSource;
use kars_backup::sqlite::replicate::{ReplicateOptions, Replicator, parse_interval};

use crate::args::ReplicateArgs;
use crate::exit;

pub(crate) async fn run(a: ReplicateArgs) -> anyhow::Result<u8> {
    let usage = |m: String| anyhow::Error::from(exit::UsageError(m));
    let source = SqliteSource::from_url(&a.db).map_err(|e| usage(e.to_string()))?;
    let db = source.path().to_path_buf();
    let mut options = ReplicateOptions::default();
    options.sync_interval =
        parse_interval(&a.sync_interval).map_err(|e| usage(format!("--sync-interval: {e}")))?;
    options.snapshot_interval = parse_interval(&a.snapshot_interval)
        .map_err(|e| usage(format!("--snapshot-interval: {e}")))?;
    options.enable_wal = a.enable_wal;
    options.encryptor = a.encryption.encryptor()?;
    let sinks =
        a.to.iter()
            .map(|url| kars_backup::storage::sink_from_url(url))
            .collect::<Result<Vec<_>, _>>()?;
    let policy: PlaintextPolicy = a.encryption.plaintext();
    let placed: Vec<_> = sinks
        .iter()
        .map(|s| (s.describe(), s.placement()))
        .collect();
    policy.check_placements(
        &format!("the replica of {}", db.display()),
        options.encryptor.is_some(),
        &placed,
    )?;
    let signals = kars_backup::schedule::ShutdownSignals::install()?;
    let destinations = sinks
        .iter()
        .map(|s| s.describe())
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "Replicating {} to {destinations} (sync every {}); stop with SIGTERM or Ctrl-C.",
        db.display(),
        a.sync_interval
    );
    let replicator = Replicator::new(&db, options, sinks);
    let status = replicator
        .run(signals.graceful())
        .await
        .map_err(|e| e.into_core(&db.display().to_string()))?;
    println!(
        "Replication stopped: generation {}, {} transactions captured, {} generations started, {} WAL resets, {} checkpoints.",
        status.generation.as_deref().unwrap_or("-"),
        status.captured_txid,
        status.generations_started,
        status.resets,
        status.checkpoints
    );
    let mut failed = false;
    for d in &status.destinations {
        println!(
            "  {}: transaction {} stored{}",
            d.destination,
            d.shipped_txid,
            d.last_error
                .as_ref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        );
        failed |= d.queued_bytes > 0 || d.oldest_pending.is_some();
    }
    Ok(if failed { exit::STORAGE } else { exit::OK })
}
