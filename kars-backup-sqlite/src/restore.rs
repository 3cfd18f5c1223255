//! Staged restore: extract into a private staging directory beside the target, verify there,
//! swap in with renames that keep the previous database, and roll back exactly.
//!
//! # File mode (the target is a database file)
//! `swap_in` renames `<db>` to `<db>.pre-restore-<UTC time>` and its `-wal`, `-shm` and
//! `-journal` files to the same name plus their suffix (so the old database keeps its own WAL, and
//! no stale WAL is applied to the restored file), then renames the staged file to `<db>` and syncs
//! the directory. `roll_back` removes the restored file (and any side files made since) and renames
//! everything back, so the original is byte-identical.
//!
//! # Volume mode (the target is a directory, possibly a mount point)
//! `swap_in` moves every top-level entry into `<dir>/.kars-pre-restore-<UTC time>/`, then moves the
//! staged entries in; the directory itself is never renamed. `roll_back` reverses it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::Utc;
use kars_backup_core::verify;
use kars_backup_core::{
    DatabaseInfo, Manifest, PayloadReader, StageContext, StagedRestore, TableInfo, VerifyPlan,
    VerifyReport,
};
use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;

use crate::archive::{self, ExtractOptions};
use crate::error::{Error, Result};
use crate::inspect;
use crate::volume::{self, KEPT_FILE_INFIX, KEPT_VOLUME_PREFIX, SIDE_SUFFIXES, STAGING_PREFIX};

/// Whether a target is one database file or a directory of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One database file.
    File,
    /// A directory (a volume).
    Volume,
}

/// A staged database: its name (as in the manifest) and its file in the staging directory.
#[derive(Debug, Clone)]
struct StagedDatabase {
    name: String,
    path: PathBuf,
}

/// What `swap_in` did, so that `roll_back` can undo exactly that.
#[derive(Debug, Default)]
struct Swap {
    /// Renames done, in order: (from, to).
    moves: Vec<(PathBuf, PathBuf)>,
    /// The live entries' previous content was moved aside completely; from then on, everything
    /// at the target (but kars-backup's artefacts) belongs to the restored data.
    cleared: bool,
    /// The restored entries put in place.
    installed: Vec<PathBuf>,
    /// Where the previous database (file mode) or content (volume mode) is kept.
    kept: Option<PathBuf>,
    /// A directory made to keep the previous content (volume mode).
    kept_dir_created: Option<PathBuf>,
}

/// A restore waiting in its staging directory.
#[derive(Debug)]
pub(crate) struct SqliteStaged {
    target: PathBuf,
    layout: Layout,
    staging: Option<TempDir>,
    databases: Vec<StagedDatabase>,
    created_dirs: Vec<PathBuf>,
    swap: Swap,
}

/// Runs blocking work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task {
            what,
            reason: e.to_string(),
        })
}

/// Extracts `payload` into a new staging directory beside `target` and finds the database(s).
///
/// # Errors
/// Archive errors ([`Error::UnsafeEntry`], [`Error::CorruptArchive`], [`Error::NoDatabase`],
/// [`Error::AmbiguousDatabase`]) and file-system errors. Nothing is left behind on error.
pub(crate) async fn stage(
    target: PathBuf,
    layout: Layout,
    payload: PayloadReader,
    context: &StageContext,
) -> Result<SqliteStaged> {
    let archive_name = context.archive_name.clone();
    let manifest = context.manifest.clone();
    blocking("the restore staging", move || {
        stage_blocking(target, layout, payload, &archive_name, manifest.as_ref())
    })
    .await?
}

fn stage_blocking(
    target: PathBuf,
    layout: Layout,
    payload: PayloadReader,
    archive_name: &str,
    manifest: Option<&Manifest>,
) -> Result<SqliteStaged> {
    let base = match layout {
        Layout::File => target.parent().map(Path::to_path_buf).unwrap_or_default(),
        Layout::Volume => target.clone(),
    };
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let created_dirs = create_missing_dirs(&base)?;
    let result = extract_and_find(&target, layout, &base, payload, archive_name, manifest);
    match result {
        Ok((staging, databases)) => Ok(SqliteStaged {
            target,
            layout,
            staging: Some(staging),
            databases,
            created_dirs,
            swap: Swap::default(),
        }),
        Err(e) => {
            remove_created_dirs(&created_dirs);
            Err(e)
        }
    }
}

fn extract_and_find(
    target: &Path,
    layout: Layout,
    base: &Path,
    payload: PayloadReader,
    archive_name: &str,
    manifest: Option<&Manifest>,
) -> Result<(TempDir, Vec<StagedDatabase>)> {
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(base)
        .map_err(|e| Error::io("create a staging directory in", base, e))?;
    archive::set_mode(staging.path(), 0o700)?;
    let options = ExtractOptions {
        preserve_owner: layout == Layout::Volume,
    };
    let extracted =
        archive::extract_safely(payload, staging.path(), archive_name, options, |rel| {
            // A volume's top level must not receive entries named like our own artefacts.
            layout == Layout::Volume
                && rel.components().count() == 1
                && volume::is_artefact(rel.as_os_str())
        })?;
    tracing::info!(staging = %staging.path().display(), files = extracted.files.len(), bytes = extracted.bytes, "archive extracted");
    let databases = match layout {
        Layout::File => {
            let (rel, name) = choose_database(
                &extracted.files,
                staging.path(),
                target,
                manifest,
                archive_name,
            )?;
            vec![StagedDatabase {
                name,
                path: staging.path().join(rel),
            }]
        }
        Layout::Volume => staged_databases(&extracted.files, staging.path())?,
    };
    for db in &databases {
        settle_side_files(&db.path)?;
    }
    Ok((staging, databases))
}

/// Picks the entry to restore into a database file: the manifest's database, else the entry named
/// like the target, else the only SQLite file.
fn choose_database(
    files: &[PathBuf],
    staging: &Path,
    target: &Path,
    manifest: Option<&Manifest>,
    archive_name: &str,
) -> Result<(PathBuf, String)> {
    let target_name = target.file_name().map(|n| n.to_string_lossy().into_owned());
    let named_like_target =
        |rel: &Path| rel.file_name().map(|n| n.to_string_lossy().into_owned()) == target_name;
    let no_database = |reason: String| Error::NoDatabase {
        archive: archive_name.to_string(),
        reason,
    };
    let ambiguous = |candidates: Vec<String>| Error::AmbiguousDatabase {
        archive: archive_name.to_string(),
        target: target.to_path_buf(),
        candidates,
    };
    let chosen = match manifest
        .map(|m| m.databases.as_slice())
        .filter(|d| !d.is_empty())
    {
        Some(dbs) => {
            let db = match dbs {
                [only] => only,
                many => {
                    let matching: Vec<&DatabaseInfo> = many
                        .iter()
                        .filter(|d| named_like_target(Path::new(&d.name)))
                        .collect();
                    match matching.as_slice() {
                        [one] => *one,
                        _ => return Err(ambiguous(many.iter().map(|d| d.name.clone()).collect())),
                    }
                }
            };
            let rel = archive::safe_relative_path(&db.name)
                .ok()
                .flatten()
                .filter(|rel| files.contains(rel))
                .ok_or_else(|| {
                    no_database(format!(
                        "its manifest lists the database {:?} but the archive has no such file",
                        db.name
                    ))
                })?;
            (rel, db.name.clone())
        }
        None => {
            choose_without_manifest(files, staging, &named_like_target, &no_database, &ambiguous)?
        }
    };
    let path = staging.join(&chosen.0);
    if fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > 0 && !inspect::has_sqlite_header(&path)?
    {
        return Err(no_database(format!(
            "its entry {} is not an SQLite database",
            chosen.1
        )));
    }
    Ok(chosen)
}

fn choose_without_manifest(
    files: &[PathBuf],
    staging: &Path,
    named_like_target: &dyn Fn(&Path) -> bool,
    no_database: &dyn Fn(String) -> Error,
    ambiguous: &dyn Fn(Vec<String>) -> Error,
) -> Result<(PathBuf, String)> {
    let mut named: Vec<&PathBuf> = files.iter().filter(|f| named_like_target(f)).collect();
    if named.len() > 1 {
        // Prefer the top level (`./assets.db` over `old/assets.db`).
        named.retain(|f| f.components().count() == 1);
    }
    match named.as_slice() {
        [one] => return Ok(((*one).clone(), volume::database_name(one))),
        [] => {}
        many => {
            return Err(ambiguous(
                many.iter().map(|f| volume::database_name(f)).collect(),
            ));
        }
    }
    let databases = staged_databases(files, staging)?;
    match databases.as_slice() {
        [one] => Ok((PathBuf::from(&one.name), one.name.clone())),
        [] => {
            let mut listed: Vec<String> = files
                .iter()
                .take(10)
                .map(|f| volume::database_name(f))
                .collect();
            if files.len() > 10 {
                listed.push(format!("… {} more", files.len() - 10));
            }
            Err(no_database(format!(
                "it holds no SQLite database (entries: {})",
                if listed.is_empty() {
                    "none".to_string()
                } else {
                    listed.join(", ")
                }
            )))
        }
        many => Err(ambiguous(many.iter().map(|d| d.name.clone()).collect())),
    }
}

/// Every SQLite database among the extracted files (side files excluded).
fn staged_databases(files: &[PathBuf], staging: &Path) -> Result<Vec<StagedDatabase>> {
    let mut out = Vec::new();
    for rel in files {
        let path = staging.join(rel);
        if volume::is_side_file(&path) {
            continue;
        }
        if inspect::has_sqlite_header(&path)? {
            out.push(StagedDatabase {
                name: volume::database_name(rel),
                path,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A runbook archive taken with `tar` from a live volume may hold `-wal` or `-journal` files:
/// let SQLite apply (or roll back) them in the staging directory, so the staged file is
/// self-contained. A stale `-shm` is removed first.
fn settle_side_files(db: &Path) -> Result<()> {
    let side = |suffix: &str| with_suffix(db, suffix);
    let has_journal = side("-wal").exists() || side("-journal").exists();
    if !has_journal {
        let _ = fs::remove_file(side("-shm"));
        return Ok(());
    }
    let _ = fs::remove_file(side("-shm"));
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).map_err(|e| Error::sqlite("open", db, e))?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
        .map_err(|e| Error::sqlite("apply the archived journal of", db, e))?;
    conn.close()
        .map_err(|(_, e)| Error::sqlite("close", db, e))?;
    for suffix in SIDE_SUFFIXES {
        let _ = fs::remove_file(side(suffix));
    }
    tracing::info!(db = %db.display(), "applied the -wal/-journal file found in the archive");
    Ok(())
}

/// `path` with `suffix` appended to its file name (`a.db` + `-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates `dir` and its missing ancestors; returns the ones it created, outermost first.
fn create_missing_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    for d in &missing {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                remove_created_dirs(&missing);
                return Err(Error::io("create directory", d, e));
            }
        }
    }
    Ok(missing)
}

/// Removes directories made by [`create_missing_dirs`], innermost first, if they are empty.
fn remove_created_dirs(dirs: &[PathBuf]) {
    for d in dirs.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

/// Syncs a directory, so renames in it survive a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn rename(from: &Path, to: &Path, swap: &mut Swap) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io("rename", from, e))?;
    swap.moves.push((from.to_path_buf(), to.to_path_buf()));
    Ok(())
}

/// A name that nothing uses yet: `base`, else `base-1`, `base-2`, … (checking the side files too).
fn unused_path(base: PathBuf) -> PathBuf {
    let taken = |p: &Path| {
        fs::symlink_metadata(p).is_ok()
            || SIDE_SUFFIXES
                .iter()
                .any(|s| fs::symlink_metadata(with_suffix(p, s)).is_ok())
    };
    let mut candidate = base.clone();
    let mut n = 1;
    while taken(&candidate) {
        candidate = with_suffix(&base, &format!("-{n}"));
        n += 1;
    }
    candidate
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn timestamp() -> String {
    Utc::now().format("%Y%m%dT%H%M%S").to_string()
}

/// File mode: moves the live database and its side files aside, then the staged file in.
fn swap_file(target: &Path, staged: &Path, swap: &mut Swap) -> Result<()> {
    let dir = parent_dir(target);
    let original = match fs::metadata(target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read metadata of", target, e)),
    };
    let kept = unused_path(with_suffix(
        target,
        &format!("{KEPT_FILE_INFIX}{}", timestamp()),
    ));
    if fs::symlink_metadata(target).is_ok() {
        rename(target, &kept, swap)?;
        swap.kept = Some(kept.clone());
    }
    for suffix in SIDE_SUFFIXES {
        let side = with_suffix(target, suffix);
        if fs::symlink_metadata(&side).is_ok() {
            if swap.kept.is_none() {
                tracing::warn!(file = %side.display(), "stale SQLite side file without its database moved aside");
            }
            rename(&side, &with_suffix(&kept, suffix), swap)?;
        }
    }
    swap.cleared = true;
    apply_original_attributes(staged, original.as_ref())?;
    fs::rename(staged, target).map_err(|e| Error::io("rename", staged, e))?;
    swap.installed.push(target.to_path_buf());
    sync_dir(&dir)
}

/// Gives the restored file the previous file's permissions and owner, or 0600.
fn apply_original_attributes(staged: &Path, original: Option<&fs::Metadata>) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match original {
            Some(meta) => {
                archive::set_mode(staged, meta.mode() & 0o7777)?;
                archive::set_owner(staged, Some((meta.uid(), meta.gid())));
            }
            None => archive::set_mode(staged, 0o600)?,
        }
    }
    #[cfg(not(unix))]
    let _ = (staged, original);
    Ok(())
}

/// File mode: removes the restored file and its side files, then renames everything back.
fn roll_back_file(target: &Path, swap: &mut Swap) -> Result<()> {
    if swap.cleared {
        for path in std::iter::once(target.to_path_buf())
            .chain(SIDE_SUFFIXES.iter().map(|s| with_suffix(target, s)))
        {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
        }
        swap.installed.clear();
        swap.cleared = false;
    }
    undo_moves(swap)?;
    swap.kept = None;
    sync_dir(&parent_dir(target))
}

fn undo_moves(swap: &mut Swap) -> Result<()> {
    while let Some((from, to)) = swap.moves.last() {
        fs::rename(to, from).map_err(|e| Error::io("rename", to, e))?;
        swap.moves.pop();
    }
    Ok(())
}

/// Volume mode: moves every top-level entry into a kept directory, then the staged entries in.
fn swap_volume(target: &Path, staging: &Path, swap: &mut Swap) -> Result<()> {
    let kept = unused_path(target.join(format!("{KEPT_VOLUME_PREFIX}{}", timestamp())));
    fs::create_dir(&kept).map_err(|e| Error::io("create directory", &kept, e))?;
    archive::set_mode(&kept, 0o700)?;
    swap.kept_dir_created = Some(kept.clone());
    let mut moved_any = false;
    for name in top_level_entries(target)? {
        rename(&target.join(&name), &kept.join(&name), swap)?;
        moved_any = true;
    }
    swap.cleared = true;
    if moved_any {
        swap.kept = Some(kept.clone());
    }
    for name in list_dir(staging)? {
        let to = target.join(&name);
        fs::rename(staging.join(&name), &to)
            .map_err(|e| Error::io("rename", staging.join(&name), e))?;
        swap.installed.push(to);
    }
    sync_dir(&kept)?;
    sync_dir(target)?;
    if !moved_any {
        let _ = fs::remove_dir(&kept);
        swap.kept_dir_created = None;
    }
    Ok(())
}

/// Volume mode: removes the restored entries (and anything made since), then moves the previous
/// content back.
fn roll_back_volume(target: &Path, swap: &mut Swap) -> Result<()> {
    if swap.cleared {
        for name in top_level_entries(target)? {
            let path = target.join(&name);
            let is_dir = fs::symlink_metadata(&path)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            let removed = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| Error::io("remove", &path, e))?;
        }
        swap.installed.clear();
        swap.cleared = false;
    }
    undo_moves(swap)?;
    if let Some(kept) = swap.kept_dir_created.take() {
        fs::remove_dir(&kept).map_err(|e| Error::io("remove", &kept, e))?;
    }
    swap.kept = None;
    sync_dir(target)
}

/// The names in a directory, sorted.
fn list_dir(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(|e| Error::io("read directory", dir, e))?;
    names.sort();
    Ok(names)
}

/// The names at the top of a volume, without kars-backup's artefacts.
fn top_level_entries(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    Ok(list_dir(dir)?
        .into_iter()
        .filter(|n| !volume::is_artefact(n))
        .collect())
}

/// Runs the verification plan against the staged databases (see [`StagedRestore::verify`]).
fn verify_blocking(
    databases: &[StagedDatabase],
    plan: &VerifyPlan,
    manifest: Option<&Manifest>,
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut counted: Vec<(&StagedDatabase, Vec<TableInfo>)> = Vec::new();
    if databases.is_empty() {
        report.push("databases", false, "the archive holds no SQLite database");
    }
    for db in databases {
        if let Some(tables) = verify_database(db, plan, manifest, &mut report) {
            counted.push((db, tables));
        }
    }
    if let Some(m) = manifest {
        for expected in &m.databases {
            if !databases.iter().any(|d| d.name == expected.name) && databases.len() > 1 {
                report.push(
                    format!("database {}", expected.name),
                    false,
                    "listed in the manifest but missing from the archive",
                );
            }
        }
    }
    check_min_rows(&counted, &plan.min_rows, &mut report);
    if let Some(primary) = primary_database(databases, manifest) {
        run_queries(primary, plan, &mut report);
    }
    report
}

/// Integrity and row counts of one staged database; returns its tables when they could be counted.
fn verify_database(
    db: &StagedDatabase,
    plan: &VerifyPlan,
    manifest: Option<&Manifest>,
    report: &mut VerifyReport,
) -> Option<Vec<TableInfo>> {
    let conn = match inspect::open_private(&db.path) {
        Ok(c) => c,
        Err(e) => {
            report.push(format!("open {}", db.name), false, e.to_string());
            return None;
        }
    };
    if let Some(check) = inspect::integrity_pragma(plan.integrity) {
        let label = format!("{check} of {}", db.name);
        match inspect::integrity(&conn, &db.path, plan.integrity) {
            Ok(Some(result)) => report.push(label, result == "ok", result),
            Ok(None) => {}
            Err(e) => report.push(label, false, e.to_string()),
        }
    }
    let tables = match inspect::count_tables(&conn, &db.path) {
        Ok(t) => t,
        Err(e) => {
            report.push(format!("row counts of {}", db.name), false, e.to_string());
            return None;
        }
    };
    if plan.check_counts {
        match manifest {
            Some(m) => match m.databases.iter().find(|d| d.name == db.name) {
                Some(expected) => {
                    report
                        .checks
                        .push(verify::compare_counts(&db.name, &expected.tables, &tables))
                }
                None => report.push(
                    format!("row counts of {}", db.name),
                    false,
                    "the manifest does not list this database",
                ),
            },
            None => report.push(
                format!("row counts of {}", db.name),
                true,
                format!(
                    "{} tables, {} rows; not compared: the archive has no manifest",
                    tables.len(),
                    tables.iter().map(|t| t.rows).sum::<u64>()
                ),
            ),
        }
    }
    Some(tables)
}

/// Minimum row counts: each table is looked up in the first database that has it.
fn check_min_rows(
    counted: &[(&StagedDatabase, Vec<TableInfo>)],
    minimums: &[TableInfo],
    report: &mut VerifyReport,
) {
    for minimum in minimums {
        let holder = counted
            .iter()
            .find(|(_, tables)| tables.iter().any(|t| t.name == minimum.name))
            .or(counted.first());
        match holder {
            Some((db, tables)) => report.checks.extend(verify::check_min_rows(
                &db.name,
                std::slice::from_ref(minimum),
                tables,
            )),
            None => report.push(
                format!("at least {} rows in {}", minimum.rows, minimum.name),
                false,
                "no database could be counted",
            ),
        }
    }
}

/// The database test queries run against: the manifest's first database, else the first by name.
fn primary_database<'a>(
    databases: &'a [StagedDatabase],
    manifest: Option<&Manifest>,
) -> Option<&'a StagedDatabase> {
    manifest
        .and_then(|m| m.databases.first())
        .and_then(|first| databases.iter().find(|d| d.name == first.name))
        .or(databases.first())
}

/// Runs each test query read-only; a query that fails is a failed check.
fn run_queries(db: &StagedDatabase, plan: &VerifyPlan, report: &mut VerifyReport) {
    if plan.queries.is_empty() {
        return;
    }
    let conn = match inspect::open_private(&db.path) {
        Ok(c) => c,
        Err(e) => {
            report.push(format!("open {}", db.name), false, e.to_string());
            return;
        }
    };
    for query in &plan.queries {
        match inspect::run_query(&conn, &query.sql) {
            Ok(rows) => report.checks.push(verify::judge_query(query, &rows)),
            Err(e) => report.push(
                format!("query: {}", query.sql),
                false,
                format!("failed in {}: {e}", db.name),
            ),
        }
    }
}

impl SqliteStaged {
    fn staging_path(&self) -> Option<PathBuf> {
        self.staging.as_ref().map(|s| s.path().to_path_buf())
    }

    fn core_error(&self, e: Error) -> kars_backup_core::Error {
        e.into_core(&self.target.display().to_string())
    }

    /// Removes the staging directory.
    async fn remove_staging(&mut self) -> Result<()> {
        if let Some(staging) = self.staging.take() {
            blocking("removing the staging directory", move || {
                let path = staging.path().to_path_buf();
                staging.close().map_err(|e| Error::io("remove", path, e))
            })
            .await??;
        }
        Ok(())
    }
}

#[async_trait]
impl StagedRestore for SqliteStaged {
    fn describe(&self) -> String {
        match (self.layout, self.databases.first()) {
            (Layout::File, Some(db)) => db.path.display().to_string(),
            _ => self
                .staging_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| self.target.display().to_string()),
        }
    }

    async fn verify(
        &mut self,
        plan: &VerifyPlan,
        context: &StageContext,
    ) -> kars_backup_core::Result<VerifyReport> {
        let databases = self.databases.clone();
        let plan = plan.clone();
        let manifest = context.manifest.clone();
        blocking("the verification", move || {
            verify_blocking(&databases, &plan, manifest.as_ref())
        })
        .await
        .map_err(|e| self.core_error(e))
    }

    async fn swap_in(&mut self) -> kars_backup_core::Result<()> {
        let target = self.target.clone();
        let layout = self.layout;
        let staged = match layout {
            Layout::File => self.databases.first().map(|d| d.path.clone()),
            Layout::Volume => self.staging_path(),
        };
        let Some(staged) = staged else {
            return Err(self.core_error(Error::NoDatabase {
                archive: target.display().to_string(),
                reason: "nothing is staged".into(),
            }));
        };
        let mut swap = std::mem::take(&mut self.swap);
        let (swap, result) = blocking("the swap", move || {
            let result = match layout {
                Layout::File => swap_file(&target, &staged, &mut swap),
                Layout::Volume => swap_volume(&target, &staged, &mut swap),
            };
            (swap, result)
        })
        .await
        .map_err(|e| self.core_error(e))?;
        self.swap = swap;
        if result.is_ok() {
            tracing::info!(target = %self.target.display(), kept = ?self.swap.kept, "restored data swapped in");
        }
        result.map_err(|e| self.core_error(e))
    }

    async fn roll_back(&mut self) -> kars_backup_core::Result<()> {
        let target = self.target.clone();
        let layout = self.layout;
        let mut swap = std::mem::take(&mut self.swap);
        let (swap, result) = blocking("the rollback", move || {
            let result = match layout {
                Layout::File => roll_back_file(&target, &mut swap),
                Layout::Volume => roll_back_volume(&target, &mut swap),
            };
            (swap, result)
        })
        .await
        .map_err(|e| self.core_error(e))?;
        self.swap = swap;
        if result.is_ok() {
            tracing::info!(target = %self.target.display(), "rolled back to the previous data");
        }
        result.map_err(|e| self.core_error(e))
    }

    async fn finish(mut self: Box<Self>) -> kars_backup_core::Result<Option<String>> {
        let kept = self.swap.kept.as_ref().map(|p| p.display().to_string());
        if let Err(e) = self.remove_staging().await {
            tracing::warn!(error = %e, "the staging directory could not be removed");
        }
        Ok(kept)
    }

    async fn discard(mut self: Box<Self>) -> kars_backup_core::Result<()> {
        let result = self.remove_staging().await;
        if self.swap.moves.is_empty() && !self.swap.cleared {
            let created = std::mem::take(&mut self.created_dirs);
            let _ = blocking("removing created directories", move || {
                remove_created_dirs(&created)
            })
            .await;
        }
        result.map_err(|e| self.core_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_append_to_the_file_name() {
        assert_eq!(
            with_suffix(Path::new("/d/a.db"), "-wal"),
            PathBuf::from("/d/a.db-wal")
        );
    }

    #[test]
    fn unused_paths_skip_taken_names() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("a.db.pre-restore-x");
        assert_eq!(unused_path(base.clone()), base);
        fs::write(with_suffix(&base, "-wal"), b"").unwrap();
        assert_eq!(unused_path(base.clone()), with_suffix(&base, "-1"));
    }

    #[test]
    fn missing_dirs_are_created_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        let created = create_missing_dirs(&deep).unwrap();
        assert_eq!(created.len(), 3);
        assert!(deep.is_dir());
        remove_created_dirs(&created);
        assert!(!dir.path().join("a").exists());
    }
}
