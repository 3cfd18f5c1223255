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

/// Interpolates every string value of the table in place; collects the substitutions made and
/// an error for every reference that cannot be resolved.
pub(crate) fn interpolate_table(
    table: &mut DeTable<'_>,
    source: &str,
    env: &dyn Env,
    subs: &mut Vec<Substitution>,
    names: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) {
    for (_, value) in table.iter_mut() {
        interpolate_value(value, source, env, subs, names, errors);
    }
}

fn interpolate_value(
    value: &mut Spanned<DeValue<'_>>,
    source: &str,
    env: &dyn Env,
    subs: &mut Vec<Substitution>,
    names: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) => {
            if !s.contains('$') {
                return;
            }
            for name in referenced_names(s) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            // Offsets inside the value map to the file only when the string has no escapes.
            let raw = source.get(span.clone()).unwrap_or_default();
            let inner_offset = if raw.len() == s.len() + 2 && raw[1..raw.len() - 1] == **s {
                Some(span.start + 1)
            } else {
                None
            };
            match expand(s, env, subs) {
                Ok(expanded) => *s = expanded.into(),
                Err((offset, message)) => {
                    let at = inner_offset.map_or(span.start, |o| o + offset);
                    errors.push(ConfigError::at(Location::of(source, at), message));
                }
            }
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                interpolate_value(item, source, env, subs, names, errors);
            }
        }
        DeValue::Table(t) => interpolate_table(t, source, env, subs, names, errors),
        _ => {}
    }
}

/// Expands `${NAME}` and `${NAME:-default}`; `$${` is a literal `${`; a `$` not followed by `{`
/// stays as it is (shell commands keep `$HOME`, `$(date)`).
///
/// Errors carry the byte offset of the bad reference within `text`.
pub(crate) fn expand(
    text: &str,
    env: &dyn Env,
    subs: &mut Vec<Substitution>,
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
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err((
                at,
                format!(
                    "bad variable reference ${{{inner}}}: use ${{NAME}} or ${{NAME:-default}} with NAME of letters, digits and _ (or $${{ for a literal ${{)"
                ),
            ));
        }
        let value = match (env.get(name), default) {
            (Some(v), Some(d)) if v.is_empty() => d.to_string(),
            (Some(v), _) => {
                subs.push(Substitution {
                    name: name.to_string(),
                    value: v.clone(),
                });
                v
            }
            (None, Some(d)) => d.to_string(),
            (None, None) => {
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
        let name = inner.split_once(":-").map_or(inner, |(n, _)| n);
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
            expand("x ${DB} y", &env, &mut subs).unwrap(),
            "x postgres://u:pw@h/db y"
        );
        assert_eq!(subs.len(), 1);
        assert_eq!(
            expand("${NOPE:-dflt}/${EMPTY:-e}", &env, &mut subs).unwrap(),
            "dflt/e"
        );
        assert_eq!(
            expand("$HOME $(date) $${LIT}", &env, &mut subs).unwrap(),
            "$HOME $(date) ${LIT}"
        );
    }

    #[test]
    fn errors_name_the_variable_and_offset() {
        let mut subs = Vec::new();
        let (at, msg) = expand("abc ${MISSING}", &env, &mut subs).unwrap_err();
        assert_eq!(at, 4);
        assert!(msg.contains("MISSING"), "{msg}");
        assert!(expand("${1BAD}", &env, &mut subs).is_err());
        assert!(expand("${OPEN", &env, &mut subs).is_err());
    }

    #[test]
    fn lists_names() {
        assert_eq!(
            referenced_names("${A} $${B} ${C:-x} ${A}"),
            vec!["A".to_string(), "C".to_string()]
        );
    }
}
