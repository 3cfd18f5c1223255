//! Who and which run: the host label and run ids stamped on manifests, `.pending` markers, the
//! prune lock and drill reports.

/// The host label stored in manifests: `KARS_BACKUP_HOST` if set, else this machine's host name.
pub fn host_label() -> String {
    std::env::var("KARS_BACKUP_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
}

/// A new run id: UTC time and a random suffix (`20241218T020000Z-3f9a1c`).
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = chrono::Utc::now();
    let mix = (now.timestamp_subsec_nanos() as u64)
        ^ ((std::process::id() as u64) << 20)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9);
    format!("{}-{:06x}", now.format("%Y%m%dT%H%M%SZ"), mix & 0xff_ffff)
}
