//! `kars-backup copy`.

use crate::args::CopyArgs;
use crate::commands::shared::pick;
use crate::{exit, render};

pub(crate) async fn run(a: CopyArgs) -> anyhow::Result<u8> {
    let from = kars_backup::job::repository(&a.from)?;
    let to = kars_backup::job::repository(&a.to)?;
    let entry = kars_backup::job::find_backup(&from, &pick(&a.which)?).await?;
    let options = kars_backup::storage::CopyOptions {
        plaintext: kars_backup::encrypt::plaintext_policy(a.no_encrypt),
    };
    let report = kars_backup::storage::copy_backup(&from, &entry, &to, &options).await?;
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
