//! A downstream team's source: a key/value store kept as one JSON file (`{"key": "value", …}`),
//! written only against the public API. It restores into a staging file beside the store,
//! verifies it, swaps it in with a rename and can put the old file back; it passes the public
//! source conformance suite: `cargo run -p kars-backup-core --example custom_source`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::Utc;
use kars_backup_core::source::{PayloadFormat, SnapshotInfo, StageContext, StagedRestore};
use kars_backup_core::testing::source::{SourceFixture, source_conformance};
use kars_backup_core::verify::{check_min_rows, compare_counts};
use kars_backup_core::{
    DatabaseInfo, DatabaseSource, DynDatabaseSource, DynProgress, Error, IntegrityLevel,
    PayloadReader, PayloadWriter, Result, TableInfo, VerifyPlan, VerifyReport,
};

type Store = BTreeMap<String, String>;

/// The store at `path`.
#[derive(Debug)]
pub(crate) struct KvSource {
    path: PathBuf,
}

/// `<store>.<suffix>`: the staging copy and the previous store sit beside the store.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{suffix}"));
    PathBuf::from(name)
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(action, path, e)
}

/// Parses a store; bytes that are not one are an invalid archive (a verification failure).
fn parse(bytes: &[u8], name: &str) -> Result<Store> {
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidArchive {
        name: name.into(),
        reason: format!("not a key/value store: {e}"),
    })
}

/// The store described as a database with one table, `keys`.
fn describe(path: &Path, store: &Store, size: u64) -> DatabaseInfo {
    DatabaseInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        engine_version: "kv-json 1".into(),
        size_bytes: size,
        tables: vec![TableInfo {
            name: "keys".into(),
            rows: store.len() as u64,
        }],
        integrity_check: Some("ok".into()),
        details: Default::default(),
    }
}

#[async_trait]
impl DatabaseSource for KvSource {
    fn engine(&self) -> &str {
        "kv-json"
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn payload_format(&self) -> PayloadFormat {
        // Archive names end in one of `kars_backup_core::name::ARCHIVE_EXTENSIONS`; `dump` is
        // the engine-neutral one (the manifest's engine says what the payload is).
        PayloadFormat {
            extension: "dump".into(),
            compressed: false,
        }
    }

    fn default_name_prefix(&self) -> &str {
        "kv"
    }

    async fn inspect(&self) -> Result<Vec<DatabaseInfo>> {
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(io("read", &self.path))?;
        let store = parse(&bytes, &self.describe())?;
        Ok(vec![describe(&self.path, &store, bytes.len() as u64)])
    }

    async fn exists(&self) -> Result<bool> {
        Ok(tokio::fs::try_exists(&self.path)
            .await
            .map_err(io("look at", &self.path))?)
    }

    async fn write_payload(&self, mut out: PayloadWriter, _: DynProgress) -> Result<SnapshotInfo> {
        // One read of the whole file is one consistent snapshot (writers replace it by rename).
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(io("read", &self.path))?;
        let store = parse(&bytes, &self.describe())?;
        out.write_all(&bytes)
            .await
            .map_err(io("write the payload of", &self.path))?;
        out.finish()
            .await
            .map_err(io("write the payload of", &self.path))?;
        let databases = vec![describe(&self.path, &store, bytes.len() as u64)];
        Ok(SnapshotInfo {
            taken_at: Utc::now(),
            databases,
            physical: None,
        })
    }

    async fn stage_restore(
        &self,
        mut payload: PayloadReader,
        context: &StageContext,
    ) -> Result<Box<dyn StagedRestore>> {
        // Read and check everything first: nothing is written for a payload that fails.
        let mut bytes = Vec::new();
        while let Some(chunk) = payload
            .next_chunk()
            .await
            .map_err(io("download", &self.path))?
        {
            bytes.extend_from_slice(&chunk);
        }
        let store = parse(&bytes, &context.archive_name)?;
        let staging = beside(&self.path, "kars-staging");
        tokio::fs::write(&staging, &bytes)
            .await
            .map_err(io("write", &staging))?;
        Ok(Box::new(StagedKv {
            live: self.path.clone(),
            staging,
            store,
            swapped: None,
        }))
    }

    async fn clean_leftovers(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let (staging, previous) = (
            beside(&self.path, "kars-staging"),
            beside(&self.path, "kars-previous"),
        );
        if staging.exists() {
            std::fs::remove_file(&staging).map_err(io("remove", &staging))?;
            done.push(format!("removed the staging copy {}", staging.display()));
        }
        if previous.exists() {
            // A swap that died half-way: the previous store goes back.
            std::fs::rename(&previous, &self.path).map_err(io("rename", &previous))?;
            done.push(format!("put {} back", self.path.display()));
        }
        Ok(done)
    }
}

/// A verified copy of a store, waiting beside the live one.
#[derive(Debug)]
struct StagedKv {
    live: PathBuf,
    staging: PathBuf,
    store: Store,
    /// After the swap: whether there was a live store (now at `.kars-previous`).
    swapped: Option<bool>,
}

#[async_trait]
impl StagedRestore for StagedKv {
    fn describe(&self) -> String {
        self.staging.display().to_string()
    }

    async fn verify(&mut self, plan: &VerifyPlan, context: &StageContext) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let found = [TableInfo {
            name: "keys".into(),
            rows: self.store.len() as u64,
        }];
        if plan.integrity != IntegrityLevel::Off {
            report.push("integrity", true, "a well-formed key/value store");
        }
        if let (true, Some(m)) = (plan.check_counts, &context.manifest) {
            let expected: Vec<TableInfo> =
                m.databases.iter().flat_map(|d| d.tables.clone()).collect();
            report.checks.push(compare_counts("", &expected, &found));
        }
        report
            .checks
            .extend(check_min_rows("", &plan.min_rows, &found));
        for q in &plan.queries {
            report.push(q.check_name(), false, "a key/value store answers no SQL");
        }
        Ok(report)
    }

    async fn swap_in(&mut self) -> Result<()> {
        let previous = beside(&self.live, "kars-previous");
        let existed = self.live.exists();
        if existed {
            std::fs::rename(&self.live, &previous).map_err(io("rename", &self.live))?;
        }
        self.swapped = Some(existed);
        std::fs::rename(&self.staging, &self.live).map_err(io("rename", &self.staging))
    }

    async fn roll_back(&mut self) -> Result<()> {
        match self.swapped.take() {
            Some(true) => std::fs::rename(beside(&self.live, "kars-previous"), &self.live)
                .map_err(io("put back", &self.live)),
            Some(false) => std::fs::remove_file(&self.live).map_err(io("remove", &self.live)),
            None => Ok(()),
        }
    }

    async fn finish(self: Box<Self>) -> Result<Option<String>> {
        let previous = beside(&self.live, "kars-previous");
        if previous.exists() {
            std::fs::remove_file(&previous).map_err(io("remove", &previous))?;
        }
        Ok(None)
    }

    async fn discard(self: Box<Self>) -> Result<()> {
        match std::fs::remove_file(&self.staging) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove", &self.staging, e))
            }
            _ => Ok(()),
        }
    }
}

/// The conformance suite's fixture: stores in directories of a temporary directory.
#[derive(Debug)]
struct KvFixture {
    dir: tempfile::TempDir,
}

#[async_trait]
impl SourceFixture for KvFixture {
    type Db = PathBuf;

    async fn create(&self, name: &str) -> Result<PathBuf> {
        let path = self.absent(name).await?;
        let store: Store = (1..=20)
            .map(|i| (format!("user:{i}"), format!("name {i}")))
            .collect();
        std::fs::write(&path, serde_json::to_vec(&store).expect("json"))
            .map_err(io("write", &path))?;
        Ok(path)
    }

    async fn absent(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        Ok(dir.join("store.json"))
    }

    fn source(&self, db: &PathBuf) -> Result<DynDatabaseSource> {
        Ok(std::sync::Arc::new(KvSource { path: db.clone() }))
    }

    async fn mutate(&self, db: &PathBuf) -> Result<()> {
        let mut store = parse(&std::fs::read(db).map_err(io("read", db))?, "store")?;
        store.insert("user:21".into(), "added later".into());
        std::fs::write(db, serde_json::to_vec(&store).expect("json")).map_err(io("write", db))
    }

    async fn fingerprint(&self, db: &PathBuf) -> Result<String> {
        Ok(String::from_utf8_lossy(&std::fs::read(db).map_err(io("read", db))?).into_owned())
    }

    async fn surroundings(&self, db: &PathBuf) -> Result<Vec<String>> {
        let dir = db.parent().expect("a store lies in a directory");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(io("list", dir))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// Runs the source conformance suite against stores in a temporary directory.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn main() -> Result<()> {
    let fixture = KvFixture {
        dir: tempfile::tempdir().expect("temporary directory"),
    };
    source_conformance(&fixture).await?;
    println!("the kv-json source passes the source conformance suite");
    Ok(())
}
