//! `kars-backup pg archive-wal | fetch-wal | receive-wal | wal-status`: the WAL archive.

use std::time::Duration;

use kars_backup::core::DynBackupSink;
use kars_backup::job::Job;
use kars_backup::postgres::wal::{
    self, ArchiveOptions, DEFAULT_SEGMENT_SIZE, FetchOptions, FetchOutcome, ReceiveOptions,
};

use crate::args::{
    ArchiveWalArgs, FetchWalArgs, PgCommand, ReceiveWalArgs, WalPlaces, WalStatusArgs,
};
use crate::{exit, render};

pub(crate) async fn run(command: PgCommand) -> anyhow::Result<u8> {
    match command {
        PgCommand::ArchiveWal(a) => archive(a).await,
        PgCommand::FetchWal(a) => fetch(a).await,
        PgCommand::ReceiveWal(a) => receive(a).await,
        PgCommand::WalStatus(a) => status(a).await,
    }
}

/// The sinks of `urls`, then of the config job's destinations.
fn sinks(urls: &[String], job: Option<&Job>) -> anyhow::Result<Vec<DynBackupSink>> {
    let from_job = job
        .into_iter()
        .flat_map(|j| j.destinations().iter().map(|d| d.url.clone()));
    urls.iter()
        .cloned()
        .chain(from_job)
        .map(|url| Ok(kars_backup::job::repository(&url)?.sink().clone()))
        .collect()
}

fn config_job(places: &WalPlaces) -> anyhow::Result<Option<Job>> {
    Ok(places
        .config
        .as_deref()
        .map(|path| Job::from_file(path, places.job.as_deref()))
        .transpose()?)
}

async fn archive(a: ArchiveWalArgs) -> anyhow::Result<u8> {
    let job = config_job(&a.places)?;
    let sinks = sinks(&a.to, job.as_ref())?;
    let encryptor = match (a.encryption.encryptor()?, &job) {
        (Some(e), _) => Some(e),
        (None, Some(job)) => job.encryptor()?,
        (None, None) => None,
    };
    let plaintext = match &job {
        Some(job) if !a.encryption.no_encrypt => job.plaintext(),
        _ => a.encryption.plaintext(),
    };
    let options = ArchiveOptions {
        encryptor,
        system_identifier: a.places.system_id,
        pgdata: a.places.pgdata.clone(),
        plaintext,
        ..ArchiveOptions::default()
    };
    let report = wal::archive_wal(&sinks, &a.path, &options).await?;
    tracing::info!(
        wal = %report.wal.name,
        destinations = report.destinations.len(),
        "WAL file archived"
    );
    if a.places.json {
        render::print_json(&serde_json::json!({ "ok": true, "archived": report }))?;
    }
    Ok(exit::OK)
}

/// `fetch-wal`: a failure exits [`exit::WAL_FETCH_FAILED`], so that PostgreSQL stops the
/// recovery instead of ending it early as for a missing file.
async fn fetch(a: FetchWalArgs) -> anyhow::Result<u8> {
    let json = a.places.json;
    match fetch_file(a).await {
        Ok(code) => Ok(code),
        Err(err) => {
            let text = exit::error_text(&err);
            if json {
                render::print_json(&serde_json::json!({
                    "ok": false,
                    "error": text,
                    "exit_code": exit::WAL_FETCH_FAILED,
                }))?;
            }
            eprintln!("error: {text}");
            Ok(exit::WAL_FETCH_FAILED)
        }
    }
}

async fn fetch_file(a: FetchWalArgs) -> anyhow::Result<u8> {
    let job = config_job(&a.places)?;
    let sinks = sinks(&a.from, job.as_ref())?;
    let keys = match &job {
        Some(job) => job.decrypt_options(&a.decryption),
        None => a.decryption.clone(),
    };
    let options = FetchOptions {
        decryptor: Some(keys.decryptor()?),
        system_identifier: a.places.system_id,
        pgdata: a.places.pgdata.clone(),
        read_ahead: a.read_ahead,
        segment_size: DEFAULT_SEGMENT_SIZE,
    };
    let outcome = wal::fetch_wal(&sinks, &a.name, &a.path, &options).await?;
    if a.places.json {
        render::print_json(&serde_json::json!({ "ok": true, "fetched": outcome }))?;
    }
    Ok(match outcome {
        FetchOutcome::Fetched(_) => exit::OK,
        // Quiet: PostgreSQL asks for files that do not exist at the end of every recovery.
        FetchOutcome::NotFound => exit::WAL_MISSING,
    })
}

async fn receive(a: ReceiveWalArgs) -> anyhow::Result<u8> {
    let sinks = sinks(&a.to, None)?;
    let signals = kars_backup::schedule::ShutdownSignals::install()?;
    let options = ReceiveOptions {
        archive: ArchiveOptions {
            encryptor: a.encryption.encryptor()?,
            plaintext: a.encryption.plaintext(),
            ..ArchiveOptions::default()
        },
        spool_dir: a.spool_dir.clone(),
        slot: a.slot.clone(),
        create_slot: a.create_slot,
        ship_interval: Duration::from_secs_f64(a.ship_interval.clamp(0.1, 3600.0)),
        bin_dir: a.pg_bin_dir.clone(),
    };
    let report = wal::receive_wal(&a.db, &sinks, &options, signals.graceful()).await?;
    eprintln!(
        "receive-wal stopped: {} WAL files shipped, last {}",
        report.shipped,
        report.last.as_deref().unwrap_or("none")
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
    let problems = check.problems();
    let broken = !problems.is_empty() || server.as_ref().is_some_and(|s| !s.problems.is_empty());
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": !broken,
            "clusters": check.chains,
            "bases": check.bases,
            "problems": problems,
            "server": server,
        }))?;
    } else {
        if check.is_empty() {
            println!("No PostgreSQL WAL archived at {}.", check.destination);
        }
        print!("{}", render::wal_chains(&check.chains));
        print!("{}", render::wal_check(&check));
        if let Some(s) = &server {
            print_server(s);
        }
    }
    Ok(if broken { exit::VERIFICATION } else { exit::OK })
}

fn print_server(s: &wal::ArchiverState) {
    let last = match (&s.last_archived_wal, s.last_archived_time) {
        (Some(w), Some(t)) => format!(
            "{w}, {} ago",
            render::duration((chrono::Utc::now() - t).num_seconds())
        ),
        _ => "nothing yet".into(),
    };
    println!("server: writing {}, last archived {last}", s.current_wal);
    for p in &s.problems {
        println!("  PROBLEM: {p}");
    }
}
