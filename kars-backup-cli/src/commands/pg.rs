//! `kars-backup pg archive-wal | fetch-wal | receive-wal | wal-status`: the WAL archive.

use kars_backup::postgres::wal::{self, FetchOutcome};

use crate::args::{
    ArchiveWalArgs, FetchWalArgs, PgCommand, PushWalArgs, ReceiveWalArgs, WalStatusArgs,
};
use crate::{exit, render};

pub(crate) async fn run(command: PgCommand) -> anyhow::Result<u8> {
    match command {
        PgCommand::ArchiveWal(a) => archive(a).await,
        PgCommand::FetchWal(a) => fetch(a).await,
        PgCommand::PushWal(a) => push(a).await,
        PgCommand::ReceiveWal(a) => receive(a).await,
        PgCommand::WalStatus(a) => status(a).await,
    }
}

async fn archive(a: ArchiveWalArgs) -> anyhow::Result<u8> {
    let program = std::env::current_exe()?;
    let places = &a.places;
    let (sinks, options) = places.archiving_spooled(&a.to, &a.encryption, &a.spool, &program)?;
    let report = wal::archive_wal(&sinks, &a.path, &options).await?;
    let (name, destinations) = (&report.wal.name, report.destinations.len());
    tracing::info!(wal = %name, destinations, "WAL file archived");
    if a.json {
        render::print_json(&serde_json::json!({ "ok": true, "archived": report }))?;
    }
    Ok(exit::OK)
}

async fn push(a: PushWalArgs) -> anyhow::Result<u8> {
    let (sinks, options) = a.places.pushing(&a.to, &a.encryption)?;
    let report = wal::push_spool(&sinks, &a.spool_dir, &options).await?;
    if a.json {
        render::print_json(&serde_json::json!({ "ok": true, "pushed": report }))?;
    }
    Ok(exit::OK)
}

/// `fetch-wal`: a failure exits [`exit::WAL_FETCH_FAILED`], so that PostgreSQL stops the
/// recovery instead of ending it early as for a missing file.
async fn fetch(a: FetchWalArgs) -> anyhow::Result<u8> {
    let json = a.json;
    let fetched = async {
        let (sinks, options) = a.places.fetching(&a.from, &a.decryption, a.read_ahead)?;
        anyhow::Ok(wal::fetch_wal(&sinks, &a.name, &a.path, &options).await?)
    };
    let outcome = match fetched.await {
        Ok(outcome) => outcome,
        Err(err) => {
            let text = exit::error_text(&err);
            if json {
                let code = exit::WAL_FETCH_FAILED;
                let doc = serde_json::json!({ "ok": false, "error": text, "exit_code": code });
                render::print_json(&doc)?;
            }
            eprintln!("error: {text}");
            return Ok(exit::WAL_FETCH_FAILED);
        }
    };
    if json {
        render::print_json(&serde_json::json!({ "ok": true, "fetched": outcome }))?;
    }
    Ok(match outcome {
        FetchOutcome::Fetched(_) => exit::OK,
        // Quiet: PostgreSQL asks for files that do not exist at the end of every recovery.
        FetchOutcome::NotFound => exit::WAL_MISSING,
    })
}

async fn receive(a: ReceiveWalArgs) -> anyhow::Result<u8> {
    let (sinks, options) = kars_backup::job::wal::receiving(&a.to, &a.encryption, &a.settings)?;
    let signals = kars_backup::schedule::ShutdownSignals::install()?;
    let report = wal::receive_wal(&a.db, &sinks, &options, signals.graceful()).await?;
    let last = report.last.as_deref().unwrap_or("none");
    eprintln!(
        "receive-wal stopped: {} WAL files shipped, last {last}",
        report.shipped
    );
    Ok(exit::OK)
}

async fn status(a: WalStatusArgs) -> anyhow::Result<u8> {
    let repo = kars_backup::job::repository(&a.from)?;
    let check = kars_backup::job::wal::check_wal(&repo, None).await?;
    let server = match &a.db {
        Some(url) => Some(wal::archiver_state(url).await?),
        None => None,
    };
    let spool = a.spool_dir.as_deref().map(wal::spool_status).transpose()?;
    let problems = check.problems();
    let broken = !problems.is_empty() || server.as_ref().is_some_and(|s| !s.problems.is_empty());
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": !broken,
            "clusters": check.chains,
            "bases": check.bases,
            "problems": problems,
            "server": server,
            "spool": spool,
        }))?;
    } else {
        if check.is_empty() {
            println!("No PostgreSQL WAL archived at {}.", check.destination);
        }
        print!("{}", render::wal_chains(&check.chains));
        print!("{}", render::wal_check(&check));
        if let Some(s) = &server {
            print!("{}", render::archiver(s));
        }
        if let Some(s) = &spool {
            let pusher = if s.pusher_running {
                "a pusher is running"
            } else {
                "no pusher running"
            };
            let (n, size) = (s.queued.len(), render::bytes(s.queued_bytes));
            println!("spool {}: {n} file(s) queued ({size}), {pusher}", s.dir);
            if let Some(e) = &s.last_error {
                println!("  last push failed: {e}");
            }
        }
    }
    Ok(if broken { exit::VERIFICATION } else { exit::OK })
}
