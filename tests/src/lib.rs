//! Cross-crate integration tests of kars-backup live in `tests/`; this crate's `kars-test-writer`
//! binary is a separate process that commits to an SQLite database continuously while tests back
//! it up, and `kars-test-replicator` runs the library's replicator in a process of its own (for
//! kill -9 trials).

use std::sync::Arc;

use kars_backup_core::sink::DynBackupSink;

/// A sink on the S3 emulator (`scripts/services.sh up`) under `prefix`, or `None` when the
/// emulator's variables are not set (under `CI=true` that is a failure, see
/// `kars_backup_core::testing::service_var`).
pub fn emulator_s3(prefix: &str) -> Option<DynBackupSink> {
    use kars_backup_core::testing::service_var;
    let endpoint = service_var("KARS_TEST_S3_ENDPOINT")?;
    let bucket = service_var("KARS_TEST_S3_BUCKET")?;
    Some(Arc::new(
        kars_backup_storage::s3::S3Builder::new(&bucket)
            .with_prefix(prefix)
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_credentials("test", "test")
            .build()
            .expect("an S3 sink on the emulator"),
    ))
}
