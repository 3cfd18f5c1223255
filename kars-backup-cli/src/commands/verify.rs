//! `kars-backup verify`.

use crate::args::VerifyArgs;
use crate::{exit, progress, render, resolve};

pub(crate) async fn run(a: VerifyArgs) -> anyhow::Result<u8> {
    let repo = a.decrypt.apply(resolve::repository(&a.from)?)?;
    let entry = resolve::backup(&repo, &a.which).await?;
    let scratch_dir = tempfile::Builder::new().prefix("kars-verify-").tempdir()?;
    let scratch: kars_backup_core::DynDatabaseSource = if resolve::is_postgres_backup(&entry) {
        std::sync::Arc::new(resolve::postgres_scratch(&a.pg)?)
    } else {
        resolve::shared(resolve::scratch_source(&entry, scratch_dir.path())?)
    };
    let plan = a.checks.plan(a.integrity, entry.time())?;
    let report = kars_backup_core::verify_backup(
        &repo,
        &entry,
        scratch.as_ref(),
        &plan,
        progress::for_terminal(a.json),
    )
    .await?;
    if a.json {
        render::print_json(&serde_json::json!({ "ok": true, "verify": report }))?;
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
    }
    Ok(exit::OK)
}
