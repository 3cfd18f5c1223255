//! `kars-test-writer DB MODE`: commits to `DB` forever (until killed), in journal mode `MODE`
//! (`wal` or `delete`). Each transaction appends the next id to `counter` and a row of the same
//! id to `payload`, so a consistent snapshot has ids 1..=max in both tables with no gap. Prints
//! `ready` once the first 50 transactions are committed.

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or("usage: kars-test-writer DB wal|delete")?;
    let mode = args.next().unwrap_or_else(|| "wal".into());
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
        tx.commit()?;
        if n == 50 {
            println!("ready");
            std::io::stdout().flush()?;
        }
    }
}
