//! Restores the database of `embed_in_service.rs` from that same job: the newest backup across
//! its destinations first (local copies before S3), and when it is damaged (a bad checksum, a
//! failed verification) the next older one. Same environment as the service, plus
//! `RESTORE_TO` (default: the service's own `APP_DB`; stop the service first):
//! `cargo run -p kars-backup --features job,s3 --example restore_with_fallback`.

#[allow(dead_code)] // the service's `main` is not used here
#[path = "embed_in_service.rs"]
pub(crate) mod service;

use kars_backup::core::progress::no_progress;
use kars_backup::core::recovery::AttemptOptions;
use kars_backup::schedule::ShutdownSignals;

#[tokio::main]
pub(crate) async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let job = service::job()?;
    let target = std::env::var("RESTORE_TO").ok();
    let attempts = AttemptOptions {
        fallback: true, // try older backups, at most max_backups of them
        ..AttemptOptions::default()
    };
    // SIGTERM or Ctrl-C interrupts the restore, which then rolls back.
    let signals = ShutdownSignals::install()?;
    let cancel = signals.graceful();
    let recovered = job
        .restore_latest(target.as_deref(), &attempts, cancel, no_progress())
        .await?;
    for attempt in &recovered.attempts {
        let outcome = attempt.error.as_deref().unwrap_or("restored");
        println!("{} from {}: {outcome}", attempt.backup, attempt.destination);
    }
    let report = &recovered.report;
    println!("restored {} into {}", report.backup, report.target);
    Ok(())
}
