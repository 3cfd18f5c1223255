//! `kars-test-writer DB MODE [--log FILE] [--truncate-every N] [--rate TX_PER_SEC]`: commits to
//! `DB` forever (until killed), in journal mode `MODE` (`wal` or `delete`). Each transaction
//! appends the next id to `counter` and a row of the same id to `payload`, so a consistent
//! snapshot has ids 1..=max in both tables with no gap. Prints `ready` once the first 50
//! transactions are committed.
//!
//! - `--log FILE`: after each commit, appends `id begin_us end_us` (UTC µs since the epoch:
//!   just before `COMMIT` was issued, and after it returned), unbuffered, so a killed writer's
//!   log holds every commit that returned.
//! - `--truncate-every N`: runs `PRAGMA wal_checkpoint(TRUNCATE)` itself after every N commits
//!   (an application that resets the WAL behind a replicator's back).
//! - `--rate R`: about R transactions per second instead of as fast as possible.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage =
        "usage: kars-test-writer DB wal|delete [--log FILE] [--truncate-every N] [--rate R]";
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or(usage)?;
    let mode = args.next().unwrap_or_else(|| "wal".into());
    let (mut log, mut truncate_every, mut rate) = (None, 0u64, 0f64);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(usage)?;
        match flag.as_str() {
            "--log" => {
                log = Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(value)?,
                )
            }
            "--truncate-every" => truncate_every = value.parse()?,
            "--rate" => rate = value.parse()?,
            _ => return Err(usage.into()),
        }
    }
    let conn = rusqlite::Connection::open(&db)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let _: String = conn.query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, at TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS payload (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
    )?;
    let mut n: i64 =
        conn.query_row("SELECT coalesce(max(id), 0) FROM counter", [], |r| r.get(0))?;
    let body = vec![0x5au8; 3000];
    let started = Instant::now();
    let mut done = 0u64;
    loop {
        n += 1;
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO counter (id, at) VALUES (?1, datetime('now'))",
            [n],
        )?;
        tx.execute(
            "INSERT INTO payload (id, body) VALUES (?1, ?2)",
            rusqlite::params![n, body],
        )?;
        let begin = now_us();
        tx.commit()?;
        let end = now_us();
        done += 1;
        if let Some(log) = &mut log {
            log.write_all(format!("{n} {begin} {end}\n").as_bytes())?;
        }
        if n == 50 {
            println!("ready");
            std::io::stdout().flush()?;
        }
        if truncate_every > 0 && done % truncate_every == 0 {
            // Busy (a reader holds the WAL) is an answer, not an error.
            let _: (i64, i64, i64) =
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        }
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(done as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
}
