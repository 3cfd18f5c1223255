//! Keeping secrets out of logs: URLs often carry tokens (hc-ping UUIDs, Slack webhook paths).

/// A URL reduced to what is safe to log: scheme, host and port. User info, path, query and
/// fragment are replaced by `…` (they may carry tokens).
///
/// ```
/// use kars_backup_notify::redact_url;
/// assert_eq!(redact_url("https://hc-ping.com/5f0e1a2b-uuid/fail"), "https://hc-ping.com/…");
/// assert_eq!(redact_url("http://user:pw@127.0.0.1:8080/"), "http://127.0.0.1:8080/");
/// assert_eq!(redact_url("not a url"), "<invalid URL>");
/// ```
pub fn redact_url(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url.trim()) else {
        return "<invalid URL>".to_string();
    };
    let host = parsed.host_str().unwrap_or("");
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let hidden = (parsed.path() != "/" && !parsed.path().is_empty())
        || parsed.query().is_some()
        || parsed.fragment().is_some();
    format!(
        "{}://{host}{port}/{}",
        parsed.scheme(),
        if hidden { "…" } else { "" }
    )
}

/// An error's message with its chain of causes, for logs (`a: b: c`).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}
