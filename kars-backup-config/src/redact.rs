//! The effective configuration (defaults filled in) with every secret left out: passwords in
//! URLs, webhook and ping tokens, values of secret-looking variables; passphrase files are named,
//! never read.

use std::fmt;

use serde_json::{Map, Value, json};

use crate::model::{Config, JobConfig, JobEncryption, NotifyConfig, TokenUrl};
use crate::replicate::interval_text;

/// Variable names whose values are hidden wherever they appear.
fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "PASS",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "AUTH",
        "WEBHOOK",
        "DATABASE_URL",
        "DSN",
    ]
    .iter()
    .any(|s| upper.contains(s))
}

/// The effective configuration as JSON, secrets redacted.
pub fn effective_json(config: &Config) -> Value {
    let mut root = Map::new();
    let d = &config.daemon;
    root.insert(
        "daemon".into(),
        json!({
            "metrics-listen": d.metrics_listen.map(|a| a.to_string()),
            "state-dir": d.state_dir.as_ref().map(|p| p.display().to_string()),
            "metrics-textfile": d.metrics_textfile.as_ref().map(|p| p.display().to_string()),
            "log-format": d.log_format.map(|f| format!("{f:?}").to_ascii_lowercase()),
        }),
    );
    if let Some(n) = &config.notify {
        root.insert("notify".into(), notify(n, config));
    }
    root.insert(
        "job".into(),
        Value::Array(config.jobs.iter().map(|j| job(j, config)).collect()),
    );
    let mut value = Value::Object(root);
    strip_nulls(&mut value);
    hide_secret_values(&mut value, config);
    value
}

/// The effective configuration as TOML text, secrets redacted.
pub fn effective_toml(config: &Config) -> String {
    let value = effective_json(config);
    toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

fn job(j: &JobConfig, config: &Config) -> Value {
    let rules = j.tier_rules();
    let destinations: Vec<Value> = j
        .destinations
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let placement = kars_backup_storage::Destination::parse(d.url.expose())
                .map(|p| format!("{:?}", p.placement()).to_ascii_lowercase())
                .ok();
            let tiers = d.tiers.clone().or_else(|| {
                let rules = rules.as_ref()?;
                let p = kars_backup_storage::Destination::parse(d.url.expose()).ok()?;
                Some(rules.accepted(p.placement()).to_vec())
            });
            let mut out = json!({
                "url": d.url.redacted(),
                "placement": placement,
                "tiers": tiers.map(|t| t.iter().map(|t| t.name()).collect::<Vec<_>>()),
                "retention": j.retention_for(i).map_or_else(|| "none (not pruned)".to_string(), |r| r.to_string()),
            });
            if let Some(t) = &d.transfer {
                out["transfer"] = json!(t);
            }
            if j.replicate.is_some() {
                out["replicate"] = json!(d.replicate);
            }
            out
        })
        .collect();
    let mut out = json!({
        "name": j.name,
        "source": j.source.redacted(),
        "engine": if j.is_postgres() { "postgres" } else { "sqlite" },
        "prefix": j.prefix,
        "compression": j.compression.to_string(),
        "threads": j.threads,
        "label": j.label,
        "host-label": j.host_label,
        "integrity": j.integrity,
        "snapshot-dir": j.snapshot_dir.as_ref().map(|p| p.display().to_string()),
        "verify-upload": j.verify_upload,
        "tiering": match &rules {
            None => json!("off"),
            Some(r) => json!({ "local": r.local, "cloud": r.cloud }),
        },
        "destination": destinations,
    });
    let o = out.as_object_mut().expect("object");
    match &j.encryption {
        Some(JobEncryption::None) => {
            o.insert("encryption".into(), json!("none"));
        }
        Some(JobEncryption::Keys(e)) => {
            o.insert(
                "encryption".into(),
                json!({
                    "identity-file": e.identity_file.as_ref().map(|p| p.display().to_string()),
                    "age-recipients": e.age_recipients,
                    "gpg-recipients": e.gpg_recipients,
                    "passphrase-file": e.passphrase_file.as_ref().map(|p| p.display().to_string()),
                    "identity-files": e.identity_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                }),
            );
        }
        None => {}
    }
    if let Some(v) = &j.verify {
        o.insert(
            "verify".into(),
            json!({
                "integrity": v.integrity,
                "check-counts": v.check_counts,
                "min-rows": v.min_rows,
                "audit-log": v.audit_log,
                "checks": v.checks.map(|c| c.name()),
                "rpo": duration(v.rpo()),
                "rto": v.rto.map(duration),
                "scratch-db": v.scratch_db.as_ref().map(|u| u.redacted()),
                "query": v.queries.iter().map(|q| {
                    let expect = match (&q.value, q.rows) {
                        (Some(v), _) => format!("value {v:?}"),
                        (None, Some(n)) => format!("{n} rows"),
                        (None, None) => "true".to_string(),
                    };
                    json!({ "sql": q.sql, "expect": expect })
                }).collect::<Vec<_>>(),
            }),
        );
    }
    if let Some(h) = &j.hooks {
        let resolved = h.resolve();
        o.insert(
            "hooks".into(),
            json!({
                "stop": h.stop.as_deref().map(|c| command(c, config)),
                "start": h.start.as_deref().map(|c| command(c, config)),
                "health": h.health.as_deref().map(|c| command(c, config)),
                "health-attempts": resolved.health_check_attempts,
                "health-interval": seconds(resolved.health_check_interval_secs),
                "health-start-period": seconds(resolved.health_check_start_period_secs),
                "health-timeout": seconds(resolved.health_check_timeout_secs),
                "timeout": seconds(resolved.timeout_secs),
            }),
        );
    }
    if let Some(r) = &j.restore {
        o.insert(
            "restore".into(),
            json!({
                "keep-previous": r.keep_previous(),
                "in-use": r.in_use(),
            }),
        );
    }
    if let Some(p) = &j.postgres {
        o.insert(
            "postgres".into(),
            json!({
                "format": p.format.map(|f| f.to_string()),
                "jobs": p.jobs,
                "tables": p.tables,
                "exclude-tables": p.exclude_tables,
                "schema-only": p.schema_only,
                "data-only": p.data_only,
                "bin-dir": p.bin_dir.as_ref().map(|p| p.display().to_string()),
                "physical": p.physical,
            }),
        );
    }
    if let Some(s) = &j.schedule {
        o.insert(
            "schedule".into(),
            json!({
                "cron": s.schedule.expression(),
                "timezone": s.schedule.time_zone().name(),
                "catch-up": s.catch_up,
            }),
        );
    }
    if let Some(r) = &j.replicate {
        let options = r.options();
        o.insert(
            "replicate".into(),
            json!({
                "enabled": r.enabled,
                "sync-interval": interval_text(options.sync_interval),
                "snapshot-interval": interval_text(options.snapshot_interval),
                "enable-wal": options.enable_wal,
                "lag-alert": interval_text(r.lag_alert_for(j.verify.as_ref().and_then(|v| v.rpo))),
                "wal-reset-alert": r.wal_reset_alert,
            }),
        );
    }
    if let Some(n) = config.notify_for(j) {
        o.insert("notify".into(), notify(n, config));
    }
    out
}

fn notify(n: &NotifyConfig, config: &Config) -> Value {
    let url = |u: &Option<TokenUrl>| u.as_ref().map(TokenUrl::redacted);
    json!({
        "webhook": url(&n.webhook),
        "command": n.command.as_ref().map(|c| command(c.expose(), config)),
        "on-success": n.on_success,
        "ping": n.ping.as_ref().map(|p| json!({
            "start": url(&p.start),
            "success": url(&p.success),
            "fail": url(&p.fail),
        })),
    })
}

/// A command with every substituted value of four characters or more shown as its `${NAME}`.
fn command(c: &str, config: &Config) -> String {
    let mut text = c.to_string();
    for s in &config.substitutions {
        if s.value.len() >= 4 {
            text = text.replace(&s.value, &format!("${{{}}}", s.name));
        }
    }
    text
}

/// Seconds as [`duration`] writes them.
fn seconds(s: u64) -> String {
    duration(chrono::Duration::seconds(s as i64))
}

/// `24h`, `90m`, `7d`, `45s`.
fn duration(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    match s {
        s if s != 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s != 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s != 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Replaces the values of secret-looking variables (`*PASSWORD*`, `*TOKEN*`, …) wherever they
/// still appear.
fn hide_secret_values(v: &mut Value, config: &Config) {
    match v {
        Value::String(s) => {
            for sub in &config.substitutions {
                if secret_name(&sub.name) && sub.value.len() >= 4 && s.contains(&sub.value) {
                    *s = s.replace(&sub.value, &format!("${{{}}}", sub.name));
                }
            }
        }
        Value::Object(m) => m.values_mut().for_each(|v| hide_secret_values(v, config)),
        Value::Array(a) => a.iter_mut().for_each(|v| hide_secret_values(v, config)),
        _ => {}
    }
}
/// A configuration shows as its effective TOML, secrets redacted.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&effective_toml(self))
    }
}
