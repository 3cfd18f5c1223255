//! What the commands that read backups (restore, verify, drill, copy) take from their flags.

use kars_backup::core::recovery::Pick;
use kars_backup::job::Job;

use crate::args::{JobArg, Which};

/// The config job `--config FILE [--job NAME]` names (the file's only job without `--job`).
pub(crate) fn config_job(arg: &JobArg) -> anyhow::Result<Option<Job>> {
    let load = |path| Job::from_file(path, arg.job.as_deref());
    Ok(arg.config.as_deref().map(load).transpose()?)
}

/// `--latest` or `--backup NAME` (`--to-time` is restore's, for replicated databases).
pub(crate) fn pick(which: &Which) -> anyhow::Result<Pick> {
    if which.to_time.is_some() {
        return Err(crate::exit::UsageError(
            "--to-time restores a replicated database: use it with restore".into(),
        )
        .into());
    }
    Ok(which.backup.clone().map_or(Pick::Latest, Pick::Named))
}
