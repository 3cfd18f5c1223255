//! SIGTERM/SIGINT turn into the shutdown tokens (this test binary signals itself).

use std::process::Command;
use std::time::Duration;

use kars_backup_schedule::ShutdownSignals;

fn signal_self(signal: &str) {
    let status = Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status()
        .expect("the kill command (procps) is needed for this test");
    assert!(status.success());
}

#[tokio::test]
async fn first_signal_is_graceful_second_is_forced() {
    let signals = ShutdownSignals::install().unwrap();
    assert!(!signals.graceful().is_cancelled());
    signal_self("-TERM");
    tokio::time::timeout(Duration::from_secs(10), signals.graceful().cancelled())
        .await
        .expect("SIGTERM did not cancel the graceful token");
    assert!(!signals.forced().is_cancelled());
    signal_self("-INT");
    tokio::time::timeout(Duration::from_secs(10), signals.forced().cancelled())
        .await
        .expect("a second signal did not cancel the forced token");
}
