//! `kars-backup demo` and `kars-backup demo-db`: the whole job on a generated sample database.

use std::path::Path;

use anyhow::Context;
use kars_backup::core::preset::CheckPreset;
use kars_backup::core::status::DEFAULT_RPO;
use kars_backup::core::{BackupJob, BackupOptions, DatabaseSource, RestoreOptions, VerifyPlan};
use kars_backup::sqlite::SqliteSource;
use kars_backup::sqlite::sample::{SampleSize, create_kars_database};

use crate::args::{DemoArgs, DemoDbArgs};
use crate::{exit, progress, render};

pub(crate) async fn run(a: DemoArgs) -> anyhow::Result<u8> {
    let db = a.dir.join("assets.db");
    let restored = a.dir.join("restored.db");
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    for stale in [&db, &restored] {
        remove_database(stale)?;
    }
    let say = |s: String| {
        if !a.json {
            println!("{s}");
        }
    };

    say(format!(
        "1. Creating a sample KARS database at {}",
        db.display()
    ));
    let path = db.clone();
    tokio::task::spawn_blocking(move || create_kars_database(&path, SampleSize::demo())).await??;
    let source = SqliteSource::new(&db);
    let live = source.inspect().await?;
    for d in &live {
        say(render::database(source.engine(), d));
    }

    say(format!(
        "2. Backing it up to {} (not encrypted: a local directory; off-site destinations need \
`kars-backup key init` and --encrypt-to, see docs/operators/encryption.md)",
        a.backups.display()
    ));
    let repo = kars_backup::job::repository(&a.backups.display().to_string())?;
    let backup = BackupJob::new(
        std::sync::Arc::new(SqliteSource::new(&db)),
        vec![repo.clone()],
        BackupOptions::default(),
    )
    .with_progress(progress::for_terminal(a.json))
    .run()
    .await?;
    say(format!(
        "   Backup created: {}",
        render::manifest(&backup.manifest)
    ));

    say(format!("3. Listing {}", repo.describe()));
    let listing = repo.list().await?;
    for e in listing.committed() {
        say(format!("   {}", render::entry_row(e)));
    }
    let latest = listing
        .latest()
        .cloned()
        .context("the backup just made is not listed")?;

    say(
        "4. Verifying the latest backup (checksum, scratch restore, integrity, row counts, the kars checks)"
            .into(),
    );
    let scratch_dir = tempfile::Builder::new().prefix("kars-verify-").tempdir()?;
    let scratch = kars_backup::job::scratch_source(&latest, scratch_dir.path());
    let plan = VerifyPlan {
        queries: CheckPreset::Kars.queries(latest.time(), DEFAULT_RPO),
        ..VerifyPlan::default()
    };
    let verified = kars_backup::core::verify_backup(
        &repo,
        &latest,
        &scratch,
        &plan,
        progress::for_terminal(a.json),
    )
    .await?;
    say(render::verification(&verified.verification));

    say(format!("5. Restoring it into {}", restored.display()));
    let target = SqliteSource::new(&restored);
    let report = kars_backup::core::restore(
        &repo,
        &latest,
        &target,
        &RestoreOptions {
            confirmed: true,
            ..RestoreOptions::default()
        },
        progress::for_terminal(a.json),
    )
    .await?;
    say(render::restore(&report));

    let after = target.inspect().await?;
    let same = live.iter().zip(&after).all(|(l, r)| l.tables == r.tables);
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": same,
            "database": db,
            "backup": backup.manifest,
            "verify": verified,
            "restore": report,
            "restored_row_counts_match": same,
        }))?;
    } else if same {
        println!("Done: the restored database has the same tables and row counts as the original.");
        println!("Try: kars-backup list --from {}", a.backups.display());
    }
    if !same {
        eprintln!("error: the restored database's row counts differ from the original");
        return Ok(exit::VERIFICATION);
    }
    Ok(exit::OK)
}

fn remove_database(path: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = path.with_file_name(format!(
            "{}{suffix}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }
    Ok(())
}

pub(crate) async fn run_demo_db(a: DemoDbArgs) -> anyhow::Result<u8> {
    if a.path.exists() {
        return Err(exit::UsageError(format!(
            "{} exists already; give a new path",
            a.path.display()
        ))
        .into());
    }
    let path = a.path.clone();
    let bytes = a.size_mb * 1024 * 1024;
    tokio::task::spawn_blocking(move || create_kars_database(&path, SampleSize::for_bytes(bytes)))
        .await??;
    let size = std::fs::metadata(&a.path)?.len();
    println!("Created {} ({})", a.path.display(), render::bytes(size));
    Ok(exit::OK)
}
