//! The PostgreSQL source passes the public source conformance suite, against a real server
//! (`TestCluster::shared`: under `CI=true` a missing server fails the test).

use std::sync::Arc;

use async_trait::async_trait;
use kars_backup_core::testing::source::{SourceFixture, source_conformance};
use kars_backup_core::{DynDatabaseSource, Error, Result};
use kars_backup_postgres::PostgresSource;
use kars_backup_postgres::testing::TestCluster;

/// Databases on the shared test cluster, named `<name>_<pid>_<n>_<x>`.
struct PostgresFixture {
    pg: &'static TestCluster,
}

#[async_trait]
impl SourceFixture for PostgresFixture {
    type Db = String;

    async fn create(&self, name: &str) -> Result<String> {
        let db = TestCluster::unique_name(name);
        self.pg.create_kars_database(&db);
        Ok(db)
    }

    async fn absent(&self, name: &str) -> Result<String> {
        Ok(TestCluster::unique_name(name))
    }

    fn source(&self, db: &String) -> Result<DynDatabaseSource> {
        Ok(Arc::new(PostgresSource::from_url(&self.pg.url(db))?))
    }

    async fn mutate(&self, db: &String) -> Result<()> {
        self.pg
            .try_psql(
                db,
                "INSERT INTO companies (name) VALUES ('Later Inc'); DELETE FROM audit_logs;",
            )
            .map(|_| ())
            .map_err(|e| Error::source("postgres fixture", e))
    }

    async fn fingerprint(&self, db: &String) -> Result<String> {
        Ok(format!("{:?}", self.pg.content_hashes(db)))
    }

    async fn surroundings(&self, db: &String) -> Result<Vec<String>> {
        Ok(self.pg.databases_like(db))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_source_passes_the_source_conformance_suite() {
    let Some(pg) = TestCluster::shared() else {
        return;
    };
    source_conformance(&PostgresFixture { pg }).await.unwrap();
}
