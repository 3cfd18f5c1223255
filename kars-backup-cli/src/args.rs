//! Command-line arguments.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use clap::{Args, Parser, Subcommand, ValueEnum};
use kars_backup::config::LogFormat;
use kars_backup::core::IntegrityLevel;
use kars_backup::core::checks::CheckOptions;
use kars_backup::core::retention::parse_duration;
use kars_backup::core::settings::{HookOptions, RestoreSettings};
use kars_backup::core::verify::parse_instant;
use kars_backup::encrypt::{DecryptOptions, EncryptOptions};
use kars_backup::job::ScratchOptions;
use kars_backup::job::physical::PhysicalFlags;
use kars_backup::job::wal::{SpoolFlags, WalPlaces};
use kars_backup::postgres::wal::ReceiveSettings;
use kars_backup::postgres::{DumpOptions, PgRestoreOptions};
use kars_backup::sqlite::replicate::ReplicationSettings;

/// Back up, list, verify and restore SQLite and PostgreSQL databases, safely.
#[derive(Debug, Parser)]
#[command(name = "kars-backup", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 ok, 1 internal error, 2 usage error (bad flags, bad input, \
restore not confirmed, unsupported version, an unencrypted backup or copy to an off-site \
destination without --no-encrypt, a missing decryption key), 3 database source error, 4 storage error (also: a backup that failed at some \
destinations), 5 verification failed (checksum, integrity, row counts, test queries; a drill \
whose backup failed; status: a destination's last drill failed, or the keys given do not open its \
newest backup), 6 status: a destination or a replica misses its RPO; drill: the RTO or RPO target was \
missed, 7 pg fetch-wal: the WAL file is not in the archive, 126 pg fetch-wal failed (PostgreSQL \
then stops the recovery)."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Log verbosity: -v info, -vv debug (logs go to stderr).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    /// Log format on stderr [default: the --config file's `[daemon] log-format` (daemon,
    /// `backup --config`), else human].
    #[arg(long, value_enum, global = true)]
    pub(crate) log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Take a consistent snapshot of a database and store it at one or more destinations.
    Backup(BackupArgs),
    /// List the backups at a destination.
    List(ListArgs),
    /// Restore a backup into a database (staged, verified, swapped in; rolled back on failure).
    Restore(RestoreArgs),
    /// Replicate an SQLite database continuously: ship every committed transaction to the
    /// destinations (snapshot, then segments of page images with each commit's time), in the
    /// foreground until SIGTERM/SIGINT. Restore with `restore --latest` or `--to-time`.
    Replicate(ReplicateArgs),
    /// Check a backup: checksum, then a restore into a scratch file, integrity and row counts.
    Verify(VerifyArgs),
    /// Copy committed backups from one destination to another (archive first, checksum
    /// verified while copying, manifest last).
    Copy(CopyArgs),
    /// Apply a retention policy to a destination: print the plan (kept backups with the rules
    /// that keep them, deleted ones), then delete. Runbook archives and foreign files are left
    /// alone.
    Prune(PruneArgs),
    /// Retention tools: see what a policy would keep before trusting it.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// How fresh the newest backup of each destination is, against the RPO target (for
    /// monitoring: exit code 6 when a destination misses it).
    Status(StatusArgs),
    /// Restore drill: restore a backup into a scratch target (a temporary SQLite file or
    /// PostgreSQL database), verify it, measure RTO and RPO against their targets, and store the
    /// report (JSON and text) next to the backups, under .kars-drills/.
    Drill(DrillArgs),
    /// Describe a database: size, tables, row counts.
    Inspect(InspectArgs),
    /// Run the whole job on a generated sample KARS database, with no servers: create it, back
    /// it up to ./backups, list, verify (with the `kars` checks) and restore into a scratch file.
    Demo(DemoArgs),
    /// Create a sample KARS database (the application's 20 tables with plausible data, fake
    /// secrets included) of about a size.
    #[command(name = "demo-db")]
    DemoDb(DemoDbArgs),
    /// The configuration file: check it and print it with secrets redacted.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// age keys for encrypted backups: create an identity (`key init`), print its recipient
    /// (`key show`).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print the config's job schedules for the system scheduler: crontab lines or systemd
    /// service and timer units.
    Schedule(ScheduleArgs),
    /// Run the config's jobs on their cron schedules (locks, catch-up, notifications, metrics)
    /// until SIGTERM/SIGINT.
    Daemon(DaemonArgs),
    /// PostgreSQL continuous archiving: the WAL archive (archive_command, restore_command,
    /// streaming) and its state.
    #[command(subcommand)]
    Pg(PgCommand),
}

/// Which database (the source of a backup, the target of a restore).
#[derive(Debug, Args)]
pub(crate) struct DbArg {
    /// The database: `sqlite:///path/to/assets.db`, a plain path to an SQLite file, a
    /// directory (volume mode: every SQLite database and file in it), or
    /// `postgres://user:password@host:port/db` (default: DATABASE_URL).
    #[arg(long, value_name = "DB", env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) db: String,
}

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// The database: `sqlite:///path/to/assets.db`, a plain path to an SQLite file, a
    /// directory (volume mode: every SQLite database and file in it), or
    /// `postgres://user:password@host:port/db` (default: DATABASE_URL).
    #[arg(
        long,
        value_name = "DB",
        env = "DATABASE_URL",
        hide_env_values = true,
        required_unless_present = "config"
    )]
    pub(crate) db: Option<String>,

    /// Destination: `file:///dir` or a directory, `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, `git+file:///srv/backups.git`; repeat for several destinations
    /// at once (the database is read once; each destination's outcome is reported).
    #[arg(long = "to", value_name = "DEST", required_unless_present = "config")]
    pub(crate) to: Vec<String>,

    /// Run the jobs of a configuration file instead (source, destinations and every option
    /// come from it; only --job and --json may be given with it).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// With --config: run only this job (repeatable; default: every job).
    #[arg(long, value_name = "NAME", requires = "config")]
    pub(crate) job: Vec<String>,

    #[command(flatten)]
    pub(crate) options: kars_backup::core::BackupOptions,

    /// Directory for the temporary snapshot file (default: the system temp directory).
    #[arg(long)]
    pub(crate) snapshot_dir: Option<PathBuf>,

    /// Integrity check of the snapshot recorded in the manifest.
    #[arg(long, value_enum, default_value_t = IntegrityLevel::Quick)]
    pub(crate) integrity: IntegrityLevel,

    #[command(flatten)]
    pub(crate) tiers: kars_backup::core::TierOptions,

    /// After the backup, prune every destination that took it (policy: --policy; else, with
    /// --tiering, the tier policy of each destination; else the runbook's table).
    #[arg(long)]
    pub(crate) prune: bool,

    /// Retention policy of --prune (see `kars-backup prune --help`).
    #[arg(long, requires = "prune")]
    pub(crate) policy: Option<kars_backup::core::KeepRules>,

    #[command(flatten)]
    pub(crate) encryption: EncryptOptions,

    #[command(flatten)]
    pub(crate) pg: DumpOptions,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Destination to list (`file:///dir` or a directory).
    #[arg(long, value_name = "DEST")]
    pub(crate) from: String,

    /// Also show incomplete uploads and foreign files.
    #[arg(long)]
    pub(crate) all: bool,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which backup of a destination.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct Which {
    /// The newest committed backup.
    #[arg(long)]
    pub(crate) latest: bool,

    /// A backup by name (`asset-data-20241218-020000.tar.gz`); also runbook archives.
    #[arg(long, value_name = "NAME")]
    pub(crate) backup: Option<String>,

    /// The database as it was at this instant: every transaction committed by then, none after.
    /// A replicated SQLite database (restore, verify, drill; RFC 3339, e.g.
    /// 2026-12-05T10:00:00.250Z); with --physical a PostgreSQL cluster from a base backup and
    /// its WAL (also `2026-12-05 14:03:07.250`, UTC unless an offset is given).
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub(crate) to_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub(crate) struct ReplicateArgs {
    /// The SQLite database (`sqlite:///path/app.db` or a path), in WAL mode (see --enable-wal).
    #[arg(long, value_name = "DB")]
    pub(crate) db: String,

    /// Destination (`file:///dir`, `s3://bucket/prefix`, …); repeat for several at once, each
    /// retried on its own.
    #[arg(long = "to", value_name = "DEST", required = true)]
    pub(crate) to: Vec<String>,

    #[command(flatten)]
    pub(crate) settings: ReplicationSettings,

    #[command(flatten)]
    pub(crate) encryption: EncryptOptions,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The database: `sqlite:///path/to/assets.db`, a plain path to an SQLite file, a
    /// directory (volume mode: every SQLite database and file in it), or
    /// `postgres://user:password@host:port/db` (default: DATABASE_URL). Not with --physical.
    #[arg(
        long,
        value_name = "DB",
        env = "DATABASE_URL",
        hide_env_values = true,
        required_unless_present = "physical"
    )]
    pub(crate) db: Option<String>,

    #[command(flatten)]
    pub(crate) physical: PhysicalFlags,

    #[command(flatten)]
    pub(crate) read: ReadArgs,

    /// Replace an existing database without asking.
    #[arg(long)]
    pub(crate) yes: bool,

    #[command(flatten)]
    pub(crate) hooks: HookOptions,

    #[command(flatten)]
    pub(crate) settings: RestoreSettings,

    #[command(flatten)]
    pub(crate) pg: PgRestoreOptions,

    /// When the backup fails verification (checksum of every copy, integrity, row counts, test
    /// queries), try the next older committed backup; each attempt is reported. The live
    /// database stays as it was after every failed attempt.
    #[arg(long)]
    pub(crate) fallback: bool,

    /// With --fallback: at most this many different backups are tried.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "fallback")]
    pub(crate) max_attempts: usize,
}

/// What restore, verify and drill read (destinations, the backup, its keys) and how they check
/// the restored copy.
#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// Destination holding the backup; repeat for several: --latest takes the newest committed
    /// backup across them, reads a local copy first when copies are identical, and another copy
    /// when one fails its checksum.
    #[arg(long = "from", value_name = "DEST", required_unless_present = "config")]
    pub(crate) from: Vec<String>,

    #[command(flatten)]
    pub(crate) job: JobArg,

    #[command(flatten)]
    pub(crate) which: Which,

    #[command(flatten)]
    pub(crate) decrypt: DecryptOptions,

    #[command(flatten)]
    pub(crate) checks: CheckOptions,

    /// Integrity check of the restored copy (restore: the staged copy, before the swap; verify
    /// and drill: the scratch copy) [default: the --config job's `[job.verify] integrity`, else
    /// standard].
    #[arg(long, value_enum)]
    pub(crate) integrity: Option<IntegrityLevel>,

    #[command(flatten)]
    pub(crate) retry: RetryArgs,

    /// With --to-time, --latest or --random-instant on a replication destination: the
    /// replicated database's name (its file name, `app.db`) when the destination holds several.
    #[arg(long, value_name = "NAME")]
    pub(crate) replica: Option<String>,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A job of a configuration file, for the commands that read backups (restore, verify, drill).
#[derive(Debug, Args)]
#[command(next_help_heading = "Configuration")]
pub(crate) struct JobArg {
    /// Use a job of this configuration file: its destinations (instead of --from), its
    /// `[job.verify]` plan (instead of the check flags), its identity and passphrase files,
    /// and for restore its `[job.hooks]` (hook commands given as flags win), for drills its scratch
    /// server and RTO/RPO targets.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// With --config: the job (default: the file's only job).
    #[arg(long, value_name = "NAME", requires = "config")]
    pub(crate) job: Option<String>,
}

/// Retries of transient failures.
#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    /// Transient failures (storage or network errors, a database connection refused or reset)
    /// retry the same backup this many times, with backoff (1 s, 2 s, 4 s, …), before it counts
    /// as failed. Verification failures are never retried.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) retries: u32,
}

impl RetryArgs {
    /// The library's attempt options with these retries.
    pub(crate) fn attempts(&self) -> kars_backup::core::recovery::AttemptOptions {
        kars_backup::core::recovery::AttemptOptions {
            retries: self.retries,
            ..Default::default()
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) read: ReadArgs,

    #[command(flatten)]
    pub(crate) pg: ScratchOptions,

    #[command(flatten)]
    pub(crate) physical: PhysicalFlags,
}

/// `drill`: everything `verify` takes (destinations, backup, checks, scratch server), plus the
/// targets. `--rpo` is the RPO target here, and also the audit-log check's window.
#[derive(Debug, Args)]
#[command(mut_arg("rpo", |a| a.requires(clap::builder::Resettable::<clap::Id>::Reset).help(
    "Recovery point objective: the drilled backup must be younger than this (e.g. 24h, 1d); \
also the window of --audit-log [default: 24h, or the --config job's `[job.verify] rpo`]"
)))]
pub(crate) struct DrillArgs {
    #[command(flatten)]
    pub(crate) verify: VerifyArgs,

    /// Recovery time objective: from the start of the drill to a verified copy, download
    /// included (e.g. 1h, 30m).
    /// [default: 1h, or the --config job's `[job.verify] rto`]
    #[arg(long, value_parser = parse_duration, help_heading = "Drill")]
    pub(crate) rto: Option<chrono::Duration>,

    /// Do not store the report at the destinations (e.g. a read-only destination).
    #[arg(long, help_heading = "Drill")]
    pub(crate) no_store: bool,

    /// Restore to an instant drawn at random instead of --to-time or --latest: in a replicated
    /// SQLite database's window (first snapshot to newest shipped commit); with --physical
    /// between the end of the oldest retained base backup and the end of the newest.
    #[arg(long, group = "Which", help_heading = "Drill")]
    pub(crate) random_instant: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// Destination holding the backup.
    #[arg(long, value_name = "DEST")]
    pub(crate) from: String,

    /// Destination receiving the copy.
    #[arg(long, value_name = "DEST")]
    pub(crate) to: String,

    #[command(flatten)]
    pub(crate) which: Which,

    /// Copy an unencrypted backup to an off-site destination anyway (by default refused: a
    /// copy cannot encrypt, and KARS backups hold credentials).
    #[arg(long)]
    pub(crate) no_encrypt: bool,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    pub(crate) db: DbArg,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where the sample database and the scratch restore go.
    #[arg(long, default_value = "kars-demo")]
    pub(crate) dir: PathBuf,

    /// Where the backups go.
    #[arg(long, default_value = "backups")]
    pub(crate) backups: PathBuf,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoDbArgs {
    /// The new database file (must not exist).
    #[arg(long)]
    pub(crate) path: PathBuf,

    /// Approximate size in MB.
    #[arg(long, default_value_t = 10)]
    pub(crate) size_mb: u64,
}

/// The retention policy flag shared by `prune` and `retention simulate`.
#[derive(Debug, Args)]
pub(crate) struct PolicyArg {
    /// Retention policy: comma-separated rules `last=N`, `hourly=N`, `daily=N`, `weekly=N`,
    /// `monthly=N`, `yearly=N|all`, `within=DURATION` (e.g. 7d); the union is kept. Calendar
    /// buckets are UTC, weeks are ISO weeks, the newest backup of a bucket is kept, and a bucket
    /// without backup uses no slot (restic's `forget`). Default: the runbook's table.
    #[arg(long, default_value = "daily=7,weekly=4,monthly=12,yearly=all")]
    pub(crate) policy: kars_backup::core::KeepRules,
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Destination to prune.
    #[arg(long, value_name = "DEST")]
    pub(crate) from: String,

    #[command(flatten)]
    pub(crate) policy: PolicyArg,

    /// Print the plan only; delete nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Leftovers of failed runs younger than this are left alone (a backup may still be
    /// running): e.g. 24h, 2d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub(crate) orphan_grace: chrono::Duration,

    /// Apply the policy to runbook archives (no manifest) too.
    #[arg(long)]
    pub(crate) include_runbook: bool,

    /// Plan as if it were this time (RFC 3339); default: now.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) now: Option<chrono::DateTime<chrono::FixedOffset>>,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Destination to check; repeat for several.
    #[arg(long = "from", value_name = "DEST", required_unless_present_any = ["config", "db"])]
    pub(crate) from: Vec<String>,

    /// Check every destination of a configuration file's jobs instead, each against its job's
    /// `[job.verify] rpo` (widened by the tier period where tiering sends only weekly, monthly
    /// or yearly backups).
    #[arg(long, value_name = "FILE", conflicts_with = "from")]
    pub(crate) config: Option<PathBuf>,

    /// With --config: only this job (repeatable).
    #[arg(long, value_name = "NAME", requires = "config")]
    pub(crate) job: Vec<String>,

    /// Recovery point objective: the newest backup must be younger than this, and a replicated
    /// database's lag below it (e.g. 24h, 1d, 10s).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub(crate) rpo: chrono::Duration,

    /// Also list the previous copies that restores kept of this database (repeatable; with
    /// --config, each job's source is listed too); a replica of it is lagging by how far its
    /// newest shipped commit is behind the database's latest change.
    #[arg(long = "db", value_name = "DB")]
    pub(crate) db: Vec<String>,

    /// With keys (`--identity`, `--passphrase-file`, or a --config job's `[job.encryption]`):
    /// check that they open the newest backup of each destination (its header is read and
    /// unwrapped); exit 5 when they do not.
    #[command(flatten)]
    pub(crate) decrypt: DecryptOptions,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RetentionCommand {
    /// Read backup times (RFC 3339, one a line) on stdin and print the plan as JSON:
    /// `{"keep": [{"time", "reasons"}], "delete": [...]}`.
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    #[command(flatten)]
    pub(crate) policy: PolicyArg,

    /// "Now" for the plan (RFC 3339); default: the current time.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) now: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// `kars-backup config …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Parse and check a configuration file (exit 2 with `file:line:col: message` for each
    /// problem), then print the effective configuration with secrets redacted.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConfigCheckArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,

    /// Every `${NAME}` must be set in the environment: a `${NAME:-default}` whose variable is
    /// unset is an error instead of taking its default (as `${NAME:?message}` always is).
    #[arg(long)]
    pub(crate) strict: bool,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which system scheduler `schedule --emit` writes for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EmitFormat {
    /// crontab lines.
    Cron,
    /// systemd service and timer units.
    Systemd,
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    /// What to print.
    #[arg(long, value_enum)]
    pub(crate) emit: EmitFormat,

    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,

    /// The kars-backup binary the entries call (default: this one).
    #[arg(long, value_name = "PATH")]
    pub(crate) binary: Option<PathBuf>,

    /// cron: the log file the output is appended to.
    #[arg(long, value_name = "FILE", default_value = "/var/log/kars-backup.log")]
    pub(crate) log_file: PathBuf,

    /// systemd: the EnvironmentFile with the variables the config references.
    #[arg(long, value_name = "FILE", default_value = "/etc/kars-backup/env")]
    pub(crate) env_file: PathBuf,

    /// systemd: write the unit files into this directory (e.g. /etc/systemd/system) instead
    /// of printing them.
    #[arg(long, value_name = "DIR")]
    pub(crate) output_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,

    /// Run only this job (repeatable; default: every job with a [job.schedule]).
    #[arg(long, value_name = "NAME")]
    pub(crate) job: Vec<String>,

    /// Run every job once at start, then follow the schedules.
    #[arg(long)]
    pub(crate) run_now: bool,

    /// Serve /metrics here instead of [daemon] metrics-listen (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
}

/// `kars-backup key …`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Create a new age identity file (mode 0600, its directory 0700 if created; an existing
    /// file is never overwritten) and print its recipient, the public key to back up with
    /// (`backup --encrypt-to age1…`, or name the file as `[job.encryption] identity-file`).
    /// Keep a copy of the file offline: without it the backups cannot be restored.
    Init(KeyInitArgs),
    /// Print the recipient (public key) of an age identity file.
    Show(KeyShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KeyInitArgs {
    /// The new identity file (default: $XDG_CONFIG_HOME/kars-backup/age-identity.txt, else
    /// ~/.config/kars-backup/age-identity.txt).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct KeyShowArgs {
    /// The identity file (default: as for `key init`).
    #[arg(long, value_name = "FILE")]
    pub(crate) identity: Option<PathBuf>,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `kars-backup pg …`: the WAL archive of PostgreSQL clusters (docs/operators/wal-archive.md).
#[derive(Debug, Subcommand)]
pub(crate) enum PgCommand {
    /// Store one WAL file (PostgreSQL's archive_command: `kars-backup pg archive-wal --to URL
    /// %p`), compressed and optionally encrypted; exits 0 once it is durably stored at every
    /// destination (also when the same file is stored already), non-zero when a different file
    /// of that name is.
    ArchiveWal(ArchiveWalArgs),
    /// Restore one WAL file (PostgreSQL's restore_command: `kars-backup pg fetch-wal --from URL
    /// %f %p`); exits 7, quietly, when the archive does not have it, and 126 on any other
    /// failure (so that PostgreSQL stops the recovery rather than ending it early).
    FetchWal(FetchWalArgs),
    /// Upload the files an `archive-wal --spool-dir` queued, in WAL order, removing each once
    /// every destination holds it (archive-wal starts it in the background; one runs per
    /// spool); ends when the queue stays empty for a moment.
    PushWal(PushWalArgs),
    /// Stream the WAL over a replication connection (pg_receivewal) and ship completed segments
    /// and the current .partial every few seconds, until SIGTERM/SIGINT: for servers where
    /// archive_command cannot be set.
    ReceiveWal(ReceiveWalArgs),
    /// The archived WAL per cluster and timeline: window (first..last segment), gaps, history
    /// files, and with --db the server's archiver (lag, failures, settings to change); exit 5
    /// when a segment is missing or the server does not archive.
    WalStatus(WalStatusArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ArchiveWalArgs {
    /// Destination (repeatable): a directory, `file:///dir`, `s3://bucket/prefix`, `gs://…`,
    /// `az://…`.
    #[arg(long = "to", value_name = "DEST", required_unless_present = "config")]
    pub(crate) to: Vec<String>,

    #[command(flatten)]
    pub(crate) places: WalPlaces,

    /// Print one JSON document instead of nothing.
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) encryption: EncryptOptions,

    #[command(flatten)]
    pub(crate) spool: SpoolFlags,

    /// The WAL file (`%p`): a segment, `.partial`, `.history` or `.backup` file.
    #[arg(value_name = "PATH")]
    pub(crate) path: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct PushWalArgs {
    /// The spool directory to drain.
    #[arg(long, value_name = "DIR")]
    pub(crate) spool_dir: PathBuf,

    /// Destination (repeatable).
    #[arg(long = "to", value_name = "DEST", required_unless_present = "config")]
    pub(crate) to: Vec<String>,

    #[command(flatten)]
    pub(crate) places: WalPlaces,

    #[command(flatten)]
    pub(crate) encryption: EncryptOptions,

    /// Print one JSON document instead of nothing.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct FetchWalArgs {
    /// Where to fetch from (repeatable: tried in order).
    #[arg(long = "from", value_name = "DEST", required_unless_present = "config")]
    pub(crate) from: Vec<String>,

    #[command(flatten)]
    pub(crate) places: WalPlaces,

    /// Print one JSON document instead of nothing.
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) decryption: DecryptOptions,

    /// Fetch this many following segments at the same time into a spool directory beside
    /// PATH (pg_wal/.kars-wal-spool), for stores with high latency.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) read_ahead: usize,

    /// The WAL file PostgreSQL asks for (`%f`).
    #[arg(value_name = "NAME")]
    pub(crate) name: String,

    /// Where PostgreSQL wants it (`%p`).
    #[arg(value_name = "PATH")]
    pub(crate) path: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ReceiveWalArgs {
    /// The server, as a user with the REPLICATION attribute: `postgres://user@host:port/db`
    /// (default: DATABASE_URL; the password goes to pg_receivewal through PGPASSWORD).
    #[arg(long, value_name = "DB", env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) db: String,

    /// Destination (repeatable).
    #[arg(long = "to", value_name = "DEST", required = true)]
    pub(crate) to: Vec<String>,

    #[command(flatten)]
    pub(crate) encryption: EncryptOptions,

    #[command(flatten)]
    pub(crate) settings: ReceiveSettings,
}

#[derive(Debug, Args)]
pub(crate) struct WalStatusArgs {
    /// Destination to inspect.
    #[arg(long, value_name = "DEST")]
    pub(crate) from: String,

    /// Also ask this server how its archiving goes (settings, the last file archived and the
    /// archive's lag behind the current one, failures); exit 5 when it does not archive.
    #[arg(long, value_name = "DB")]
    pub(crate) db: Option<String>,

    /// Also show what this `archive-wal --spool-dir` queue holds and whether it is drained.
    #[arg(long, value_name = "DIR")]
    pub(crate) spool_dir: Option<PathBuf>,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}
