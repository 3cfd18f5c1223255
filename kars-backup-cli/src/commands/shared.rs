//! What the commands that read backups and replicas (restore, verify, drill, copy) take from
//! their flags.

use kars_backup::core::recovery::Pick;
use kars_backup::job::physical::{PhysicalFlags, recovery_target};
use kars_backup::job::replicate::{Replica, ReplicaRequest};
use kars_backup::job::{Job, Reading};
use kars_backup::postgres::physical::PhysicalRestoreOptions;

use crate::args::{JobArg, ReadArgs, Which};
use crate::exit;

/// The config job `--config FILE [--job NAME]` names (the file's only job without `--job`).
pub(crate) fn config_job(arg: &JobArg) -> anyhow::Result<Option<Job>> {
    let load = |path| Job::from_file(path, arg.job.as_deref());
    Ok(arg.config.as_deref().map(load).transpose()?)
}

/// `--latest` or `--backup NAME` (`--to-time` reads a replica, see [`replica`], or with
/// --physical a PostgreSQL cluster).
pub(crate) fn pick(which: &Which) -> anyhow::Result<Pick> {
    if which.to_time.is_some() {
        return Err(exit::UsageError(
            "--to-time reads a replicated SQLite database, or with --physical a PostgreSQL cluster from its WAL".into(),
        )
        .into());
    }
    Ok(which.backup.clone().map_or(Pick::Latest, Pick::Named))
}

/// The replica verify or drill reads: `--to-time`, `--random-instant`, or `--latest` on a
/// destination holding only replicas (or with `--replica`); `None` for a backup.
pub(crate) async fn replica(
    read: &ReadArgs,
    reading: &Reading,
    random: bool,
) -> anyhow::Result<Option<Replica>> {
    let request = ReplicaRequest {
        to_time: read.which.to_time,
        latest: read.which.latest,
        random,
        replica: read.replica.clone(),
    };
    Ok(Replica::find(reading, &request, None).await?)
}

/// What a physical restore, verify or drill reads and how: the destinations and keys, and the
/// restore's options from the flags (`scratch`: a verify or drill; `random`: the drill picks
/// the instant later).
pub(crate) fn physical_options(
    p: &PhysicalFlags,
    read: &ReadArgs,
    bin_dir: Option<std::path::PathBuf>,
    scratch: Option<&str>,
    random: bool,
) -> anyhow::Result<(Reading, PhysicalRestoreOptions)> {
    let target = recovery_target(read.which.to_time, read.which.latest, random)?;
    let job = config_job(&read.job)?;
    let reading = Reading::new(job.as_ref(), &read.from, &read.checks, &read.decrypt)?;
    let checks = reading.checks(&read.checks, read.integrity)?;
    let options = p.options(target, &checks, bin_dir, scratch)?;
    Ok((reading, options))
}
