//! `kars-backup prune` and `kars-backup retention simulate`, end to end.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kars-backup"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kars-backup")
}

fn run_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kars-backup"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kars-backup");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(o: Output) -> Value {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON document")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn simulate_prints_the_runbook_plan_for_a_year_of_daily_backups() {
    let start = chrono::DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap();
    let times: String = (0..365)
        .map(|d| format!("{}\n", (start + chrono::Duration::days(d)).to_rfc3339()))
        .collect();
    let doc = ok(run_with_stdin(
        &[
            "retention",
            "simulate",
            "--policy",
            "daily=7,weekly=4,monthly=12,yearly=all",
            "--now",
            "2026-01-01T00:00:00Z",
        ],
        &times,
    ));
    let keep = doc["keep"].as_array().unwrap();
    let with = |rule: &str| {
        keep.iter()
            .filter(|k| {
                k["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r.as_str().unwrap().starts_with(rule))
            })
            .count()
    };
    assert_eq!(with("daily"), 7);
    assert_eq!(with("weekly"), 4);
    assert_eq!(with("monthly"), 12);
    assert_eq!(with("yearly"), 1);
    assert_eq!(keep[0]["time"], "2025-12-31T02:00:00Z");
    assert_eq!(
        keep.len() + doc["delete"].as_array().unwrap().len(),
        365,
        "every backup is either kept or deleted"
    );
    let first = keep[0]["reasons"].as_array().unwrap();
    assert!(
        first.iter().any(|r| r == "monthly 1 of 12 (2025-12)"),
        "{first:?}"
    );

    let bad = run_with_stdin(&["retention", "simulate"], "yesterday\n");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 1"));
    let bad = run(&["retention", "simulate", "--policy", "dayly=7"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn prune_applies_the_policy_and_leaves_foreign_and_runbook_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let dest = dir.path().join("b");
    let mut names = Vec::new();
    for _ in 0..3 {
        let doc = ok(run(&[
            "backup",
            "--db",
            &s(&db),
            "--to",
            &s(&dest),
            "--json",
        ]));
        names.push(doc["backup"].as_str().unwrap().to_string());
    }
    std::fs::write(dest.join("notes.txt"), "operator notes").unwrap();
    std::fs::write(dest.join("asset-data-20200101-020000.tar.gz"), "runbook").unwrap();

    let dry = ok(run(&[
        "prune",
        "--from",
        &s(&dest),
        "--policy",
        "last=1",
        "--dry-run",
        "--json",
    ]));
    assert_eq!(dry["delete"].as_array().unwrap().len(), 2);
    assert!(dry["deleted"].as_array().unwrap().is_empty());
    for n in &names {
        assert!(dest.join(n).exists(), "a dry run deletes nothing");
    }

    let report = ok(run(&[
        "prune",
        "--from",
        &s(&dest),
        "--policy",
        "last=1",
        "--json",
    ]));
    assert_eq!(report["deleted"].as_array().unwrap().len(), 2);
    assert_eq!(report["keep"][0]["item"]["name"], names[2].as_str());
    let left: Vec<&str> = report["left_alone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert!(
        left.contains(&"notes.txt") && left.contains(&"asset-data-20200101-020000.tar.gz"),
        "{left:?}"
    );
    assert!(dest.join("notes.txt").exists());
    assert!(dest.join("asset-data-20200101-020000.tar.gz").exists());
    for n in &names[..2] {
        assert!(!dest.join(n).exists());
        assert!(!dest.join(format!("{n}.meta")).exists());
        assert!(!dest.join(format!("{n}.pending")).exists());
    }
    let list = ok(run(&["list", "--from", &s(&dest), "--json"]));
    assert_eq!(list["latest"], names[2].as_str());

    // Far in the future with a short window: the newest backup still stays.
    let report = ok(run(&[
        "prune",
        "--from",
        &s(&dest),
        "--policy",
        "within=1d",
        "--now",
        "2100-01-01T00:00:00Z",
        "--json",
    ]));
    assert!(report["deleted"].as_array().unwrap().is_empty());
    assert!(dest.join(&names[2]).exists());
    let text = run(&["prune", "--from", &s(&dest), "--dry-run"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("newest backup"));
}
