//! `kars-test-wal`: the `archive_command` and `restore_command` of the WAL tests that drive the
//! library's asynchronous spool, which `kars-backup pg archive-wal` does not offer yet:
//!
//! ```text
//! kars-test-wal archive DEST PATH [SPOOL [MAX_BYTES]]   archive_wal (queued in SPOOL when given)
//! kars-test-wal push DEST SPOOL                          push_spool (the spool's pusher)
//! kars-test-wal fetch DEST NAME PATH                     fetch_wal with read-ahead of 2
//! ```
//!
//! Exits 0 on success, 1 for a missing file (fetch) and 2 for a failure, printing it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kars_backup_core::DynBackupSink;
use kars_backup_postgres::wal::{
    ArchiveOptions, FetchOptions, FetchOutcome, PushOptions, SpoolOptions, archive_wal, fetch_wal,
    push_spool,
};

fn sink(dir: &str) -> Result<Vec<DynBackupSink>, String> {
    let local = kars_backup_storage::LocalSink::new(dir).map_err(|e| e.to_string())?;
    Ok(vec![Arc::new(local)])
}

async fn run(args: &[String]) -> Result<u8, String> {
    match args {
        [mode, dest, path, rest @ ..] if mode == "archive" => {
            let mut options = ArchiveOptions::default();
            if let Some(spool) = rest.first() {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let mut s = SpoolOptions::new(spool);
                if let Some(max) = rest.get(1) {
                    s.max_bytes = max.parse().map_err(|_| format!("bad MAX_BYTES {max}"))?;
                }
                s.pusher = vec![
                    OsString::from(exe),
                    "push".into(),
                    dest.into(),
                    spool.into(),
                ];
                options.spool = Some(s);
            }
            archive_wal(&sink(dest)?, &PathBuf::from(path), &options)
                .await
                .map_err(|e| e.to_string())?;
            Ok(0)
        }
        [mode, dest, spool] if mode == "push" => {
            let report = push_spool(&sink(dest)?, &PathBuf::from(spool), &PushOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("pushed {} (busy: {})", report.pushed, report.busy);
            Ok(0)
        }
        [mode, dest, name, path] if mode == "fetch" => {
            let options = FetchOptions {
                read_ahead: 2,
                ..FetchOptions::default()
            };
            match fetch_wal(&sink(dest)?, name, &PathBuf::from(path), &options).await {
                Ok(FetchOutcome::Fetched(_)) => Ok(0),
                Ok(FetchOutcome::NotFound) => Ok(1),
                Err(e) => Err(e.to_string()),
            }
        }
        _ => Err("usage: kars-test-wal archive|push|fetch …".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kars-test-wal: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kars-test-wal {}: {e}", args.join(" "));
            ExitCode::from(2)
        }
    }
}
