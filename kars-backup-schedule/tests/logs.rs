//! Every log line of a run carries its run id (the `run` span).

use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::{TimeZone, Utc};
use kars_backup_schedule::*;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test] // current-thread runtime: the thread-local subscriber sees every task
async fn runner_and_scheduler_logs_carry_job_and_run_id() {
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer({
            let b = buffer.clone();
            move || b.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap());
    let runner = runner_fn(|_ctx| async {
        tracing::info!("dumping the database");
        RunOutcome::failure("disk full")
    });
    let report = Scheduler::new(dir.path())
        .run_now("nightly", runner, &clock, CancellationToken::new())
        .await
        .unwrap();

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {text}"))
    };
    for message in ["run started", "dumping the database", "run failed"] {
        let line = find(message);
        assert_eq!(line["span"]["name"], "run", "{line}");
        assert_eq!(line["span"]["run_id"], report.run_id.as_str(), "{line}");
        assert_eq!(line["span"]["job"], "nightly", "{line}");
    }
    assert_eq!(find("run failed")["fields"]["error"], "disk full");
}
