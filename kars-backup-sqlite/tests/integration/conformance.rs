//! The SQLite source passes the public source conformance suite: real database files in a
//! temporary directory, one directory per database.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use kars_backup_core::testing::source::{SourceFixture, source_conformance};
use kars_backup_core::{DynDatabaseSource, Error, Result};
use kars_backup_sqlite::SqliteSource;
use rusqlite::Connection;

/// SQLite databases `<dir>/<name>/app.db`.
struct SqliteFixture {
    dir: tempfile::TempDir,
}

fn sql(e: rusqlite::Error) -> Error {
    Error::source("sqlite fixture", e)
}

#[async_trait]
impl SourceFixture for SqliteFixture {
    type Db = PathBuf;

    async fn create(&self, name: &str) -> Result<PathBuf> {
        let path = self.absent(name).await?;
        let conn = Connection::open(&path).map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             CREATE INDEX users_name ON users(name);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
             INSERT INTO users SELECT i, 'user ' || i FROM n;",
        )
        .map_err(sql)?;
        Ok(path)
    }

    async fn absent(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        Ok(dir.join("app.db"))
    }

    fn source(&self, db: &PathBuf) -> Result<DynDatabaseSource> {
        Ok(Arc::new(SqliteSource::new(db)))
    }

    async fn mutate(&self, db: &PathBuf) -> Result<()> {
        let conn = Connection::open(db).map_err(sql)?;
        conn.execute_batch(
            "DELETE FROM users WHERE id > 40; UPDATE users SET name = 'x' WHERE id = 1;",
        )
        .map_err(sql)
    }

    async fn fingerprint(&self, db: &PathBuf) -> Result<String> {
        let conn = Connection::open(db).map_err(sql)?;
        conn.query_row(
            "SELECT count(*) || ':' || coalesce(group_concat(id || '=' || name, ','), '') FROM (SELECT * FROM users ORDER BY id)",
            [],
            |r| r.get(0),
        )
        .map_err(sql)
    }

    async fn surroundings(&self, db: &PathBuf) -> Result<Vec<String>> {
        let dir = db.parent().expect("a database lies in a directory");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_source_passes_the_source_conformance_suite() {
    let fixture = SqliteFixture {
        dir: tempfile::tempdir().unwrap(),
    };
    source_conformance(&fixture).await.unwrap();
}
