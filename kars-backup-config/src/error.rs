//! Errors with a place in the file: `file:line:col: message`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based line and column in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Location {
    /// The location of a byte offset in `source`.
    pub fn of(source: &str, offset: usize) -> Location {
        let offset = offset.min(source.len());
        let before = source.get(..offset).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    /// A problem at a place in the file.
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        ConfigError {
            location: Some(location),
            message: message.into(),
        }
    }

    /// A problem of the whole file.
    pub fn whole(message: impl Into<String>) -> Self {
        ConfigError {
            location: None,
            message: message.into(),
        }
    }

    /// `file:line:col: message` (or `file: message`).
    pub fn display_in(&self, file: &Path) -> String {
        match self.location {
            Some(l) => format!(
                "{}:{}:{}: {}",
                file.display(),
                l.line,
                l.column,
                self.message
            ),
            None => format!("{}: {}", file.display(), self.message),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(l) => write!(f, "{}:{}: {}", l.line, l.column, self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found in a configuration file (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The file.
    pub file: PathBuf,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self
            .errors
            .iter()
            .map(|e| e.display_in(&self.file))
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based() {
        let s = "a = 1\nbé = 2\n";
        assert_eq!(Location::of(s, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of(s, 6), Location { line: 2, column: 1 });
        // after "bé" (3 bytes) the column is 3 characters in.
        assert_eq!(Location::of(s, 9), Location { line: 2, column: 3 });
    }
}
