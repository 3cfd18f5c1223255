//! Transcripts of `kars-backup` runs for snapshot tests of the human (text) output: the command,
//! its exit code, stdout and stderr, with what differs between runs (temporary paths, times,
//! durations, checksums, sizes, run and drill ids, versions, ports, generated database names)
//! replaced by `[PLACEHOLDERS]`, so a snapshot changes only when the wording does.

use std::process::Output;
use std::sync::LazyLock;

use regex::Regex;

use crate::common::{bin, code, stderr, stdout};

/// What a transcript replaces, beyond the patterns every transcript replaces.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scrub {
    /// Exact strings and their placeholders, replaced first, longest first.
    exact: Vec<(String, String)>,
}

impl Scrub {
    /// Replaces `what` with `placeholder` (e.g. a temporary directory with `[TMP]`).
    pub(crate) fn exact(mut self, what: impl Into<String>, placeholder: &str) -> Self {
        let what = what.into();
        assert!(!what.is_empty(), "an empty string to replace");
        self.exact.push((what, placeholder.to_string()));
        self.exact.sort_by_key(|(w, _)| std::cmp::Reverse(w.len()));
        self
    }

    /// `text` with the exact strings, then the varying patterns, replaced.
    pub(crate) fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (what, placeholder) in &self.exact {
            out = out.replace(what.as_str(), placeholder);
        }
        for (re, placeholder) in PATTERNS.iter() {
            out = re.replace_all(&out, *placeholder).into_owned();
        }
        out
    }

    /// Runs `kars-backup args` (with a fixed host label) and returns its transcript.
    pub(crate) fn run(&self, args: &[&str]) -> (Output, String) {
        let o = bin()
            .env("KARS_BACKUP_HOST", "test-host")
            .args(args)
            .output()
            .expect("run kars-backup");
        let t = self.transcript(args, &o);
        (o, t)
    }

    /// The transcript of a finished run.
    pub(crate) fn transcript(&self, args: &[&str], o: &Output) -> String {
        let shell_word = |a: &&str| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@[]+,".contains(c))
            {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        };
        let command: Vec<String> = args.iter().map(shell_word).collect();
        let section = |name: &str, text: &str| {
            if text.is_empty() {
                format!("--- {name}: (empty)\n")
            } else {
                format!("--- {name}:\n{}\n", text.trim_end_matches('\n'))
            }
        };
        let raw = format!(
            "$ kars-backup {}\nexit code: {}\n{}{}",
            command.join(" "),
            code(o),
            section("stdout", &stdout(o)),
            section("stderr", &stderr(o))
        );
        self.apply(&raw)
    }
}

/// The patterns of what varies between runs, in the order they are replaced.
static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // Random parts of temporary names: scratch directories of verify and drill
        // (`/tmp/kars-drill-Ab12Cd`), staging directories (`.kars-restore-Ab12Cd`).
        (r"/\S*/kars-(drill|verify)-[A-Za-z0-9]{6}\b", "[SCRATCH]"),
        (r"\.kars-restore-[A-Za-z0-9]{6}\b", ".kars-restore-[RANDOM]"),
        // SHA-256 checksums.
        (r"\b[0-9a-f]{64}\b", "[SHA256]"),
        // Drill ids (`20261125T020000.123Z-3f9a1c`) and run ids (`20241218T020000Z-3f9a1c`),
        // also inside generated names (`kars_verify_20241218t020000z_3f9a1c`).
        (r"(?i)\d{8}t\d{6}(\.\d+)?z[-_][0-9a-f]+", "[ID]"),
        // Times in names: backups (`20241218-020000`), kept copies (`20241218T020000`).
        (r"\d{8}[-T]\d{6}", "[STAMP]"),
        // RFC 3339 times, and `2024-12-18 02:00:00 UTC`.
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}| UTC)?",
            "[TIME]",
        ),
        // Durations: `in 0.3s`, `took 1.2s`, drill times (`12 ms`, `1.5 s`, `2 m 03 s`).
        (r"\b\d+\.\d+s\b", "[SECS]"),
        (r"\b\d+ m \d{2} s\b|\b\d+(\.\d+)? m?s\b", "[SECS]"),
        // Ages in `status` (`3s old`, `5m 12s old`).
        (r"\b\d+[dhms]( \d+[dhms])? old\b", "[AGE] old"),
        // Sizes (`24.0 KiB`, `512 B`): archives' vary with compression and times inside them.
        // (Not the `14 B` of `14 B-tree indexes`.)
        (r"\b\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)([^-\w]|$)", "[SIZE]$3"),
        // Versions: the tool's and the engines'.
        (r"kars-backup \d+\.\d+\.\d+\S*", "kars-backup [VERSION]"),
        (r"SQLite \d+(\.\d+)+", "SQLite [VERSION]"),
        (r"PostgreSQL \d+(\.\d+)*", "PostgreSQL [VERSION]"),
        // amcheck counts the system catalogs' indexes too, which differ between server versions.
        (r"\b\d+ B-tree indexes", "[N] B-tree indexes"),
        // Ports of servers the tests start.
        (r"(127\.0\.0\.1|localhost):\d+", "$1:[PORT]"),
    ]
    .into_iter()
    .map(|(re, placeholder)| (Regex::new(re).expect("a valid pattern"), placeholder))
    .collect()
});

/// The check lines (`[ok] …`, `[FAILED] …`) of a transcript.
pub(crate) fn check_lines(transcript: &str) -> Vec<&str> {
    transcript
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("[ok]") || l.starts_with("[FAILED]")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varying_parts_are_replaced() {
        let s = Scrub::default().exact("/tmp/.tmpXyZ", "[TMP]");
        assert_eq!(
            s.apply(
                "asset-data-20241218-020000.tar.gz: 12.5 KiB archive, sha256 \
                 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n  taken \
                 2024-12-18T02:00:00Z on h by kars-backup 0.1.0 (run 20241218T020000Z-3f9a1c) \
                 in /tmp/.tmpXyZ/a.db, 0.3s, SQLite 3.46.0, PostgreSQL 17.6, 127.0.0.1:5433"
            ),
            "asset-data-[STAMP].tar.gz: [SIZE] archive, sha256 [SHA256]\n  taken [TIME] on h by \
             kars-backup [VERSION] (run [ID]) in [TMP]/a.db, [SECS], SQLite [VERSION], \
             PostgreSQL [VERSION], 127.0.0.1:[PORT]"
        );
        assert_eq!(
            s.apply("14 B-tree indexes, 512 B\n3 KiB)"),
            "[N] B-tree indexes, [SIZE]\n[SIZE])"
        );
    }
}
