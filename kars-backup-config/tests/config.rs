//! Parsing, errors with their line and column, interpolation and redaction of config files.

use std::path::Path;

use kars_backup_config::{ConfigErrors, effective_json, effective_toml, parse_with_env};

fn env(name: &str) -> Option<String> {
    match name {
        "DATABASE_URL" => Some("postgres://kars:pg-s3cret-pw@db.internal:5432/kars".into()),
        "ALERT_TOKEN" => Some("tok-9f8e7d6c5b".into()),
        "KARS_ALERT_WEBHOOK" => {
            Some("https://hooks.example.com/services/T000/B000/hook-s3cret".into())
        }
        _ => None,
    }
}

fn parse(text: &str) -> Result<kars_backup_config::Config, ConfigErrors> {
    parse_with_env(text, Path::new("kars.toml"), env)
}

/// [`GOOD`] with other `[job.schedule]` lines.
fn with_schedule(lines: &str) -> String {
    GOOD.replace("cron = \"0 2 * * *\"", lines)
}

fn error_of(text: &str) -> String {
    parse(text).expect_err("must fail").to_string()
}

const GOOD: &str = r#"
[[job]]
name = "kars-sqlite"
source = "sqlite:///app/data/assets.db"

[[job.destination]]
url = "/var/backups/kars"

[job.schedule]
cron = "0 2 * * *"
"#;

#[test]
fn a_minimal_file_parses_with_defaults() {
    let c = parse(GOOD).unwrap();
    let job = &c.jobs[0];
    assert_eq!(job.compression.to_string(), "gzip:6");
    assert!(
        job.retention_for(0).is_none(),
        "no retention configured: nothing is pruned"
    );
    let s = job.schedule.as_ref().unwrap();
    assert_eq!(s.schedule.time_zone().name(), "UTC");
    assert!(s.catch_up);
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = GOOD.replace("source =", "sorce = \"x\"\nsource =");
    let e = error_of(&text);
    assert!(e.starts_with("kars.toml:4:1: unknown field `sorce`"), "{e}");
}

#[test]
fn unknown_key_in_a_nested_table_is_named_with_its_line() {
    let text = format!("{GOOD}catchup = true\n");
    let e = error_of(&text);
    assert!(
        e.starts_with("kars.toml:11:1: unknown field `catchup`"),
        "{e}"
    );
}

#[test]
fn bad_type_has_the_value_line() {
    let text = GOOD.replace(
        "\n\n[[job.destination]]",
        "\nthreads = \"four\"\n\n[[job.destination]]",
    );
    let e = error_of(&text);
    assert!(e.starts_with("kars.toml:5:11: "), "{e}");
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn bad_cron_expression_is_placed_and_explained() {
    let e = error_of(&GOOD.replace("0 2 * * *", "0 25 * * *"));
    assert!(e.starts_with("kars.toml:10:8: "), "{e}");
    assert!(e.contains("hour field") && e.contains("0-23"), "{e}");
}

#[test]
fn cron_is_checked_by_the_scheduler_without_any_setup() {
    // What only the scheduler refuses (croner's own extensions, a date that never comes) is
    // refused by `load`/`parse` alone, at the value.
    for (cron, why) in [
        ("0 2 L * *", "L, W, # and +"),
        ("0 0 30 2 *", "never matches"),
        ("5/20 * * * *", "minute field \"5/20\""),
    ] {
        let e = error_of(&GOOD.replace("0 2 * * *", cron));
        assert!(
            e.starts_with("kars.toml:10:8: invalid cron expression"),
            "{e}"
        );
        assert!(e.contains(why), "{e}");
    }
}

#[test]
fn schedule_is_the_schedulers_type_in_the_time_zone() {
    use chrono::{TimeZone, Utc};
    let text = with_schedule("cron = \"30 2 * * 1-5\"\ntimezone = \"Europe/Berlin\"");
    let c = parse(&text).unwrap();
    let s = &c.jobs[0].schedule.as_ref().unwrap().schedule;
    assert_eq!(s.expression(), "30 2 * * 1-5");
    // Saturday 2024-07-06 12:00 UTC: next is Monday 02:30 CEST = 00:30 UTC.
    let after = Utc.with_ymd_and_hms(2024, 7, 6, 12, 0, 0).unwrap();
    assert_eq!(
        s.next_after(after),
        Some(Utc.with_ymd_and_hms(2024, 7, 8, 0, 30, 0).unwrap())
    );
    assert_eq!(s.on_calendar(), ["Mon..Fri *-*-* 02:30:00 Europe/Berlin"]);
}

#[test]
fn load_refuses_a_bad_cron_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kars.toml");
    std::fs::write(&path, GOOD.replace("0 2 * * *", "0 2 * * 8")).unwrap();
    let e = kars_backup_config::load(&path).unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    let at = e.errors[0].location.unwrap();
    assert_eq!((at.line, at.column), (10, 8), "{e}");
    assert!(
        e.errors[0].message.contains("day-of-week field \"8\""),
        "{e}"
    );
}

#[test]
fn unknown_time_zone_is_placed() {
    let text = with_schedule("cron = \"0 2 * * *\"\ntimezone = \"Mars/Olympus\"");
    let e = error_of(&text);
    assert!(e.starts_with("kars.toml:11:12: "), "{e}");
    assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
}

#[test]
fn missing_environment_variable_names_variable_and_place() {
    let text = GOOD.replace("\"sqlite:///app/data/assets.db\"", "\"${KARS_NOT_SET}\"");
    let e = error_of(&text);
    assert!(
        e.starts_with("kars.toml:4:11: environment variable KARS_NOT_SET is not set"),
        "{e}"
    );
    // with a default it parses
    let text = GOOD.replace(
        "\"sqlite:///app/data/assets.db\"",
        "\"${KARS_NOT_SET:-/data/assets.db}\"",
    );
    assert_eq!(
        parse(&text).unwrap().jobs[0].source.expose(),
        "/data/assets.db"
    );
}

#[test]
fn bad_destination_url_is_placed() {
    let e = error_of(&GOOD.replace("/var/backups/kars", "ftp://host/backups"));
    assert!(e.starts_with("kars.toml:7:7: destination: "), "{e}");
    assert!(e.contains("unsupported destination scheme \"ftp\""), "{e}");
}

#[test]
fn destination_transfer_options_go_into_the_sink_url() {
    // An off-site destination needs encryption or the explicit opt-out (issue 19).
    let text = GOOD.replace(
        "source = \"sqlite:///app/data/assets.db\"",
        "source = \"sqlite:///app/data/assets.db\"\nencryption = \"none\"",
    );
    let text = text.replace(
        "url = \"/var/backups/kars\"",
        "url = \"s3://b/kars?region=eu-west-1&download_concurrency=2\"\n[job.destination.transfer]\ndownload-part-size = \"8MiB\"\ndownload-concurrency = 6",
    );
    let c = parse(&text).unwrap();
    let d = &c.jobs[0].destinations[0];
    assert_eq!(
        d.sink_url().unwrap(),
        "s3://b/kars?region=eu-west-1&download_concurrency=2&download_part_size=8MiB&download_concurrency=6"
    );
    assert!(
        effective_json(&c)
            .to_string()
            .contains("download-part-size")
    );
}

/// The transfer options an object-store builder reads from `url`'s query (in order: the last
/// one wins, as the builders do).
fn transfer_of(url: &str) -> kars_backup_storage::TransferOptions {
    let mut t = kars_backup_storage::TransferOptions::default();
    for (k, v) in url::Url::parse(url).unwrap().query_pairs() {
        t.set_from_query(&k, &v).unwrap();
    }
    t
}

#[test]
fn the_transfer_table_wins_over_the_url_query_which_wins_over_automatic() {
    let text = GOOD.replace(
        "source = \"sqlite:///app/data/assets.db\"",
        "source = \"sqlite:///app/data/assets.db\"\nencryption = \"none\"",
    );
    let with_table = text.replace(
        "url = \"/var/backups/kars\"",
        "url = \"s3://b/kars?download_concurrency=2&upload_concurrency=3\"\n[job.destination.transfer]\ndownload-concurrency = 6",
    );
    let c = parse(&with_table).unwrap();
    let t = transfer_of(&c.jobs[0].destinations[0].sink_url().unwrap());
    assert_eq!(t.download_concurrency, Some(6), "the table wins");
    assert_eq!(
        t.upload_concurrency,
        Some(3),
        "the URL's where the table is silent"
    );
    assert_eq!(t.download_part_size, None, "chosen automatically");
    let bare = text.replace("url = \"/var/backups/kars\"", "url = \"s3://b/kars\"");
    let c = parse(&bare).unwrap();
    let t = transfer_of(&c.jobs[0].destinations[0].sink_url().unwrap());
    assert_eq!(t, kars_backup_storage::TransferOptions::default());
}

#[test]
fn bad_transfer_options_are_placed() {
    let local = GOOD.replace(
        "url = \"/var/backups/kars\"",
        "url = \"/var/backups/kars\"\n[job.destination.transfer]\ndownload-concurrency = 4",
    );
    let e = error_of(&local);
    assert!(e.starts_with("kars.toml:8:"), "{e}");
    assert!(e.contains("transfer options apply to s3://"), "{e}");
    let zero = GOOD.replace(
        "url = \"/var/backups/kars\"",
        "url = \"s3://b/k\"\n[job.destination.transfer]\ndownload-concurrency = 0",
    );
    assert!(error_of(&zero).contains("download-concurrency = 0"));
    let unknown = GOOD.replace(
        "url = \"/var/backups/kars\"",
        "url = \"s3://b/k\"\n[job.destination.transfer]\nstreams = 4",
    );
    assert!(error_of(&unknown).contains("streams"));
}

#[test]
fn semantic_errors_are_all_reported() {
    let text = r#"
[[job]]
name = "a"
source = "/data/a.db"
destination = []

[[job]]
name = "a"
source = "/data/b.db"
compression = "brotli"
[[job.destination]]
url = "/b"
"#;
    let e = error_of(text);
    assert!(
        e.contains("kars.toml:10:15: unknown compression \"brotli\""),
        "{e}"
    );
    let text = text.replace("compression = \"brotli\"\n", "");
    let e = error_of(&text);
    assert!(
        e.contains("kars.toml:3:8: job \"a\" has no destination"),
        "{e}"
    );
    assert!(
        e.contains("kars.toml:8:8: duplicate job name \"a\" (also on line 3)"),
        "{e}"
    );
}

#[test]
fn compression_level_as_its_own_key() {
    let text = GOOD.replace(
        "\n\n[[job.destination]]",
        "\ncompression = \"zstd\"\ncompression-level = 19\n\n[[job.destination]]",
    );
    assert_eq!(
        parse(&text).unwrap().jobs[0].compression.to_string(),
        "zstd:19"
    );
    let e = error_of(&text.replace("19", "30"));
    assert!(
        e.starts_with("kars.toml:6:21: compression-level: zstd level must be 1..=22"),
        "{e}"
    );
}

#[test]
fn retention_and_tiers() {
    let text = r#"
[[job]]
name = "j"
source = "/data/a.db"
tiering = "runbook"
encryption = "none"
[[job.destination]]
url = "/var/backups/kars"
[[job.destination]]
url = "s3://bucket/kars"
[[job.destination]]
url = "gs://bucket/kars"
retention = "last=3"
"#;
    let c = parse(text).unwrap();
    let j = &c.jobs[0];
    assert_eq!(j.retention_for(0).unwrap().to_string(), "daily=7,weekly=4");
    assert_eq!(
        j.retention_for(1).unwrap().to_string(),
        "weekly=4,monthly=12,yearly=all"
    );
    assert_eq!(j.retention_for(2).unwrap().to_string(), "last=3");
    let e = error_of(&text.replace("last=3", "daily=seven"));
    assert!(
        e.starts_with("kars.toml:13:13: bad count \"seven\" for daily"),
        "{e}"
    );
}

#[test]
fn verification_plan_maps_to_core() {
    use kars_backup_core::verify::Expectation;
    let text = format!(
        "{GOOD}{}",
        r#"
[job.verify]
integrity = "quick"
min-rows = { users = 1, assets = 2 }
audit-log = "audit_logs.created_at"
rpo = "12h"
[[job.verify.query]]
sql = "SELECT 1"
[[job.verify.query]]
sql = "SELECT name FROM t"
value = "x"
[[job.verify.query]]
sql = "SELECT * FROM t"
rows = 3
"#
    );
    let c = parse(&text).unwrap();
    let v = c.jobs[0].verify.as_ref().unwrap();
    let at = chrono::Utc::now();
    let plan = v.plan(at);
    assert_eq!(plan.integrity, kars_backup_core::IntegrityLevel::Quick);
    assert_eq!(plan.min_rows.len(), 2);
    assert_eq!(plan.min_rows[1].name, "users");
    let expects: Vec<&Expectation> = plan.queries.iter().map(|q| &q.expect).collect();
    assert_eq!(expects[0], &Expectation::True);
    assert_eq!(expects[1], &Expectation::Value("x".into()));
    assert_eq!(expects[2], &Expectation::RowCount(3));
    match expects[3] {
        Expectation::TimeBetween { not_before, .. } => {
            assert_eq!(*not_before, at - chrono::Duration::hours(12))
        }
        other => panic!("audit-log check missing: {other:?}"),
    }
    let e = error_of(&text.replace("rows = 3", "rows = 3\nvalue = \"y\""));
    assert!(e.contains("either value or rows"), "{e}");
}

#[test]
fn secrets_never_reach_the_effective_config() {
    let text = r#"
[notify]
webhook = "${KARS_ALERT_WEBHOOK}"
command = "curl -H 'Authorization: Bearer ${ALERT_TOKEN}' https://pager.example.com"
[notify.ping]
fail = "https://hc-ping.com/3f2a9b1c-uuid-token/fail"

[[job]]
name = "pg"
source = "${DATABASE_URL}"
[job.encryption]
age-recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
[[job.destination]]
url = "s3://bucket/kars?endpoint=http://127.0.0.1:9000&allow_http=true"
[[job.destination]]
url = "https://acct.blob.core.windows.net/c/p?sig=azure-sig-s3cret&sv=2020"
[job.verify]
scratch-db = "postgres://admin:scratch-s3cret@db.internal/postgres"
"#;
    let c = parse(text).unwrap();
    let shown = format!(
        "{}\n{}\n{:?}\n{:?}",
        effective_toml(&c),
        effective_json(&c),
        c,
        c.jobs[0]
    );
    for secret in [
        "pg-s3cret-pw",
        "tok-9f8e7d6c5b",
        "hook-s3cret",
        "3f2a9b1c-uuid-token",
        "azure-sig-s3cret",
        "scratch-s3cret",
    ] {
        assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
    }
    assert!(
        shown.contains("postgres://kars:***@db.internal:5432/kars"),
        "{shown}"
    );
    assert!(shown.contains("Bearer ${ALERT_TOKEN}"), "{shown}");
    assert!(shown.contains("https://hooks.example.com/***"), "{shown}");
    // an S3 URL carrying a key is refused, and the error does not repeat it
    let e = error_of(&text.replace(
        "s3://bucket/kars?endpoint",
        "s3://AKIAXX:aws-s3cret-key@bucket/kars?endpoint",
    ));
    assert!(e.contains("carries credentials"), "{e}");
    assert!(!e.contains("aws-s3cret-key"), "{e}");
}

#[test]
fn the_example_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kars-backup.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = parse_with_env(&text, &path, env).unwrap();
    assert_eq!(c.jobs.len(), 2);
    assert_eq!(
        c.jobs[0].retention_for(0).unwrap().to_string(),
        "daily=7,weekly=4"
    );
    assert_eq!(
        c.jobs[1].retention_for(1).unwrap().to_string(),
        "weekly=4,monthly=12,yearly=all"
    );
    assert!(c.env_names().contains(&"DATABASE_URL".to_string()));
    // Both jobs encrypt their S3 copies with the identity file, and use the KARS checks on
    // `audit_logs.timestamp`.
    for job in &c.jobs {
        assert!(job.encrypts(), "{}", job.name);
        assert!(job.plaintext_off_site().is_empty(), "{}", job.name);
        let verify = job.verify.as_ref().unwrap();
        assert_eq!(
            verify.checks,
            Some(kars_backup_core::preset::CheckPreset::Kars)
        );
        let plan = verify.plan(chrono::Utc::now());
        assert!(
            plan.queries
                .iter()
                .any(|q| q.sql == "SELECT max(\"timestamp\") FROM \"audit_logs\""),
            "{plan:?}"
        );
    }
    assert!(
        !text.contains("created_at"),
        "KARS's audit trail column is `timestamp`"
    );
    // With no variable set at all it is valid too: every ${VAR} has a default.
    let bare = parse_with_env(&text, &path, |_| None).unwrap();
    assert_eq!(
        bare.jobs[1].source.expose(),
        "postgres://kars@localhost:5432/kars"
    );
    assert!(
        bare.notify.as_ref().unwrap().webhook.is_none(),
        "an empty webhook is none"
    );
    // Strict: every unset variable is an error naming it and its line.
    let e = kars_backup_config::parse_with(
        &text,
        &path,
        |_| None,
        &kars_backup_config::LoadOptions { strict: true },
    )
    .unwrap_err();
    let shown = e.to_string();
    for var in ["DATABASE_URL", "KARS_ALERT_WEBHOOK", "KARS_S3_BUCKET"] {
        assert!(
            shown.contains(&format!("environment variable {var} is not set (strict")),
            "{var}: {shown}"
        );
    }
    assert!(e.errors.iter().all(|e| e.location.is_some()), "{shown}");
    // Strict with everything set passes.
    let all = |name: &str| Some(format!("value-of-{name}"));
    let strict = kars_backup_config::parse_with(
        &text
            .replace(
                "${DATABASE_URL:-postgres://kars@localhost:5432/kars}",
                "postgres://kars@db/kars",
            )
            .replace("${KARS_ALERT_WEBHOOK:-}", "https://hooks.example.com/x"),
        &path,
        all,
        &kars_backup_config::LoadOptions { strict: true },
    );
    assert!(strict.is_ok(), "{:?}", strict.err().map(|e| e.to_string()));
}

#[test]
fn required_variables_fail_with_their_message() {
    let text = GOOD.replace(
        "\"sqlite:///app/data/assets.db\"",
        "\"${KARS_DB_PATH:?set KARS_DB_PATH to the KARS database file}\"",
    );
    let e = error_of(&text);
    assert!(
        e.starts_with(
            "kars.toml:4:11: environment variable KARS_DB_PATH is not set: set KARS_DB_PATH to the KARS database file"
        ),
        "{e}"
    );
    let c = parse_with_env(&text, Path::new("kars.toml"), |n| {
        (n == "KARS_DB_PATH").then(|| "/data/assets.db".to_string())
    })
    .unwrap();
    assert_eq!(c.jobs[0].source.expose(), "/data/assets.db");
}

const OFF_SITE: &str = r#"
[[job]]
name = "kars-sqlite"
source = "/app/data/assets.db"

[[job.destination]]
url = "/var/backups/kars"

[[job.destination]]
url = "s3://bucket/kars"
"#;

#[test]
fn off_site_destinations_need_encryption_or_an_explicit_none() {
    use kars_backup_config::JobEncryption;
    use kars_backup_core::PlaintextPolicy;
    // Neither: an error at the off-site destination's URL saying both ways out.
    let e = error_of(OFF_SITE);
    assert!(e.starts_with("kars.toml:10:7: job \"kars-sqlite\" would store unencrypted backups off-site at s3://bucket/kars"), "{e}");
    assert!(e.contains("kars-backup key init"), "{e}");
    assert!(e.contains("encryption = \"none\""), "{e}");
    // encryption = "none": allowed, everywhere.
    let c = parse(&OFF_SITE.replace(
        "source = \"/app/data/assets.db\"",
        "source = \"/app/data/assets.db\"\nencryption = \"none\"",
    ))
    .unwrap();
    assert!(matches!(c.jobs[0].encryption, Some(JobEncryption::None)));
    assert_eq!(c.jobs[0].plaintext_policy(), PlaintextPolicy::Anywhere);
    assert!(effective_toml(&c).contains("encryption = \"none\""));
    // Any other string is an error explaining the two forms.
    let e = error_of(&OFF_SITE.replace(
        "source = \"/app/data/assets.db\"",
        "source = \"/app/data/assets.db\"\nencryption = \"off\"",
    ));
    assert!(e.contains("kars.toml:5:"), "{e}");
    assert!(e.contains("the only string value is \"none\""), "{e}");
    // A key: encrypted, allowed; an identity file that is not there yet is a note, not an error.
    let text = format!(
        "{OFF_SITE}[job.encryption]\nidentity-file = \"/nonexistent/kars/age-identity.txt\"\n"
    );
    let c = parse(&text).unwrap();
    assert!(c.jobs[0].encrypts());
    assert_eq!(c.jobs[0].plaintext_policy(), PlaintextPolicy::LocalOnly);
    assert_eq!(c.notes().len(), 1);
    assert!(c.notes()[0].contains("kars-backup key init --out /nonexistent/kars/age-identity.txt"));
    let keys = c.jobs[0].encryption_keys().unwrap();
    assert_eq!(keys.all_identity_files().len(), 1);
    // Unknown keys in the table are still named with their line.
    let e = error_of(&format!(
        "{OFF_SITE}[job.encryption]\nidentity-fil = \"/k\"\n"
    ));
    assert!(
        e.contains("kars.toml:12:1: unknown field `identity-fil`"),
        "{e}"
    );
    // An identity file is age: not with gpg recipients.
    let e = error_of(&format!(
        "{OFF_SITE}[job.encryption]\nidentity-file = \"/k\"\ngpg-recipients = [\"ops@example.com\"]\n"
    ));
    assert!(e.contains("one scheme"), "{e}");
    // Local destinations alone need neither.
    assert!(parse(GOOD).unwrap().jobs[0].plaintext_off_site().is_empty());
}

#[test]
fn systemd_and_cron_emission() {
    use kars_backup_config::emit;
    let text =
        with_schedule("cron = \"0 2 * * 0\"\ntimezone = \"Europe/Berlin\"\ncatch-up = false");
    let c = parse(&text).unwrap();
    let opts = emit::EmitOptions::new("/usr/local/bin/kars-backup", "/etc/kars backup.toml");
    let cron = emit::crontab(&c, &opts);
    let tab = &cron.files[0].1;
    assert!(tab.contains("CRON_TZ=Europe/Berlin\n0 2 * * 0 /usr/local/bin/kars-backup backup --config '/etc/kars backup.toml' --job kars-sqlite >> /var/log/kars-backup.log 2>&1\n"), "{tab}");
    let units = emit::systemd(&c, &opts);
    let timer = &units.files[1];
    assert_eq!(timer.0, "kars-backup-kars-sqlite.timer");
    assert!(
        timer
            .1
            .contains("OnCalendar=Sun *-*-* 02:00:00 Europe/Berlin\n"),
        "{}",
        timer.1
    );
    assert!(timer.1.contains("Persistent=false\n"), "{}", timer.1);
}

/// [`GOOD`] with a `[job.replicate]` table of `lines` after its schedule.
fn with_replicate(lines: &str) -> String {
    format!("{GOOD}\n[job.replicate]\n{lines}")
}

#[test]
fn job_replicate_embeds_the_replicators_settings_beside_the_daemons() {
    let c = parse(&with_replicate(
        "sync-interval = \"250ms\"\nenable-wal = true\nlag-alert = \"5s\"\nwal-reset-alert = 2\n",
    ))
    .unwrap();
    let r = c.jobs[0].replication().expect("enabled by default");
    assert_eq!(
        r.settings.sync_interval,
        Some(std::time::Duration::from_millis(250))
    );
    assert!(r.settings.enable_wal);
    assert_eq!(r.lag_alert, Some(std::time::Duration::from_secs(5)));
    assert_eq!(r.wal_reset_alert, 2);
    assert_eq!(c.jobs[0].replica_destinations().count(), 1);
    let shown = effective_json(&c);
    let table = &shown["job"][0]["replicate"];
    assert_eq!(table["sync-interval"], "250ms", "{shown}");
    assert_eq!(table["snapshot-interval"], "1d", "{shown}");
    assert_eq!(table["lag-alert"], "5s", "{shown}");
    assert_eq!(shown["job"][0]["destination"][0]["replicate"], true);
    // cron does not replicate, and says so
    let opts = kars_backup_config::emit::EmitOptions::new("/usr/bin/kars-backup", "/etc/k.toml");
    let cron = &kars_backup_config::emit::crontab(&c, &opts).files[0].1;
    assert!(
        cron.contains("# job kars-sqlite: its [job.replicate] is continuous: only `kars-backup daemon` runs it"),
        "{cron}"
    );

    // defaults: every destination, a minute's lag, 3 resets an hour
    let c = parse(&with_replicate("")).unwrap();
    let r = c.jobs[0].replication().unwrap();
    assert_eq!(r.lag_alert_for(None), std::time::Duration::from_secs(60));
    assert_eq!(r.wal_reset_alert, 3);
    let c = parse(&with_replicate("enabled = false\n")).unwrap();
    assert!(c.jobs[0].replication().is_none());
}

#[test]
fn job_replicate_errors_are_placed_at_the_key_or_value() {
    // GOOD has 10 lines after its leading newline; the table's header is line 12.
    let e = error_of(&with_replicate("sync-interval = \"1s\"\nsync = \"1s\"\n"));
    assert!(e.starts_with("kars.toml:14:1: unknown field `sync`"), "{e}");
    assert!(
        e.contains("`sync-interval`") && e.contains("`lag-alert`"),
        "{e}"
    );
    let e = error_of(&with_replicate("sync-interval = \"fast\"\n"));
    assert!(e.starts_with("kars.toml:13:17: "), "{e}");
    assert!(e.contains("fast"), "{e}");
    let e = error_of(&with_replicate("lag-alert = \"0s\"\n"));
    assert!(e.starts_with("kars.toml:13:13: "), "{e}");
    let e = error_of(&with_replicate("enabled = \"yes\"\n"));
    assert!(e.starts_with("kars.toml:13:11: "), "{e}");
}

#[test]
fn job_replicate_on_a_postgres_job_is_refused_at_the_table() {
    let text = with_replicate("").replace("sqlite:///app/data/assets.db", "${DATABASE_URL}");
    let e = error_of(&text);
    assert!(e.starts_with("kars.toml:12:1: "), "{e}");
    assert!(e.contains("SQLite") && e.contains("WAL archive"), "{e}");
}

#[test]
fn a_destination_left_out_of_replication_needs_the_table_and_another_destination() {
    let out = GOOD.replace(
        "url = \"/var/backups/kars\"",
        "url = \"/var/backups/kars\"\nreplicate = false",
    );
    let e = error_of(&out);
    assert!(e.starts_with("kars.toml:8:13: "), "{e}");
    assert!(e.contains("no [job.replicate]"), "{e}");
    let e = error_of(&format!("{out}\n[job.replicate]\n"));
    assert!(e.contains("has no destination"), "{e}");
}
