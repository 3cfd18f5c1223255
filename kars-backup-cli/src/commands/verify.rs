//! `kars-backup verify`.

use kars_backup_core::recovery::{Candidates, verify_with_fallback};

use crate::args::VerifyArgs;
use crate::{exit, progress, render, resolve};

pub(crate) async fn run(a: VerifyArgs) -> anyhow::Result<u8> {
    let origins = resolve::origins(&a.from)?;
    let candidates = Candidates::find(&origins, &resolve::pick(&a.which)).await?;
    let first = candidates
        .first()
        .expect("find returns at least one backup");
    a.checks.plan(a.integrity, first.time)?;
    let scratch_dir = tempfile::Builder::new().prefix("kars-verify-").tempdir()?;
    let scratch = Scratch::new(&a.pg, scratch_dir.path());
    let plan = |e: &kars_backup_core::BackupEntry| {
        a.checks
            .plan(a.integrity, e.time())
            .map_err(resolve::core_error)
    };
    let result = verify_with_fallback(
        &candidates,
        &|e| scratch.make(e),
        &plan,
        &a.retry.attempts(),
        progress::for_terminal(a.json),
    )
    .await;
    let recovered = match result {
        Ok(r) => r,
        Err(failed) => return render::attempts_failed(failed, &candidates.unavailable, a.json),
    };
    let report = &recovered.report;
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": true,
            "verify": report,
            "attempts": recovered.attempts,
            "unavailable": candidates.unavailable,
        }))?;
    } else {
        println!(
            "Backup {} in {} is good:",
            report.backup, report.destination
        );
        println!(
            "  checksum: {}",
            render::checksum(report.checksum_verified, &report.sha256)
        );
        print!("{}", render::verification(&report.verification));
        print!(
            "{}",
            render::attempts(&recovered.attempts, &candidates.unavailable)
        );
    }
    Ok(exit::OK)
}

/// Makes scratch targets for `verify` and `drill`: a new directory under `dir` for each SQLite
/// attempt, a new temporary database on the `--scratch-db` server for each PostgreSQL one.
pub(crate) struct Scratch<'a> {
    pg: &'a crate::args::PgVerifyArgs,
    dir: &'a std::path::Path,
    next: std::sync::atomic::AtomicUsize,
}

impl<'a> Scratch<'a> {
    pub(crate) fn new(pg: &'a crate::args::PgVerifyArgs, dir: &'a std::path::Path) -> Self {
        Scratch {
            pg,
            dir,
            next: std::sync::atomic::AtomicUsize::new(1),
        }
    }

    pub(crate) fn make(
        &self,
        entry: &kars_backup_core::BackupEntry,
    ) -> kars_backup_core::Result<kars_backup_core::DynDatabaseSource> {
        if resolve::is_postgres_backup(entry) {
            let source = resolve::postgres_scratch(self.pg).map_err(resolve::core_error)?;
            return Ok(std::sync::Arc::new(source));
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.join(format!("attempt-{n}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| kars_backup_core::Error::io("create directory", &dir, e))?;
        let source = resolve::scratch_source(entry, &dir).map_err(resolve::core_error)?;
        Ok(resolve::shared(source))
    }
}
