//! End-to-end tests of the configuration file: `config check`, `backup --config`,
//! `schedule --emit`, `daemon`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::http::{Receiver, http_get};
use common::*;

fn make_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE assets (id INTEGER PRIMARY KEY, owner INTEGER, tag TEXT);
         INSERT INTO users (name) VALUES ('Ada'), ('Grace');
         INSERT INTO assets (owner, tag) VALUES (1, 'LAPTOP-1');",
    )
    .unwrap();
}

/// Committed backups at a destination, oldest first.
fn listed(dest: &Path) -> Vec<String> {
    let o = ok(run(&["list", "--from", &s(dest), "--json"]));
    let v = json(&o);
    let entries = v["backups"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .filter(|e| e["kind"] == "committed")
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("kars-backup.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_check_accepts_the_example_and_redacts_it() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kars-backup.toml");
    let o = ok(bin()
        .args(["config", "check", "--config", &s(&example)])
        .env(
            "DATABASE_URL",
            "postgres://kars:pg-pass-s3cret@db.internal:5432/kars",
        )
        .env(
            "KARS_ALERT_WEBHOOK",
            "https://hooks.example.com/services/T0/B0/webhook-s3cret",
        )
        .output()
        .unwrap());
    let out = stdout(&o);
    assert!(out.contains("OK, 2 job(s)"), "{out}");
    let next = out
        .lines()
        .find(|l| l.starts_with("# next runs of kars-sqlite: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(next.matches(" 02:00 UTC").count(), 3, "{next}");
    assert!(
        out.contains("postgres://kars:***@db.internal:5432/kars"),
        "{out}"
    );
    assert!(
        out.contains("webhook = \"https://hooks.example.com/***\""),
        "{out}"
    );
    let all = format!("{out}{}", stderr(&o));
    assert!(
        !all.contains("pg-pass-s3cret") && !all.contains("webhook-s3cret"),
        "{all}"
    );
    // every section of the example is applied: nothing is reported as parsed but ignored
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));

    // without any variable: every one has a default, so a new user's first check is green
    let o = ok(run(&["config", "check", "--config", &s(&example)]));
    let out = stdout(&o);
    assert!(out.contains("OK, 2 job(s)"), "{out}");
    assert!(out.contains("postgres://kars@localhost:5432/kars"), "{out}");
    assert!(
        !out.contains("webhook ="),
        "an empty webhook is none: {out}"
    );
    // strict: exit 2, one `file:line:col: message` per unset variable
    let o = run(&["config", "check", "--strict", "--config", &s(&example)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("DATABASE_URL"))
        .unwrap_or_else(|| panic!("{err}"));
    let place = line.split(": ").next().unwrap();
    let parts: Vec<&str> = place.rsplitn(3, ':').collect();
    assert!(
        parts[0].parse::<u32>().is_ok() && parts[1].parse::<u32>().is_ok(),
        "{line}"
    );
    assert!(
        line.contains("environment variable DATABASE_URL is not set (strict"),
        "{line}"
    );
    assert!(err.contains("KARS_ALERT_WEBHOOK"), "{err}");
    let o = run(&[
        "config",
        "check",
        "--strict",
        "--json",
        "--config",
        &s(&example),
    ]);
    assert_eq!(code(&o), 2);
    assert_eq!(json(&o)["ok"], false);
    // strict with the variables set: OK, and it says so
    let mut strict = bin();
    strict.args(["config", "check", "--strict", "--config", &s(&example)]);
    for var in ["KARS_SQLITE_DB", "KARS_AGE_IDENTITY"] {
        strict.env(var, format!("/value/of/{var}"));
    }
    let o = ok(strict
        .env("KARS_S3_BUCKET", "bucket")
        .env("KARS_HC_UUID", "uuid")
        .env("KARS_SCRATCH_DB", "postgres://kars@scratch:5432/postgres")
        .env("DATABASE_URL", "postgres://kars@db:5432/kars")
        .env("KARS_ALERT_WEBHOOK", "https://hooks.example.com/x")
        .output()
        .unwrap());
    assert!(
        stdout(&o).contains("(strict: every one is set)"),
        "{}",
        text(&o)
    );
}

#[test]
fn config_check_reports_errors_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "[[job]]\nname = \"a\"\nsource = \"/x.db\"\nsorce = 1\n",
            ":4:1: unknown field `sorce`",
        ),
        (
            "[[job]]\nname = \"a\"\nsource = \"/x.db\"\n[[job.destination]]\nurl = \"/b\"\n[job.schedule]\ncron = \"0 2 * *\"\n",
            ":7:8: invalid cron expression \"0 2 * *\": it has 4 fields",
        ),
        (
            "[[job]]\nname = \"a\"\nsource = \"/x.db\"\n[[job.destination]]\nurl = \"/b\"\n[job.schedule]\ncron = \"@daily\"\ntimezone = \"Europe/Atlantis\"\n",
            ":8:12: unknown time zone \"Europe/Atlantis\"",
        ),
        (
            "[[job]]\nname = \"a\"\nsource = \"/x.db\"\n[[job.destination]]\nurl = \"ftp://h/b\"\n",
            ":5:7: destination: unsupported destination scheme \"ftp\"",
        ),
        (
            "[[job]]\nname = \"a\"\nsource = \"/x.db\"\nthreads = \"two\"\n",
            ":4:11: invalid type",
        ),
        (
            "[[job]]\nname = \"a\"\nsource = \"${KARS_TEST_UNSET_VAR}\"\n",
            ":3:11: environment variable KARS_TEST_UNSET_VAR is not set",
        ),
    ];
    for (text, expected) in cases {
        let path = write_config(dir.path(), text);
        let o = run(&["config", "check", "--config", &s(&path)]);
        assert_eq!(code(&o), 2, "{text}\n{}", stderr(&o));
        let want = format!("{}{expected}", s(&path));
        assert!(
            stderr(&o).contains(&want),
            "want {want}\ngot {}",
            stderr(&o)
        );
        let o = run(&["config", "check", "--config", &s(&path), "--json"]);
        assert_eq!(code(&o), 2);
        assert_eq!(json(&o)["ok"], false);
        assert!(json(&o)["errors"][0]["line"].as_u64().is_some());
    }
}

#[test]
fn secrets_in_urls_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[job]]\nname = \"pg\"\nsource = \"postgres://admin:pg-very-s3cret@127.0.0.1:1/kars\"\nencryption = \"none\"\n[[job.destination]]\nurl = \"s3://bucket/p?endpoint=http://127.0.0.1:9&access_key=s3-key-s3cret\"\n";
    let path = write_config(dir.path(), text);
    let o = ok(run(&["config", "check", "--config", &s(&path), "--json"]));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !all.contains("pg-very-s3cret") && !all.contains("s3-key-s3cret"),
        "{all}"
    );
    assert_eq!(
        json(&o)["config"]["job"][0]["source"],
        "postgres://admin:***@127.0.0.1:1/kars"
    );
    // credentials inside an S3 URL are refused without being repeated
    let path = write_config(
        dir.path(),
        &text.replace("s3://bucket", "s3://AKIA:aws-s3cret-key@bucket"),
    );
    let o = run(&["config", "check", "--config", &s(&path)]);
    assert_eq!(code(&o), 2);
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        all.contains("carries credentials") && !all.contains("aws-s3cret-key"),
        "{all}"
    );
    // and a failing backup of that job does not print the password either
    let text = format!(
        "[daemon]\nstate-dir = \"{}\"\n{text}",
        s(&dir.path().join("state"))
    );
    let path = write_config(
        dir.path(),
        &text.replace(
            "s3://bucket/p?endpoint=http://127.0.0.1:9&access_key=s3-key-s3cret",
            &s(&dir.path().join("b")),
        ),
    );
    let o = run(&["backup", "--config", &s(&path)]);
    assert_ne!(code(&o), 0);
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains("pg-very-s3cret"), "{all}");
}

#[test]
fn backup_with_config_runs_the_jobs_with_retention() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let (a, b) = (dir.path().join("local-a"), dir.path().join("local-b"));
    let text = format!(
        r#"
[daemon]
state-dir = "{state}"
metrics-textfile = "{prom}"

[[job]]
name = "kars-sqlite"
source = "sqlite://${{KARS_TEST_DB}}"
compression = "zstd:3"
label = "v1.2.3"

[[job.destination]]
url = "{a}"
retention = "last=2"

[[job.destination]]
url = "file://{b}"

[[job]]
name = "other"
source = "{db}"
[[job.destination]]
url = "{c}"
"#,
        state = s(&dir.path().join("state")),
        prom = s(&dir.path().join("metrics.prom")),
        a = s(&a),
        b = s(&b),
        c = s(&dir.path().join("other")),
        db = s(&db),
    );
    let path = write_config(dir.path(), &text);
    let mut run_ids = Vec::new();
    for _ in 0..3 {
        let o = ok(bin()
            .args([
                "backup",
                "--config",
                &s(&path),
                "--job",
                "kars-sqlite",
                "--json",
            ])
            .env("KARS_TEST_DB", &db)
            .output()
            .unwrap());
        let v = json(&o);
        assert_eq!(v["ok"], true, "{v}");
        let jobs = v["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 1, "--job selects one job");
        let job = &jobs[0];
        assert_eq!(job["job"], "kars-sqlite");
        let run_id = job["run_id"].as_str().unwrap().to_string();
        // the run id is in the manifest
        assert_eq!(
            job["manifest"]["run_id"].as_str(),
            Some(run_id.as_str()),
            "{job}"
        );
        assert!(
            job["backup"].as_str().unwrap().ends_with(".tar.zst"),
            "{job}"
        );
        run_ids.push(run_id);
    }
    run_ids.dedup();
    assert_eq!(run_ids.len(), 3, "every run has its own id");
    // one-shot runs write the textfile metrics, counting across processes
    let prom = std::fs::read_to_string(dir.path().join("metrics.kars-sqlite.prom")).unwrap();
    let runs = prom
        .lines()
        .find(|l| {
            l.starts_with("kars_backup_runs_total{")
                && l.contains("job=\"kars-sqlite\"")
                && l.contains(&s(&a))
        })
        .unwrap_or_else(|| panic!("{prom}"));
    assert!(runs.ends_with(" 3"), "{runs}");
    assert!(
        prom.contains("kars_backup_last_success_timestamp_seconds{"),
        "{prom}"
    );
    // retention last=2 applied at a; b has no retention and keeps all three
    assert_eq!(listed(&a).len(), 2, "{:?}", listed(&a));
    assert_eq!(listed(&b).len(), 3, "{:?}", listed(&b));
    assert!(
        !dir.path().join("other").exists(),
        "--job ran only the named job"
    );

    // without --job every job runs (text output names each job and its run id)
    let o = ok(bin()
        .args(["backup", "--config", &s(&path)])
        .env("KARS_TEST_DB", &db)
        .output()
        .unwrap());
    let out = stdout(&o);
    assert!(
        out.contains("Job kars-sqlite (run ") && out.contains("Job other (run "),
        "{out}"
    );
    assert_eq!(listed(&dir.path().join("other")).len(), 1);

    // flags beside --config are refused; unknown jobs are named
    let o = run(&["backup", "--config", &s(&path), "--to", "/tmp/x"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("--to cannot be given with it"),
        "{}",
        stderr(&o)
    );
    let o = bin()
        .args(["backup", "--config", &s(&path), "--job", "nope"])
        .env("KARS_TEST_DB", &db)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("no job \"nope\" in the config; its jobs: kars-sqlite, other"),
        "{}",
        stderr(&o)
    );
    // flags alone still work without a config file
    let o = ok(run(&[
        "backup",
        "--db",
        &s(&db),
        "--to",
        &s(&dir.path().join("flags")),
        "--json",
    ]));
    assert_eq!(json(&o)["ok"], true);
}

#[test]
fn encryption_in_the_config_encrypts_and_a_bad_recipient_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let identity = dir.path().join("key.txt");
    let recipient = age_key(&identity);
    let config = |recipient: &str, out: &str| {
        format!(
            "[daemon]\nstate-dir = \"{}\"\n[[job]]\nname = \"enc\"\nsource = \"{}\"\n[[job.destination]]\nurl = \"{}\"\n[job.encryption]\nage-recipients = [\"{recipient}\"]\n",
            s(&dir.path().join("state")),
            s(&db),
            s(&dir.path().join(out))
        )
    };
    let path = write_config(dir.path(), &config(&recipient, "out"));
    let o = ok(run(&["config", "check", "--config", &s(&path)]));
    assert!(
        !stderr(&o).contains("[job.encryption] is not applied"),
        "{}",
        stderr(&o)
    );
    ok(run(&["backup", "--config", &s(&path)]));
    let names = listed(&dir.path().join("out"));
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".tar.gz.age"), "{names:?}");
    // Encrypted for real: no key, no verify (exit 2); with the identity it verifies.
    let out = s(&dir.path().join("out"));
    let o = run(&["verify", "--from", &out, "--latest"]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    ok(run(&[
        "verify",
        "--from",
        &out,
        "--latest",
        "--identity",
        &s(&identity),
    ]));

    // A recipient that is not one: refused before the database is read, nothing stored.
    let path = write_config(dir.path(), &config("age1notarecipient", "bad"));
    let o = run(&["backup", "--config", &s(&path)]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    let bad = dir.path().join("bad");
    assert!(!bad.exists() || listed(&bad).is_empty());
}

#[test]
fn schedule_emits_crontab_lines_and_systemd_units() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[[job]]
name = "kars-sqlite"
source = "/app/data/assets.db"
[[job.destination]]
url = "/var/backups/kars"
[job.schedule]
cron = "0 2 * * *"

[[job]]
name = "kars-postgres"
source = "${DATABASE_URL:-postgres://kars@db/kars}"
[[job.destination]]
url = "/var/backups/kars"
[job.schedule]
cron = "30 3 1 * 0"
timezone = "Europe/Berlin"
catch-up = false

[[job]]
name = "manual"
source = "/x.db"
[[job.destination]]
url = "/y"
"#;
    let path = write_config(dir.path(), text);
    let o = ok(run(&[
        "schedule",
        "--emit",
        "cron",
        "--config",
        &s(&path),
        "--binary",
        "/usr/local/bin/kars-backup",
    ]));
    let tab = stdout(&o);
    let want = format!(
        "0 2 * * * /usr/local/bin/kars-backup backup --config {} --job kars-sqlite >> /var/log/kars-backup.log 2>&1\n",
        s(&path)
    );
    assert!(tab.contains(&want), "{tab}");
    assert!(tab.contains("CRON_TZ=Europe/Berlin\n30 3 1 * 0 "), "{tab}");
    assert!(tab.contains("# job manual: no [job.schedule]"), "{tab}");
    assert!(
        tab.contains("DATABASE_URL"),
        "the crontab names the variables: {tab}"
    );

    let units = dir.path().join("units");
    ok(run(&[
        "schedule",
        "--emit",
        "systemd",
        "--config",
        &s(&path),
        "--binary",
        "/usr/local/bin/kars-backup",
        "--output-dir",
        &s(&units),
    ]));
    let timer = std::fs::read_to_string(units.join("kars-backup-kars-sqlite.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* 02:00:00 UTC\n"), "{timer}");
    assert!(timer.contains("Persistent=true\n"), "{timer}");
    let service = std::fs::read_to_string(units.join("kars-backup-kars-sqlite.service")).unwrap();
    assert!(service.contains("Type=oneshot\n"), "{service}");
    assert!(
        service.contains(&format!(
            "ExecStart=/usr/local/bin/kars-backup backup --config {} --job kars-sqlite\n",
            s(&path)
        )),
        "{service}"
    );
    let timer = std::fs::read_to_string(units.join("kars-backup-kars-postgres.timer")).unwrap();
    // cron runs on the 1st OR on Sundays; systemd needs one line for each
    assert!(timer.contains("OnCalendar=*-*-01 03:30:00 Europe/Berlin\nOnCalendar=Sun *-*-* 03:30:00 Europe/Berlin\n"), "{timer}");
    assert!(timer.contains("Persistent=false\n"), "{timer}");
    assert!(!units.join("kars-backup-manual.timer").exists());

    // systemd itself accepts every OnCalendar line
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            for name in [
                "kars-backup-kars-sqlite.timer",
                "kars-backup-kars-postgres.timer",
            ] {
                let t = std::fs::read_to_string(units.join(name)).unwrap();
                for cal in t.lines().filter_map(|l| l.strip_prefix("OnCalendar=")) {
                    let o = Command::new("systemd-analyze")
                        .args(["calendar", cal])
                        .output()
                        .unwrap();
                    assert!(o.status.success(), "systemd rejects {cal}: {}", stderr(&o));
                }
            }
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("systemd-analyze is needed under CI=true: {e}")
        }
        Err(e) => eprintln!("skipping the systemd-analyze check: {e}"),
    }
}

#[test]
fn a_failed_one_shot_run_alerts_the_webhook_with_its_run_id() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = Receiver::start();
    let text = format!(
        r#"
[daemon]
state-dir = "{state}"
[[job]]
name = "broken"
source = "{missing}"
[[job.destination]]
url = "{out}"
[job.notify]
webhook = "{hook}/alert"
[job.notify.ping]
fail = "{hook}/fail"
"#,
        state = s(&dir.path().join("state")),
        missing = s(&dir.path().join("no-such.db")),
        out = s(&dir.path().join("out")),
        hook = hooks.url,
    );
    let path = write_config(dir.path(), &text);
    let o = run(&["backup", "--config", &s(&path), "--json"]);
    assert_eq!(
        code(&o),
        3,
        "a missing database is a source error: {}",
        stderr(&o)
    );
    let doc = json(&o);
    let run_id = doc["jobs"][0]["run_id"].as_str().unwrap().to_string();
    let mut got = vec![hooks.next(), hooks.next()];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got[0].path, "/alert", "{got:?}");
    assert_eq!(got[1].path, "/fail", "{got:?}");
    let payload: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(payload["status"], "failure", "{payload}");
    assert_eq!(
        payload["run_id"].as_str(),
        Some(run_id.as_str()),
        "{payload}"
    );
    assert!(
        payload["error"].as_str().unwrap().contains("no-such.db"),
        "{payload}"
    );
}

#[cfg(unix)]
#[test]
fn the_daemon_runs_a_job_now_notifies_serves_metrics_and_stops_cleanly_on_sigterm() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let out = dir.path().join("backups");
    let hooks = Receiver::start();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let text = format!(
        r#"
[daemon]
state-dir = "{state}"
metrics-listen = "{metrics_addr}"

[notify]
webhook = "{hook}/hooks/${{KARS_TEST_HOOK_TOKEN}}"
on-success = true
[notify.ping]
start = "{hook}/ping/start"
success = "{hook}/ping/success"
fail = "{hook}/ping/fail"

[[job]]
name = "nightly"
source = "{db}"
[[job.destination]]
url = "{out}"
[job.schedule]
cron = "0 2 * * *"
timezone = "Europe/Berlin"
"#,
        state = s(&dir.path().join("state")),
        hook = hooks.url,
        db = s(&db),
        out = s(&out),
    );
    let path = write_config(dir.path(), &text);
    let mut child = bin()
        .args([
            "daemon",
            "--config",
            &s(&path),
            "--run-now",
            "--log-format",
            "json",
            "-v",
        ])
        .env("KARS_TEST_HOOK_TOKEN", "hook-token-s3cret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // start ping, then (after the backup) success ping and webhook
    let mut got = vec![hooks.next()];
    while got.len() < 3 {
        got.push(hooks.next());
    }
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths[0], "/ping/start", "{got:?}");
    assert!(paths.contains(&"/ping/success"), "{got:?}");
    let hook = got
        .iter()
        .find(|r| r.path == "/hooks/hook-token-s3cret")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(hook.method, "POST");
    let payload: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(payload["job"], "nightly", "{payload}");
    assert_eq!(payload["status"], "success", "{payload}");
    let run_id = payload["run_id"].as_str().unwrap().to_string();
    assert_eq!(listed(&out).len(), 1);
    // the manifest carries the same run id
    let manifest_path = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".meta"))
        .unwrap();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["run_id"].as_str(), Some(run_id.as_str()));

    // /metrics over HTTP, waiting for the server to be up
    let started = Instant::now();
    let metrics = loop {
        match std::net::TcpStream::connect(&metrics_addr) {
            Ok(_) => break http_get(&metrics_addr, "/metrics"),
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("no /metrics at {metrics_addr}: {e}"),
        }
    };
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let size = metrics
        .lines()
        .find(|l| l.starts_with("kars_backup_last_size_bytes{") && l.contains("job=\"nightly\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    let bytes: f64 = size.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes > 0.0, "{size}");
    assert!(metrics.contains("kars_backup_runs_total{"), "{metrics}");

    unsafe_kill(child.id(), libc::SIGTERM);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let logs = stderr(&o);
    assert!(logs.contains(&run_id), "the run id is in the logs: {logs}");
    assert!(logs.contains("daemon stopped"), "{logs}");
    assert!(
        !logs.contains("hook-token-s3cret"),
        "the webhook token leaked into the logs: {logs}"
    );
    // nothing half-listed: one committed backup, no incomplete entries
    let o = ok(run(&["list", "--from", &s(&out), "--all", "--json"]));
    let v = json(&o);
    let kinds: Vec<&str> = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["committed"], "{v}");
}

#[cfg(unix)]
fn unsafe_kill(pid: u32, signal: i32) {
    // `kill` is the only way to deliver a signal to a child; the pid is our own child's.
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts the daemon with `--run-now` on a 60 MB database, sends `signals` SIGTERMs once the
/// run has started (its start ping arrived), and returns the exit code, the logs and the
/// committed backups.
#[cfg(unix)]
fn daemon_interrupted(signals: usize) -> (i32, String, Vec<String>, Vec<String>) {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    ok(run(&["demo-db", "--path", &s(&db), "--size-mb", "60"]));
    let out = dir.path().join("backups");
    let hooks = Receiver::start();
    let text = format!(
        "[daemon]\nstate-dir = \"{}\"\n[[job]]\nname = \"big\"\nsource = \"{}\"\n[[job.destination]]\nurl = \"{}\"\n[job.schedule]\ncron = \"0 2 * * *\"\n[job.notify.ping]\nstart = \"{}/start\"\n",
        s(&dir.path().join("state")),
        s(&db),
        s(&out),
        hooks.url
    );
    let path = write_config(dir.path(), &text);
    let mut child = bin()
        .args(["daemon", "--config", &s(&path), "--run-now", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(hooks.next().path, "/start");
    for _ in 0..signals {
        std::thread::sleep(Duration::from_millis(150));
        unsafe_kill(child.id(), libc::SIGTERM);
    }
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let all = ok(run(&["list", "--from", &s(&out), "--json"]));
    let shown: Vec<String> = json(&all)["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    (code(&o), stderr(&o), listed(&out), shown)
}

#[cfg(unix)]
#[test]
fn sigterm_lets_the_in_flight_backup_finish_and_a_second_one_aborts_it_unlisted() {
    // one signal: the run finishes and is committed, then the daemon exits 0
    let (code, logs, committed, shown) = daemon_interrupted(1);
    assert_eq!(code, 0, "{logs}");
    assert_eq!(committed.len(), 1, "{logs}");
    assert_eq!(shown, vec!["committed"], "{logs}");
    // two signals: the run is aborted (nothing listed) unless it had already finished
    let (code, logs, committed, shown) = daemon_interrupted(2);
    assert_eq!(code, 0, "{logs}");
    eprintln!(
        "aborted: {}",
        logs.contains("aborted by a second shutdown signal")
    );
    if logs.contains("aborted by a second shutdown signal") {
        assert!(committed.is_empty() && shown.is_empty(), "{shown:?} {logs}");
    } else {
        assert_eq!(committed.len(), 1, "{logs}");
    }
}

#[test]
fn drill_with_config_uses_the_jobs_destinations_checks_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let config = |min_users: u32, query: &str| {
        format!(
            r#"
[daemon]
state-dir = "{state}"
[[job]]
name = "kars-sqlite"
source = "{db}"
[[job.destination]]
url = "{a}"
[[job.destination]]
url = "{b}"
[job.verify]
integrity = "full"
min-rows = {{ users = {min_users} }}
rpo = "24h"
rto = "1h"
[[job.verify.query]]
sql = "{query}"
value = "LAPTOP-1"
"#,
            state = s(&dir.path().join("state")),
            db = s(&db),
            a = s(&a),
            b = s(&b),
        )
    };
    let good = write_config(
        dir.path(),
        &config(2, "SELECT tag FROM assets WHERE id = 1"),
    );
    ok(run(&["backup", "--config", &s(&good)]));
    let o = ok(run(&["drill", "--config", &s(&good), "--latest", "--json"]));
    let text = json(&o).to_string();
    assert!(text.contains("users"), "the min-rows check ran: {text}");
    assert!(
        text.contains("SELECT tag FROM assets WHERE id = 1"),
        "the query ran: {text}"
    );

    // a plan the backup does not meet fails the drill as a verification failure
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, config(1000, "SELECT tag FROM assets WHERE id = 1")).unwrap();
    let o = run(&["drill", "--config", &s(&bad), "--latest", "--no-store"]);
    assert_eq!(code(&o), 5, "{}{}", stdout(&o), stderr(&o));

    // --from and the check flags belong to the file with --config
    let o = run(&["drill", "--config", &s(&good), "--latest", "--from", &s(&a)]);
    assert_eq!(code(&o), 2);
    let o = run(&[
        "drill",
        "--config",
        &s(&good),
        "--latest",
        "--min-rows",
        "users=1",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("put the checks there"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn status_with_config_checks_every_job_destination_against_its_rpo() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let text = format!(
        r#"
[daemon]
state-dir = "{state}"
[[job]]
name = "fresh"
source = "{db}"
[[job.destination]]
url = "{a}"
[[job.destination]]
url = "{weekly}"
tiers = ["daily", "weekly"]
[job.verify]
rpo = "12h"

[[job]]
name = "never-ran"
source = "{db}"
[[job.destination]]
url = "{c}"
tiers = ["weekly"]
"#,
        state = s(&dir.path().join("state")),
        db = s(&db),
        a = s(&dir.path().join("a")),
        weekly = s(&dir.path().join("w")),
        c = s(&dir.path().join("c")),
    );
    let path = write_config(dir.path(), &text);
    ok(run(&["backup", "--config", &s(&path), "--job", "fresh"]));
    let o = ok(run(&[
        "status",
        "--config",
        &s(&path),
        "--job",
        "fresh",
        "--json",
    ]));
    let v = json(&o);
    let dests = v["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 2, "{v}");
    assert!(
        dests
            .iter()
            .all(|d| d["job"] == "fresh" && d["within_rpo"] == true),
        "{v}"
    );
    assert_eq!(dests[0]["rpo_secs"].as_f64(), Some(12.0 * 3600.0), "{v}");
    // the job that never ran misses its RPO (exit 6); its weekly-only destination's target is
    // the default 24h widened by a week
    let o = run(&["status", "--config", &s(&path), "--json"]);
    assert_eq!(code(&o), 6, "{}", stdout(&o));
    let v = json(&o);
    let never = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["job"] == "never-ran")
        .unwrap()
        .clone();
    assert_eq!(never["within_rpo"], false, "{v}");
    assert_eq!(never["rpo_secs"].as_f64(), Some(8.0 * 86400.0), "{v}");
    // text output names the job
    let o = run(&["status", "--config", &s(&path)]);
    assert!(
        stdout(&o).contains("job never-ran: [RPO MISSED]"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn restore_and_verify_with_config_apply_the_jobs_plan_hooks_and_destinations() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let hooks = dir.path().join("hooks.log");
    let config = |min_users: u32| {
        format!(
            r#"
[daemon]
state-dir = "{state}"
[[job]]
name = "kars-sqlite"
source = "{db}"
[[job.destination]]
url = "{a}"
[[job.destination]]
url = "{b}"
[job.verify]
integrity = "full"
min-rows = {{ users = {min_users} }}
[[job.verify.query]]
sql = "SELECT tag FROM assets WHERE id = 1"
value = "LAPTOP-1"
[job.hooks]
stop = "echo stop >> {hooks}"
start = "echo start >> {hooks}"
health-attempts = 1
"#,
            state = s(&dir.path().join("state")),
            db = s(&db),
            a = s(&a),
            b = s(&b),
            hooks = s(&hooks),
        )
    };
    let good = write_config(dir.path(), &config(2));
    ok(run(&["backup", "--config", &s(&good)]));
    // The live database moves on after the backup; a restore brings back the backup's state.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("INSERT INTO users (name) VALUES ('Linus')", [])
        .unwrap();

    // verify --config: the job's destinations and plan (the query and min-rows ran).
    let o = ok(run(&[
        "verify",
        "--config",
        &s(&good),
        "--latest",
        "--json",
    ]));
    let text = json(&o).to_string();
    assert!(
        text.contains("SELECT tag FROM assets WHERE id = 1"),
        "{text}"
    );

    // A plan the backup does not meet: exit 5, the hooks never ran, the live file unchanged.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, config(1000)).unwrap();
    let before = std::fs::read(&db).unwrap();
    let o = run(&[
        "restore",
        "--config",
        &s(&bad),
        "--latest",
        "--db",
        &s(&db),
        "--yes",
    ]);
    assert_eq!(code(&o), 5, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "live database untouched"
    );
    assert!(
        !hooks.exists(),
        "no hook runs for a staged copy that failed"
    );

    // The good plan: restored from the job's destinations, with its stop/start hooks.
    ok(run(&[
        "restore",
        "--config",
        &s(&good),
        "--latest",
        "--db",
        &s(&db),
        "--yes",
    ]));
    let log = std::fs::read_to_string(&hooks).unwrap();
    assert_eq!(log.lines().collect::<Vec<_>>(), ["stop", "start"], "{log}");
    let users: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(users, 2, "the backup's rows, not the later insert");

    // --from belongs to the file with --config.
    let o = run(&[
        "restore",
        "--config",
        &s(&good),
        "--latest",
        "--db",
        &s(&db),
        "--yes",
        "--from",
        &s(&a),
    ]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn restore_config_hook_timeout_and_keep_previous_apply_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    make_db(&db);
    let dest = dir.path().join("backups");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[daemon]
state-dir = "{state}"
[[job]]
name = "kars-sqlite"
source = "{db}"
[[job.destination]]
url = "{dest}"
[job.hooks]
stop = "sleep 600"
timeout = "1h"
[job.restore]
keep-previous = 0
"#,
            state = s(&dir.path().join("state")),
            db = s(&db),
            dest = s(&dest),
        ),
    );
    ok(run(&["backup", "--config", &s(&config)]));
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore".to_string(),
            "--config".into(),
            s(&config),
            "--latest".into(),
            "--db".into(),
            s(&db),
            "--yes".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        bin().args(&args).output().unwrap()
    };
    // The file says the stop command may take an hour; the flag says one second, and wins.
    let started = std::time::Instant::now();
    let o = restore(&["--hook-timeout", "1s"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(
        stderr(&o).contains("`sleep 600` did not finish within 1s; its process group was killed"),
        "{}",
        text(&o)
    );
    assert!(stderr(&o).contains("nothing was swapped"), "{}", text(&o));

    // keep-previous = 0 from the file: the previous copy goes once the restore succeeded.
    let o = ok(restore(&["--stop-cmd", "true", "--json"]));
    let v = json(&o);
    assert_eq!(v["restore"]["previous_kept_at"], serde_json::Value::Null);
    assert_eq!(
        v["restore"]["previous_removed"].as_array().unwrap().len(),
        1
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("pre-restore"))
        .collect();
    assert!(names.is_empty(), "{names:?}");

    // --keep-previous on the command line wins over the file; status and inspect list the copy.
    ok(restore(&["--stop-cmd", "true", "--keep-previous", "1"]));
    let v = ok_json(run(&["inspect", "--db", &s(&db), "--json"]));
    let copies = v["previous_copies"].as_array().unwrap();
    assert_eq!(copies.len(), 1, "{v}");
    assert!(copies[0]["size_bytes"].as_u64().unwrap() > 0);
    let o = ok(run(&["inspect", "--db", &s(&db)]));
    assert!(
        stdout(&o).contains("previous copies kept by restores: 1,"),
        "{}",
        text(&o)
    );
    let v = json(&run(&["status", "--config", &s(&config), "--json"]));
    assert_eq!(
        v["previous_copies"][0]["copies"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    let o = ok(run(&["status", "--db", &s(&db)]));
    assert!(
        stdout(&o).contains("assets.db.pre-restore-"),
        "{}",
        text(&o)
    );
}

/// A config with one SQLite job backing up to `backups/`, `daemon` and `verify` tables added.
fn one_job_config(dir: &Path, daemon: &str, verify: &str) -> PathBuf {
    let db = dir.join("assets.db");
    make_db(&db);
    let text = format!(
        "[daemon]\nstate-dir = \"{state}\"\n{daemon}\n[[job]]\nname = \"kars-sqlite\"\nsource = \"{db}\"\n[[job.destination]]\nurl = \"{dest}\"\n{verify}\n",
        state = s(&dir.join("state")),
        db = s(&db),
        dest = s(&dir.join("backups")),
    );
    write_config(dir, &text)
}

#[test]
fn log_format_flag_wins_over_the_file_which_wins_over_human() {
    let json_line = |o: &std::process::Output| {
        stderr(o)
            .lines()
            .find(|l| l.contains("backup started"))
            .map(|l| serde_json::from_str::<Value>(l).is_ok())
    };
    let dir = tempfile::tempdir().unwrap();
    let config = one_job_config(dir.path(), "log-format = \"json\"", "");
    let o = ok(run(&["-v", "backup", "--config", &s(&config)]));
    assert_eq!(json_line(&o), Some(true), "{}", text(&o));
    let o = ok(run(&[
        "-v",
        "backup",
        "--config",
        &s(&config),
        "--log-format",
        "human",
    ]));
    assert_eq!(json_line(&o), Some(false), "{}", text(&o));
    let plain = tempfile::tempdir().unwrap();
    let config = one_job_config(plain.path(), "", "");
    let o = ok(run(&["-v", "backup", "--config", &s(&config)]));
    assert_eq!(json_line(&o), Some(false), "{}", text(&o));
    let o = ok(run(&[
        "-v",
        "--log-format",
        "json",
        "backup",
        "--config",
        &s(&config),
    ]));
    assert_eq!(json_line(&o), Some(true), "{}", text(&o));
}

#[test]
fn integrity_flag_wins_over_the_job_verify_table_which_wins_over_standard() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_job_config(dir.path(), "", "[job.verify]\nintegrity = \"quick\"");
    ok(run(&["backup", "--config", &s(&config)]));
    let path = s(&config);
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--config", path.as_str(), "--latest"];
        args.extend_from_slice(extra);
        stdout(&ok(run(&args)))
    };
    let file = verify(&[]);
    assert!(file.contains("quick_check of assets.db: ok"), "{file}");
    let flag = verify(&["--integrity", "standard"]);
    assert!(flag.contains("integrity_check of assets.db: ok"), "{flag}");
    assert!(!flag.contains("quick_check"), "{flag}");
    let plain = tempfile::tempdir().unwrap();
    let config = one_job_config(plain.path(), "", "");
    ok(run(&["backup", "--config", &s(&config)]));
    let o = ok(run(&["verify", "--config", &s(&config), "--latest"]));
    assert!(
        stdout(&o).contains("integrity_check of assets.db: ok"),
        "{}",
        text(&o)
    );
}
