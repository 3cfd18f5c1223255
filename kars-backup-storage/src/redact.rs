//! [`redact`]: destination URLs without their secrets, for descriptions, errors and logs.

/// Removes secrets from a URL for display: a password (`s3://user:secret@host` →
/// `s3://user:***@host`) and query parameters that look like credentials (`sig`, `*key*`,
/// `*token*`, `*secret*`, `*password*`).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let mut changed = false;
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
                changed = true;
            }
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let lk = k.to_ascii_lowercase();
                        let secret = ["key", "token", "secret", "password", "credential"]
                            .iter()
                            .any(|s| lk.contains(s))
                            || lk == "sig";
                        if secret {
                            changed = true;
                            (k.into_owned(), "***".to_string())
                        } else {
                            (k.into_owned(), v.into_owned())
                        }
                    })
                    .collect();
                if changed {
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
            }
            if changed {
                u.to_string()
            } else {
                url.to_string()
            }
        }
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_query_parameters() {
        let r = redact("https://a.blob.core.windows.net/c?sig=abc&sv=2020&account_key=zzz");
        assert!(!r.contains("abc") && !r.contains("zzz"), "{r}");
        assert!(r.contains("sv=2020"), "{r}");
    }
}
