//! Describing a database: tables with exact row counts, integrity check, page details, and the
//! test queries of a verification plan.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use kars_backup_core::verify::IntegrityLevel;
use kars_backup_core::{DatabaseInfo, TableInfo};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// The first 16 bytes of every SQLite database file.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The pause between two attempts to take a lock on a live database.
const LOCK_POLL_INTERVAL: Duration = Duration::from_micros(500);
/// Attempts before SQLite reports the database busy (about 5 s).
const LOCK_POLLS: i32 = 10_000;

/// Most problems an integrity check reports before it stops.
const INTEGRITY_MAX_ERRORS: u32 = 100;

/// Whether the file at `path` starts with the SQLite header.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read.
pub fn has_sqlite_header(path: &Path) -> Result<bool> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut head = [0u8; 16];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(filled == head.len() && &head == SQLITE_HEADER)
}

/// Checks that `path` is an existing SQLite database file (an empty file counts: SQLite treats it
/// as an empty database).
///
/// # Errors
/// [`Error::NotFound`], [`Error::NotSqlite`], or [`Error::Io`] when it cannot be read.
pub(crate) fn check_database_file(path: &Path) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(Error::io("read metadata of", path, e)),
    };
    if !meta.is_file() {
        return Err(Error::NotSqlite {
            path: path.to_path_buf(),
        });
    }
    if meta.len() == 0 || has_sqlite_header(path)? {
        Ok(())
    } else {
        Err(Error::NotSqlite {
            path: path.to_path_buf(),
        })
    }
}

/// Opens a live database read-only: it never writes to the database, and waits for locks
/// (see [`wait_for_locks`]).
pub(crate) fn open_live(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| Error::sqlite("open", path, e))?;
    wait_for_locks(&conn, path)?;
    Ok(conn)
}

/// Installs (again) the busy handler that waits for other connections' locks, which also resets
/// its attempt counter: SQLite does not reset it between `sqlite3_backup_step` calls.
///
/// It retries every 0.5 ms for about 5 s. SQLite's default back-off (up to 100 ms between
/// attempts) almost never catches the short moments in which a busy writer in rollback-journal
/// mode holds no lock, and would starve the snapshot.
pub(crate) fn wait_for_locks(conn: &Connection, path: &Path) -> Result<()> {
    fn poll(attempt: i32) -> bool {
        if attempt >= LOCK_POLLS {
            return false;
        }
        std::thread::sleep(LOCK_POLL_INTERVAL);
        true
    }
    conn.busy_handler(Some(poll))
        .map_err(|e| Error::sqlite("configure", path, e))
}

/// Opens a private copy (a snapshot or a staged file) read-only and `immutable`: no locks, and no
/// `-wal`/`-shm` files are created beside it.
pub(crate) fn open_private(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let uri = format!("file:{}?immutable=1", uri_path(path));
    Connection::open_with_flags(uri, flags).map_err(|e| Error::sqlite("open", path, e))
}

/// Percent-encodes a path for an SQLite `file:` URI.
fn uri_path(path: &Path) -> String {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().replace('\\', "/").into_bytes();
    let mut out = String::with_capacity(bytes.len());
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Quotes an SQL identifier (`"a""b"`).
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Describes the database behind `conn`: version, size of the file at `path`, tables sorted by
/// name with exact row counts, the integrity check at `level`, and page details.
///
/// # Errors
/// [`Error::Sqlite`] when a query fails.
pub(crate) fn describe(
    conn: &Connection,
    name: &str,
    path: &Path,
    level: IntegrityLevel,
) -> Result<DatabaseInfo> {
    let size_bytes = std::fs::metadata(path)
        .map_err(|e| Error::io("read metadata of", path, e))?
        .len();
    let tables = count_tables(conn, path)?;
    let integrity_check = integrity(conn, path, level)?;
    let details = details(conn, path)?;
    Ok(DatabaseInfo {
        name: name.to_string(),
        engine_version: rusqlite::version().to_string(),
        size_bytes,
        tables,
        integrity_check,
        details,
    })
}

/// Opens a private copy and describes it (see [`describe`]).
pub(crate) fn describe_private(
    path: &Path,
    name: &str,
    level: IntegrityLevel,
) -> Result<DatabaseInfo> {
    let conn = open_private(path)?;
    describe(&conn, name, path, level)
}

/// Opens a live database read-only and describes it (see [`describe`]).
pub(crate) fn describe_live(
    path: &Path,
    name: &str,
    level: IntegrityLevel,
) -> Result<DatabaseInfo> {
    check_database_file(path)?;
    let conn = open_live(path)?;
    describe(&conn, name, path, level)
}

/// Every user table (not `sqlite_*`) sorted by name, with its exact row count.
///
/// A virtual table whose module is not available here is left out with a warning.
pub(crate) fn count_tables(conn: &Connection, path: &Path) -> Result<Vec<TableInfo>> {
    let mut stmt = conn
        .prepare(
            "SELECT name, coalesce(sql, '') FROM main.sqlite_schema \
             WHERE type = 'table' AND substr(name, 1, 7) <> 'sqlite_'",
        )
        .map_err(|e| Error::sqlite("list tables of", path, e))?;
    let names = stmt
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| Error::sqlite("list tables of", path, e))?;
    let mut tables = Vec::with_capacity(names.len());
    for (name, sql) in names {
        let query = format!("SELECT count(*) FROM main.{}", quote_identifier(&name));
        match conn.query_row(&query, [], |row| row.get::<_, i64>(0)) {
            Ok(rows) => tables.push(TableInfo {
                name,
                rows: u64::try_from(rows).unwrap_or(0),
            }),
            Err(e) if is_virtual(&sql) => {
                tracing::warn!(table = %name, db = %path.display(), error = %e, "virtual table not counted");
            }
            Err(e) => return Err(Error::sqlite("count rows of", path, e)),
        }
    }
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tables)
}

fn is_virtual(sql: &str) -> bool {
    sql.trim_start()
        .get(..20)
        .is_some_and(|s| s.eq_ignore_ascii_case("create virtual table"))
}

/// The pragma that checks at `level`: `integrity_check`, `quick_check`, or none for `Off`.
pub(crate) fn integrity_pragma(level: IntegrityLevel) -> Option<&'static str> {
    match level {
        IntegrityLevel::Standard | IntegrityLevel::Full => Some("integrity_check"),
        IntegrityLevel::Quick => Some("quick_check"),
        IntegrityLevel::Off => None,
    }
}

/// Runs `PRAGMA integrity_check` or `quick_check`: `Some("ok")` or the problems, one a line;
/// `None` when `level` is `Off`.
pub(crate) fn integrity(
    conn: &Connection,
    path: &Path,
    level: IntegrityLevel,
) -> Result<Option<String>> {
    let Some(pragma) = integrity_pragma(level) else {
        return Ok(None);
    };
    let sql = format!("PRAGMA main.{pragma}({INTEGRITY_MAX_ERRORS})");
    let lines = conn
        .prepare(&sql)
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| Error::sqlite("check integrity of", path, e))?;
    Ok(Some(lines.join("\n")))
}

/// `page_size`, `page_count`, `journal_mode` and `user_version`.
fn details(conn: &Connection, path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let int = |pragma: &str| -> Result<i64> {
        conn.query_row(&format!("PRAGMA main.{pragma}"), [], |row| row.get(0))
            .map_err(|e| Error::sqlite("read pragmas of", path, e))
    };
    let mut map = serde_json::Map::new();
    map.insert("page_size".into(), int("page_size")?.into());
    map.insert("page_count".into(), int("page_count")?.into());
    map.insert("journal_mode".into(), journal_mode(conn, path)?.into());
    map.insert("user_version".into(), int("user_version")?.into());
    Ok(map)
}

/// The journal mode: `wal` when the file's header says so (bytes 18 and 19 are 2), else what the
/// connection reports (`delete` for a rollback-journal database).
fn journal_mode(conn: &Connection, path: &Path) -> Result<String> {
    let mut head = [0u8; 20];
    let wal_header = File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head[18] == 2
        && head[19] == 2;
    if wal_header {
        return Ok("wal".into());
    }
    let mode: String = conn
        .query_row("PRAGMA main.journal_mode", [], |row| row.get(0))
        .map_err(|e| Error::sqlite("read pragmas of", path, e))?;
    Ok(mode.to_ascii_lowercase())
}

/// Runs one test query; returns each row's first column as text (`None` for NULL).
pub(crate) fn run_query(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<Option<String>>> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let text = match row.get_ref(0)? {
            ValueRef::Null => None,
            ValueRef::Integer(i) => Some(i.to_string()),
            ValueRef::Real(f) => Some(f.to_string()),
            ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
        };
        out.push(text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier(r#"we"ird"#), r#""we""ird""#);
    }

    #[test]
    fn uri_paths_are_encoded() {
        assert_eq!(uri_path(Path::new("/a b/c?d#e%")), "/a%20b/c%3Fd%23e%25");
    }

    #[test]
    fn virtual_tables_are_recognised() {
        assert!(is_virtual("  CREATE VIRTUAL TABLE t USING fts5(x)"));
        assert!(!is_virtual("CREATE TABLE t (x)"));
    }
}
