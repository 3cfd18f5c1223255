//! Loading a payload into a database: `psql` for plain SQL, `pg_restore` for archives (with
//! `--jobs` from a spooled file), or, into a new staging database, the [`parallel`](super::parallel)
//! load over several connections.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::parallel::{IndexWorkers, ParallelLoad, Source, load_plain};
use super::payload::{Payload, PayloadKind};
use crate::conn::ConnInfo;
use crate::error::{Error, Result};
use crate::freeze::FreezeCopies;
use crate::loaded::LoadedCounts;
use crate::tools::{self, Tools};
use kars_backup_core::TaskError;

/// A `--dbname` value that names exactly this database (a conninfo string, so a name holding `=`
/// is not read as one).
pub(crate) fn dbname_arg(name: &str) -> String {
    format!(
        "--dbname=dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// How the payload is loaded into a database.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadOptions {
    pub(crate) jobs: usize,
    pub(crate) tables: Vec<String>,
    pub(crate) clean: bool,
    /// Runs the whole load in one transaction (with SQL before and after, for in-place restores).
    pub(crate) single_transaction: bool,
    pub(crate) prefix: String,
    pub(crate) suffix: String,
    /// Loads a plain dump with `COPY … FREEZE` (safe mode: one transaction into a new database).
    pub(crate) freeze_copies: bool,
    /// `PGOPTIONS` for the loading sessions (a staging load: see [`staging_session_options`]).
    pub(crate) session_options: Option<String>,
    /// amcheck each loaded table's indexes once built (`Some(heapallindexed)`), parallel loads.
    pub(crate) early_checks: Option<bool>,
}

/// Session settings for loading a staging database, which is dropped if anything fails, so its
/// durability during the load does not matter: more memory for building indexes, parallel index
/// builds (PostgreSQL 11 and later), and commits that do not wait for the WAL flush.
pub(crate) fn staging_session_options(major: u32) -> String {
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
fn index_workers(conn: &ConnInfo, jobs: usize, major: u32) -> Option<IndexWorkers> {
    if major < 11 {
        return None;
    }
    if !conn.is_local() {
        return Some(IndexWorkers { busy: 2, last: 2 });
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(IndexWorkers {
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
pub(crate) fn table_name_only(t: &str) -> String {
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

pub(crate) fn psql(tools: &Tools, major: u32, conn: &ConnInfo, single: bool) -> Result<Command> {
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
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::Task(TaskError::new("the restore", "no standard input")))?;
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
pub(crate) async fn load(
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
            return load_plain(&p, Source::Payload(payload)).await;
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
        let out = child
            .stdout
            .take()
            .ok_or_else(|| Error::Task(TaskError::new("pg_restore", "no standard output")))?;
        let loading = load_plain(&p, Source::Program(out));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbname_args_quote() {
        assert_eq!(dbname_arg("a'b"), "--dbname=dbname='a\\'b'");
        assert_eq!(table_name_only("\"Sales\".\"Orders\""), "Orders");
        assert_eq!(table_name_only("users"), "users");
    }
}
