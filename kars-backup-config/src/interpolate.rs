//! `${VAR}` interpolation of every string value, after TOML parsing (so a value can never change
//! the file's structure) and before the typed deserialization.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, Location};

/// One substitution made: which variable, and the text it put in.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Substitution {
    pub(crate) name: String,
    pub(crate) value: String,
}

impl std::fmt::Debug for Substitution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Substitution({} = ***)", self.name)
    }
}

/// Where variables come from: the process environment, or a fixed map in tests.
pub(crate) trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// What interpolation collects while it walks the document.
pub(crate) struct Collected<'a> {
    /// Where variables come from.
    pub(crate) env: &'a dyn Env,
    /// Strict: a `${NAME:-default}` whose variable is not set is an error too.
    pub(crate) strict: bool,
    /// The substitutions made.
    pub(crate) subs: Vec<Substitution>,
    /// Every variable referenced, in order of first use.
    pub(crate) names: Vec<String>,
    /// A problem for every reference that cannot be resolved.
    pub(crate) errors: Vec<ConfigError>,
}

/// Interpolates every string value of the table in place.
pub(crate) fn interpolate_table(table: &mut DeTable<'_>, source: &str, out: &mut Collected<'_>) {
    for (_, value) in table.iter_mut() {
        interpolate_value(value, source, out);
    }
}

fn interpolate_value(value: &mut Spanned<DeValue<'_>>, source: &str, out: &mut Collected<'_>) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) => {
            if !s.contains('$') {
                return;
            }
            for name in referenced_names(s) {
                if !out.names.contains(&name) {
                    out.names.push(name);
                }
            }
            // Offsets inside the value map to the file only when the string has no escapes.
            let raw = source.get(span.clone()).unwrap_or_default();
            let inner_offset = if raw.len() == s.len() + 2 && raw[1..raw.len() - 1] == **s {
                Some(span.start + 1)
            } else {
                None
            };
            match expand(s, out.env, &mut out.subs, out.strict) {
                Ok(expanded) => *s = expanded.into(),
                Err((offset, message)) => {
                    let at = inner_offset.map_or(span.start, |o| o + offset);
                    out.errors
                        .push(ConfigError::at(Location::of(source, at), message));
                }
            }
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                interpolate_value(item, source, out);
            }
        }
        DeValue::Table(t) => interpolate_table(t, source, out),
        _ => {}
    }
}

/// Expands `${NAME}`, `${NAME:-default}` (the default when NAME is unset or empty) and
/// `${NAME:?message}` (an error with the message when NAME is unset or empty); `$${` is a
/// literal `${`; a `$` not followed by `{` stays as it is (shell commands keep `$HOME`,
/// `$(date)`). `strict`: a default is never used, an unset variable is always an error.
///
/// Errors carry the byte offset of the bad reference within `text`.
pub(crate) fn expand(
    text: &str,
    env: &dyn Env,
    subs: &mut Vec<Substitution>,
    strict: bool,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            offset += i + 3;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            rest = &after[1..];
            offset += i + 1;
            continue;
        }
        let at = offset + i;
        let Some(close) = after.find('}') else {
            return Err((
                at,
                "unclosed ${ (write ${NAME}, or $${ for a literal ${)".to_string(),
            ));
        };
        let inner = &after[2..close];
        let (name, fallback) = split_reference(inner);
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err((
                at,
                format!(
                    "bad variable reference ${{{inner}}}: use ${{NAME}}, ${{NAME:-default}} or ${{NAME:?message}} with NAME of letters, digits and _ (or $${{ for a literal ${{)"
                ),
            ));
        }
        let value = match (env.get(name), fallback) {
            (Some(v), Fallback::Required(message)) if v.is_empty() => {
                return Err((at, required(name, message, "is empty")));
            }
            (Some(v), Fallback::Default(_)) if v.is_empty() && strict => {
                return Err((at, strict_unset(name, "is empty")));
            }
            (Some(v), Fallback::Default(d)) if v.is_empty() => d.to_string(),
            (Some(v), _) => {
                subs.push(Substitution {
                    name: name.to_string(),
                    value: v.clone(),
                });
                v
            }
            (None, Fallback::Required(message)) => {
                return Err((at, required(name, message, "is not set")));
            }
            (None, Fallback::Default(_)) if strict => {
                return Err((at, strict_unset(name, "is not set")));
            }
            (None, Fallback::Default(d)) => d.to_string(),
            (None, Fallback::None) => {
                return Err((
                    at,
                    format!(
                        "environment variable {name} is not set; set it, or give a default with ${{{name}:-default}}"
                    ),
                ));
            }
        };
        out.push_str(&value);
        rest = &after[close + 1..];
        offset = at + close + 1;
    }
    out.push_str(rest);
    Ok(out)
}

/// What a reference says to do when its variable is unset or empty.
enum Fallback<'a> {
    /// `${NAME}`: an error when unset (an empty value is used as it is).
    None,
    /// `${NAME:-default}`.
    Default(&'a str),
    /// `${NAME:?message}`.
    Required(&'a str),
}

/// `NAME`, `NAME:-default` or `NAME:?message`.
fn split_reference(inner: &str) -> (&str, Fallback<'_>) {
    let dash = inner.find(":-");
    let question = inner.find(":?");
    match (dash, question) {
        (Some(d), q) if q.is_none_or(|q| d < q) => {
            (&inner[..d], Fallback::Default(&inner[d + 2..]))
        }
        (_, Some(q)) => (&inner[..q], Fallback::Required(&inner[q + 2..])),
        _ => (inner, Fallback::None),
    }
}

fn required(name: &str, message: &str, state: &str) -> String {
    let message = message.trim();
    if message.is_empty() {
        format!("environment variable {name} {state}; it is required (${{{name}:?…}}): set it")
    } else {
        format!("environment variable {name} {state}: {message}")
    }
}

fn strict_unset(name: &str, state: &str) -> String {
    format!(
        "environment variable {name} {state} (strict: defaults are not used); set it, or check without --strict to use the default"
    )
}

/// The names of every variable referenced by `${…}` in the text (for documentation of what a
/// scheduler must provide).
pub(crate) fn referenced_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            rest = &rest[i + 2..];
            continue;
        }
        let after = &rest[i + 2..];
        let Some(close) = after.find('}') else { break };
        let inner = &after[..close];
        let (name, _) = split_reference(inner);
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
        rest = &after[close + 1..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DB" => Some("postgres://u:pw@h/db".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references() {
        let mut subs = Vec::new();
        assert_eq!(
            expand("x ${DB} y", &env, &mut subs, false).unwrap(),
            "x postgres://u:pw@h/db y"
        );
        assert_eq!(subs.len(), 1);
        assert_eq!(
            expand("${NOPE:-dflt}/${EMPTY:-e}", &env, &mut subs, false).unwrap(),
            "dflt/e"
        );
        assert_eq!(
            expand("$HOME $(date) $${LIT}", &env, &mut subs, false).unwrap(),
            "$HOME $(date) ${LIT}"
        );
        assert_eq!(
            expand("${DB:?set the database}", &env, &mut subs, false).unwrap(),
            "postgres://u:pw@h/db"
        );
        // A default may itself hold ":?" and a message ":-".
        assert_eq!(
            expand("${NOPE:-a:?b}", &env, &mut subs, false).unwrap(),
            "a:?b"
        );
    }

    #[test]
    fn required_and_strict_references_fail_with_the_message() {
        let mut subs = Vec::new();
        let (at, msg) =
            expand("url ${NOPE:?give the S3 bucket}", &env, &mut subs, false).unwrap_err();
        assert_eq!(at, 4);
        assert_eq!(
            msg,
            "environment variable NOPE is not set: give the S3 bucket"
        );
        let (_, msg) = expand("${EMPTY:?}", &env, &mut subs, false).unwrap_err();
        assert!(msg.contains("EMPTY is empty"), "{msg}");
        let (_, msg) = expand("${NOPE:-dflt}", &env, &mut subs, true).unwrap_err();
        assert!(msg.contains("NOPE is not set (strict"), "{msg}");
        let (_, msg) = expand("${EMPTY:-dflt}", &env, &mut subs, true).unwrap_err();
        assert!(msg.contains("EMPTY is empty"), "{msg}");
        assert_eq!(
            expand("${DB:-x}", &env, &mut subs, true).unwrap(),
            "postgres://u:pw@h/db"
        );
    }

    #[test]
    fn errors_name_the_variable_and_offset() {
        let mut subs = Vec::new();
        let (at, msg) = expand("abc ${MISSING}", &env, &mut subs, false).unwrap_err();
        assert_eq!(at, 4);
        assert!(msg.contains("MISSING"), "{msg}");
        assert!(expand("${1BAD}", &env, &mut subs, false).is_err());
        assert!(expand("${OPEN", &env, &mut subs, false).is_err());
    }

    #[test]
    fn lists_names() {
        assert_eq!(
            referenced_names("${A} $${B} ${C:-x} ${A} ${D:?needed}"),
            vec!["A".to_string(), "C".to_string(), "D".to_string()]
        );
    }
}
