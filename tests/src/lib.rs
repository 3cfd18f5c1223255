//! Cross-crate integration tests of kars-backup live in `tests/`; this crate's `kars-test-writer`
//! binary is a separate process that commits to an SQLite database continuously while tests back
//! it up.
