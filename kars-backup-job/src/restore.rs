//! Restores of a job's backups: what the read commands work from ([`Reading`]: the job's
//! destinations, keys and checks, or the caller's), the restore's settings with the one merge
//! rule ([`RestorePlan`]), the target, and [`restore`] with retries and fallbacks.

use std::path::PathBuf;

use kars_backup_core::checks::{CheckOptions, Checks};
use kars_backup_core::merge::merge;
use kars_backup_core::recovery::{
    AttemptOptions, AttemptsFailed, Candidates, Origin, Pick, Recovered, Recovery, recover,
};
use kars_backup_core::settings::{HookOptions, RestoreSettings};
use kars_backup_core::{
    BackupEntry, CancellationToken, DynDatabaseSource, DynProgress, InUsePolicy, IntegrityLevel,
    RestoreHooks, RestoreOptions, VerifyPlan,
};
use kars_backup_encrypt::DecryptOptions;
use kars_backup_postgres::PgRestoreOptions;

use crate::error::{Error, Result};
use crate::job::{Job, origins};
use crate::source::{is_postgres_url, postgres_source, sqlite_source};

/// What a command that reads backups (restore, verify, drill) works from: a job's
/// destinations, keys and `[job.verify]` checks, else the caller's.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Destination URLs.
    pub from: Vec<String>,
    /// Decryption keys: the caller's plus the job's.
    pub keys: DecryptOptions,
    /// The job's checks, when it has a plan (else the caller's check options apply).
    pub checks: Option<Checks>,
}

impl Reading {
    /// What to read: without a job, `from` and `keys`; with one, its destinations, its keys
    /// after `keys` and its checks. Destinations or check options given next to a job that
    /// has its own are usage errors, not half-applied.
    ///
    /// # Errors
    /// [`Error::Usage`] as said.
    pub fn new(
        job: Option<&Job>,
        from: &[String],
        checks: &CheckOptions,
        keys: &DecryptOptions,
    ) -> Result<Reading> {
        let Some(job) = job else {
            return Ok(Reading {
                from: from.to_vec(),
                keys: keys.clone(),
                checks: None,
            });
        };
        if !from.is_empty() {
            return Err(Error::usage(
                "--from cannot be given with --config: the job's destinations are used",
            ));
        }
        if job.checks.is_some() && checks.any() {
            return Err(Error::usage(format!(
                "job {} has a [job.verify] plan: put the checks there instead of --verify-query/--min-rows/--audit-log/--checks",
                job.name
            )));
        }
        Ok(Reading {
            from: job.destinations.iter().map(|d| d.url.clone()).collect(),
            keys: job.decrypt_options(keys),
            checks: job.checks.clone(),
        })
    }

    /// The destinations, reading encrypted archives with the keys.
    ///
    /// # Errors
    /// A destination that does not open; unreadable keys.
    pub fn origins(&self) -> Result<Vec<Origin>> {
        Ok(self.keys.apply_all(origins(&self.from)?)?)
    }

    /// The checks: the job's, else `flags`; at `integrity` when it is given (the flag wins over
    /// the job's `[job.verify] integrity`), else the job's level, else the default (standard).
    ///
    /// # Errors
    /// Check options that do not parse.
    pub fn checks(
        &self,
        flags: &CheckOptions,
        integrity: Option<IntegrityLevel>,
    ) -> Result<Checks> {
        match &self.checks {
            Some(c) => Ok(Checks {
                integrity: integrity.unwrap_or(c.integrity),
                ..c.clone()
            }),
            None => Ok(flags.checks(integrity.unwrap_or_default())?),
        }
    }
}

/// What a restore runs with: where it reads, the hooks, how it treats the application and the
/// previous database, and the PostgreSQL restore options.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// Where it reads.
    pub reading: Reading,
    /// The hooks.
    pub hooks: RestoreHooks,
    /// Processes that have the target open.
    pub in_use: InUsePolicy,
    /// Previous copies to keep.
    pub keep_previous: u32,
    /// PostgreSQL: how the payload is restored, and where the programs are.
    pub postgres: PgRestoreOptions,
}

impl RestorePlan {
    /// The plan of a restore. One rule for every setting: what the caller gives (`hooks`,
    /// `settings`, `postgres.bin_dir`: the command line's flags) wins over the job's
    /// `[job.hooks]`/`[job.restore]`/`[job.postgres]`, which win over the defaults.
    ///
    /// # Errors
    /// As [`Reading::new`].
    pub fn new(
        job: Option<&Job>,
        reading: Reading,
        hooks: &HookOptions,
        settings: &RestoreSettings,
        postgres: &PgRestoreOptions,
    ) -> Result<RestorePlan> {
        let hooks = merge(hooks.clone(), job.map(|j| j.hooks.clone())).resolve();
        let settings = merge(settings.clone(), job.map(|j| j.restore.clone()));
        let bin_dir = merge(postgres.bin_dir.clone(), job.map(|j| j.pg_bin_dir.clone()));
        Ok(RestorePlan {
            reading,
            hooks,
            in_use: settings.in_use(),
            keep_previous: settings.keep_previous(),
            postgres: PgRestoreOptions {
                bin_dir,
                ..postgres.clone()
            },
        })
    }

    /// The target database at `url` for restoring `entry`: PostgreSQL with these restore
    /// options (checks at `integrity` while loading), else SQLite (a directory for volume
    /// backups, even one that does not exist yet).
    ///
    /// # Errors
    /// A URL that does not name a database.
    pub fn target(
        &self,
        url: &str,
        entry: &BackupEntry,
        integrity: IntegrityLevel,
    ) -> Result<DynDatabaseSource> {
        if is_postgres_url(url) {
            let source = postgres_source(url, None)?
                .with_restore_options(self.postgres.clone())
                .with_restore_checks(integrity);
            return Ok(std::sync::Arc::new(source));
        }
        let mut target = sqlite_source(url)?;
        if entry
            .manifest
            .as_ref()
            .is_some_and(kars_backup_sqlite::is_volume_manifest)
        {
            target = target.with_mode(kars_backup_sqlite::SourceMode::Volume);
        }
        Ok(std::sync::Arc::new(target))
    }

    /// The restore options of this plan for a confirmed restore (the caller confirmed, or the
    /// target is new), interrupted by `cancel`; the verification plan is left at its default
    /// for the caller to set from the checks at the backup's time.
    pub fn options(&self, cancel: CancellationToken) -> RestoreOptions {
        RestoreOptions {
            plan: VerifyPlan::default(),
            hooks: self.hooks.clone(),
            confirmed: true,
            in_use: self.in_use,
            keep_previous: self.keep_previous,
            cancel,
        }
    }

    /// The pg_bin_dir the restore uses (the caller's, else the job's).
    pub fn pg_bin_dir(&self) -> Option<&PathBuf> {
        self.postgres.bin_dir.as_ref()
    }
}

impl Job {
    /// Restores the job's newest committed backup (across its destinations; identical copies
    /// are read locally first) into the database at `target` (a URL or path; the job's own
    /// source when `None`), as `kars-backup restore --config` does: with the job's keys, checks,
    /// hooks and restore settings, staged and verified before it replaces anything. With
    /// `attempts.fallback`, a backup that fails its checksum or verification makes the next
    /// older one be tried. An existing database is replaced: calling this is the confirmation.
    /// Cancelling `cancel` interrupts the restore and rolls it back.
    ///
    /// # Errors
    /// No target (a job whose source is not a URL); destinations or keys that do not open; no
    /// committed backup; [`Error::Attempts`] with every attempt when none succeeded.
    pub async fn restore_latest(
        &self,
        target: Option<&str>,
        attempts: &AttemptOptions,
        cancel: CancellationToken,
        progress: DynProgress,
    ) -> Result<Recovered> {
        let url = target.or(self.source_url()).ok_or_else(|| {
            Error::usage(format!(
                "job {} has no source URL: give the database to restore into",
                self.name
            ))
        })?;
        let none = CheckOptions::default();
        let reading = Reading::new(Some(self), &[], &none, &DecryptOptions::default())?;
        let plan = RestorePlan::new(
            Some(self),
            reading,
            &HookOptions::default(),
            &RestoreSettings::default(),
            &PgRestoreOptions::default(),
        )?;
        let candidates = Candidates::find(&plan.reading.origins()?, &Pick::Latest).await?;
        let Some(first) = candidates.first() else {
            return Err(kars_backup_core::Error::NotFound {
                what: format!("no committed backup of job {}", self.name),
            }
            .into());
        };
        let checks = plan.reading.checks(&none, None)?;
        let verify = checks.plan_at(first.entry().time());
        let target = plan.target(url, first.entry(), verify.integrity)?;
        let options = RestoreOptions {
            plan: verify,
            ..plan.options(cancel)
        };
        Ok(restore(&candidates, &target, &options, &checks, attempts, progress).await?)
    }
}

/// Restores the first candidate that works into `target`, safely, with the checks of
/// `checks` for each backup (see core's `recovery::recover`).
///
/// # Errors
/// [`AttemptsFailed`] with every attempt and the last error.
pub async fn restore(
    candidates: &Candidates,
    target: &DynDatabaseSource,
    options: &RestoreOptions,
    checks: &Checks,
    attempts: &AttemptOptions,
    progress: DynProgress,
) -> std::result::Result<Recovered, AttemptsFailed> {
    let what = Recovery::Restore {
        target: target.as_ref(),
        options,
    };
    recover(candidates, what, checks, attempts, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(extra: &str) -> Job {
        crate::job::test_support::job("postgres://u@localhost/db", extra)
    }

    #[test]
    fn restore_flags_win_over_the_file_which_wins_over_defaults() {
        let j = job(
            "[job.hooks]\nstop = \"file-stop\"\nhealth-attempts = 9\ntimeout = \"1m\"\n[job.restore]\nkeep-previous = 4\nin-use = \"terminate-sessions\"\n[job.postgres]\nbin-dir = \"/file/bin\"\n",
        );
        let reading = Reading::new(
            Some(&j),
            &[],
            &CheckOptions::default(),
            &DecryptOptions::default(),
        )
        .unwrap();
        let flags_hooks = HookOptions {
            health_attempts: Some(2),
            ..HookOptions::default()
        };
        let flags_settings = RestoreSettings {
            live: true,
            ..RestoreSettings::default()
        };
        let flags_pg = PgRestoreOptions {
            bin_dir: Some("/flag/bin".into()),
            ..PgRestoreOptions::default()
        };
        let plan = RestorePlan::new(
            Some(&j),
            reading.clone(),
            &flags_hooks,
            &flags_settings,
            &flags_pg,
        )
        .unwrap();
        assert_eq!(plan.hooks.stop.as_deref(), Some("file-stop"));
        assert_eq!(plan.hooks.health_check_attempts, 2);
        assert_eq!(plan.hooks.timeout_secs, 60);
        assert_eq!(plan.hooks.health_check_interval_secs, 2);
        assert_eq!(plan.in_use, InUsePolicy::Live);
        assert_eq!(plan.keep_previous, 4);
        assert_eq!(plan.pg_bin_dir(), Some(&PathBuf::from("/flag/bin")));
        // nothing on the command line: the file's
        let plan = RestorePlan::new(
            Some(&j),
            reading,
            &HookOptions::default(),
            &RestoreSettings::default(),
            &PgRestoreOptions::default(),
        )
        .unwrap();
        assert_eq!(plan.hooks.health_check_attempts, 9);
        assert_eq!(plan.in_use, InUsePolicy::TerminateSessions);
        assert_eq!(plan.pg_bin_dir(), Some(&PathBuf::from("/file/bin")));
        // no file: the defaults
        let plan = RestorePlan::new(
            None,
            Reading::new(
                None,
                &[],
                &CheckOptions::default(),
                &DecryptOptions::default(),
            )
            .unwrap(),
            &HookOptions::default(),
            &RestoreSettings::default(),
            &PgRestoreOptions::default(),
        )
        .unwrap();
        assert_eq!(plan.hooks, RestoreHooks::default());
        assert_eq!((plan.in_use, plan.keep_previous), (InUsePolicy::Refuse, 1));
        assert_eq!(plan.pg_bin_dir(), None);
    }

    #[test]
    fn keys_add_up_and_a_passphrase_flag_wins() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "secret\n").unwrap();
        let j = job(&format!(
            "[job.encryption]\npassphrase-file = {:?}\nidentity-files = [\"/file/old.txt\"]\n",
            pass.display().to_string()
        ));
        let flags = DecryptOptions {
            identities: vec!["/flag/id.txt".into()],
            passphrase_file: Some("/flag/pass".into()),
        };
        let r = Reading::new(Some(&j), &[], &CheckOptions::default(), &flags).unwrap();
        let ids: Vec<String> = r
            .keys
            .identities
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(ids, ["/flag/id.txt", "/file/old.txt"]);
        assert_eq!(r.keys.passphrase_file, Some(PathBuf::from("/flag/pass")));
        let r = Reading::new(
            Some(&j),
            &[],
            &CheckOptions::default(),
            &DecryptOptions::default(),
        )
        .unwrap();
        assert_eq!(r.keys.passphrase_file, Some(pass));
    }

    #[test]
    fn the_integrity_flag_wins_over_the_job_plan_which_wins_over_the_default() {
        let none = CheckOptions::default();
        let keys = DecryptOptions::default();
        let j = job("[job.verify]\nintegrity = \"full\"\nmin-rows = { users = 1 }\n");
        let r = Reading::new(Some(&j), &[], &none, &keys).unwrap();
        let flag = r.checks(&none, Some(IntegrityLevel::Quick)).unwrap();
        assert_eq!(flag.integrity, IntegrityLevel::Quick);
        assert_eq!(
            flag.min_rows.len(),
            1,
            "the rest of the plan stays the job's"
        );
        assert_eq!(
            r.checks(&none, None).unwrap().integrity,
            IntegrityLevel::Full
        );
        let plain = Reading::new(Some(&job("")), &[], &none, &keys).unwrap();
        let default = plain.checks(&none, None).unwrap();
        assert_eq!(default.integrity, IntegrityLevel::Standard);
        let off = plain.checks(&none, Some(IntegrityLevel::Off)).unwrap();
        assert_eq!(off.integrity, IntegrityLevel::Off);
    }

    #[test]
    fn checks_next_to_a_job_plan_are_refused() {
        let j = job("[job.verify]\nmin-rows = { users = 1 }\n");
        let flags = CheckOptions {
            queries: vec!["SELECT 1".into()],
            ..CheckOptions::default()
        };
        let err = Reading::new(Some(&j), &[], &flags, &DecryptOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        let preset = CheckOptions {
            checks: Some(kars_backup_core::preset::CheckPreset::Kars),
            ..CheckOptions::default()
        };
        let err = Reading::new(Some(&j), &[], &preset, &DecryptOptions::default()).unwrap_err();
        assert!(err.to_string().contains("--checks"), "{err}");
        let err = Reading::new(
            Some(&j),
            &["/elsewhere".into()],
            &CheckOptions::default(),
            &DecryptOptions::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--from cannot be given with --config")
        );
    }
}
