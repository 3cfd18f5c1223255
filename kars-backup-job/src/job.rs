//! The [`Job`] value: a database, its destinations with tiers and retention, how archives are
//! compressed and encrypted, how backups are verified and restored, notifications and a
//! schedule — built from a configuration file's `[[job]]` ([`Job::from_config`]) or from code
//! ([`Job::builder`]).

use std::path::PathBuf;

use kars_backup_config::{JobConfig, JobEncryption};
use kars_backup_core::checks::Checks;
use kars_backup_core::merge::Merge;
use kars_backup_core::recovery::Origin;
use kars_backup_core::settings::{HookOptions, RestoreSettings};
use kars_backup_core::{
    BackupOptions, Compression, DynBackupSink, DynDatabaseSource, DynEncryptor, KeepRules,
    Placement, PlaintextPolicy, Repository, Tier, TierRules,
};
use kars_backup_encrypt::{DecryptOptions, EncryptOptions};
use kars_backup_notify::NotifyOptions;
use kars_backup_schedule::Schedule;

use crate::config::{load_config, one_job};
use crate::error::{Error, Result};
use crate::scratch::ScratchOptions;
use crate::source::SourceOptions;

/// One destination of a job.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The URL the destination is opened with (transfer options applied). May hold
    /// credentials: print [`Destination::redacted`].
    pub url: String,
    /// The URL as written in the configuration (what `status` and metrics name it by).
    pub written: String,
    /// Local or cloud.
    pub placement: Placement,
    /// The tiers this destination takes, overriding the job's tier rules.
    pub tiers: Option<Vec<Tier>>,
    /// The retention policy applied after each backup; `None`: not pruned.
    pub retention: Option<KeepRules>,
}

impl Destination {
    /// A destination by URL (a directory, `file:///dir`, `s3://bucket/prefix`, `gs://…`,
    /// `az://…`, `git+file:///…`), taking every backup, never pruned.
    ///
    /// # Errors
    /// A URL that names no known kind of destination.
    pub fn new(url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        let placement = kars_backup_storage::Destination::parse(&url)?.placement();
        Ok(Destination {
            written: url.clone(),
            url,
            placement,
            tiers: None,
            retention: None,
        })
    }

    /// Prunes with this policy after each backup it takes.
    pub fn with_retention(mut self, policy: KeepRules) -> Self {
        self.retention = Some(policy);
        self
    }

    /// Takes only backups of these tiers (overrides the job's tier rules).
    pub fn with_tiers(mut self, tiers: Vec<Tier>) -> Self {
        self.tiers = Some(tiers);
        self
    }

    /// The URL without credentials.
    pub fn redacted(&self) -> String {
        kars_backup_storage::redact(&self.url)
    }

    /// The repository at this destination.
    ///
    /// # Errors
    /// A destination that cannot be opened.
    pub fn repository(&self) -> Result<Repository> {
        repository(&self.url)
    }
}

/// The repository at a destination URL.
///
/// # Errors
/// A destination that cannot be opened (the URL redacted in the message).
pub fn repository(url: &str) -> Result<Repository> {
    let sink = kars_backup_storage::sink_from_url(url).map_err(|e| {
        Error::Core(e).context(format!(
            "cannot open destination {}",
            kars_backup_storage::redact(url)
        ))
    })?;
    Ok(Repository::new(sink))
}

/// The origins (destinations to read backups from) of URLs, labelled as their sinks describe
/// themselves (redacted URLs, `file:///…` for directories).
///
/// # Errors
/// As [`repository`].
pub fn origins(urls: &[String]) -> Result<Vec<Origin>> {
    Ok(sinks(urls)?.into_iter().map(Origin::of_sink).collect())
}

/// The sinks of destination URLs, in order (as [`repository`] opens them).
///
/// # Errors
/// A destination that cannot be opened (the URL redacted in the message).
pub fn sinks(urls: &[String]) -> Result<Vec<DynBackupSink>> {
    urls.iter()
        .map(|url| Ok(repository(url)?.sink().clone()))
        .collect()
}

/// Where a job's database comes from.
#[derive(Debug, Clone)]
pub(crate) enum JobSource {
    /// A URL or path, opened with options when the job runs.
    Url { url: String, options: SourceOptions },
    /// A source built by the caller.
    Custom(DynDatabaseSource),
}

/// How a job encrypts its archives.
#[derive(Debug, Clone, Default)]
pub struct Encryption {
    /// Recipients, passphrase file, or `no_encrypt` (unencrypted also off-site, on purpose).
    pub options: EncryptOptions,
    /// The job's own age identity file: archives are also encrypted to its recipient, and
    /// restores open them with it.
    pub identity_file: Option<PathBuf>,
}

impl Encryption {
    /// Archives encrypted to the recipient of the job's own age identity file, which also
    /// opens them (see [`JobBuilder::encryption`]).
    pub fn to_identity_file(identity_file: impl Into<PathBuf>) -> Self {
        Encryption {
            identity_file: Some(identity_file.into()),
            ..Encryption::default()
        }
    }

    /// Whether archives are encrypted.
    pub fn encrypts(&self) -> bool {
        self.options.encrypts() || self.identity_file.is_some()
    }
}

/// A job's schedule: when it runs, and whether a missed run is caught up at start-up (one type
/// with the config's `[job.schedule]`).
pub type JobSchedule = kars_backup_config::ScheduleConfig;

/// A backup job, what the CLI, the daemon and an embedding service run. See the crate
/// documentation for an example.
#[derive(Debug, Clone)]
pub struct Job {
    pub(crate) name: String,
    pub(crate) source: Option<JobSource>,
    pub(crate) destinations: Vec<Destination>,
    pub(crate) options: BackupOptions,
    pub(crate) tier_rules: Option<TierRules>,
    pub(crate) encryption: Encryption,
    /// `Some(name)` for a configuration file's job: encryption errors name its table.
    pub(crate) config_name: Option<String>,
    pub(crate) decrypt: DecryptOptions,
    pub(crate) checks: Option<Checks>,
    pub(crate) rpo: Option<chrono::Duration>,
    pub(crate) rto: Option<chrono::Duration>,
    pub(crate) scratch: ScratchOptions,
    pub(crate) hooks: HookOptions,
    pub(crate) restore: RestoreSettings,
    pub(crate) pg_bin_dir: Option<PathBuf>,
    pub(crate) notify: Option<NotifyOptions>,
    pub(crate) schedule: Option<JobSchedule>,
}

impl Job {
    /// A job built from code: name it, give it a source and destinations.
    pub fn builder(name: impl Into<String>) -> JobBuilder {
        JobBuilder {
            job: Job {
                name: name.into(),
                source: None,
                destinations: Vec::new(),
                options: BackupOptions::default(),
                tier_rules: None,
                encryption: Encryption::default(),
                config_name: None,
                decrypt: DecryptOptions::default(),
                checks: None,
                rpo: None,
                rto: None,
                scratch: ScratchOptions::default(),
                hooks: HookOptions::default(),
                restore: RestoreSettings::default(),
                pg_bin_dir: None,
                notify: None,
                schedule: None,
            },
            tiers: kars_backup_core::TierOptions::default(),
            prune_all: None,
        }
    }

    /// The job a configuration file's `[[job]]` describes. Nothing is opened or read yet: keys
    /// are read and destinations opened when the job runs.
    ///
    /// # Errors
    /// A destination URL with transfer options it cannot take, an unknown kind of destination.
    pub fn from_config(job: &JobConfig) -> Result<Job> {
        let destinations = job
            .destinations
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Ok(Destination {
                    url: d.sink_url()?,
                    written: d.url.expose().to_string(),
                    placement: kars_backup_storage::Destination::parse(d.url.expose())?.placement(),
                    tiers: d.tiers.clone(),
                    retention: job.retention_for(i),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let postgres = job.postgres.clone().unwrap_or_default();
        let keys = job.encryption_keys();
        let encryption = Encryption {
            options: EncryptOptions {
                recipients: keys
                    .map(|k| {
                        k.age_recipients
                            .iter()
                            .cloned()
                            .chain(k.gpg_recipients.iter().map(|r| format!("gpg:{r}")))
                            .collect()
                    })
                    .unwrap_or_default(),
                passphrase_file: keys.and_then(|k| k.passphrase_file.clone()),
                no_encrypt: matches!(job.encryption, Some(JobEncryption::None)),
            },
            identity_file: keys.and_then(|k| k.identity_file.clone()),
        };
        let decrypt = DecryptOptions {
            identities: keys.map(|k| k.all_identity_files()).unwrap_or_default(),
            passphrase_file: keys.and_then(|k| k.passphrase_file.clone()),
        };
        Ok(Job {
            name: job.name.clone(),
            source: Some(JobSource::Url {
                url: job.source.expose().to_string(),
                options: SourceOptions {
                    integrity: job.integrity,
                    snapshot_dir: job.snapshot_dir.clone(),
                    postgres: postgres.clone(),
                },
            }),
            destinations,
            options: BackupOptions {
                name_prefix: job.prefix.clone(),
                compression: job.compression,
                threads: job.threads,
                version_label: job.label.clone(),
                host_label: job.host_label.clone(),
                tiers: Vec::new(),
                verify_upload: job.verify_upload,
                plaintext: job.plaintext_policy(),
            },
            tier_rules: job.tier_rules(),
            encryption,
            config_name: Some(job.name.clone()),
            decrypt,
            checks: job.verify.as_ref().map(|v| v.checks()),
            rpo: job.verify.as_ref().and_then(|v| v.rpo),
            rto: job.verify.as_ref().and_then(|v| v.rto),
            scratch: ScratchOptions {
                scratch_db: job
                    .verify
                    .as_ref()
                    .and_then(|v| v.scratch_db.as_ref())
                    .map(|u| u.expose().to_string()),
                jobs: None,
                pg_bin_dir: postgres.bin_dir.clone(),
            },
            hooks: job.hooks.clone().unwrap_or_default(),
            restore: job.restore.clone().unwrap_or_default(),
            pg_bin_dir: postgres.bin_dir,
            notify: job.notify.as_ref().map(|n| n.options()),
            schedule: job.schedule.clone(),
        })
    }

    /// The job `name` of the configuration file at `path` (its only job when `None`).
    ///
    /// # Errors
    /// A file that does not load; an unknown name, or none in a file with several jobs.
    pub fn from_file(path: &std::path::Path, name: Option<&str>) -> Result<Job> {
        let config = load_config(path)?;
        Job::from_config(one_job(&config, name)?)
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its destinations.
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// Where its unencrypted archives may go (`encryption = "none"` allows off-site).
    pub fn plaintext(&self) -> kars_backup_core::PlaintextPolicy {
        self.options.plaintext
    }

    /// Its schedule, if it has one.
    pub fn schedule(&self) -> Option<&JobSchedule> {
        self.schedule.as_ref()
    }

    /// Its notifications, if it has its own.
    pub fn notify(&self) -> Option<&NotifyOptions> {
        self.notify.as_ref()
    }

    /// Its verification checks (`[job.verify]`), if it has a plan.
    pub fn checks(&self) -> Option<&Checks> {
        self.checks.as_ref()
    }

    /// The job's RPO target, if it sets one.
    pub fn rpo(&self) -> Option<chrono::Duration> {
        self.rpo
    }

    /// The source URL (with its secrets), for a job whose source is a URL.
    pub fn source_url(&self) -> Option<&str> {
        match &self.source {
            Some(JobSource::Url { url, .. }) => Some(url),
            _ => None,
        }
    }

    /// The database to back up, opened now.
    ///
    /// # Errors
    /// A job without source; a source URL that does not open.
    pub fn source(&self) -> Result<DynDatabaseSource> {
        match &self.source {
            Some(JobSource::Url { url, options }) => options.open(url),
            Some(JobSource::Custom(source)) => Ok(source.clone()),
            None => Err(Error::usage(format!("job {} has no source", self.name))),
        }
    }

    /// The encryptor of the job's archives, if it encrypts (OpenPGP keys are looked up now, so
    /// a bad recipient fails before anything is read; the recipient of an identity file is
    /// derived from it).
    ///
    /// # Errors
    /// A bad recipient, a missing key, an unreadable identity or passphrase file.
    pub fn encryptor(&self) -> Result<Option<DynEncryptor>> {
        let enc = &self.encryption;
        if !enc.encrypts() {
            return Ok(None);
        }
        let own = match &enc.identity_file {
            Some(file) => kars_backup_encrypt::identity_file_recipients(file)
                .map_err(|e| self.in_table(e.into(), "[job.encryption] identity-file"))?,
            None => Vec::new(),
        };
        let recipients: Vec<String> = own
            .into_iter()
            .chain(enc.options.recipients.iter().cloned())
            .collect();
        kars_backup_encrypt::encryptor(&recipients, enc.options.passphrase_file.as_deref())
            .map_err(|e| self.in_table(e.into(), "[job.encryption]"))
    }

    /// An error with the job's table named, for jobs of a configuration file.
    fn in_table(&self, err: Error, table: &str) -> Error {
        match &self.config_name {
            Some(name) => err.context(format!("job {name}: {table}")),
            None => err,
        }
    }

    /// The keys that open the job's archives: `flags` (identity files first) plus the job's
    /// identity files; a passphrase file among the flags wins over the job's.
    pub fn decrypt_options(&self, flags: &DecryptOptions) -> DecryptOptions {
        flags.clone().merge(self.decrypt.clone())
    }

    /// The job's destinations to read backups from, opened with `keys`.
    ///
    /// # Errors
    /// A destination that does not open; unreadable keys.
    pub fn origins(&self, keys: &DecryptOptions) -> Result<Vec<Origin>> {
        let urls: Vec<String> = self.destinations.iter().map(|d| d.url.clone()).collect();
        Ok(keys.apply_all(origins(&urls)?)?)
    }
}

/// Builds a [`Job`] from code.
#[derive(Debug)]
pub struct JobBuilder {
    job: Job,
    tiers: kars_backup_core::TierOptions,
    /// `Some(explicit policy)`: prune every destination after a backup.
    prune_all: Option<Option<KeepRules>>,
}

impl JobBuilder {
    /// The database: a URL or path (see [`crate::source_from_url`]) with options.
    pub fn source_url(mut self, url: impl Into<String>, options: SourceOptions) -> Self {
        self.job.source = Some(JobSource::Url {
            url: url.into(),
            options,
        });
        self
    }

    /// The database: any source.
    pub fn source(mut self, source: DynDatabaseSource) -> Self {
        self.job.source = Some(JobSource::Custom(source));
        self
    }

    /// One more destination.
    pub fn destination(mut self, destination: Destination) -> Self {
        self.job.destinations.push(destination);
        self
    }

    /// Name prefix, compression, labels, upload verification, plaintext policy.
    pub fn options(mut self, options: BackupOptions) -> Self {
        self.job.options = options;
        self
    }

    /// The compression of the archives.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.job.options.compression = compression;
        self
    }

    /// Storage tiers: which destinations take which backups (daily local, weekly everywhere,
    /// monthly and yearly in the cloud: [`TierRules::runbook`]).
    pub fn tier_rules(mut self, rules: TierRules) -> Self {
        self.job.tier_rules = Some(rules);
        self
    }

    /// Storage tiers as given (`--tiering`, `--local-tiers`, `--cloud-tiers`).
    pub fn tiers(mut self, tiers: kars_backup_core::TierOptions) -> Self {
        self.job.tier_rules = tiers.rules();
        self.tiers = tiers;
        self
    }

    /// Prune every destination after each backup it takes (those without a policy of their
    /// own): with `policy`, else (with tiers) the policy of the tiers its placement keeps, else
    /// the runbook's table.
    pub fn prune_all(mut self, policy: Option<KeepRules>) -> Self {
        self.prune_all = Some(policy);
        self
    }

    /// Encryption of the archives. Without recipients, archives go unencrypted to local
    /// destinations only, unless `no_encrypt` says so on purpose.
    /// The job's own identity file ([`Encryption::identity_file`]) also opens the archives
    /// (restores, verifies, drills), as for a configuration file's job.
    pub fn encryption(mut self, encryption: Encryption) -> Self {
        self.job.options.plaintext = if encryption.options.no_encrypt {
            PlaintextPolicy::Anywhere
        } else {
            PlaintextPolicy::LocalOnly
        };
        if let Some(file) = &encryption.identity_file
            && !self.job.decrypt.identities.contains(file)
        {
            self.job.decrypt.identities.push(file.clone());
        }
        self.job.encryption = encryption;
        self
    }

    /// The keys that open the archives (restores, verifies, drills, status), besides the
    /// identity file of [`encryption`](Self::encryption).
    pub fn decrypt(mut self, keys: DecryptOptions) -> Self {
        self.job.decrypt = keys.merge(self.job.decrypt);
        self
    }

    /// The verification plan of restores, verifies and drills.
    pub fn checks(mut self, checks: Checks) -> Self {
        self.job.checks = Some(checks);
        self
    }

    /// RPO and RTO targets (status, drills).
    pub fn targets(mut self, rpo: Option<chrono::Duration>, rto: Option<chrono::Duration>) -> Self {
        self.job.rpo = rpo;
        self.job.rto = rto;
        self
    }

    /// Where PostgreSQL backups are verified.
    pub fn scratch(mut self, scratch: ScratchOptions) -> Self {
        self.job.scratch = scratch;
        self
    }

    /// Commands around a restore.
    pub fn hooks(mut self, hooks: HookOptions) -> Self {
        self.job.hooks = hooks;
        self
    }

    /// How a restore treats the application and the previous database.
    pub fn restore(mut self, settings: RestoreSettings) -> Self {
        self.job.restore = settings;
        self
    }

    /// Notifications of the job's runs.
    pub fn notify(mut self, notify: NotifyOptions) -> Self {
        self.job.notify = Some(notify);
        self
    }

    /// When the daemon runs the job.
    pub fn schedule(mut self, schedule: Schedule, catch_up: bool) -> Self {
        self.job.schedule = Some(JobSchedule { schedule, catch_up });
        self
    }

    /// The job.
    ///
    /// # Errors
    /// A job without destination.
    pub fn build(self) -> Result<Job> {
        if self.job.destinations.is_empty() {
            return Err(Error::usage(format!(
                "job {} has no destination: add one",
                self.job.name
            )));
        }
        Ok(self.build_unchecked())
    }

    /// The job, also without destinations (a job that only looks at its database).
    pub fn build_unchecked(mut self) -> Job {
        if let Some(explicit) = &self.prune_all {
            for d in &mut self.job.destinations {
                if d.retention.is_none() {
                    d.retention = Some(self.tiers.prune_policy(explicit.as_ref(), d.placement));
                }
            }
        }
        self.job
    }
}

/// The backup `pick` chooses in one repository: a committed or runbook backup by name, or the
/// newest committed one (runbook archives are never taken as the newest: the error says how to
/// name one).
///
/// # Errors
/// [`kars_backup_core::Error::NotFound`]; a destination that cannot be listed.
pub async fn find_backup(
    repo: &Repository,
    pick: &kars_backup_core::recovery::Pick,
) -> Result<kars_backup_core::BackupEntry> {
    use kars_backup_core::recovery::Pick;
    if let Pick::Named(name) = pick {
        return Ok(repo.find(name).await?);
    }
    let listing = repo.list().await?;
    if let Some(e) = listing.latest() {
        return Ok(e.clone());
    }
    let runbook = listing
        .entries
        .iter()
        .filter(|e| e.kind == kars_backup_core::EntryKind::Runbook)
        .count();
    let hint = if runbook > 0 {
        format!(
            "; {runbook} runbook archive(s) without manifest are there: restore one by name with --backup"
        )
    } else {
        String::new()
    };
    Err(kars_backup_core::Error::NotFound {
        what: format!("no committed backup in {}{hint}", repo.describe()),
    }
    .into())
}

#[cfg(test)]
pub(crate) mod test_support {
    /// The only job of a configuration file: `source`, one local destination, then `extra` (the
    /// job's tables, e.g. `[job.verify]`).
    pub(crate) fn job(source: &str, extra: &str) -> super::Job {
        let text = format!(
            "[[job]]\nname = \"j\"\nsource = \"{source}\"\n[[job.destination]]\nurl = \"/tmp/kars-job-test\"\n{extra}"
        );
        let config = kars_backup_config::parse(&text, "k.toml".as_ref()).expect("config");
        super::Job::from_config(&config.jobs[0]).expect("job")
    }
}
