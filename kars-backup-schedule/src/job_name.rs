//! A job's name names its files under the state directory (its [`JobState`](crate::JobState) and
//! its [`JobLock`](crate::JobLock)), so it is checked once, here, for both.

use crate::error::{Error, Result};

/// Checks that `name` can name a job's files: 1–100 of `[A-Za-z0-9._-]`, not starting with `.`.
///
/// # Errors
/// [`Error::InvalidJobName`].
pub fn validate_job_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidJobName {
            name: name.to_string(),
        })
    }
}
