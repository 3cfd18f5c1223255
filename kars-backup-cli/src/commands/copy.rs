//! `kars-backup copy`.

use crate::args::CopyArgs;
use crate::{exit, render, resolve};

pub(crate) async fn run(a: CopyArgs) -> anyhow::Result<u8> {
    let from = resolve::repository(&a.from)?;
    let to = resolve::repository(&a.to)?;
    let entry = resolve::backup(&from, &a.which).await?;
    let options = kars_backup_storage::CopyOptions {
        plaintext: crate::args::plaintext_policy(a.no_encrypt),
    };
    let report = kars_backup_storage::copy_backup(&from, &entry, &to, &options).await?;
    if a.json {
        render::print_json(&serde_json::json!({ "ok": true, "copy": report }))?;
    } else if report.already_present {
        println!(
            "{} is already in {} (same checksum); nothing copied",
            report.backup, report.to
        );
    } else {
        println!(
            "Copied {} ({} bytes) from {} to {}",
            report.backup, report.bytes, report.from, report.to
        );
    }
    Ok(exit::OK)
}
