//! The file's types: `[daemon]`, `[notify]` and one `[[job]]` table per job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use kars_backup_core::verify::{Expectation, TestQuery};
use kars_backup_core::{
    Compression, IntegrityLevel, KeepRules, TableInfo, Tier, Tiering, VerifyPlan,
};
use kars_backup_schedule::Schedule;
use serde::{Deserialize, Deserializer};

use crate::interpolate::Substitution;
use crate::replicate::ReplicateConfig;

/// A whole configuration file. Its `Debug` is the effective configuration with secrets
/// redacted ([`effective_toml`](crate::effective_toml)).
#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// The `daemon` command's settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Notifications of every job that has no `[job.notify]` of its own.
    #[serde(default)]
    pub notify: Option<NotifyConfig>,
    /// The jobs (`[[job]]` tables), in file order.
    #[serde(default, rename = "job")]
    pub jobs: Vec<JobConfig>,
    #[serde(skip)]
    pub(crate) substitutions: Vec<Substitution>,
    #[serde(skip)]
    pub(crate) env_names: Vec<String>,
    #[serde(skip)]
    pub(crate) notes: Vec<String>,
}

impl Config {
    /// The job called `name`.
    pub fn job(&self, name: &str) -> Option<&JobConfig> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The notifications of a job: its own `[job.notify]`, else the file's `[notify]`.
    pub fn notify_for<'a>(&'a self, job: &'a JobConfig) -> Option<&'a NotifyConfig> {
        job.notify.as_ref().or(self.notify.as_ref())
    }

    /// The environment variables the file references with `${…}`, in order of first use (what
    /// a crontab or a systemd `EnvironmentFile` must provide).
    pub fn env_names(&self) -> &[String] {
        &self.env_names
    }

    /// Things that are not errors of the file but will need doing before its jobs run (an
    /// identity file that does not exist yet), one sentence each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// `[daemon]`: where the daemon serves metrics and keeps its state, and its log format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DaemonConfig {
    /// Address of the Prometheus `/metrics` endpoint (`127.0.0.1:9464`); none when absent.
    #[serde(default, deserialize_with = "opt_from_str")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Directory of the run locks and the catch-up state (default: `/var/lib/kars-backup`).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The textfile-collector file every run (daemon or one-shot `backup --config`) rewrites
    /// with its job's metrics: one file per job, `{job}` in the path replaced by the job's name,
    /// else `.<job>` put before the extension (`kars-backup.prom` → `kars-backup.nightly.prom`).
    #[serde(default)]
    pub metrics_textfile: Option<PathBuf>,
    /// Log format: `human` or `json`.
    #[serde(default)]
    pub log_format: Option<LogFormat>,
}

/// Log format on stderr (`[daemon] log-format`, the `--log-format` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object a line.
    Json,
}

/// One `[[job]]`: a database backed up to one or more destinations.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct JobConfig {
    /// Unique name (`kars-sqlite`); letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The database: `sqlite:///app/data/assets.db`, a path, a directory (volume mode), or
    /// `postgres://…` (usually `"${DATABASE_URL}"`).
    pub source: SecretUrl,
    /// Where backups go (`[[job.destination]]`), at least one.
    #[serde(rename = "destination")]
    pub destinations: Vec<DestinationConfig>,
    /// Archive name prefix (default: the engine's, `asset-data` / `kars-postgres`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `gzip` (default), `gzip:LEVEL`, `zstd`, `zstd:LEVEL` or `none`.
    #[serde(default, deserialize_with = "from_str")]
    pub compression: Compression,
    /// The compression level, instead of writing it as `zstd:LEVEL` (gzip 1-12, zstd 1-22).
    #[serde(default)]
    pub compression_level: Option<u32>,
    /// Compression threads (default: all cores).
    #[serde(default)]
    pub threads: Option<usize>,
    /// A version label stored in the manifest.
    #[serde(default)]
    pub label: Option<String>,
    /// The host/container label stored in the manifest.
    #[serde(default)]
    pub host_label: Option<String>,
    /// SQLite: the snapshot's integrity check recorded in the manifest (default: quick).
    #[serde(default = "quick")]
    pub integrity: IntegrityLevel,
    /// SQLite: directory of the temporary snapshot file.
    #[serde(default)]
    pub snapshot_dir: Option<PathBuf>,
    /// Read every copy back after the upload and check its SHA-256.
    #[serde(default)]
    pub verify_upload: bool,
    /// Retention of every destination without its own (`daily=7,weekly=4,monthly=12,yearly=all`).
    #[serde(default, deserialize_with = "opt_from_str")]
    pub retention: Option<KeepRules>,
    /// Prune after each backup. Default: on when a retention policy or tiering applies.
    #[serde(default)]
    pub prune: Option<bool>,
    /// Storage tiers: `runbook` (daily local; weekly local+cloud; monthly, yearly cloud only) or
    /// `off` (default: every destination takes every backup).
    #[serde(default)]
    pub tiering: Tiering,
    /// Tiers local destinations keep (turns tiering on; default with `runbook`: daily, weekly).
    #[serde(default, deserialize_with = "opt_tiers")]
    pub local_tiers: Option<Vec<Tier>>,
    /// Tiers cloud destinations keep (turns tiering on; default: weekly, monthly, yearly).
    #[serde(default, deserialize_with = "opt_tiers")]
    pub cloud_tiers: Option<Vec<Tier>>,
    /// Encryption of the archives: a `[job.encryption]` table, or `encryption = "none"` to store
    /// them unencrypted on purpose (also off-site). Without either, a job with an off-site
    /// destination is refused: KARS backups hold credentials.
    #[serde(default)]
    pub encryption: Option<JobEncryption>,
    /// The verification plan of restores, verifies and drills of this job's backups.
    #[serde(default)]
    pub verify: Option<VerifyConfig>,
    /// `[job.hooks]`: commands around a restore (the `restore` flags' type).
    #[serde(default)]
    pub hooks: Option<kars_backup_core::settings::HookOptions>,
    /// `[job.restore]`: how a restore treats the application and the previous database (the
    /// `restore` flags' type).
    #[serde(default)]
    pub restore: Option<kars_backup_core::settings::RestoreSettings>,
    /// `[job.postgres]`: PostgreSQL dump options, ignored for SQLite (the `backup` flags' type).
    #[serde(default)]
    pub postgres: Option<kars_backup_postgres::DumpOptions>,
    /// When the daemon (or cron/systemd) runs the job.
    #[serde(default)]
    pub schedule: Option<ScheduleConfig>,
    /// `[job.replicate]`: continuous replication of an SQLite database, which the daemon runs
    /// next to the scheduled snapshots.
    #[serde(default)]
    pub replicate: Option<ReplicateConfig>,
    /// Notifications of this job (replaces the file's `[notify]`).
    #[serde(default)]
    pub notify: Option<NotifyConfig>,
}

fn quick() -> IntegrityLevel {
    IntegrityLevel::Quick
}

impl JobConfig {
    /// The tier rules, when tiering is on: the runbook's, with `local-tiers`/`cloud-tiers`
    /// replacing either side.
    pub fn tier_rules(&self) -> Option<kars_backup_core::TierRules> {
        self.tier_options().rules()
    }

    /// The job's `tiering`, `local-tiers` and `cloud-tiers` (the `backup` flags' type).
    pub fn tier_options(&self) -> kars_backup_core::TierOptions {
        kars_backup_core::TierOptions {
            tiering: self.tiering,
            local_tiers: self.local_tiers.clone(),
            cloud_tiers: self.cloud_tiers.clone(),
        }
    }

    /// The job's `[job.encryption]` table, if it has one (not with `encryption = "none"`).
    pub fn encryption_keys(&self) -> Option<&EncryptionConfig> {
        match &self.encryption {
            Some(JobEncryption::Keys(k)) => Some(k),
            _ => None,
        }
    }

    /// Whether the job's archives are encrypted (recipients, an identity file or a passphrase).
    pub fn encrypts(&self) -> bool {
        self.encryption_keys()
            .is_some_and(EncryptionConfig::encrypts)
    }

    /// Where the job may store unencrypted archives: anywhere with `encryption = "none"`, else
    /// only at local destinations.
    pub fn plaintext_policy(&self) -> kars_backup_core::PlaintextPolicy {
        match self.encryption {
            Some(JobEncryption::None) => kars_backup_core::PlaintextPolicy::Anywhere,
            _ => kars_backup_core::PlaintextPolicy::LocalOnly,
        }
    }

    /// The job's off-site destinations (redacted) that would get unencrypted archives, which a
    /// backup refuses: empty when the job encrypts, says `encryption = "none"`, or has only
    /// local destinations.
    pub fn plaintext_off_site(&self) -> Vec<String> {
        if self.encrypts() || self.plaintext_policy() == kars_backup_core::PlaintextPolicy::Anywhere
        {
            return Vec::new();
        }
        self.destinations
            .iter()
            .filter(|d| {
                kars_backup_storage::Destination::parse(d.url.expose())
                    .is_ok_and(|p| p.placement() != kars_backup_core::Placement::Local)
            })
            .map(|d| d.url.redacted())
            .collect()
    }

    /// The job's `[job.replicate]` when the daemon is to run it (present and enabled).
    pub fn replication(&self) -> Option<&ReplicateConfig> {
        self.replicate.as_ref().filter(|r| r.enabled)
    }

    /// The destinations a replication ships to: every one without `replicate = false`.
    pub fn replica_destinations(&self) -> impl Iterator<Item = &DestinationConfig> {
        self.destinations.iter().filter(|d| d.replicate)
    }

    /// Whether the source is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        kars_backup_postgres::PostgresSource::is_postgres_url(self.source.expose())
    }

    /// The retention policy of destination `index` after a backup, or `None` when it is not
    /// pruned: its own `retention`, else the job's, else (with tiering) the policy of its tiers.
    pub fn retention_for(&self, index: usize) -> Option<KeepRules> {
        if self.prune == Some(false) {
            return None;
        }
        let dest = self.destinations.get(index)?;
        if let Some(r) = dest.retention.as_ref().or(self.retention.as_ref()) {
            return Some(r.clone());
        }
        if let Some(tiers) = &dest.tiers {
            let rules = kars_backup_core::TierRules {
                local: tiers.clone(),
                cloud: tiers.clone(),
            };
            return Some(rules.policy_for(kars_backup_core::Placement::Local));
        }
        let placement = kars_backup_storage::Destination::parse(dest.url.expose())
            .ok()?
            .placement();
        if let Some(rules) = self.tier_rules() {
            return Some(rules.policy_for(placement));
        }
        if self.prune == Some(true) {
            return Some(KeepRules::runbook());
        }
        None
    }
}

/// `[[job.destination]]`: one place backups go.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DestinationConfig {
    /// The URL: a directory, `file:///dir`, `s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `git+file:///…`.
    pub url: SecretUrl,
    /// Retention here (overrides the job's).
    #[serde(default, deserialize_with = "opt_from_str")]
    pub retention: Option<KeepRules>,
    /// The tiers this destination takes (overrides the job's tiering for it).
    #[serde(default, deserialize_with = "opt_tiers")]
    pub tiers: Option<Vec<Tier>>,
    /// `[job.destination.transfer]`: part sizes and concurrency of uploads and parallel ranged
    /// downloads (object stores only; what is not set is chosen automatically). Wins over the
    /// same parameters in the URL's query.
    #[serde(default)]
    pub transfer: Option<kars_backup_storage::TransferOptions>,
    /// Whether the job's `[job.replicate]` replicates to this destination too (default: true).
    #[serde(default = "yes")]
    pub replicate: bool,
}

impl DestinationConfig {
    /// The URL to open the destination with: [`Self::url`] with [`Self::transfer`] in its
    /// query. Holds the URL's secrets: never print it unredacted.
    ///
    /// # Errors
    /// [`kars_backup_core::Error::InvalidInput`] for transfer options on a local destination.
    pub fn sink_url(&self) -> kars_backup_core::Result<String> {
        match &self.transfer {
            Some(t) => t.apply_to_url(self.url.expose()),
            None => Ok(self.url.expose().to_string()),
        }
    }
}

/// A job's `encryption`: the string `"none"` or a `[job.encryption]` table.
#[derive(Debug, Clone)]
pub enum JobEncryption {
    /// `encryption = "none"`: the archives are stored unencrypted, also off-site (the operator
    /// said so; the CLI's `--no-encrypt`).
    None,
    /// `[job.encryption]`: the keys.
    Keys(EncryptionConfig),
}

impl<'de> Deserialize<'de> for JobEncryption {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JobEncryption;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [job.encryption] table, or the string \"none\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<JobEncryption, E> {
                if v == "none" {
                    Ok(JobEncryption::None)
                } else {
                    Err(E::custom(format!(
                        "encryption = {v:?}: the only string value is \"none\" (store the backups unencrypted on purpose); to encrypt, give a [job.encryption] table with identity-file = \"…\" (see `kars-backup key init`) or age-recipients = [\"age1…\"]"
                    )))
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<JobEncryption, A::Error> {
                EncryptionConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(JobEncryption::Keys)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[job.encryption]`: who can read the archives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EncryptionConfig {
    /// The job's own age identity file (`kars-backup key init --out FILE`): backups are
    /// encrypted to its recipient (derived from it, besides any `age-recipients`), and restores,
    /// verifies, drills and status open them with it. Keep a copy offline.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// age X25519 recipients (`age1…`); `backup --encrypt-to age1…`.
    #[serde(default)]
    pub age_recipients: Vec<String>,
    /// OpenPGP recipients (key id, fingerprint or e-mail in the gpg keyring);
    /// `backup --encrypt-to gpg:<id>`.
    #[serde(default)]
    pub gpg_recipients: Vec<String>,
    /// A file holding an age passphrase (its content is never read into output);
    /// `backup --passphrase-file`.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// age identity files for restores, verifies and drills; `--identity`.
    #[serde(default)]
    pub identity_files: Vec<PathBuf>,
}

impl EncryptionConfig {
    /// Whether backups are to be encrypted (recipients, an identity file or a passphrase).
    pub fn encrypts(&self) -> bool {
        self.identity_file.is_some()
            || !self.age_recipients.is_empty()
            || !self.gpg_recipients.is_empty()
            || self.passphrase_file.is_some()
    }

    /// Every identity file for reading the archives: `identity-file` first, then
    /// `identity-files`.
    pub fn all_identity_files(&self) -> Vec<PathBuf> {
        self.identity_file
            .iter()
            .chain(&self.identity_files)
            .cloned()
            .collect()
    }

    /// The `backup` flags that express this: `--encrypt-to …` (repeated), `--passphrase-file …`
    /// (an `identity-file`'s recipient is not among them: `kars-backup key show` prints it).
    pub fn backup_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for r in &self.age_recipients {
            flags.push("--encrypt-to".into());
            flags.push(r.clone());
        }
        for r in &self.gpg_recipients {
            flags.push("--encrypt-to".into());
            flags.push(format!("gpg:{r}"));
        }
        if let Some(p) = &self.passphrase_file {
            flags.push("--passphrase-file".into());
            flags.push(p.display().to_string());
        }
        flags
    }
}

/// `[job.verify]`: the checks a restored copy must pass (restores, verifies, drills).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct VerifyConfig {
    /// `standard` (default: `PRAGMA integrity_check`; amcheck `bt_index_check`), `full`
    /// (PostgreSQL: with `heapallindexed`), `quick` (`PRAGMA quick_check`) or `off`.
    #[serde(default)]
    pub integrity: IntegrityLevel,
    /// Compare row counts with the manifest's (default: true).
    #[serde(default = "yes")]
    pub check_counts: bool,
    /// Minimum rows per table: `{ users = 1, assets = 1 }`.
    #[serde(default)]
    pub min_rows: BTreeMap<String, u64>,
    /// Audit-log check, `TABLE.COLUMN`: the newest entry must lie between `rpo` before the
    /// backup's time and that time.
    #[serde(default)]
    pub audit_log: Option<String>,
    /// Recovery point objective (audit-log check, status, drills), e.g. `24h`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub rpo: Option<chrono::Duration>,
    /// Recovery time objective of drills, e.g. `1h`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub rto: Option<chrono::Duration>,
    /// PostgreSQL server where verifies and drills may create a temporary database.
    #[serde(default)]
    pub scratch_db: Option<SecretUrl>,
    /// Test queries (`[[job.verify.query]]`).
    #[serde(default, rename = "query")]
    pub queries: Vec<QueryConfig>,
    /// A preset of checks: `"kars"` (users with an admin, every asset's company exists, unique
    /// serial numbers and asset tags, the newest `audit_logs.timestamp` within `rpo`).
    #[serde(default, deserialize_with = "opt_from_str")]
    pub checks: Option<kars_backup_core::preset::CheckPreset>,
}

fn yes() -> bool {
    true
}

/// The default RPO of the runbook: 24 hours.
pub const DEFAULT_RPO_HOURS: i64 = 24;

impl VerifyConfig {
    /// The RPO target (default 24 h).
    pub fn rpo(&self) -> chrono::Duration {
        self.rpo
            .unwrap_or_else(|| chrono::Duration::hours(DEFAULT_RPO_HOURS))
    }

    /// The job's checks as the library's value (time-dependent checks are filled in per
    /// backup by [`Checks::plan_at`](kars_backup_core::checks::Checks::plan_at)).
    pub fn checks(&self) -> kars_backup_core::checks::Checks {
        kars_backup_core::checks::Checks {
            integrity: self.integrity,
            check_counts: self.check_counts,
            min_rows: self
                .min_rows
                .iter()
                .map(|(name, rows)| TableInfo {
                    name: name.clone(),
                    rows: *rows,
                })
                .collect(),
            queries: self.queries.iter().map(QueryConfig::test).collect(),
            audit_log: self
                .audit_log
                .as_deref()
                .and_then(split_audit)
                .map(|(t, c)| (t.to_string(), c.to_string())),
            preset: self.checks,
            rpo: self.rpo(),
        }
    }

    /// The core verification plan for a backup taken at `backup_time`.
    pub fn plan(&self, backup_time: chrono::DateTime<chrono::Utc>) -> VerifyPlan {
        self.checks().plan_at(backup_time)
    }
}

/// `TABLE.COLUMN` split at its last dot, both sides non-empty.
pub(crate) fn split_audit(spec: &str) -> Option<(&str, &str)> {
    spec.rsplit_once('.')
        .filter(|(t, c)| !t.is_empty() && !c.is_empty())
}

/// `[[job.verify.query]]`: SQL and what it must return (by default: true).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct QueryConfig {
    /// A single read-only statement.
    pub sql: String,
    /// The first column of the first row, as text, equals this.
    #[serde(default)]
    pub value: Option<String>,
    /// The query returns this many rows.
    #[serde(default)]
    pub rows: Option<u64>,
}

impl QueryConfig {
    /// The core test query.
    pub fn test(&self) -> TestQuery {
        let expect = match (&self.value, self.rows) {
            (Some(v), _) => Expectation::Value(v.clone()),
            (None, Some(n)) => Expectation::RowCount(n),
            (None, None) => Expectation::True,
        };
        TestQuery {
            sql: self.sql.clone(),
            expect,
            label: None,
        }
    }
}

/// `[job.schedule]`: when the job runs (also the job layer's schedule), checked while the file
/// is read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "ScheduleFile")]
pub struct ScheduleConfig {
    /// `cron` (five fields, `0 2 * * *`: daily at 02:00, or `@daily`, `@hourly`, …) in
    /// `timezone` (an IANA name, default `UTC`, e.g. `Europe/Berlin`).
    pub schedule: Schedule,
    /// After downtime, run a missed run once at start-up (`catch-up`, default: true).
    pub catch_up: bool,
}

/// `[job.schedule]` as written.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ScheduleFile {
    #[serde(deserialize_with = "from_str")]
    cron: Schedule,
    #[serde(default = "utc", deserialize_with = "time_zone")]
    timezone: chrono_tz::Tz,
    #[serde(default = "yes")]
    catch_up: bool,
}

impl From<ScheduleFile> for ScheduleConfig {
    fn from(file: ScheduleFile) -> Self {
        ScheduleConfig {
            schedule: file.cron.with_time_zone(file.timezone),
            catch_up: file.catch_up,
        }
    }
}

fn utc() -> chrono_tz::Tz {
    chrono_tz::UTC
}

/// `[notify]` / `[job.notify]`: who hears about runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NotifyConfig {
    /// A URL that receives a JSON POST (job, run id, error, timings) on failure (and success
    /// with `on-success`). Empty (`"${KARS_ALERT_WEBHOOK:-}"` with the variable unset): none.
    #[serde(default, deserialize_with = "opt_token_url")]
    pub webhook: Option<TokenUrl>,
    /// A command run with `sh -c` on failure (and success); the event is in its environment
    /// (`KARS_JOB`, `KARS_STATUS`, `KARS_RUN_ID`, `KARS_ERROR`, …; see `kars_backup_notify::command_env`).
    #[serde(default)]
    pub command: Option<CommandLine>,
    /// Also notify successful runs (webhook and command; pings always report both).
    #[serde(default)]
    pub on_success: bool,
    /// Healthcheck-style ping URLs.
    #[serde(default)]
    pub ping: Option<PingConfig>,
}

impl NotifyConfig {
    /// The notifier settings this table describes (`on-success` applies to the webhook and the
    /// command; pings always report both).
    pub fn options(&self) -> kars_backup_notify::NotifyOptions {
        use kars_backup_notify::{CommandOptions, NotifyOn, PingOptions, WebhookOptions};
        let on = if self.on_success {
            NotifyOn::Always
        } else {
            NotifyOn::Failure
        };
        let mut options = kars_backup_notify::NotifyOptions::default();
        if let Some(url) = &self.webhook {
            let mut w = WebhookOptions::new(url.expose());
            w.on = on;
            options.webhooks.push(w);
        }
        if let Some(command) = &self.command {
            let mut c = CommandOptions::new(command.expose());
            c.on = on;
            options.commands.push(c);
        }
        if let Some(p) = &self.ping {
            options.pings.push(PingOptions {
                start: p.start.as_ref().map(|u| u.expose().to_string()),
                success: p.success.as_ref().map(|u| u.expose().to_string()),
                fail: p.fail.as_ref().map(|u| u.expose().to_string()),
                url: None,
                ..PingOptions::hc_ping("")
            });
        }
        options
    }
}

/// `[notify.ping]`: URLs fetched when a run starts, succeeds and fails (an empty value: none).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PingConfig {
    /// Fetched when a run starts.
    #[serde(default, deserialize_with = "opt_token_url")]
    pub start: Option<TokenUrl>,
    /// Fetched when a run succeeds.
    #[serde(default, deserialize_with = "opt_token_url")]
    pub success: Option<TokenUrl>,
    /// Fetched when a run fails.
    #[serde(default, deserialize_with = "opt_token_url")]
    pub fail: Option<TokenUrl>,
}

/// A token URL, or `None` for an empty string (a variable left unset with an empty default).
fn opt_token_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TokenUrl>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| TokenUrl::new(s)))
}

/// A URL that may carry a password (database and destination URLs). `Debug` shows it redacted.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// A URL.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL itself, with its secrets; never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without passwords or credential query parameters.
    pub fn redacted(&self) -> String {
        kars_backup_storage::redact(&kars_backup_postgres::redact_url(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// A URL whose path or query is a secret token (webhooks, healthcheck pings). `Debug` shows
/// only its scheme and host.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct TokenUrl(String);

impl TokenUrl {
    /// A URL.
    pub fn new(url: impl Into<String>) -> Self {
        TokenUrl(url.into())
    }

    /// The URL itself, with its token; never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `scheme://host[:port]/***`: the path, query and any user info left out.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(u) => {
                let host = u.host_str().unwrap_or_default();
                let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                let hidden = u.path() != "/" || u.query().is_some() || !u.username().is_empty();
                format!(
                    "{}://{host}{port}/{}",
                    u.scheme(),
                    if hidden { "***" } else { "" }
                )
            }
            Err(_) => "***".to_string(),
        }
    }
}

impl fmt::Debug for TokenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// A shell command (`sh -c`), possibly with secrets from `${…}`. `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CommandLine(String);

impl CommandLine {
    /// A command.
    pub fn new(command: impl Into<String>) -> Self {
        CommandLine(command.into())
    }

    /// The command as run.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandLine({} bytes)", self.0.len())
    }
}

/// A value parsed from a string; its error is placed at the value.
fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn opt_from_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    from_str(d).map(Some)
}

fn opt_tiers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Tier>>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| n.parse::<Tier>())
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<chrono::Duration, D::Error> {
    let s = String::deserialize(d)?;
    kars_backup_core::retention::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<chrono::Duration>, D::Error> {
    duration(d).map(Some)
}

fn time_zone<'de, D: Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<chrono_tz::Tz>().map_err(|_| {
        serde::de::Error::custom(format!(
            "unknown time zone {s:?}: use an IANA name such as UTC, Europe/Berlin or America/New_York"
        ))
    })
}
