//! `kars-backup retention simulate`.

use std::io::BufRead;

use anyhow::Context;
use kars_backup::core::RetentionPolicy;
use kars_backup::core::retention::RetentionItem;

use crate::args::{RetentionCommand, SimulateArgs};
use crate::{exit, render};

pub(crate) async fn run(command: RetentionCommand) -> anyhow::Result<u8> {
    match command {
        RetentionCommand::Simulate(a) => simulate(a),
    }
}

fn simulate(a: SimulateArgs) -> anyhow::Result<u8> {
    let mut items = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("cannot read stdin")?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
            exit::UsageError(format!(
                "line {}: {text:?} is not an RFC 3339 time ({e}); give one time a line, e.g. 2024-12-18T02:00:00Z",
                n + 1
            ))
        })?;
        items.push(RetentionItem {
            name: time.to_utc().to_rfc3339(),
            time: time.to_utc(),
            tiers: Vec::new(),
            size: 0,
        });
    }
    let now = a.now.map_or_else(chrono::Utc::now, |t| t.to_utc());
    let plan = a.policy.policy.plan(&items, now);
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    render::print_json(&serde_json::json!({
        "policy": a.policy.policy.to_string(),
        "now": fmt(now),
        "keep": plan.keep.iter().map(|k| serde_json::json!({
            "time": fmt(k.item.time),
            "reasons": k.reasons,
        })).collect::<Vec<_>>(),
        "delete": plan.delete.iter().map(|d| fmt(d.time)).collect::<Vec<_>>(),
    }))?;
    Ok(exit::OK)
}
