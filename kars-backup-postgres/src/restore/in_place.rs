//! In-place mode, as the runbook does: the payload is spooled to a private file, then loaded
//! into the live database (user schemas dropped and recreated, or only the selected tables) in
//! one `psql` transaction that also checks the row counts against the manifest, so a failed
//! import changes nothing. A committed import cannot be rolled back.

use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use kars_backup_core::{
    InUsePolicy, Manifest, PayloadReader, StageContext, StagedRestore, VerifyPlan, VerifyReport,
};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::admin::{admin_connect, create_database, database_exists, server_num};
use super::load::{psql, table_name_only};
use super::payload::{Payload, PayloadKind};
use crate::conn::{ConnInfo, quote_literal};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::options::PgRestoreOptions;
use crate::sessions;
use crate::tools::{self, Tools};
use kars_backup_core::TaskError;

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

pub(crate) async fn stage_in_place(
    db: &Database,
    opts: &PgRestoreOptions,
    payload: PayloadReader,
    context: &StageContext,
) -> Result<InPlaceStaged> {
    let payload = Payload::open(payload, &context.archive_name).await?;
    if payload.kind == PayloadKind::Plain && !opts.tables.is_empty() {
        return Err(Error::Unsupported(format!(
            "{} is a plain SQL dump: a selective restore (--table) needs a custom or directory backup",
            context.archive_name
        )));
    }
    let work = db.work_dir_tempdir("kars-pgrestore-")?;
    let (spooled, kind) = payload.spool(work.path(), &context.archive_name).await?;
    Ok(InPlaceStaged {
        target: db.conn.clone(),
        tools: db.tools.clone(),
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
        let mut stdin = psql_child
            .stdin
            .take()
            .ok_or_else(|| Error::Task(TaskError::new("psql", "no standard input")))?;
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
                    let mut out = child.stdout.take().ok_or_else(|| {
                        Error::Task(TaskError::new("pg_restore", "no standard output"))
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
