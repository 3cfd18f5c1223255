//! `kars-test-replicator DB DIR [--sync-ms N] [--checkpoint-pages N] [--encrypt-to RECIPIENT]`:
//! the library's replicator of `DB` to the local directory `DIR`, in the foreground until
//! SIGTERM/SIGINT (for kill -9 trials). Prints `started` once it runs; exits 3 when it refuses
//! (a lease held by another replicator).

use std::sync::Arc;
use std::time::Duration;

use kars_backup_core::CancellationToken;
use kars_backup_sqlite::replicate::{ReplicateOptions, Replicator};
use kars_backup_storage::LocalSink;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: kars-test-replicator DB DIR [--sync-ms N] [--checkpoint-pages N] [--encrypt-to RECIPIENT]";
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or(usage)?;
    let dir = args.next().ok_or(usage)?;
    let mut options = ReplicateOptions::default();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(usage)?;
        match flag.as_str() {
            "--sync-ms" => options.sync_interval = Duration::from_millis(value.parse()?),
            "--checkpoint-pages" => options.checkpoint_pages = value.parse()?,
            "--encrypt-to" => {
                options.encryptor = kars_backup_encrypt::encryptor(&[value], None)?;
            }
            _ => return Err(usage.into()),
        }
    }
    let sink = Arc::new(LocalSink::new(&dir)?);
    let replicator = Replicator::new(&db, options, vec![sink]);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    println!("started");
    match replicator.run(shutdown).await {
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(3)
        }
    }
}
