//! The per-run tracing span.

/// The span every event of one run is logged in: `run{job=… run_id=…}`.
///
/// The scheduler enters it around observers and instruments the runner with it; one-shot runs
/// can use it the same way. Core's `BackupJob` opens its own `backup{run_id=…}` span inside, so
/// pass the same id there (`BackupJob::with_run_id`) and logs, manifest and notifications share it.
pub fn run_span(job: &str, run_id: &str) -> tracing::Span {
    tracing::info_span!("run", job = %job, run_id = %run_id)
}
