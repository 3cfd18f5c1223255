//! `kars-backup prune` and `kars-backup retention simulate`, end to end.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;

mod common;
use common::*;

fn run_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = bin()
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

/// A one-table database in `dir`.
fn tiny_db(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("assets.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    db
}

/// kars-backup with the S3 emulator's credentials.
fn run_s3(args: &[&str]) -> Output {
    bin_s3().args(args).output().expect("run kars-backup")
}

#[test]
fn simulate_prints_the_runbook_plan_for_a_year_of_daily_backups() {
    let start = chrono::DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap();
    let times: String = (0..365)
        .map(|d| format!("{}\n", (start + chrono::Duration::days(d)).to_rfc3339()))
        .collect();
    let doc = ok_json(run_with_stdin(
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
    let db = tiny_db(dir.path());
    let dest = dir.path().join("b");
    let mut names = Vec::new();
    for _ in 0..3 {
        let doc = ok_json(run(&[
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

    let dry = ok_json(run(&[
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

    let report = ok_json(run(&[
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
    let list = ok_json(run(&["list", "--from", &s(&dest), "--json"]));
    assert_eq!(list["latest"], names[2].as_str());

    // Far in the future with a short window: the newest backup still stays.
    let report = ok_json(run(&[
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

#[test]
fn backup_prunes_after_a_successful_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = tiny_db(dir.path());
    let dest = dir.path().join("b");
    let mut last = String::new();
    for _ in 0..3 {
        let doc = ok_json(run(&[
            "backup",
            "--db",
            &s(&db),
            "--to",
            &s(&dest),
            "--prune",
            "--policy",
            "last=2",
            "--json",
        ]));
        last = doc["backup"].as_str().unwrap().to_string();
        assert!(
            doc["prune"][0]["report"]["errors"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{doc}"
        );
    }
    let list = ok_json(run(&["list", "--from", &s(&dest), "--json"]));
    let names: Vec<&str> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[1], last);
    let o = run(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &s(&dest),
        "--policy",
        "last=2",
    ]);
    assert_eq!(o.status.code(), Some(2), "--policy needs --prune");
}

/// With `--tiering runbook`, a local destination takes every backup and a cloud one (the S3
/// emulator) only weekly, monthly and yearly ones; the tags are in the manifest. Which tags a
/// run gets depends on today's date; the routing itself is tested on fixed dates in core.
#[test]
fn tiering_routes_by_the_runbook_table() {
    use kars_backup::core::testing::service_var;
    let (Some(endpoint), Some(bucket)) = (
        service_var("KARS_TEST_S3_ENDPOINT"),
        service_var("KARS_TEST_S3_BUCKET"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = tiny_db(dir.path());
    let local = dir.path().join("local");
    let cloud = format!(
        "s3://{bucket}/tiering-{}?endpoint={endpoint}&allow_http=true",
        std::process::id()
    );
    // Unencrypted, the job is refused also on a day its tiers keep the cloud out of the run:
    // it would store plaintext there on the next Sunday.
    let (db_arg, local_arg) = (s(&db), s(&local));
    let mut args = vec![
        "backup",
        "--db",
        &db_arg,
        "--to",
        &local_arg,
        "--to",
        &cloud,
        "--tiering",
        "runbook",
    ];
    let o = run_s3(&args);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(!local.exists(), "nothing written");
    args.extend(["--no-encrypt", "--json"]);
    let doc = ok_json(run_s3(&args));
    let tags: Vec<&str> = doc["manifest"]["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags[0], "daily", "{tags:?}");
    let expected_tags = kars_backup::core::Tier::of(chrono::Utc::now());
    assert_eq!(tags.len(), expected_tags.len(), "{tags:?}");
    let cloud_takes = tags
        .iter()
        .any(|t| ["weekly", "monthly", "yearly"].contains(t));
    let destinations = doc["destinations"].as_array().unwrap();
    assert_eq!(destinations.len(), if cloud_takes { 2 } else { 1 });
    assert_eq!(
        doc["skipped_by_tier_rules"].as_array().unwrap().len(),
        usize::from(!cloud_takes)
    );
    assert!(local.join(doc["backup"].as_str().unwrap()).exists());

    // Custom tiers: a cloud destination that keeps daily backups takes every run.
    let o = run_s3(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &cloud,
        "--cloud-tiers",
        "daily",
        "--no-encrypt",
        "--json",
    ]);
    let doc = ok_json(o);
    assert_eq!(doc["destinations"].as_array().unwrap().len(), 1);
    // Keeping nothing locally and a local destination only: refused, nothing written.
    let o = run(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &s(&dir.path().join("l2")),
        "--local-tiers",
        "yearly",
    ]);
    let yearly_today = expected_tags.contains(&kars_backup::core::Tier::Yearly);
    assert_eq!(o.status.code(), Some(if yearly_today { 0 } else { 2 }));
}

#[test]
fn status_reports_a_missed_rpo_with_its_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let db = tiny_db(dir.path());
    let fresh = dir.path().join("fresh");
    let stale = dir.path().join("stale");
    ok_json(run(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &s(&fresh),
        "--to",
        &s(&stale),
        "--json",
    ]));
    let doc = ok_json(run(&["status", "--from", &s(&fresh), "--json"]));
    assert_eq!(doc["destinations"][0]["within_rpo"], true);
    assert_eq!(doc["destinations"][0]["committed"], 1);

    // Make the stale copy's backup two days old (the manifest's snapshot time).
    let meta = std::fs::read_dir(&stale)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".meta"))
        .unwrap();
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let old = chrono::Utc::now() - chrono::Duration::hours(48);
    manifest["created_at"] = old.to_rfc3339().into();
    std::fs::write(&meta, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let o = run(&[
        "status",
        "--from",
        &s(&fresh),
        "--from",
        &s(&stale),
        "--rpo",
        "24h",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(6));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["destinations"][0]["within_rpo"], true);
    assert_eq!(doc["destinations"][1]["within_rpo"], false);
    assert!(doc["destinations"][1]["age_secs"].as_i64().unwrap() >= 48 * 3600);
    let o = run(&["status", "--from", &s(&stale), "--rpo", "3d"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("[ok]"));

    let o = run(&["status", "--from", &s(&dir.path().join("empty"))]);
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no committed backup"));
}
