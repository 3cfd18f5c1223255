//! The docs are tested: every fenced block of `README.md` and `docs/**/*.md` is checked, none is
//! skipped.
//!
//! - `sh`/`bash`/`console` blocks: every `kars-backup …` command line (also inside a pipeline,
//!   after `$ ` in `console` blocks, in a `$(…)` substitution, and `cargo run --bin kars-backup
//!   -- …`) must be accepted by the command's own argument parser (`src/args.rs`, included
//!   below); a `bash scripts/…` line must name a script that exists. The README's five-minute tour
//!   (the block after `<!-- tour -->`) is run for real, line by line, in a temporary directory,
//!   and every line must exit 0.
//! - `toml` blocks must pass `kars-backup config check`; after `<!-- fragment -->` a block is a
//!   part of one job and is checked inside a minimal job (name, source and a local destination
//!   added where it has none); after `<!-- cargo -->` it is a `Cargo.toml` excerpt whose
//!   kars-backup crates and features must exist in this workspace.
//! - `rust` blocks are compiled as doc tests of the `kars-backup` crate: every page must be
//!   included in `kars-backup/src/lib.rs`. `text` blocks are shown as they are.
//! - Relative links must point at files that exist, and `#anchors` at their headings.

mod common;

/// The command's real argument definitions, the same source file the binary is built from.
#[allow(dead_code, unreachable_pub)]
#[path = "../src/args.rs"]
mod args;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;

/// Paths that other branches add (the examples of issue 15); links to them may dangle until
/// they land. Remove an entry once its file exists.
const PLANNED: &[&str] = &[];

/// Environment variables the snippets use, with harmless values.
const SNIPPET_ENV: &[(&str, &str)] = &[
    ("DATABASE_URL", "postgres://kars@db:5432/kars"),
    ("KARS_ALERT_WEBHOOK", "https://alerts.example.com/kars"),
    ("KARS_HC_UUID", "0b2c7bb5-4b3e-4d0a-9d3f-6c1e2f3a4b5c"),
];

/// A recipient that stands in for `$(kars-backup key show …)` when a line is only parsed.
const SAMPLE_RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `README.md` and every `docs/**/*.md`, relative to the workspace root.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read docs/") {
            let path = entry.expect("docs entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut out = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut out);
    out.sort();
    out.into_iter()
        .map(|p| p.strip_prefix(&root).expect("under root").to_path_buf())
        .collect()
}

/// One fenced block.
#[derive(Debug, Clone)]
struct Block {
    /// The info string's first word (`sh`, `toml`, `rust`, …).
    lang: String,
    /// The whole info string (`rust,no_run`).
    info: String,
    /// `<!-- marker -->` on the last non-blank line before the fence.
    marker: Option<String>,
    /// The content, with the fence's indentation removed.
    body: String,
    /// The fence's line (1-based).
    line: usize,
}

/// The fenced blocks of a page; an unclosed fence is an error.
fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    let mut last_text: Option<&str> = None;
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            if !trimmed.is_empty() {
                last_text = Some(trimmed);
            }
            continue;
        };
        let indent = line.len() - trimmed.len();
        let marker = last_text
            .and_then(|t| t.strip_prefix("<!--"))
            .and_then(|t| t.strip_suffix("-->"))
            .map(|t| t.trim().to_string());
        let mut body = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            body.push_str(l.get(indent..).unwrap_or(l.trim_start()));
            body.push('\n');
        }
        if !closed {
            return Err(format!("line {}: the fence is never closed", i + 1));
        }
        out.push(Block {
            lang: info.split([',', ' ']).next().unwrap_or("").to_string(),
            info: info.trim().to_string(),
            marker,
            body,
            line: i + 1,
        });
        last_text = None;
    }
    Ok(out)
}

/// A shell word: literal text, or a `$(…)` command substitution inside it.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Subst(String),
}

type Word = Vec<Piece>;

/// Splits one logical shell line into commands (at `|`, `||`, `&&`, `;`, `&`), each a list of
/// words; redirections and comments are dropped, quotes removed, `$VAR` expanded from
/// [`SNIPPET_ENV`] (unknown variables are an error).
fn shell_commands(line: &str) -> Result<Vec<Vec<Word>>, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut commands = vec![Vec::new()];
    let mut word: Word = Vec::new();
    let mut text = String::new();
    let mut in_word = false;
    let mut i = 0;
    let flush = |word: &mut Word, text: &mut String| {
        if !text.is_empty() {
            word.push(Piece::Text(std::mem::take(text)));
        }
    };
    let var = |name: &str| -> Result<String, String> {
        SNIPPET_ENV
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| format!("unknown variable ${name} in `{line}` (add it to SNIPPET_ENV)"))
    };
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (None, '#') if !in_word => break,
            (None, ' ' | '\t') => {
                if in_word {
                    flush(&mut word, &mut text);
                    commands.last_mut().unwrap().push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '|' | '&' | ';') => {
                if in_word {
                    flush(&mut word, &mut text);
                    commands.last_mut().unwrap().push(std::mem::take(&mut word));
                    in_word = false;
                }
                while i + 1 < chars.len() && matches!(chars[i + 1], '|' | '&') {
                    i += 1;
                }
                commands.push(Vec::new());
            }
            (None, '>' | '<') => {
                // a redirection: drop it and its target
                if in_word && text.chars().all(|d| d.is_ascii_digit()) && word.is_empty() {
                    text.clear();
                    in_word = false;
                } else if in_word {
                    flush(&mut word, &mut text);
                    commands.last_mut().unwrap().push(std::mem::take(&mut word));
                    in_word = false;
                }
                while i + 1 < chars.len() && matches!(chars[i + 1], '>' | '&') {
                    i += 1;
                }
                while i + 1 < chars.len() && chars[i + 1] == ' ' {
                    i += 1;
                }
                while i + 1 < chars.len() && !matches!(chars[i + 1], ' ' | '|' | ';' | '&') {
                    i += 1;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), _) if c == q => quote = None,
            (Some('\''), _) => text.push(c),
            (_, '\\') if i + 1 < chars.len() => {
                i += 1;
                text.push(chars[i]);
                in_word = true;
            }
            (_, '$') if chars.get(i + 1) == Some(&'(') => {
                let mut depth = 0;
                let start = i + 2;
                let mut end = None;
                for (j, &d) in chars.iter().enumerate().skip(i + 1) {
                    match d {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or_else(|| format!("unclosed $( in `{line}`"))?;
                flush(&mut word, &mut text);
                word.push(Piece::Subst(chars[start..end].iter().collect()));
                in_word = true;
                i = end;
            }
            (_, '$')
                if chars
                    .get(i + 1)
                    .is_some_and(|d| d.is_ascii_uppercase() || *d == '{') =>
            {
                let braced = chars[i + 1] == '{';
                let start = if braced { i + 2 } else { i + 1 };
                let mut j = start;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                text.push_str(&var(&name)?);
                i = if braced { j } else { j - 1 };
                in_word = true;
            }
            _ => {
                text.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in `{line}`"));
    }
    if in_word {
        flush(&mut word, &mut text);
        commands.last_mut().unwrap().push(word);
    }
    commands.retain(|c| !c.is_empty());
    Ok(commands)
}

/// The logical lines of a shell block: `\` continuations joined; in a `console` block only the
/// lines after a `$ ` prompt.
fn logical_lines(block: &Block) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for raw in block.body.lines() {
        let line = match (&current, block.lang.as_str()) {
            (Some(_), _) => raw.trim_start(),
            (None, "console") => match raw.strip_prefix("$ ") {
                Some(l) => l,
                None => continue,
            },
            (None, _) => raw,
        };
        let (line, continues) = match line.strip_suffix('\\') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let joined = match current.take() {
            Some(mut c) => {
                c.push(' ');
                c.push_str(line);
                c
            }
            None => line.to_string(),
        };
        if continues {
            current = Some(joined);
        } else {
            out.push(joined);
        }
    }
    out.extend(current);
    out
}

/// A word with substitutions replaced by `subst`.
fn expand(
    word: &Word,
    subst: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut s = String::new();
    for piece in word {
        match piece {
            Piece::Text(t) => s.push_str(t),
            Piece::Subst(cmd) => s.push_str(&subst(cmd)?),
        }
    }
    Ok(s)
}

/// The `kars-backup` argument lists of one logical line (its substitutions' too).
fn kars_invocations(line: &str) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    for command in shell_commands(line)? {
        for word in &command {
            for piece in word {
                if let Piece::Subst(inner) = piece {
                    out.extend(kars_invocations(inner)?);
                }
            }
        }
        let mut placeholder = |_: &str| Ok(SAMPLE_RECIPIENT.to_string());
        let words = command
            .iter()
            .map(|w| expand(w, &mut placeholder))
            .collect::<Result<Vec<_>, _>>()?;
        match words.first().map(String::as_str) {
            Some("kars-backup") => out.push(words[1..].to_vec()),
            Some("cargo") if words.windows(2).any(|w| w == ["--bin", "kars-backup"]) => {
                if let Some(at) = words.iter().position(|w| w == "--") {
                    out.push(words[at + 1..].to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Whether the real argument parser accepts `kars-backup ARGS`.
fn parse_check(args: &[String]) -> Result<(), String> {
    let argv = std::iter::once("kars-backup".to_string()).chain(args.iter().cloned());
    args::Cli::try_parse_from(argv).map(drop).map_err(|e| {
        format!(
            "`kars-backup {}` is refused by the parser: {}",
            args.join(" "),
            e.render()
        )
    })
}

/// The shell block's problems: command lines the parser refuses, scripts that do not exist.
fn check_shell(block: &Block) -> Vec<String> {
    let mut problems = Vec::new();
    for line in logical_lines(block) {
        match kars_invocations(&line) {
            Ok(invocations) => {
                for args in invocations {
                    if let Err(e) = parse_check(&args) {
                        problems.push(e);
                    }
                }
            }
            Err(e) => problems.push(e),
        }
        if let Ok(commands) = shell_commands(&line) {
            for command in commands {
                let mut keep = |s: &str| Ok(format!("$({s})"));
                let words: Vec<String> = command
                    .iter()
                    .filter_map(|w| expand(w, &mut keep).ok())
                    .collect();
                if words.first().is_some_and(|w| w == "bash")
                    && let Some(script) = words.get(1)
                    && !root().join(script).is_file()
                {
                    problems.push(format!("`{line}`: {script} does not exist"));
                }
            }
        }
    }
    problems
}

/// Runs `kars-backup config check --config FILE` on `toml`.
fn config_check(toml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("kars-backup.toml");
    std::fs::write(&path, toml).map_err(|e| e.to_string())?;
    let mut cmd = common::bin();
    cmd.args(["config", "check", "--config"]).arg(&path);
    for (k, v) in SNIPPET_ENV {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`kars-backup config check` fails ({}): {}\n--- the file checked:\n{toml}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A `<!-- fragment -->`: a part of one job, checked inside a minimal job.
fn fragment_config(fragment: &str) -> Result<String, String> {
    let table: toml::Table =
        toml::from_str(fragment).map_err(|e| format!("not valid TOML: {e}"))?;
    let has_destination = table
        .get("job")
        .and_then(|j| j.get("destination"))
        .is_some();
    let mut toml = String::from("[[job]]\n");
    if !table.contains_key("name") {
        toml.push_str("name = \"docs-fragment\"\n");
    }
    if !table.contains_key("source") {
        toml.push_str("source = \"sqlite:///var/lib/kars-docs/assets.db\"\n");
    }
    toml.push_str(fragment);
    if !has_destination {
        toml.push_str("\n[[job.destination]]\nurl = \"/var/backups/kars-docs\"\n");
    }
    Ok(toml)
}

/// A `<!-- cargo -->` excerpt: valid TOML whose kars-backup crates and features exist.
fn check_cargo(excerpt: &str) -> Result<(), String> {
    let table: toml::Table = toml::from_str(excerpt).map_err(|e| format!("not valid TOML: {e}"))?;
    let mut named = 0;
    for section in ["dependencies", "dev-dependencies"] {
        let Some(deps) = table.get(section).and_then(|d| d.as_table()) else {
            continue;
        };
        for (name, spec) in deps.iter().filter(|(n, _)| n.starts_with("kars-backup")) {
            named += 1;
            let dir = root().join(name);
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
                .map_err(|_| format!("{name} is not a crate of this workspace"))?;
            let manifest: toml::Table = toml::from_str(&manifest).map_err(|e| e.to_string())?;
            let features = manifest.get("features").and_then(|f| f.as_table());
            for feature in spec
                .get("features")
                .and_then(|f| f.as_array())
                .into_iter()
                .flatten()
            {
                let feature = feature.as_str().unwrap_or_default();
                if !features.is_some_and(|f| f.contains_key(feature)) {
                    return Err(format!("{name} has no feature {feature:?}"));
                }
            }
        }
    }
    if named == 0 {
        return Err("names no kars-backup crate".into());
    }
    Ok(())
}

/// Every problem of one page's blocks (the tour is checked by its own test).
fn check_markdown(text: &str) -> Vec<String> {
    let blocks = match blocks(text) {
        Ok(b) => b,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for block in &blocks {
        let at = |p: String| format!("block at line {}: {p}", block.line);
        let marker = block.marker.as_deref();
        match (block.lang.as_str(), marker) {
            ("sh" | "bash" | "console", None | Some("tour")) => {
                problems.extend(check_shell(block).into_iter().map(at));
            }
            ("toml", None) => problems.extend(config_check(&block.body).err().map(at)),
            ("toml", Some("fragment")) => problems.extend(
                fragment_config(&block.body)
                    .and_then(|t| config_check(&t))
                    .err()
                    .map(at),
            ),
            ("toml", Some("cargo")) => problems.extend(check_cargo(&block.body).err().map(at)),
            ("rust", None) if !block.info.contains("ignore") => {} // doc tests of kars-backup
            ("text", None) => {}
            (lang, marker) => problems.push(at(format!(
                "```{} {marker:?} is not a kind of block these docs check (sh, bash, console, \
toml with <!-- fragment --> or <!-- cargo -->, rust without ignore, text)",
                if lang.is_empty() {
                    "(no language)"
                } else {
                    lang
                }
            ))),
        }
    }
    problems
}

/// GitHub's anchor of a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Relative links whose file or `#anchor` does not exist.
fn check_links(page: &Path, text: &str) -> Vec<String> {
    let root = root();
    let dir = page.parent().unwrap_or(Path::new(""));
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut problems = Vec::new();
    for cap in link.captures_iter(text) {
        let target = &cap[1];
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
        let path = if file.is_empty() {
            page.to_path_buf()
        } else {
            normalize(&dir.join(file))
        };
        let full = root.join(&path);
        if !full.exists() {
            if !PLANNED.contains(&path.to_string_lossy().as_ref()) {
                problems.push(format!("link {target}: {} does not exist", path.display()));
            }
            continue;
        }
        if !anchor.is_empty() {
            let target_text = std::fs::read_to_string(&full).unwrap_or_default();
            if !anchors(&target_text).iter().any(|a| a == anchor) {
                problems.push(format!(
                    "link {target}: no heading #{anchor} in {}",
                    path.display()
                ));
            }
        }
    }
    problems
}

/// `a/b/../c` → `a/c`.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn every_snippet_of_every_page_is_right() {
    let mut problems = BTreeMap::new();
    let pages = pages();
    assert!(pages.len() >= 15, "README and the docs pages: {pages:?}");
    let (mut commands, mut tomls) = (0, 0);
    for page in &pages {
        let text = std::fs::read_to_string(root().join(page)).expect("read page");
        for block in blocks(&text).unwrap_or_default() {
            match block.lang.as_str() {
                "toml" => tomls += 1,
                "sh" | "bash" | "console" => {
                    for line in logical_lines(&block) {
                        commands += kars_invocations(&line).map_or(0, |i| i.len());
                    }
                }
                _ => {}
            }
        }
        let mut found = check_markdown(&text);
        found.extend(check_links(page, &text));
        if !found.is_empty() {
            problems.insert(page.display().to_string(), found);
        }
    }
    assert!(problems.is_empty(), "wrong snippets:\n{problems:#?}");
    // the pages have this many; far fewer would mean the extractor misses blocks
    assert!(
        commands >= 75,
        "only {commands} kars-backup command lines found"
    );
    assert!(tomls >= 10, "only {tomls} TOML blocks found");
}

#[test]
fn every_page_is_compiled_as_a_doc_test() {
    let lib = std::fs::read_to_string(root().join("kars-backup/src/lib.rs")).expect("lib.rs");
    for page in pages() {
        let include = format!("include_str!(\"../../{}\")", page.display());
        assert!(
            lib.contains(&include),
            "{} is not included in kars-backup/src/lib.rs (its Rust snippets would not be compiled)",
            page.display()
        );
    }
}

#[test]
fn the_readme_starts_with_the_two_commands_and_stays_short() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let first = &blocks(&readme).expect("README blocks")[0];
    assert_eq!(first.lang, "sh");
    let lines: Vec<_> = first.body.lines().collect();
    assert!(
        lines[0].starts_with("cargo run --release --bin kars-backup -- demo "),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("bash scripts/test.sh "), "{lines:?}");
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.contains("scripts/test.sh"),
        ".ci/run no longer calls scripts/test.sh"
    );
    assert!(
        readme.lines().count() < 150,
        "the README grew to {} lines",
        readme.lines().count()
    );
    assert!(!readme.contains("on the way"));
}

/// The README's five-minute tour, run as it stands in an empty directory: every line exits 0.
#[test]
fn the_five_minute_tour_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let tour = blocks(&readme)
        .expect("README blocks")
        .into_iter()
        .find(|b| b.marker.as_deref() == Some("tour"))
        .expect("the README has a block after <!-- tour -->");
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[String]| {
        let out = common::bin()
            .args(args)
            .current_dir(dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .output()
            .expect("run kars-backup");
        (out.status, out.stdout, out.stderr)
    };
    let lines = logical_lines(&tour);
    let mut ran = 0;
    for line in &lines {
        for command in shell_commands(line).expect("tour line") {
            let mut subst = |inner: &str| -> Result<String, String> {
                let invocations = kars_invocations(inner)?;
                let [args] = invocations.as_slice() else {
                    return Err(format!("$({inner}) is not one kars-backup command"));
                };
                let (status, stdout, stderr) = run(args);
                if !status.success() {
                    return Err(format!(
                        "$({inner}): {status}: {}",
                        String::from_utf8_lossy(&stderr)
                    ));
                }
                Ok(String::from_utf8_lossy(&stdout).trim().to_string())
            };
            let words = command
                .iter()
                .map(|w| expand(w, &mut subst))
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_else(|e| panic!("tour line `{line}`: {e}"));
            assert_eq!(
                words[0], "kars-backup",
                "the tour runs only kars-backup: `{line}`"
            );
            let (status, stdout, stderr) = run(&words[1..]);
            assert!(
                status.success(),
                "tour line `{line}` exits with {status}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 8, "the tour ran only {ran} commands");
    assert!(dir.path().join("kars-demo/restored.db").is_file());
    assert!(dir.path().join("backups/.kars-drills").is_dir());
}

// The checker itself: a wrong snippet of each kind is found.

/// Asserts that the checker finds exactly one problem in each page.
fn each_has_one_problem(pages: &[&str]) {
    for md in pages {
        let problems = check_markdown(md);
        assert_eq!(
            problems.len(),
            1,
            "expected one problem in {md}, found {problems:?}"
        );
    }
}

#[test]
fn a_flag_the_parser_does_not_know_is_found() {
    let md = "```sh\nkars-backup backup --db x.db --to /b --no-such-flag   # oops\n```\n";
    let problems = check_markdown(md);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("--no-such-flag"), "{problems:?}");
    // … also on a continuation line, inside a pipeline, after a console prompt, in $( )
    each_has_one_problem(&[
        "```sh\nkars-backup verify --from /b \\\n    --latests\n```\n",
        "```bash\necho x | kars-backup retention simulate --polcy daily=7\n```\n",
        "```console\n$ kars-backup lst --from /b\nerror: output lines are not commands\n```\n",
        "```sh\nkars-backup backup --db a --to /b --encrypt-to \"$(kars-backup key shw)\"\n```\n",
        "```sh\ncargo run --release --bin kars-backup -- demoo\n```\n",
        "```sh\nkars-backup restore --db a.db --from /b --latest --backup x.tar.gz\n```\n",
    ]);
}

#[test]
fn right_command_lines_pass() {
    let md = "```sh\n# a comment\nkars-backup backup --db \"$DATABASE_URL\" --to /b \\\n  --encrypt-to \"$(kars-backup key show)\" >> /var/log/k.log 2>&1\n\
ls b | sed -E 's/x/y/' | kars-backup retention simulate --policy \"daily=7,weekly=4\"\n\
kars-backup verify --from /b --latest --verify-query \"SELECT count(*) > 0 FROM users\"   # extra checks\n```\n\
```console\n$ kars-backup list --from /b\n  asset-data-1.tar.gz | 3 MB\n```\n";
    assert_eq!(check_markdown(md), Vec::<String>::new());
    let invocations = kars_invocations("kars-backup backup --db \"$DATABASE_URL\" --to /b --encrypt-to \"$(kars-backup key show)\" >> /l 2>&1").unwrap();
    assert_eq!(invocations.len(), 2, "{invocations:?}");
    assert_eq!(
        invocations[1],
        [
            "backup",
            "--db",
            SNIPPET_ENV[0].1,
            "--to",
            "/b",
            "--encrypt-to",
            SAMPLE_RECIPIENT
        ]
    );
}

#[test]
fn a_missing_script_and_an_unknown_variable_are_found() {
    assert_eq!(
        check_markdown("```sh\nbash scripts/no-such.sh\n```\n").len(),
        1
    );
    assert_eq!(
        check_markdown("```sh\nkars-backup backup --db $NO_SUCH_VAR --to /b\n```\n").len(),
        1
    );
}

#[test]
fn a_wrong_config_is_found() {
    let full = "```toml\n[[job]]\nname = \"a\"\nsource = \"/x.db\"\nno-such-key = 1\n[[job.destination]]\nurl = \"/b\"\n```\n";
    let problems = check_markdown(full);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("no-such-key"), "{problems:?}");
    // a fragment is checked inside a job: a wrong key, a wrong value, bad TOML
    each_has_one_problem(&[
        "<!-- fragment -->\n```toml\n[job.hooks]\nstopp = \"x\"\n```\n",
        "<!-- fragment -->\n```toml\nretention = \"daily=seven\"\n```\n",
        "<!-- fragment -->\n```toml\n[job.schedule]\ncron = \"0 2 * *\"\n```\n",
        "<!-- fragment -->\n```toml\n[[job.destination]]\nurl = \"s3://bucket/x\"\n```\n",
        "<!-- fragment -->\n```toml\n[job.verify\n```\n",
        // a whole config without a destination: not silently taken as a fragment
        "```toml\n[[job]]\nname = \"a\"\nsource = \"/x.db\"\n```\n",
    ]);
    let good = "<!-- fragment -->\n```toml\n[job.hooks]\nstop = \"x\"\n```\n";
    assert_eq!(check_markdown(good), Vec::<String>::new());
}

#[test]
fn a_wrong_cargo_excerpt_is_found() {
    let good = "<!-- cargo -->\n```toml\n[dev-dependencies]\nkars-backup = { version = \"0.1\", features = [\"testing\"] }\n```\n";
    assert_eq!(check_markdown(good), Vec::<String>::new());
    each_has_one_problem(&[
        "<!-- cargo -->\n```toml\n[dependencies]\nkars-backup = { version = \"0.1\", features = [\"no-such\"] }\n```\n",
        "<!-- cargo -->\n```toml\n[dependencies]\nkars-backup-nothing = \"0.1\"\n```\n",
        "<!-- cargo -->\n```toml\n[dependencies]\ntokio = \"1\"\n```\n",
    ]);
}

#[test]
fn no_block_is_skipped_silently() {
    each_has_one_problem(&[
        "```\nkars-backup lst\n```\n",
        "```python\nprint(1)\n```\n",
        "```rust,ignore\nfn x() {}\n```\n",
        "<!-- whatever -->\n```toml\na = 1\n```\n",
        "```sh\nkars-backup list --from /b\n",
    ]);
    // an indented block (in a list item) is checked too
    let md = "- item\n\n  ```sh\n  kars-backup lst\n  ```\n";
    assert_eq!(check_markdown(md).len(), 1);
}

#[test]
fn broken_links_are_found() {
    let page = Path::new("docs/operators/backup.md");
    assert_eq!(
        check_links(page, "[x](storage.md) [y](../../README.md)"),
        Vec::<String>::new()
    );
    assert_eq!(
        check_links(page, "[x](restore.md#restores-and-running-applications)"),
        Vec::<String>::new()
    );
    assert_eq!(check_links(page, "[x](nothing.md)").len(), 1);
    assert_eq!(
        check_links(page, "[x](restore.md#no-such-heading)").len(),
        1
    );
    assert_eq!(
        slug("Scheduling: the daemon, cron and systemd"),
        "scheduling-the-daemon-cron-and-systemd"
    );
}
