//! Text and JSON rendering of results.

use kars_backup::core::{
    BackupEntry, DatabaseInfo, EntryKind, Manifest, RestoreReport, VerifyReport, engine_name,
};
use serde::Serialize;

use crate::exit::{code_of, error_text};

/// Prints a value as one pretty JSON document on stdout.
pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `1.5 MB`-style sizes (powers of 1024, like `ls -lh`).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A kind label for listings.
pub(crate) fn kind(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Committed => "backup",
        EntryKind::Runbook => "runbook (unverified)",
        EntryKind::Incomplete => "incomplete",
    }
}

/// One database's description as indented lines; `engine` is the engine's identifier
/// (`sqlite`, `postgres`: the manifest's or the source's), shown by its proper name.
pub(crate) fn database(engine: &str, db: &DatabaseInfo) -> String {
    let mut out = format!(
        "  {} ({}, {} {}{})\n",
        db.name,
        bytes(db.size_bytes),
        engine_name(engine),
        db.engine_version,
        db.integrity_check
            .as_deref()
            .map(|c| format!(", integrity: {c}"))
            .unwrap_or_default()
    );
    let width = db.tables.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in &db.tables {
        out.push_str(&format!(
            "    {:<width$}  {:>10} {}\n",
            t.name,
            t.rows,
            if t.rows == 1 { "row" } else { "rows" }
        ));
    }
    out
}

/// The manifest's summary for `backup` output.
pub(crate) fn manifest(m: &Manifest) -> String {
    let mut out = format!(
        "{}: {} archive, sha256 {}\n  taken {} on {} by kars-backup {} (run {})\n",
        m.name,
        bytes(m.archive.size_bytes),
        m.archive.sha256,
        m.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        m.host,
        m.tool_version,
        m.run_id,
    );
    if let Some(e) = &m.archive.encryption {
        out.push_str(&format!(
            "  encrypted ({}) to {}\n",
            e.scheme,
            e.describe_recipients()
        ));
    }
    if let Some(p) = &m.physical {
        out.push_str(&format!(
            "  physical base backup of cluster {} (timeline {}): WAL {}..{} ({}..{}), restorable to instants from {}\n",
            p.system_identifier,
            p.timeline,
            p.start_wal,
            p.stop_wal,
            p.start_lsn,
            p.stop_lsn,
            p.end_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ));
    }
    for db in &m.databases {
        out.push_str(&database(&m.engine, db));
    }
    out
}

/// The previous copies restores kept of a database (`--keep-previous`), one a line; nothing
/// when there are none.
pub(crate) fn previous_copies(copies: &[kars_backup::core::PreviousCopy]) -> String {
    if copies.is_empty() {
        return String::new();
    }
    let total: u64 = copies.iter().map(|c| c.size_bytes).sum();
    let mut out = format!(
        "  previous copies kept by restores: {}, {} (remove with restore --keep-previous, or by hand)\n",
        copies.len(),
        bytes(total)
    );
    for c in copies {
        out.push_str(&format!(
            "    {}  {}{}\n",
            c.name,
            bytes(c.size_bytes),
            c.kept_at
                .map(|t| format!(", kept {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default()
        ));
    }
    out
}

/// A listing row.
pub(crate) fn entry_row(e: &BackupEntry) -> String {
    format!(
        "{:<44} {:>10}  {}  {}",
        e.name.to_string(),
        bytes(e.size()),
        e.time().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        kind(e.kind)
    )
}

/// A verification report, one check a line.
pub(crate) fn verification(report: &VerifyReport) -> String {
    report
        .checks
        .iter()
        .map(|c| {
            format!(
                "  [{}] {}: {}\n",
                if c.passed { "ok" } else { "FAILED" },
                c.check,
                c.detail
            )
        })
        .collect()
}

/// What the checksum of a restored or verified archive proves.
pub(crate) fn checksum(verified_against_manifest: bool, sha256: &str) -> String {
    if verified_against_manifest {
        format!("sha256 {sha256} matches the manifest")
    } else {
        format!("sha256 {sha256} (runbook archive: no manifest to compare)")
    }
}

/// A restore report.
pub(crate) fn restore(r: &RestoreReport) -> String {
    let mut out = format!(
        "Restored {} from {} into {} in {:.1}s\n",
        r.backup,
        r.destination,
        r.target,
        r.duration.as_secs_f64()
    );
    out.push_str(&format!(
        "  checksum: {}\n",
        checksum(r.checksum_verified, &r.sha256)
    ));
    out.push_str(&verification(&r.verification));
    for s in &r.steps {
        out.push_str(&format!("  - {s}\n"));
    }
    out
}

/// The report of `restore --physical`.
pub(crate) fn physical_restore(
    r: &kars_backup::postgres::physical::PhysicalRestoreReport,
) -> String {
    let mut out = format!(
        "Restored the cluster {} from {} ({}) into {} in {:.1}s\n",
        r.base.system_identifier,
        r.backup,
        r.destination,
        r.pgdata,
        r.duration.as_secs_f64()
    );
    out.push_str(&format!("  checksum: {}\n", checksum(true, &r.sha256)));
    out.push_str(&format!("  target: {}\n", r.target));
    if let Some(t) = r.replayed_to {
        out.push_str(&format!(
            "  last transaction replayed: committed {}\n",
            kars_backup::postgres::physical::wal::recovery_target_time(t)
        ));
    }
    if let Some(t) = r.timeline {
        out.push_str(&format!("  opened on timeline {t}\n"));
    }
    out.push_str(&verification(&r.verification));
    for s in &r.steps {
        out.push_str(&format!("  - {s}\n"));
    }
    out
}

/// `3d 4h`, `5h 12m`, `42s`-style durations: the largest unit and the next one, which is left out
/// when it is zero (`1d`, not `1d 0h`).
pub(crate) fn duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    let two = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small > 0 {
            format!("{big}{big_unit} {small}{small_unit}")
        } else {
            format!("{big}{big_unit}")
        }
    };
    if d > 0 {
        two(d, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "m")
    } else if m > 0 {
        two(m, "m", s % 60, "s")
    } else {
        format!("{s}s")
    }
}

/// Every attempt of a restore, verification or drill, one a line; empty when the first attempt
/// succeeded and every destination answered.
pub(crate) fn attempts(
    attempts: &[kars_backup::core::recovery::Attempt],
    unavailable: &[kars_backup::core::recovery::Unavailable],
) -> String {
    use kars_backup::core::recovery::AttemptOutcome;
    let mut out = String::new();
    for u in unavailable {
        out.push_str(&format!(
            "  destination unavailable (skipped): {}: {}\n",
            u.destination, u.error
        ));
    }
    if attempts.len() <= 1 && attempts.iter().all(|a| a.error.is_none()) {
        return out;
    }
    out.push_str("  attempts:\n");
    for (i, a) in attempts.iter().enumerate() {
        let outcome = match a.outcome {
            AttemptOutcome::Succeeded => "succeeded".to_string(),
            AttemptOutcome::Retried => "transient failure, retried".to_string(),
            AttemptOutcome::Failed => {
                format!("FAILED ({})", a.category.as_deref().unwrap_or("unknown"))
            }
        };
        out.push_str(&format!(
            "    {}. {} from {}{}: {outcome}{}\n",
            i + 1,
            a.backup,
            a.destination,
            if a.try_number > 1 {
                format!(" (try {})", a.try_number)
            } else {
                String::new()
            },
            a.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    out
}

/// Reports a restore or verification whose attempts all failed: in JSON mode one document with
/// the attempts (and the exit code returned); in text mode the attempts on stdout when there was
/// more than the one whose error `main` prints (several attempts, or destinations skipped), and
/// the error returned for `main` to print.
pub(crate) fn attempts_failed(
    failed: kars_backup::core::recovery::AttemptsFailed,
    unavailable: &[kars_backup::core::recovery::Unavailable],
    json: bool,
) -> anyhow::Result<u8> {
    let list = attempts(&failed.attempts, unavailable);
    let records = failed.attempts.clone();
    let err = anyhow::Error::new(failed);
    if json {
        let code = code_of(&err);
        print_json(&serde_json::json!({
            "ok": false,
            "error": error_text(&err),
            "exit_code": code,
            "attempts": records,
            "unavailable": unavailable,
        }))?;
        eprintln!("error: {}", error_text(&err));
        return Ok(code);
    }
    if records.len() > 1 || !unavailable.is_empty() {
        print!("No attempt succeeded:\n{list}");
    }
    Err(err)
}

/// The WAL chains of a destination, per cluster and timeline: window, `.partial`, missing
/// history files, size, age of the newest file, and every gap (`pg wal-status`, `list`).
pub(crate) fn wal_chains(chains: &[kars_backup::postgres::wal::WalChain]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for chain in chains {
        let _ = writeln!(
            out,
            "PostgreSQL WAL of cluster {}:",
            chain.system_identifier
        );
        for t in &chain.timelines {
            let window = match (&t.first, &t.last) {
                (Some(f), Some(l)) => format!("{f} .. {l} ({} segments)", t.segments),
                _ => "no complete segment".into(),
            };
            let partial = t
                .partial
                .as_deref()
                .map(|p| format!(", then {p}"))
                .unwrap_or_default();
            let history = if t.timeline > 1 && !t.history {
                ", HISTORY FILE MISSING"
            } else {
                ""
            };
            let newest = t
                .newest
                .map(|n| {
                    format!(
                        ", newest stored {} ago",
                        duration((chrono::Utc::now() - n).num_seconds())
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  timeline {}: {window}{partial}{history}, {}{newest}",
                t.timeline,
                bytes(t.stored_bytes)
            );
            for g in &t.gaps {
                let _ = writeln!(
                    out,
                    "    GAP: {} segment(s) missing, {} .. {}",
                    g.count, g.first, g.last
                );
            }
        }
    }
    out
}

/// The WAL a prune removed (or would remove), per cluster.
pub(crate) fn wal_pruned(pruned: &[kars_backup::job::wal::WalPruned], dry_run: bool) -> String {
    use std::fmt::Write;
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    for w in pruned {
        let _ = writeln!(
            out,
            "  WAL of cluster {}: {verb} {} file(s) ({}) before {}, the first segment of the oldest kept base backup {}; {} kept",
            w.system_identifier,
            w.report.removed.len(),
            bytes(w.report.bytes),
            w.kept_from,
            w.oldest_kept_base,
            w.report.kept
        );
    }
    out
}

/// The server's archiver: what it writes, what it archived last and when, its problems.
pub(crate) fn archiver(s: &kars_backup::postgres::wal::ArchiverState) -> String {
    let last = match (&s.last_archived_wal, s.last_archived_time) {
        (Some(w), Some(t)) => format!(
            "{w}, {} ago",
            duration((chrono::Utc::now() - t).num_seconds())
        ),
        _ => "nothing yet".into(),
    };
    let mut out = format!("server: writing {}, last archived {last}\n", s.current_wal);
    for p in &s.problems {
        out.push_str(&format!("  PROBLEM: {p}\n"));
    }
    out
}

/// Each retained base backup's WAL path, and what breaks the chain.
pub(crate) fn wal_check(check: &kars_backup::job::wal::WalCheck) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for b in &check.bases {
        let reach = match (&b.path, &b.error) {
            (Some(p), _) => match &p.last {
                Some(last) => format!(
                    "WAL {} .. {last}{} on timeline {}",
                    b.start_wal,
                    if p.last_is_partial { " (.partial)" } else { "" },
                    p.timeline
                ),
                None => format!("no WAL archived here from {}", b.start_wal),
            },
            (None, Some(_)) => "WAL cannot be followed".into(),
            (None, None) => String::new(),
        };
        let _ = writeln!(out, "  base backup {}: {reach}", b.backup);
    }
    for p in check.problems() {
        let _ = writeln!(out, "  PROBLEM: {p}");
    }
    out
}

/// `status`'s lines for the WAL archived at each destination: its age against the RPO, and
/// what breaks its chain.
pub(crate) fn wal_status(wal: &[kars_backup::job::status::WalStatus]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for w in wal {
        let verdict = match (w.within_rpo, w.problems.is_empty()) {
            (true, true) => "ok",
            (false, _) => "RPO MISSED",
            (true, false) => "GAP",
        };
        let age = w
            .lag_secs
            .map(|l| format!("newest WAL stored {} ago", duration(l)))
            .unwrap_or_else(|| "age of the newest WAL unknown".into());
        let job = w
            .job
            .as_deref()
            .map(|j| format!("job {j}: "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{job}[{verdict}] {} WAL archive: {age} (RPO {}); {} base backup(s) checked",
            w.destination,
            duration(w.rpo_secs),
            w.bases.len()
        );
        for p in &w.problems {
            let _ = writeln!(out, "    PROBLEM: {p}");
        }
    }
    out
}

/// An instant of a replica's window, to the millisecond.
fn instant(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// The replicated SQLite databases of a destination: each one's window, generations,
/// segments, size and gaps (`list`).
pub(crate) fn replica_windows(windows: &[kars_backup::job::replicate::ReplicaWindow]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if !windows.is_empty() {
        out.push_str("Replicated SQLite databases:\n");
    }
    for w in windows {
        let window = match (w.from, w.to) {
            (Some(f), Some(t)) => format!("restorable from {} to {}", instant(f), instant(t)),
            _ => "nothing restorable yet (no complete snapshot)".into(),
        };
        let _ = writeln!(
            out,
            "  {}: {window}; {} generation(s), {} snapshot(s), {} segment(s), {}",
            w.database,
            w.generations,
            w.snapshots,
            w.segments,
            bytes(w.size_bytes)
        );
        for g in &w.gaps {
            let _ = writeln!(
                out,
                "    GAP before {g}: transactions are missing; restores past it stop before the gap"
            );
        }
    }
    out
}

/// A replica's lag: tenths of a second below a minute.
fn lag(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        duration(secs as i64)
    }
}

/// `status`'s lines for the replicated databases: lag against the RPO, window, replicator.
pub(crate) fn replica_status(replicas: &[kars_backup::job::status::ReplicaStatus]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for r in replicas {
        let verdict = if r.within_rpo { "ok" } else { "RPO MISSED" };
        let job = r
            .job
            .as_deref()
            .map(|j| format!("job {j}: "))
            .unwrap_or_default();
        let behind = match (r.lag_secs, &r.local_db) {
            (None, _) => "nothing shipped yet".to_string(),
            (Some(l), Some(db)) => format!("lag {} behind the latest change of {db}", lag(l)),
            (Some(l), None) => format!("lag {} since the newest shipped commit", lag(l)),
        };
        let _ = writeln!(
            out,
            "{job}[{verdict}] {} replica of {}: {behind} (RPO {})",
            r.window.destination,
            r.window.database,
            duration(r.rpo_secs)
        );
        if let (Some(f), Some(t)) = (r.window.from, r.window.to) {
            let _ = writeln!(
                out,
                "    restorable from {} to {}; {} generation(s), {} segment(s), {}",
                instant(f),
                instant(t),
                r.window.generations,
                r.window.segments,
                bytes(r.window.size_bytes)
            );
        }
        let now = chrono::Utc::now();
        match &r.replicator {
            Some(l) if l.expires_at > now => {
                let _ = writeln!(
                    out,
                    "    replicator {} (pid {} on {}), lease renewed {} ago",
                    l.id,
                    l.pid,
                    l.host,
                    duration((now - l.renewed_at).num_seconds())
                );
            }
            Some(l) => {
                let _ = writeln!(
                    out,
                    "    no replicator running: the lease of pid {} on {} expired {} ago",
                    l.pid,
                    l.host,
                    duration((now - l.expires_at).num_seconds())
                );
            }
            None => {
                let _ = writeln!(out, "    no replicator running (no lease)");
            }
        }
        for g in &r.window.gaps {
            let _ = writeln!(out, "    GAP before {g}");
        }
    }
    out
}

/// How a replica was rebuilt: snapshot, segments, the state reached, the chain's checksum.
pub(crate) fn replica_rebuild(r: &kars_backup::sqlite::replicate::RebuildReport) -> String {
    format!(
        "  rebuilt from {} and {} segment(s): transaction {} of generation {}, state of {}; database checksum {} verified through the chain\n",
        r.snapshot,
        r.segments,
        r.txid,
        r.generation,
        instant(r.state_time),
        r.checksum
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_leave_out_a_zero_second_unit() {
        for (secs, text) in [
            (0, "0s"),
            (42, "42s"),
            (60, "1m"),
            (312, "5m 12s"),
            (3600, "1h"),
            (18_720, "5h 12m"),
            (86_400, "1d"),
            (273_600, "3d 4h"),
        ] {
            assert_eq!(super::duration(secs), text);
        }
    }
}
