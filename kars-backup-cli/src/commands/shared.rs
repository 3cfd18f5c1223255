//! What the commands that read backups (restore, verify, drill, copy) take from their flags.

use kars_backup::core::recovery::Pick;
use kars_backup::core::verify::parse_db_time;
use kars_backup::job::{Job, Reading};
use kars_backup::postgres::physical::{PhysicalRestoreOptions, RecoveryTarget};

use crate::args::{JobArg, PhysicalArgs, ReadArgs, Which};
use crate::exit;

/// The config job `--config FILE [--job NAME]` names (the file's only job without `--job`).
pub(crate) fn config_job(arg: &JobArg) -> anyhow::Result<Option<Job>> {
    let load = |path| Job::from_file(path, arg.job.as_deref());
    Ok(arg.config.as_deref().map(load).transpose()?)
}

/// `--latest` or `--backup NAME` (`--to-time` is restore's, for replicated databases).
pub(crate) fn pick(which: &Which) -> anyhow::Result<Pick> {
    if which.to_time.is_some() {
        return Err(exit::UsageError(
            "--to-time restores a replicated database: use it with restore".into(),
        )
        .into());
    }
    Ok(which.backup.clone().map_or(Pick::Latest, Pick::Named))
}

/// What a physical restore, verify or drill reads and how: the destinations and keys, and the
/// restore's options (target, WAL command, checks, OS user) from the flags. `random`: the
/// drill picks the instant (the target is left at the latest until it does).
pub(crate) fn physical_options(
    p: &PhysicalArgs,
    read: &ReadArgs,
    bin_dir: Option<std::path::PathBuf>,
    random: bool,
) -> anyhow::Result<(Reading, PhysicalRestoreOptions)> {
    let target = match (&read.which.to_time, read.which.latest || random) {
        (Some(t), false) => RecoveryTarget::Time(parse_db_time(t).ok_or_else(|| {
            exit::UsageError(format!(
                "--to-time {t:?} is not a time: write 2026-12-05 14:03:07.250 (UTC) or 2026-12-05T14:03:07.250+01:00"
            ))
        })?),
        (None, true) => RecoveryTarget::Latest,
        _ => {
            return Err(
                exit::UsageError("--physical needs --to-time TIME or --latest (a drill: or --random-instant)".into()).into(),
            );
        }
    };
    let job = config_job(&read.job)?;
    let reading = Reading::new(job.as_ref(), &read.from, &read.checks, &read.decrypt)?;
    let checks = reading.checks(&read.checks, read.integrity)?;
    let mut options = PhysicalRestoreOptions::new(
        p.pgdata.clone().unwrap_or_default(),
        target,
        p.restore_command.clone().unwrap_or_default(),
    );
    options.plan = checks.plan_at(match target {
        RecoveryTarget::Time(t) => t,
        RecoveryTarget::Latest => chrono::Utc::now(),
    });
    options.run_as = p.run_as.clone();
    options.system_identifier = p.system_identifier.clone();
    options.keep_archiving = p.keep_archiving;
    options.bin_dir = bin_dir;
    Ok((reading, options))
}
