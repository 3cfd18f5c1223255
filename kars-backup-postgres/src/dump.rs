//! The backup: a snapshot exported over tokio-postgres, `pg_dump --snapshot` streamed into the
//! pipeline, and the manifest's metadata read in that same snapshot while the dump runs.

use std::path::Path;
use std::process::Stdio;

use chrono::Utc;
use kars_backup_core::{DynProgress, PayloadWriter, SnapshotInfo, TableInfo};

use crate::database::Database;
use crate::error::{Error, Result};
use crate::metadata::{self, Selection};
use crate::options::{DumpFormat, DumpOptions};
use crate::tools;
use kars_backup_core::TaskError;

/// Runs one backup of the database `db` into `out`, as `format` with `options`.
pub(crate) async fn write_payload(
    db: &Database,
    format: DumpFormat,
    options: &DumpOptions,
    out: PayloadWriter,
    progress: DynProgress,
) -> Result<SnapshotInfo> {
    let conn = &db.conn;
    let target = conn.redacted();
    let client = conn.connect().await?;
    let version = metadata::server_version(&client, &target).await?;
    // The version check comes before anything is started.
    let (pg_dump, pg_dump_version) = db.tools.pg_dump_for(&version.text, version.num).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| Error::query("start the snapshot transaction", &target, &e))?;
    let snapshot: String = client
        .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
        .await
        .map_err(|e| Error::query("export a snapshot", &target, &e))?
        .get(0);
    let taken_at = Utc::now();
    tracing::info!(snapshot = %snapshot, server = %version.text, pg_dump = %pg_dump_version, format = %format, "snapshot exported; pg_dump starts");

    let mut cmd = tools::command(&pg_dump, conn);
    cmd.arg("--no-password")
        .arg(format!("--snapshot={snapshot}"));
    for t in &options.tables {
        cmd.arg(format!("--table={t}"));
    }
    for t in &options.exclude_tables {
        cmd.arg(format!("--exclude-table={t}"));
    }
    if options.schema_only {
        cmd.arg("--schema-only");
    }
    if options.data_only {
        cmd.arg("--data-only");
    }

    let selection = Selection {
        include: options.tables.clone(),
        exclude: options.exclude_tables.clone(),
    };
    let meta = async {
        let tables = metadata::list_tables(&client, &selection, &target).await?;
        let counted = if options.schema_only {
            tables
                .into_iter()
                .map(|name| TableInfo { name, rows: 0 })
                .collect()
        } else {
            metadata::count_rows(&client, &tables, &target).await?
        };
        metadata::database_info(&client, &version, counted, &target).await
    };
    progress.start("dump", None);
    let dumped = async {
        match format {
            DumpFormat::Plain => {
                cmd.arg("--format=plain");
                stream(cmd, out).await
            }
            DumpFormat::Custom => {
                cmd.arg("--format=custom");
                stream(cmd, out).await
            }
            DumpFormat::Directory => {
                let work = db.work_dir_tempdir("kars-pgdump-")?;
                let dir = work.path().join("dump");
                cmd.arg("--format=directory")
                    .arg(format!("--jobs={}", options.jobs()))
                    .arg(format!("--file={}", dir.display()));
                let mut child = tools::spawn("pg_dump", &mut cmd)?;
                let stderr = tools::collect_stderr(child.stderr.take());
                tools::wait_checked("pg_dump", child, stderr).await?;
                let result = tokio::task::spawn_blocking(move || tar_directory(&dir, out))
                    .await
                    .map_err(|e| {
                        Error::Task(TaskError::new("packing the dump directory", e.to_string()))
                    })?;
                drop(work);
                result
            }
        }
    };
    let (mut info, ()) = tokio::try_join!(meta, dumped)?;
    progress.finish();
    // The snapshot is needed no more.
    let _ = client.batch_execute("COMMIT").await;
    info.details
        .insert("pg_dump_version".into(), pg_dump_version.into());
    info.details
        .insert("format".into(), format.to_string().into());
    if options.schema_only {
        info.details.insert("schema_only".into(), true.into());
    }
    if options.data_only {
        info.details.insert("data_only".into(), true.into());
    }
    if !options.tables.is_empty() {
        info.details
            .insert("tables_selected".into(), options.tables.clone().into());
    }
    if !options.exclude_tables.is_empty() {
        info.details.insert(
            "tables_excluded".into(),
            options.exclude_tables.clone().into(),
        );
    }
    if format == DumpFormat::Directory {
        info.details.insert("jobs".into(), options.jobs().into());
    }
    Ok(SnapshotInfo {
        taken_at,
        databases: vec![info],
        physical: None,
    })
}

/// Streams the program's standard output into the pipeline; the payload ends (`finish`) only
/// when the program exited successfully, so a failed dump never becomes a backup.
async fn stream(mut cmd: tokio::process::Command, mut out: PayloadWriter) -> Result<()> {
    cmd.stdout(Stdio::piped());
    let mut child = tools::spawn("pg_dump", &mut cmd)?;
    let stderr = tools::collect_stderr(child.stderr.take());
    tools::pipe_stdout("pg_dump", &mut child, &mut out, |_| {}).await?;
    let bytes = out.bytes_written();
    tools::wait_checked("pg_dump", child, stderr).await?;
    out.finish().await.map_err(Error::Pipeline)?;
    tracing::info!(bytes, "pg_dump finished");
    Ok(())
}

/// Packs a `pg_dump --format=directory` output into a tar stream (flat: `toc.dat`, `NNNN.dat.gz`).
fn tar_directory(dir: &Path, out: PayloadWriter) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(|e| Error::io("read directory", dir, e))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        builder
            .append_file(&name, &mut file)
            .map_err(Error::Pipeline)?;
    }
    let out = builder.into_inner().map_err(Error::Pipeline)?;
    out.finish_blocking().map_err(Error::Pipeline)?;
    Ok(())
}
