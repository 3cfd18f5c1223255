//! `kars-backup replicate`.

use kars_backup::job::replicate::Replication;

use crate::args::ReplicateArgs;
use crate::exit;

pub(crate) async fn run(a: ReplicateArgs) -> anyhow::Result<u8> {
    let replication = Replication::new(&a.db, &a.to, &a.settings, &a.encryption)?;
    let signals = kars_backup::schedule::ShutdownSignals::install()?;
    eprintln!(
        "Replicating {}; stop with SIGTERM or Ctrl-C.",
        replication.describe()
    );
    let status = replication.run(signals.graceful()).await?;
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
        let error = d.last_error.as_ref().map(|e| format!(", last error: {e}"));
        let (name, txid) = (&d.destination, d.shipped_txid);
        println!(
            "  {name}: transaction {txid} stored{}",
            error.unwrap_or_default()
        );
        failed |= d.queued_bytes > 0 || d.oldest_pending.is_some();
    }
    Ok(if failed { exit::STORAGE } else { exit::OK })
}
