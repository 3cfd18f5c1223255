//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kars_backup_core::testing::InMemorySink;
use kars_backup_core::{
    BackupJob, BackupOptions, BackupReport, NoProgress, Repository, RestoreOptions, RestoreReport,
    SinkExt,
};
use kars_backup_sqlite::SqliteSource;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

/// A repository over a fresh in-memory sink, and the sink itself.
pub(crate) fn repo() -> (Repository, Arc<InMemorySink>) {
    let sink = Arc::new(InMemorySink::new());
    (Repository::new(sink.clone()), sink)
}

/// Backs `source` up into `repo`.
pub(crate) async fn backup(source: SqliteSource, repo: &Repository) -> BackupReport {
    BackupJob::new(
        Arc::new(source),
        vec![repo.clone()],
        BackupOptions::default(),
    )
    .run()
    .await
    .expect("backup succeeds")
}

/// Restore options that confirm replacing an existing target.
pub(crate) fn confirmed() -> RestoreOptions {
    RestoreOptions {
        confirmed: true,
        ..RestoreOptions::default()
    }
}

/// Restores the backup `name` from `repo` into `target`.
pub(crate) async fn restore_named(
    repo: &Repository,
    name: &str,
    target: &SqliteSource,
    options: &RestoreOptions,
) -> kars_backup_core::Result<RestoreReport> {
    let entry = repo.find(name).await?;
    kars_backup_core::restore(repo, &entry, target, options, Arc::new(NoProgress)).await
}

/// Stores `data` as a runbook archive (no manifest) named `name`.
pub(crate) async fn put_runbook_archive(sink: &InMemorySink, name: &str, data: Vec<u8>) {
    sink.put_bytes(name, Bytes::from(data)).await.expect("put");
}

/// Gzips bytes.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Un-gzips bytes.
pub(crate) fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(data), &mut out).unwrap();
    out
}

/// The entry names of a (gzipped) tar archive.
pub(crate) fn tar_entry_names(gz: &[u8]) -> Vec<String> {
    let tar_bytes = gunzip(gz);
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

/// Creates a database with BLOBs (empty, large), NULLs, Unicode, empty strings, a quoted
/// identifier, a WITHOUT ROWID table, an index, a view and a trigger, in `journal_mode`.
/// Returns the open connection (callers may keep it open to keep a `-wal` file).
pub(crate) fn rich_database(path: &Path, journal_mode: &str) -> Connection {
    let conn = Connection::open(path).unwrap();
    let mode: String = conn
        .query_row(&format!("PRAGMA journal_mode = {journal_mode}"), [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(mode.to_lowercase(), journal_mode.to_lowercase());
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    conn.execute_batch(
        r#"
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, data BLOB, price REAL, note TEXT, qty INTEGER);
        CREATE INDEX idx_items_name ON items(name);
        CREATE TABLE "odd ""name" (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        CREATE TABLE log (id INTEGER PRIMARY KEY, msg TEXT NOT NULL);
        CREATE VIEW expensive AS SELECT id, name FROM items WHERE price > 10;
        CREATE TRIGGER items_log AFTER UPDATE ON items BEGIN
            INSERT INTO log (msg) VALUES ('updated ' || NEW.id);
        END;
        "#,
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut stmt = tx
            .prepare("INSERT INTO items (name, data, price, note, qty) VALUES (?1, ?2, ?3, ?4, ?5)")
            .unwrap();
        for i in 0..2000u32 {
            let name: Option<String> = match i % 5 {
                0 => None,
                1 => Some(String::new()),
                2 => Some(format!("Zoë Müller 東京 🚀 #{i}")),
                _ => Some(format!("item {i}")),
            };
            let data: Option<Vec<u8>> = match i % 7 {
                0 => None,
                1 => Some(Vec::new()),
                2 => Some(
                    (0..100_000u32)
                        .map(|b| (b.wrapping_mul(31) ^ i) as u8)
                        .collect(),
                ),
                _ => Some(vec![i as u8; (i % 300) as usize]),
            };
            let price: Option<f64> = (i % 3 != 0).then_some(f64::from(i) * 1.25);
            let note: Option<String> = (i % 4 == 0).then(|| "ñ".repeat((i % 50) as usize));
            stmt.execute(rusqlite::params![
                name,
                data,
                price,
                note,
                i64::from(i) - 1000
            ])
            .unwrap();
        }
        let mut odd = tx
            .prepare(r#"INSERT INTO "odd ""name" (k, v) VALUES (?1, ?2)"#)
            .unwrap();
        for i in 0..50 {
            odd.execute(rusqlite::params![
                format!("k{i:03}"),
                if i % 2 == 0 {
                    Value::Null
                } else {
                    Value::Text("x".into())
                }
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute("UPDATE items SET price = price + 1 WHERE id <= 10", [])
        .unwrap();
    conn
}

/// Everything in a database: schema (`SELECT sql FROM sqlite_master ORDER BY name`) and every
/// table's rows (sorted, as debug text).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dump {
    pub(crate) schema: Vec<Option<String>>,
    pub(crate) tables: BTreeMap<String, Vec<String>>,
}

/// Dumps a database with its side files from a copy, so the original's bytes stay as they are
/// (opening a database with a -wal would checkpoint it).
pub(crate) fn dump_copy(path: &Path) -> Dump {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    std::fs::copy(path, &copy).unwrap();
    for suffix in ["-wal", "-journal"] {
        if with_suffix(path, suffix).exists() {
            std::fs::copy(with_suffix(path, suffix), with_suffix(&copy, suffix)).unwrap();
        }
    }
    dump(&copy)
}

/// Dumps the database at `path` (opened read-only).
pub(crate) fn dump(path: &Path) -> Dump {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    dump_conn(&conn)
}

/// Dumps the database behind `conn`.
pub(crate) fn dump_conn(conn: &Connection) -> Dump {
    let schema = conn
        .prepare("SELECT sql FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut tables = BTreeMap::new();
    for name in names {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{}\"", name.replace('"', "\"\"")))
            .unwrap();
        let cols = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                (0..cols)
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .map(|r| format!("{:?}", r.unwrap()))
            .collect();
        rows.sort();
        tables.insert(name, rows);
    }
    Dump { schema, tables }
}

/// Names in a directory that start with `prefix`.
pub(crate) fn entries_starting_with(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// A live database "after a crash": a WAL-mode database file plus a `-wal` file holding committed
/// transactions that were never checkpointed. Returns the bytes of both.
pub(crate) fn live_database_with_wal(dir: &Path, name: &str) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join(name);
    let conn = rich_database(&src, "wal");
    conn.execute("INSERT INTO log (msg) VALUES ('only in the wal')", [])
        .unwrap();
    let db = dir.join(name);
    std::fs::copy(&src, &db).unwrap();
    std::fs::copy(with_suffix(&src, "-wal"), with_suffix(&db, "-wal")).unwrap();
    drop(conn);
    let db_bytes = std::fs::read(&db).unwrap();
    let wal_bytes = std::fs::read(with_suffix(&db, "-wal")).unwrap();
    assert!(!wal_bytes.is_empty(), "the -wal file holds transactions");
    (db, db_bytes, wal_bytes)
}

/// `path` with `suffix` appended.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether a command-line tool is there; under `CI=true` its absence fails the test.
pub(crate) fn tool_available(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required under CI=true but was not found");
        }
        eprintln!("SKIPPED: `{tool}` is not installed");
    }
    found
}
