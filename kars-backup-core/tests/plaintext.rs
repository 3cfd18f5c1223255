//! [`PlaintextPolicy`] over repositories: unencrypted archives stay on this host unless the
//! caller opts out.

use std::sync::Arc;

use kars_backup_core::testing::InMemorySink;
use kars_backup_core::{ErrorCategory, Placement, PlaintextPolicy, Repository};

#[test]
fn only_off_site_plaintext_is_refused() {
    let local = Repository::new(Arc::new(InMemorySink::new()));
    let cloud = Repository::new(Arc::new(
        InMemorySink::new().with_placement(Placement::Cloud),
    ));
    let err = PlaintextPolicy::LocalOnly
        .check("backup a.tar.gz", false, &[&local, &cloud])
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Usage);
    let text = err.to_string();
    assert!(text.contains("memory://"), "{text}");
    assert!(text.contains("kars-backup key init"), "{text}");
    assert!(text.contains("--no-encrypt"), "{text}");
    assert!(text.contains("encryption = \"none\""), "{text}");
    assert!(
        PlaintextPolicy::LocalOnly
            .check("x", true, &[&cloud])
            .is_ok()
    );
    assert!(
        PlaintextPolicy::Anywhere
            .check("x", false, &[&cloud])
            .is_ok()
    );
    assert!(PlaintextPolicy::LocalOnly.stores_plaintext_locally(false, &[&local]));
    assert!(!PlaintextPolicy::LocalOnly.stores_plaintext_locally(true, &[&local]));
    assert!(!PlaintextPolicy::Anywhere.stores_plaintext_locally(false, &[&local]));
}
