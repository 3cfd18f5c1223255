//! Restore: the payload (plain SQL, custom archive, or a tar of a directory dump) is loaded with
//! `psql` or `pg_restore`, either into a new staging database that is verified and swapped in
//! with renames (safe mode), or into the live database in one transaction (in-place mode).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kars_backup_core::{
    InUsePolicy, Manifest, PayloadReader, StageContext, StagedRestore, VerifyPlan, VerifyReport,
};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::conn::{ConnInfo, MAINTENANCE_DB, quote_ident, quote_literal};
use crate::error::{Error, Result};
use crate::freeze::FreezeCopies;
use crate::parallel::{self, LoadedCounts, ParallelLoad};
use crate::sessions;
use crate::source::{PostgresSource, RestoreMode};
use crate::tools::{self, Tools};
use crate::verify;

/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
pub(crate) const MAX_IDENT: usize = 63;

/// What the payload is, recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadKind {
    /// Plain SQL (`pg_dump`, `pg_dump | gzip` once decompressed).
    Plain,
    /// A custom-format archive (`pg_dump -Fc`, starts with `PGDMP`).
    Custom,
    /// A tar of a directory-format dump.
    DirectoryTar,
}

impl PayloadKind {
    fn sniff(first: &[u8]) -> PayloadKind {
        if first.starts_with(b"PGDMP") {
            PayloadKind::Custom
        } else if first.len() >= 262 && &first[257..262] == b"ustar" {
            PayloadKind::DirectoryTar
        } else {
            PayloadKind::Plain
        }
    }
}

/// Reads the first bytes of the payload (at least 512 unless it is shorter).
async fn read_head(payload: &mut PayloadReader, archive: &str) -> Result<Bytes> {
    let mut head = Vec::new();
    while head.len() < 512 {
        match payload.next_chunk().await {
            Ok(Some(c)) => head.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => {
                return Err(Error::InvalidArchive {
                    archive: archive.to_string(),
                    reason: format!("reading the archive failed: {e}"),
                });
            }
        }
    }
    if head.is_empty() {
        return Err(Error::InvalidArchive {
            archive: archive.to_string(),
            reason: format!("{archive} is empty"),
        });
    }
    Ok(Bytes::from(head))
}

/// A payload read from its start again: the head already read, then the rest.
pub(crate) struct Payload {
    head: Bytes,
    rest: PayloadReader,
    kind: PayloadKind,
}

impl Payload {
    async fn open(mut rest: PayloadReader, archive: &str) -> Result<Self> {
        let head = read_head(&mut rest, archive).await?;
        let kind = PayloadKind::sniff(&head);
        Ok(Payload { head, rest, kind })
    }

    /// The next chunk of the payload from its start (the head first); `None` at its end.
    pub(crate) async fn next_chunk(&mut self, archive: &str) -> Result<Option<Bytes>> {
        if !self.head.is_empty() {
            return Ok(Some(std::mem::take(&mut self.head)));
        }
        self.rest
            .next_chunk()
            .await
            .map_err(|e| Error::InvalidArchive {
                archive: archive.to_string(),
                reason: format!("reading the archive failed: {e}"),
            })
    }

    /// Writes the whole payload into a child's standard input; `Ok(false)` when the child stopped
    /// reading (its exit status tells why).
    /// With `freeze`, a plain dump's `COPY` statements are rewritten on the way (see
    /// [`FreezeCopies`]).
    async fn feed(
        mut self,
        stdin: &mut tokio::process::ChildStdin,
        archive: &str,
        mut freeze: Option<&mut FreezeCopies>,
    ) -> Result<bool> {
        let mut out = Vec::new();
        let mut write = async |chunk: &[u8], freeze: &mut Option<&mut FreezeCopies>| {
            let bytes = match freeze {
                Some(f) => {
                    out.clear();
                    f.push(chunk, &mut out);
                    &out[..]
                }
                None => chunk,
            };
            stdin.write_all(bytes).await.is_ok()
        };
        let head = std::mem::take(&mut self.head);
        if !write(&head, &mut freeze).await {
            return Ok(false);
        }
        loop {
            match self.rest.next_chunk().await {
                Ok(Some(c)) => {
                    if !write(&c, &mut freeze).await {
                        return Ok(false);
                    }
                }
                Ok(None) => {
                    if let Some(f) = freeze {
                        let mut last = Vec::new();
                        f.finish(&mut last);
                        if stdin.write_all(&last).await.is_err() {
                            return Ok(false);
                        }
                    }
                    return Ok(true);
                }
                Err(e) => {
                    return Err(Error::InvalidArchive {
                        archive: archive.to_string(),
                        reason: format!("reading the archive failed: {e}"),
                    });
                }
            }
        }
    }

    /// Writes the payload into a private file (for `pg_restore --jobs`, which needs a seekable
    /// archive, and for in-place restores).
    async fn spool(mut self, dir: &Path, archive: &str) -> Result<(PathBuf, PayloadKind)> {
        let kind = self.kind;
        if kind == PayloadKind::DirectoryTar {
            let target = dir.join("dump");
            let head = self.head;
            let rest = self.rest;
            let archive_name = archive.to_string();
            let t = target.clone();
            tokio::task::spawn_blocking(move || {
                extract_flat_tar(std::io::Cursor::new(head).chain(rest), &t, &archive_name)
            })
            .await
            .map_err(|e| Error::Task {
                what: "extracting the dump directory",
                reason: e.to_string(),
            })??;
            return Ok((target, kind));
        }
        let path = dir.join(match kind {
            PayloadKind::Custom => "payload.dump",
            _ => "payload.sql",
        });
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Error::io("create", &path, e))?;
        file.write_all(&self.head)
            .await
            .map_err(|e| Error::io("write", &path, e))?;
        loop {
            match self.rest.next_chunk().await {
                Ok(Some(c)) => file
                    .write_all(&c)
                    .await
                    .map_err(|e| Error::io("write", &path, e))?,
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::InvalidArchive {
                        archive: archive.to_string(),
                        reason: format!("reading the archive failed: {e}"),
                    });
                }
            }
        }
        file.flush()
            .await
            .map_err(|e| Error::io("write", &path, e))?;
        Ok((path, kind))
    }
}

/// Extracts a tar holding a directory dump: regular files at the top level only.
fn extract_flat_tar(input: impl Read, dir: &Path, archive: &str) -> Result<()> {
    std::fs::create_dir(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let bad = |reason: String| Error::InvalidArchive {
        archive: archive.to_string(),
        reason,
    };
    let mut tar = tar::Archive::new(input);
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a tar of a directory dump: {e}")))?;
    let mut saw_toc = false;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("damaged tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("damaged tar: {e}")))?
            .into_owned();
        let name = match (path.components().count(), path.file_name()) {
            (1, Some(n)) => n.to_owned(),
            _ => {
                return Err(bad(format!(
                    "entry {} is not a plain file name",
                    path.display()
                )));
            }
        };
        if !entry.header().entry_type().is_file() {
            return Err(bad(format!(
                "entry {} is not a regular file",
                path.display()
            )));
        }
        saw_toc |= name == "toc.dat";
        let out = dir.join(&name);
        let mut file = std::fs::File::create(&out).map_err(|e| Error::io("create", &out, e))?;
        std::io::copy(&mut entry, &mut file).map_err(|e| Error::io("write", &out, e))?;
    }
    if !saw_toc {
        return Err(bad(
            "the tar holds no toc.dat: it is not a pg_dump directory dump".into(),
        ));
    }
    Ok(())
}

/// A `--dbname` value that names exactly this database (a conninfo string, so a name holding `=`
/// is not read as one).
fn dbname_arg(name: &str) -> String {
    format!(
        "--dbname=dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// How the payload is loaded into a database.
#[derive(Debug, Clone, Default)]
struct LoadOptions {
    jobs: usize,
    tables: Vec<String>,
    clean: bool,
    /// Runs the whole load in one transaction (with SQL before and after, for in-place restores).
    single_transaction: bool,
    prefix: String,
    suffix: String,
    /// Loads a plain dump with `COPY … FREEZE` (safe mode: one transaction into a new database).
    freeze_copies: bool,
    /// `PGOPTIONS` for the loading sessions (a staging load: see [`staging_session_options`]).
    session_options: Option<String>,
    /// amcheck each loaded table's indexes once built (`Some(heapallindexed)`), parallel loads.
    early_checks: Option<bool>,
}

/// Session settings for loading a staging database, which is dropped if anything fails, so its
/// durability during the load does not matter: more memory for building indexes, parallel index
/// builds (PostgreSQL 11 and later), and commits that do not wait for the WAL flush.
fn staging_session_options(major: u32) -> String {
    let mut o = String::from("-c maintenance_work_mem=512MB -c synchronous_commit=off");
    if major >= 11 {
        o.push_str(" -c max_parallel_maintenance_workers=2");
    }
    o
}

/// [`staging_session_options`] as SQL, for the parallel load's own connections (which set the
/// parallel workers per index build themselves: see [`index_workers`]).
fn staging_session_sql() -> String {
    String::from("SET maintenance_work_mem = '512MB';\nSET synchronous_commit = off;\n")
}

/// Parallel workers per index build when `jobs` connections load side by side (PostgreSQL 11 and
/// later): on a server on this machine, while the other connections are busy, what is left over
/// per connection (they already keep its CPUs busy, and extra workers would compete with them:
/// measured on 2 cores, 0.25 CPU-seconds more for the same restore), and for the last builds
/// every other CPU. A remote server's CPUs are unknown: PostgreSQL's default, 2.
fn index_workers(conn: &ConnInfo, jobs: usize, major: u32) -> Option<parallel::IndexWorkers> {
    if major < 11 {
        return None;
    }
    if !conn.is_local() {
        return Some(parallel::IndexWorkers { busy: 2, last: 2 });
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(parallel::IndexWorkers {
        busy: (cpus / jobs.max(1)).saturating_sub(1).min(2),
        last: cpus.saturating_sub(1).min(4),
    })
}

/// How many connections load a plain dump: `--jobs`, or (0, not given) one per CPU, up to 4.
fn plain_load_jobs(jobs: usize) -> usize {
    if jobs > 0 {
        return jobs;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Sets the loading sessions' options (the user's own `PGOPTIONS` is never passed on).
fn set_session_options(cmd: &mut Command, o: &LoadOptions) {
    if let Some(opts) = &o.session_options {
        cmd.env("PGOPTIONS", opts);
    }
}

/// The plain name of a `--table` value (`public.users` → `users`), as `pg_restore -t` wants it.
fn table_name_only(t: &str) -> String {
    let t = t.rsplit_once('.').map(|(_, n)| n).unwrap_or(t);
    t.trim_matches('"').to_string()
}

fn pg_restore_args(cmd: &mut Command, o: &LoadOptions) {
    cmd.arg("--no-password").arg("--exit-on-error");
    for t in &o.tables {
        cmd.arg(format!("--table={}", table_name_only(t)));
    }
    if o.clean {
        cmd.arg("--clean").arg("--if-exists");
    }
}

fn psql(tools: &Tools, major: u32, conn: &ConnInfo, single: bool) -> Result<Command> {
    let path = tools.find("psql", Some(major))?;
    let mut cmd = tools::command(&path, conn);
    cmd.arg("--no-psqlrc")
        .arg("--quiet")
        .arg("--no-password")
        .arg("--set=ON_ERROR_STOP=1");
    if single {
        cmd.arg("--single-transaction");
    }
    cmd.arg(dbname_arg(conn.dbname())).arg("--file=-");
    cmd.stdin(Stdio::piped());
    Ok(cmd)
}

/// Loads a payload that streams (plain SQL, or a custom archive restored in one job).
async fn load_streaming(
    payload: Payload,
    conn: &ConnInfo,
    tools: &Tools,
    major: u32,
    o: &LoadOptions,
    archive: &str,
) -> Result<()> {
    let (tool, mut cmd) = match payload.kind {
        PayloadKind::Plain => {
            if !o.tables.is_empty() {
                return Err(Error::Unsupported(format!(
                    "{archive} is a plain SQL dump: a selective restore (--table) needs a custom or directory backup (kars-backup backup --format custom)"
                )));
            }
            let mut cmd = psql(tools, major, conn, true)?;
            set_session_options(&mut cmd, o);
            ("psql", cmd)
        }
        _ => {
            let path = tools.find("pg_restore", Some(major))?;
            let mut cmd = tools::command(&path, conn);
            pg_restore_args(&mut cmd, o);
            set_session_options(&mut cmd, o);
            if o.single_transaction {
                cmd.arg("--single-transaction");
            }
            cmd.arg(dbname_arg(conn.dbname())).stdin(Stdio::piped());
            ("pg_restore", cmd)
        }
    };
    let mut child = tools::spawn(tool, &mut cmd)?;
    let stderr = tools::collect_stderr(child.stderr.take());
    let mut stdin = child.stdin.take().ok_or_else(|| Error::Task {
        what: "the restore",
        reason: "no standard input".into(),
    })?;
    let fed = async {
        if !o.prefix.is_empty() && stdin.write_all(o.prefix.as_bytes()).await.is_err() {
            return Ok(false);
        }
        let freeze = o.freeze_copies && payload.kind == PayloadKind::Plain;
        let mut rewriter = FreezeCopies::default();
        if !payload
            .feed(&mut stdin, archive, freeze.then_some(&mut rewriter))
            .await?
        {
            return Ok(false);
        }
        if freeze {
            tracing::debug!(
                copies = rewriter.rewritten,
                "COPY statements loaded with FREEZE"
            );
        }
        if !o.suffix.is_empty() && stdin.write_all(o.suffix.as_bytes()).await.is_err() {
            return Ok(false);
        }
        Ok::<bool, Error>(true)
    }
    .await;
    drop(stdin);
    if let Err(e) = fed {
        let _ = child.kill().await;
        return Err(e);
    }
    tools::wait_checked(tool, child, stderr).await?;
    Ok(())
}

/// Loads a spooled payload (a custom archive file or an extracted directory dump) with
/// `pg_restore --jobs`.
async fn load_file(
    path: &Path,
    conn: &ConnInfo,
    tools: &Tools,
    major: u32,
    o: &LoadOptions,
) -> Result<()> {
    let bin = tools.find("pg_restore", Some(major))?;
    let mut cmd = tools::command(&bin, conn);
    pg_restore_args(&mut cmd, o);
    set_session_options(&mut cmd, o);
    if o.single_transaction {
        cmd.arg("--single-transaction");
    } else if o.jobs > 1 {
        cmd.arg(format!("--jobs={}", o.jobs));
    }
    cmd.arg(dbname_arg(conn.dbname())).arg(path);
    let mut child = tools::spawn("pg_restore", &mut cmd)?;
    let stderr = tools::collect_stderr(child.stderr.take());
    let _ = &mut child;
    tools::wait_checked("pg_restore", child, stderr).await?;
    Ok(())
}

/// Loads `payload` into the database `conn` names; the row counts the server reported while
/// loading, when a plain dump was loaded in parallel.
async fn load(
    payload: Payload,
    conn: &ConnInfo,
    tools: &Tools,
    major: u32,
    o: &LoadOptions,
    work: &Path,
    archive: &str,
) -> Result<LoadedCounts> {
    let parallel = o.jobs > 1 && payload.kind != PayloadKind::Plain;
    let plain_jobs = plain_load_jobs(o.jobs);
    if o.freeze_copies && plain_jobs > 1 && o.tables.is_empty() && !o.single_transaction {
        // A new staging database: loaded over several connections (see `parallel`); an archive
        // as the plain SQL `pg_restore --file=-` writes for it.
        let make_psql = || {
            let mut cmd = psql(tools, major, conn, true)?;
            set_session_options(&mut cmd, o);
            Ok(cmd)
        };
        let p = ParallelLoad {
            conn,
            jobs: plain_jobs,
            session_sql: staging_session_sql(),
            index_workers: index_workers(conn, plain_jobs, major),
            early_checks: o.early_checks,
            psql: &make_psql,
            work,
            archive,
        };
        if payload.kind == PayloadKind::Plain {
            return parallel::load_plain(&p, parallel::Source::Payload(payload)).await;
        }
        let bin = tools.find("pg_restore", Some(major))?;
        let mut cmd = tools::command(&bin, conn);
        cmd.arg("--file=-").stdout(Stdio::piped());
        let custom = payload.kind == PayloadKind::Custom;
        let to_feed = if custom {
            cmd.stdin(Stdio::piped());
            Some(payload)
        } else {
            let (path, _) = payload.spool(work, archive).await?;
            cmd.arg(&path);
            None
        };
        let mut child = tools::spawn("pg_restore", &mut cmd)?;
        let stderr = tools::collect_stderr(child.stderr.take());
        let out = child.stdout.take().ok_or_else(|| Error::Task {
            what: "pg_restore",
            reason: "no standard output".into(),
        })?;
        let loading = parallel::load_plain(&p, parallel::Source::Program(out));
        let loaded = match (to_feed, child.stdin.take()) {
            (Some(payload), Some(mut stdin)) => {
                let feeding = async {
                    let fed = payload.feed(&mut stdin, archive, None).await;
                    drop(stdin);
                    fed
                };
                let (loaded, fed) = tokio::join!(loading, feeding);
                fed?;
                loaded
            }
            _ => loading.await,
        };
        // pg_restore's own failure (a damaged archive) explains a short script best.
        tools::wait_checked("pg_restore", child, stderr).await?;
        return loaded;
    }
    if payload.kind == PayloadKind::DirectoryTar || parallel {
        let (path, _) = payload.spool(work, archive).await?;
        load_file(&path, conn, tools, major, o).await?;
    } else {
        load_streaming(payload, conn, tools, major, o, archive).await?;
    }
    Ok(LoadedCounts::default())
}

/// A connection for creating, renaming and dropping databases: to `postgres` (or `template1`
/// when the target is `postgres` itself or `postgres` does not exist).
pub(crate) async fn admin_connect(target: &ConnInfo) -> Result<(Client, ConnInfo)> {
    let first = if target.dbname() == MAINTENANCE_DB {
        "template1"
    } else {
        MAINTENANCE_DB
    };
    let conn = target.with_dbname(first);
    match conn.connect().await {
        Ok(c) => Ok((c, conn)),
        Err(Error::NoSuchDatabase { .. }) => {
            let conn = target.with_dbname("template1");
            Ok((conn.connect().await?, conn))
        }
        Err(e) => Err(e),
    }
}

/// Whether a database exists.
pub(crate) async fn database_exists(admin: &Client, name: &str, target: &str) -> Result<bool> {
    let row = admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(|e| Error::query("look up the database", target, &e))?;
    Ok(row.is_some())
}

async fn server_num(admin: &Client, target: &str) -> Result<u32> {
    let v = crate::metadata::server_version(admin, target).await?;
    Ok(v.num)
}

/// `base` + `suffix`, cut to PostgreSQL's identifier length, unused on the server.
async fn unused_name(admin: &Client, base: &str, suffix: &str, target: &str) -> Result<String> {
    for n in 0..100 {
        let suffix = if n == 0 {
            suffix.to_string()
        } else {
            format!("{suffix}_{n}")
        };
        let mut cut = MAX_IDENT.saturating_sub(suffix.len()).min(base.len());
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        let name = format!("{}{suffix}", &base[..cut]);
        if !database_exists(admin, &name, target).await? {
            return Ok(name);
        }
    }
    Err(Error::Unsupported(format!(
        "no free database name like {base}{suffix}; drop old ones"
    )))
}

fn timestamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string()
}

/// Encoding and locale for a new database: the manifest's, else the live database's.
async fn locale_of(
    admin: &Client,
    manifest: Option<&Manifest>,
    live: Option<&str>,
) -> Option<(String, String, String)> {
    if let Some(d) = manifest.and_then(|m| m.databases.first()) {
        let get = |k: &str| {
            d.details
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        if let (Some(e), Some(c), Some(t)) = (get("encoding"), get("lc_collate"), get("lc_ctype")) {
            return Some((e, c, t));
        }
    }
    let live = live?;
    let row = admin
        .query_opt(
            "SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate::text, datctype::text
             FROM pg_catalog.pg_database WHERE datname = $1",
            &[&live],
        )
        .await
        .ok()??;
    Some((row.get(0), row.get(1), row.get(2)))
}

/// Creates an empty database from `template0` with the given encoding and locale (falling back
/// to the server's defaults when that locale does not exist here), owned like `owner_of`.
async fn create_database(
    admin: &Client,
    name: &str,
    locale: Option<(String, String, String)>,
    owner_of: Option<&str>,
    target: &str,
) -> Result<()> {
    let base = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
    let mut created = false;
    if let Some((enc, collate, ctype)) = &locale {
        let sql = format!(
            "{base} ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(enc),
            quote_literal(collate),
            quote_literal(ctype)
        );
        match admin.batch_execute(&sql).await {
            Ok(()) => created = true,
            Err(e) => {
                tracing::warn!(error = %crate::error::db_message(&e), "creating the database with the backup's encoding and locale failed; using the server's defaults")
            }
        }
    }
    if !created {
        admin
            .batch_execute(&base)
            .await
            .map_err(|e| Error::query(format!("create database {name}"), target, &e))?;
    }
    if let Some(live) = owner_of {
        let owner: Option<String> = admin
            .query_opt(
                "SELECT pg_catalog.pg_get_userbyid(datdba)::text FROM pg_catalog.pg_database WHERE datname = $1",
                &[&live],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        if let Some(owner) = owner {
            let _ = admin
                .batch_execute(&format!(
                    "ALTER DATABASE {} OWNER TO {}",
                    quote_ident(name),
                    quote_ident(&owner)
                ))
                .await;
        }
    }
    Ok(())
}

/// Renames databases in one transaction (`(from, to)` in order), so that a restore killed at
/// any moment leaves either every rename or none: the live name always names a database. With
/// `terminate`, the sessions on each renamed database are ended first (and again while they come
/// back); without it, a database with sessions fails the rename with [`Error::InUse`].
async fn rename_databases(
    admin: &mut Client,
    renames: &[(&str, &str)],
    terminate: bool,
    target: &str,
) -> Result<()> {
    let mut last = None;
    for _ in 0..20 {
        if terminate {
            for (from, _) in renames {
                sessions::terminate(admin, from).await;
            }
        }
        let tx = admin
            .transaction()
            .await
            .map_err(|e| Error::query("begin the swap", target, &e))?;
        let mut failed = None;
        for (from, to) in renames {
            let sql = format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(from),
                quote_ident(to)
            );
            if let Err(e) = tx.batch_execute(&sql).await {
                failed = Some((from.to_string(), e));
                break;
            }
        }
        match failed {
            None => {
                return tx
                    .commit()
                    .await
                    .map_err(|e| Error::query("commit the swap", target, &e));
            }
            Some((from, e)) if e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                drop(tx);
                if !terminate {
                    let scan = sessions::sessions_on(admin, &from, target).await?;
                    return Err(Error::InUse {
                        target: target.to_string(),
                        holders: if scan.holders.is_empty() {
                            "other sessions".into()
                        } else {
                            scan.describe()
                        },
                        hint: format!(
                            "PostgreSQL cannot rename {from} while they are connected; {}",
                            sessions::remedies()
                        ),
                    });
                }
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Some((from, e)) => {
                return Err(Error::query(format!("rename database {from}"), target, &e));
            }
        }
    }
    Err(Error::query(
        "rename databases (sessions kept reconnecting)",
        target,
        &last.expect("at least one attempt"),
    ))
}

/// Stages a restore as the source's mode says.
pub(crate) async fn stage(
    source: &PostgresSource,
    payload: PayloadReader,
    context: &StageContext,
) -> Result<Box<dyn StagedRestore>> {
    match source.restore_options().mode {
        RestoreMode::Safe => Ok(Box::new(stage_safe(source, payload, context).await?)),
        RestoreMode::InPlace => Ok(Box::new(stage_in_place(source, payload, context).await?)),
    }
}

/// A restored copy in its own staging database, waiting to be renamed into the target's place.
#[derive(Debug)]
pub(crate) struct SafeStaged {
    target: ConnInfo,
    staging: String,
    existed: bool,
    kept: Option<String>,
    /// The live database was renamed to `kept`.
    moved_live: bool,
    /// The staging database carries the target's name.
    installed: bool,
    tables: Vec<String>,
    /// Row counts the server reported while loading.
    loaded: LoadedCounts,
    /// What the swap does about the application's sessions.
    in_use: InUsePolicy,
    /// The connection that holds the advisory lock on the staging database's name while this
    /// restore lives (the next run drops staging databases whose lock is free).
    lock: Client,
}

async fn stage_safe(
    source: &PostgresSource,
    payload: PayloadReader,
    context: &StageContext,
) -> Result<SafeStaged> {
    let target = source.conn().clone();
    let label = target.redacted();
    let opts = source.restore_options();
    let (admin, _) = admin_connect(&target).await?;
    let num = server_num(&admin, &label).await?;
    let major = tools::major_of_num(num);
    let existed = database_exists(&admin, target.dbname(), &label).await?;
    if existed && !opts.tables.is_empty() {
        return Err(Error::Unsupported(format!(
            "a selective restore (--table) into the existing database {} replaces those tables in place: use --mode in-place (one transaction), or restore into a new database",
            target.dbname()
        )));
    }
    let payload = Payload::open(payload, &context.archive_name).await?;
    if payload.kind == PayloadKind::Plain && !opts.tables.is_empty() {
        return Err(Error::Unsupported(format!(
            "{} is a plain SQL dump: a selective restore (--table) needs a custom or directory backup",
            context.archive_name
        )));
    }
    let staging = unused_name(
        &admin,
        target.dbname(),
        &format!("{}{}", sessions::STAGING_INFIX, timestamp()),
        &label,
    )
    .await?;
    sessions::lock_staging(&admin, &staging, &label).await?;
    let locale = locale_of(
        &admin,
        context.manifest.as_ref(),
        existed.then_some(target.dbname()),
    )
    .await;
    create_database(
        &admin,
        &staging,
        locale,
        existed.then_some(target.dbname()),
        &label,
    )
    .await?;
    tracing::info!(staging = %staging, kind = ?payload.kind, "staging database created; loading");
    let work = source.work_dir_tempdir("kars-pgrestore-")?;
    let o = LoadOptions {
        jobs: opts.jobs,
        tables: opts.tables.clone(),
        clean: false,
        session_options: Some(staging_session_options(major)),
        freeze_copies: true,
        early_checks: source
            .restore_checks()
            .and_then(crate::verify::heapallindexed),
        ..LoadOptions::default()
    };
    let staging_conn = target.with_dbname(&staging);
    let loaded = load(
        payload,
        &staging_conn,
        source.tools(),
        major,
        &o,
        work.path(),
        &context.archive_name,
    )
    .await;
    drop(work);
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            if let Err(d) = sessions::drop_database(&admin, &staging, &label).await {
                tracing::warn!(error = %d, "the staging database could not be dropped");
            }
            return Err(e);
        }
    };
    Ok(SafeStaged {
        loaded,
        target,
        staging,
        existed,
        kept: None,
        moved_live: false,
        installed: false,
        tables: opts.tables.clone(),
        in_use: context.in_use,
        lock: admin,
    })
}

#[async_trait]
impl StagedRestore for SafeStaged {
    fn describe(&self) -> String {
        self.target.with_dbname(&self.staging).redacted()
    }

    async fn verify(
        &mut self,
        plan: &VerifyPlan,
        context: &StageContext,
    ) -> kars_backup_core::Result<VerifyReport> {
        let conn = self.target.with_dbname(&self.staging);
        verify::verify_database(
            &conn,
            plan,
            context.manifest.as_ref(),
            &self.tables,
            &self.loaded,
        )
        .await
        .map_err(|e| e.into_core(&self.describe()))
    }

    async fn swap_in(&mut self) -> kars_backup_core::Result<()> {
        let label = self.target.redacted();
        let terminate = self.in_use == InUsePolicy::TerminateSessions;
        let result = async {
            let (mut admin, _) = admin_connect(&self.target).await?;
            let live = self.target.dbname().to_string();
            let kept = if self.existed && database_exists(&admin, &live, &label).await? {
                Some(
                    unused_name(
                        &admin,
                        &live,
                        &format!("{}{}", sessions::KEPT_INFIX, timestamp()),
                        &label,
                    )
                    .await?,
                )
            } else {
                None
            };
            let mut renames = Vec::new();
            if let Some(kept) = &kept {
                renames.push((live.as_str(), kept.as_str()));
            }
            renames.push((self.staging.as_str(), live.as_str()));
            rename_databases(&mut admin, &renames, terminate, &label).await?;
            self.moved_live = kept.is_some();
            self.kept = kept;
            self.installed = true;
            tracing::info!(database = %live, kept = ?self.kept, "restored database swapped in");
            Ok::<(), Error>(())
        }
        .await;
        result.map_err(|e| e.into_core(&label))
    }

    async fn roll_back(&mut self) -> kars_backup_core::Result<()> {
        let label = self.target.redacted();
        let result = async {
            let (mut admin, _) = admin_connect(&self.target).await?;
            let live = self.target.dbname().to_string();
            let mut renames = Vec::new();
            if self.installed {
                renames.push((live.as_str(), self.staging.as_str()));
            }
            if self.moved_live {
                let kept = self.kept.as_deref().expect("kept when moved");
                renames.push((kept, live.as_str()));
            }
            // The restored database's sessions (the application, started on it and stopped
            // again) must not keep the previous one from coming back.
            rename_databases(&mut admin, &renames, true, &label).await?;
            self.installed = false;
            self.moved_live = false;
            self.kept = None;
            tracing::info!(database = %live, "rolled back to the previous database");
            Ok::<(), Error>(())
        }
        .await;
        result.map_err(|e| e.into_core(&label))
    }

    async fn finish(self: Box<Self>) -> kars_backup_core::Result<Option<String>> {
        Ok(self.kept.clone())
    }

    async fn discard(self: Box<Self>) -> kars_backup_core::Result<()> {
        if self.installed {
            return Ok(());
        }
        let label = self.target.redacted();
        // Through the connection that holds the staging database's lock.
        sessions::drop_database(&self.lock, &self.staging, &label)
            .await
            .map_err(|e| e.into_core(&label))
    }
}

/// An in-place restore: the payload spooled to a private file, loaded into the live database in
/// one transaction at `swap_in`.
#[derive(Debug)]
pub(crate) struct InPlaceStaged {
    target: ConnInfo,
    tools: Tools,
    work: Option<TempDir>,
    spooled: PathBuf,
    kind: PayloadKind,
    archive: String,
    tables: Vec<String>,
    clean: bool,
    plan: VerifyPlan,
    manifest: Option<Manifest>,
    created: bool,
    committed: bool,
    /// What the load does about the application's sessions.
    in_use: InUsePolicy,
}

async fn stage_in_place(
    source: &PostgresSource,
    payload: PayloadReader,
    context: &StageContext,
) -> Result<InPlaceStaged> {
    let opts = source.restore_options();
    let payload = Payload::open(payload, &context.archive_name).await?;
    if payload.kind == PayloadKind::Plain && !opts.tables.is_empty() {
        return Err(Error::Unsupported(format!(
            "{} is a plain SQL dump: a selective restore (--table) needs a custom or directory backup",
            context.archive_name
        )));
    }
    let work = source.work_dir_tempdir("kars-pgrestore-")?;
    let (spooled, kind) = payload.spool(work.path(), &context.archive_name).await?;
    Ok(InPlaceStaged {
        target: source.conn().clone(),
        tools: source.tools().clone(),
        work: Some(work),
        spooled,
        kind,
        archive: context.archive_name.clone(),
        tables: opts.tables.clone(),
        clean: opts.clean,
        plan: VerifyPlan::default(),
        manifest: context.manifest.clone(),
        created: false,
        committed: false,
        in_use: context.in_use,
    })
}

/// SQL that drops every user schema (the runbook drops `public`; a dump recreates the others
/// too) and recreates an empty `public`.
fn drop_schemas_sql(server_num: u32) -> String {
    let owner = if server_num >= 150_000 {
        " AUTHORIZATION pg_database_owner"
    } else {
        ""
    };
    format!(
        "SET client_min_messages = warning;
DO $kars$ DECLARE s text; BEGIN
  FOR s IN SELECT nspname FROM pg_catalog.pg_namespace
           WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%'
  LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); END LOOP;
END $kars$;
CREATE SCHEMA public{owner};
GRANT USAGE ON SCHEMA public TO PUBLIC;
COMMENT ON SCHEMA public IS 'standard public schema';
RESET client_min_messages;
"
    )
}

/// Empties the tables with these names (in any schema, as `pg_restore --table` matches them).
fn truncate_named_sql(tables: &[String]) -> String {
    let names: Vec<String> = tables
        .iter()
        .map(|t| quote_literal(&table_name_only(t)))
        .collect();
    format!(
        "DO $kars$ DECLARE t text; BEGIN
  SELECT string_agg(c.oid::regclass::text, ', ') INTO t FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND c.relname = ANY (ARRAY[{}]::text[])
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%';
  IF t IS NOT NULL THEN EXECUTE 'TRUNCATE ' || t; END IF;
END $kars$;
",
        names.join(", ")
    )
}

/// A DO block that fails the transaction when a table's row count differs from the manifest's.
fn count_check_sql(manifest: &Manifest, only: &[String]) -> String {
    let mut body = String::new();
    for t in manifest.databases.iter().flat_map(|d| d.tables.iter()) {
        if !only.is_empty()
            && !only
                .iter()
                .any(|o| table_name_only(o) == table_name_only(&t.name))
        {
            continue;
        }
        body.push_str(&format!(
            "  SELECT count(*) INTO n FROM ONLY {name};\n  IF n <> {rows} THEN RAISE EXCEPTION 'kars-backup verification: table % has % rows, the manifest says {rows}', {lit}, n; END IF;\n",
            name = t.name,
            rows = t.rows,
            lit = quote_literal(&t.name),
        ));
    }
    if body.is_empty() {
        return String::new();
    }
    format!("\nDO $kars$ DECLARE n bigint; BEGIN\n{body}END $kars$;\n")
}

impl InPlaceStaged {
    async fn import(&mut self) -> Result<()> {
        let label = self.target.redacted();
        let (admin, _) = admin_connect(&self.target).await?;
        let num = server_num(&admin, &label).await?;
        let major = tools::major_of_num(num);
        if !database_exists(&admin, self.target.dbname(), &label).await? {
            create_database(&admin, self.target.dbname(), None, None, &label).await?;
            self.created = true;
        } else if self.in_use == InUsePolicy::TerminateSessions {
            sessions::terminate(&admin, self.target.dbname()).await;
        }
        let checks = match (&self.manifest, self.plan.check_counts) {
            (Some(m), true) => count_check_sql(m, &self.tables),
            _ => String::new(),
        };
        let mut restore_args: Vec<String> = Vec::new();
        let prefix = if !self.tables.is_empty() {
            // Selected tables only, the rest of the database untouched: emptied and refilled
            // (or, with --clean, dropped and recreated) in one transaction.
            for t in &self.tables {
                restore_args.push(format!("--table={}", table_name_only(t)));
            }
            if self.clean {
                restore_args.push("--clean".into());
                restore_args.push("--if-exists".into());
                String::new()
            } else {
                restore_args.push("--data-only".into());
                truncate_named_sql(&self.tables)
            }
        } else {
            let data_only = self
                .manifest
                .as_ref()
                .and_then(|m| m.databases.first())
                .and_then(|d| d.details.get("data_only"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if data_only {
                let tables: Vec<String> = self
                    .manifest
                    .iter()
                    .flat_map(|m| m.databases.iter().flat_map(|d| d.tables.iter()))
                    .map(|t| t.name.clone())
                    .collect();
                if tables.is_empty() {
                    String::new()
                } else {
                    format!("TRUNCATE {};\n", tables.join(", "))
                }
            } else {
                drop_schemas_sql(num)
            }
        };
        // Sessions that stay connected (--live) may hold locks: wait for them a bounded time.
        let prefix = format!("SET lock_timeout = '{}';\n{prefix}", sessions::LOCK_TIMEOUT);
        // One psql transaction: drop, import (a plain file, or pg_restore's SQL), check counts.
        let mut psql_cmd = psql(&self.tools, major, &self.target, true)?;
        let mut psql_child = tools::spawn("psql", &mut psql_cmd)?;
        let psql_err = tools::collect_stderr(psql_child.stderr.take());
        let mut stdin = psql_child.stdin.take().ok_or_else(|| Error::Task {
            what: "psql",
            reason: "no standard input".into(),
        })?;
        let feed = async {
            stdin
                .write_all(prefix.as_bytes())
                .await
                .map_err(|e| Error::io("write to psql", "psql", e))?;
            match self.kind {
                PayloadKind::Plain => {
                    let mut f = tokio::fs::File::open(&self.spooled)
                        .await
                        .map_err(|e| Error::io("open", &self.spooled, e))?;
                    tokio::io::copy(&mut f, &mut stdin)
                        .await
                        .map_err(|e| Error::io("write to psql", &self.spooled, e))?;
                }
                _ => {
                    let bin = self.tools.find("pg_restore", Some(major))?;
                    let mut cmd = tools::command(&bin, &self.target);
                    cmd.args(&restore_args)
                        .arg("--file=-")
                        .arg(&self.spooled)
                        .stdout(Stdio::piped());
                    let mut child = tools::spawn("pg_restore", &mut cmd)?;
                    let err = tools::collect_stderr(child.stderr.take());
                    let mut out = child.stdout.take().ok_or_else(|| Error::Task {
                        what: "pg_restore",
                        reason: "no standard output".into(),
                    })?;
                    let copied = tokio::io::copy(&mut out, &mut stdin).await;
                    tools::wait_checked("pg_restore", child, err).await?;
                    copied.map_err(|e| Error::io("write to psql", "psql", e))?;
                }
            }
            stdin
                .write_all(checks.as_bytes())
                .await
                .map_err(|e| Error::io("write to psql", "psql", e))?;
            Ok::<(), Error>(())
        }
        .await;
        drop(stdin);
        let waited = tools::wait_checked("psql", psql_child, psql_err).await;
        match (waited, feed) {
            (Err(e), _) => return Err(e),
            (Ok(_), Err(e)) => return Err(e),
            (Ok(_), Ok(())) => {}
        }
        self.committed = true;
        Ok(())
    }
}

#[async_trait]
impl StagedRestore for InPlaceStaged {
    fn describe(&self) -> String {
        format!(
            "{} (in place, from {})",
            self.target.redacted(),
            self.archive
        )
    }

    async fn verify(
        &mut self,
        plan: &VerifyPlan,
        _context: &StageContext,
    ) -> kars_backup_core::Result<VerifyReport> {
        self.plan = plan.clone();
        let mut report = VerifyReport::default();
        if self.kind != PayloadKind::Plain {
            let result = async {
                let bin = self.tools.find("pg_restore", None)?;
                let mut cmd = Command::new(&bin);
                cmd.arg("--list")
                    .arg(&self.spooled)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true);
                let mut child = tools::spawn("pg_restore --list", &mut cmd)?;
                let err = tools::collect_stderr(child.stderr.take());
                tools::wait_checked("pg_restore --list", child, err).await
            }
            .await;
            match result {
                Ok(_) => report.push(
                    "archive table of contents",
                    true,
                    "pg_restore --list reads it",
                ),
                Err(e) => report.push("archive table of contents", false, e.to_string()),
            }
        }
        report.push(
            "in-place load",
            true,
            if self.manifest.is_some() && plan.check_counts {
                "ready: the load checks the row counts against the manifest inside its one transaction, which changes nothing if they differ"
            } else {
                "ready: the load runs in one transaction, which changes nothing if it fails"
            },
        );
        Ok(report)
    }

    fn staged_step(&self) -> String {
        format!(
            "spooled {} to a private file for the in-place load",
            self.archive
        )
    }

    fn swap_step(&self, target: &str) -> String {
        format!("loaded into {target} in place, in one transaction (no previous copy is kept)")
    }

    async fn swap_in(&mut self) -> kars_backup_core::Result<()> {
        let label = self.target.redacted();
        self.import().await.map_err(|e| e.into_core(&label))
    }

    async fn roll_back(&mut self) -> kars_backup_core::Result<()> {
        let label = self.target.redacted();
        if !self.committed {
            if self.created {
                let result = async {
                    let (admin, _) = admin_connect(&self.target).await?;
                    sessions::drop_database(&admin, self.target.dbname(), &label).await
                }
                .await;
                self.created = false;
                return result.map_err(|e| e.into_core(&label));
            }
            // The import's transaction was rolled back by the server: nothing changed.
            return Ok(());
        }
        Err(Error::Unsupported(format!(
            "an in-place restore of {} was committed and cannot be rolled back; restore the previous backup, or use --mode safe, which keeps the previous database",
            self.target.dbname()
        ))
        .into_core(&label))
    }

    async fn finish(mut self: Box<Self>) -> kars_backup_core::Result<Option<String>> {
        drop(self.work.take());
        Ok(None)
    }

    async fn discard(mut self: Box<Self>) -> kars_backup_core::Result<()> {
        drop(self.work.take());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_recognised() {
        assert_eq!(PayloadKind::sniff(b"PGDMP\x01\x0e"), PayloadKind::Custom);
        assert_eq!(
            PayloadKind::sniff(b"--\n-- PostgreSQL database dump"),
            PayloadKind::Plain
        );
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(PayloadKind::sniff(&tar), PayloadKind::DirectoryTar);
    }

    #[test]
    fn dbname_args_quote() {
        assert_eq!(dbname_arg("a'b"), "--dbname=dbname='a\\'b'");
        assert_eq!(table_name_only("\"Sales\".\"Orders\""), "Orders");
        assert_eq!(table_name_only("users"), "users");
    }
}
