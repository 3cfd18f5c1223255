//! Checks across fields, each error placed at the value it is about.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, Location};
use crate::model::{Config, JobConfig, NotifyConfig, TokenUrl, split_audit};

/// A step of a path into the document: a key or an array index.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg {
    Key(&'static str),
    Index(usize),
}

/// Finds where values are in the file.
pub(crate) struct Spans<'a> {
    pub(crate) root: &'a Spanned<DeTable<'a>>,
    pub(crate) source: &'a str,
}

impl Spans<'_> {
    /// The span of the deepest value along `path` that exists.
    fn span(&self, path: &[Seg]) -> Range<usize> {
        let mut span = self.root.span();
        let mut table: Option<&DeTable<'_>> = Some(self.root.get_ref());
        let mut value: Option<&DeValue<'_>> = None;
        for seg in path {
            let next: Option<&Spanned<DeValue<'_>>> = match (seg, table, value) {
                (Seg::Key(k), Some(t), _) => t.get(*k),
                (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = next.span();
            value = Some(next.get_ref());
            table = match next.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        span
    }

    fn at(&self, path: &[Seg]) -> Location {
        Location::of(self.source, self.span(path).start)
    }

    fn error(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.at(path), message)
    }
}

/// Every semantic problem of a deserialized config.
pub(crate) fn validate(config: &Config, spans: &Spans<'_>) -> Vec<ConfigError> {
    use Seg::{Index, Key};
    let mut errors = Vec::new();
    if config.jobs.is_empty() {
        errors.push(ConfigError::whole(
            "no jobs: add a [[job]] table with a name, a source and a [[job.destination]]",
        ));
    }
    for (i, job) in config.jobs.iter().enumerate() {
        let at = |rest: &[Seg]| {
            let mut p = vec![Key("job"), Index(i)];
            p.extend_from_slice(rest);
            p
        };
        validate_job(
            job,
            &|rest, msg| errors_push(spans, &at(rest), msg),
            &mut errors,
        );
        if let Some(first) = config.jobs[..i].iter().position(|j| j.name == job.name) {
            let first_line = spans.at(&[Key("job"), Index(first), Key("name")]).line;
            errors.push(spans.error(
                &at(&[Key("name")]),
                format!(
                    "duplicate job name {:?} (also on line {first_line}); job names must be unique",
                    job.name
                ),
            ));
        }
    }
    if let Some(n) = &config.notify {
        validate_notify(n, spans, &[Key("notify")], &mut errors);
    }
    for (i, job) in config.jobs.iter().enumerate() {
        if let Some(n) = &job.notify {
            validate_notify(
                n,
                spans,
                &[Key("job"), Index(i), Key("notify")],
                &mut errors,
            );
        }
    }
    errors.sort_by_key(|e| e.location);
    errors
}

fn errors_push(spans: &Spans<'_>, path: &[Seg], message: String) -> ConfigError {
    spans.error(path, message)
}

type At<'f> = dyn Fn(&[Seg], String) -> ConfigError + 'f;

fn validate_job(job: &JobConfig, at: &At<'_>, errors: &mut Vec<ConfigError>) {
    use Seg::{Index, Key};
    if job.name.is_empty()
        || !job
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errors.push(at(
            &[Key("name")],
            format!(
                "job name {:?}: use letters, digits, '-', '_' and '.' (it names systemd units and metrics)",
                job.name
            ),
        ));
    }
    // Source.
    let source = job.source.expose();
    if source.trim().is_empty() {
        errors.push(at(
            &[Key("source")],
            "empty source: give sqlite:///path/to/assets.db, a path, or a postgres:// URL (e.g. \"${DATABASE_URL}\")".into(),
        ));
    } else if job.is_postgres() {
        if let Err(e) = kars_backup_postgres::PostgresSource::from_url(source) {
            errors.push(at(
                &[Key("source")],
                format!(
                    "source {}: {}",
                    job.source.redacted(),
                    kars_backup_postgres::redact_url(&e.to_string())
                ),
            ));
        }
    } else {
        let path = source
            .strip_prefix("sqlite://")
            .or_else(|| source.strip_prefix("sqlite:"))
            .unwrap_or(source);
        if let Some((scheme, _)) = path.split_once("://") {
            errors.push(at(
                &[Key("source")],
                format!(
                    "unsupported source scheme {scheme:?} in {}: use sqlite:///path, a path, or postgres://user:password@host:port/db",
                    job.source.redacted()
                ),
            ));
        } else if path.is_empty() {
            errors.push(at(
                &[Key("source")],
                "the source names no database file".into(),
            ));
        }
        if job.postgres.is_some() {
            errors.push(at(
                &[Key("postgres")],
                "[job.postgres] options on an SQLite job: remove them, or make the source a postgres:// URL".into(),
            ));
        }
    }
    // Destinations.
    if job.destinations.is_empty() {
        errors.push(at(
            &[Key("name")],
            format!(
                "job {:?} has no destination: add a [[job.destination]] with url = \"/var/backups/kars\" (or s3://…)",
                job.name
            ),
        ));
    }
    for (d, dest) in job.destinations.iter().enumerate() {
        let path = [Key("destination"), Index(d), Key("url")];
        if let Err(e) = kars_backup_storage::Destination::parse(dest.url.expose()) {
            let text = match e {
                kars_backup_core::Error::InvalidInput(m) => m,
                other => other.to_string(),
            };
            errors.push(at(&path, format!("destination: {text}")));
        }
        if let Some(t) = &dest.transfer {
            let path = [Key("destination"), Index(d), Key("transfer")];
            if let Err(e) = t.validate().and_then(|()| dest.sink_url().map(|_| ())) {
                let text = match e {
                    kars_backup_core::Error::InvalidInput(m) => m,
                    other => other.to_string(),
                };
                errors.push(at(&path, format!("transfer: {text}")));
            }
        }
        if job.destinations[..d].iter().any(|o| o.url == dest.url) {
            errors.push(at(
                &path,
                format!("destination {} is listed twice", dest.url.redacted()),
            ));
        }
    }
    if let Some(level) = job.compression_level
        && let Err(e) = with_level(job.compression, level)
    {
        errors.push(at(&[Key("compression-level")], e));
    }
    if job.threads == Some(0) {
        errors.push(at(&[Key("threads")], "threads must be at least 1".into()));
    }
    // Encryption.
    if let Some(enc) = job.encryption_keys() {
        let path = [Key("encryption")];
        for (r, recipient) in enc.age_recipients.iter().enumerate() {
            let ok = (recipient.starts_with("age1") && recipient.len() > 20)
                || recipient.starts_with("ssh-ed25519 ")
                || recipient.starts_with("ssh-rsa ");
            if !ok {
                errors.push(at(
                    &[Key("encryption"), Key("age-recipients"), Index(r)],
                    format!(
                        "{recipient:?} is not an age recipient: use the public key `age-keygen -y` prints (age1…) or an ssh-ed25519/ssh-rsa public key"
                    ),
                ));
            }
        }
        for (r, recipient) in enc.gpg_recipients.iter().enumerate() {
            if recipient.trim().is_empty() {
                errors.push(at(
                    &[Key("encryption"), Key("gpg-recipients"), Index(r)],
                    "empty gpg recipient: give a key id, fingerprint or e-mail of the keyring"
                        .into(),
                ));
            }
        }
        let age = !enc.age_recipients.is_empty() || enc.identity_file.is_some();
        let recipients = age || !enc.gpg_recipients.is_empty();
        if age && !enc.gpg_recipients.is_empty() {
            errors.push(at(
                &path,
                "give either age keys (identity-file, age-recipients) or gpg-recipients: an archive is encrypted with one scheme".into(),
            ));
        }
        if let Some(file) = &enc.identity_file {
            if file.as_os_str().is_empty() {
                errors.push(at(
                    &[Key("encryption"), Key("identity-file")],
                    "empty identity-file: name the job's age identity file (create one with `kars-backup key init --out FILE`)".into(),
                ));
            } else if file.is_dir() {
                errors.push(at(
                    &[Key("encryption"), Key("identity-file")],
                    format!("identity-file {} is a directory", file.display()),
                ));
            }
        }
        if let Some(file) = &enc.passphrase_file {
            if recipients {
                errors.push(at(
                    &[Key("encryption"), Key("passphrase-file")],
                    "give either recipients (identity-file, age-recipients, gpg-recipients) or a passphrase-file, not both".into(),
                ));
            }
            match std::fs::metadata(file) {
                Ok(m) if m.is_file() => {}
                Ok(_) => errors.push(at(
                    &[Key("encryption"), Key("passphrase-file")],
                    format!("passphrase-file {} is not a file", file.display()),
                )),
                Err(e) => errors.push(at(
                    &[Key("encryption"), Key("passphrase-file")],
                    format!("passphrase-file {}: {e}", file.display()),
                )),
            }
        }
    }
    // Encrypted off-site copies unless told otherwise.
    let off_site = job.plaintext_off_site();
    if !off_site.is_empty() {
        let first = job
            .destinations
            .iter()
            .position(|d| off_site.contains(&d.url.redacted()))
            .unwrap_or(0);
        errors.push(at(
            &[Key("destination"), Index(first), Key("url")],
            format!(
                "job {:?} would store unencrypted backups off-site at {}: a KARS backup holds password hashes, MFA secrets and API tokens. Encrypt them: add [job.encryption] with identity-file = \"/etc/kars-backup/age-identity.txt\" (create it with `kars-backup key init --out /etc/kars-backup/age-identity.txt`, keep a copy offline); or write encryption = \"none\" in the job to store them unencrypted on purpose",
                job.name,
                off_site.join(", ")
            ),
        ));
    }
    // Verification plan.
    if let Some(v) = &job.verify {
        if let Some(spec) = &v.audit_log {
            if split_audit(spec).is_none() {
                errors.push(at(
                    &[Key("verify"), Key("audit-log")],
                    format!("audit-log {spec:?}: use TABLE.COLUMN, e.g. audit_logs.timestamp"),
                ));
            }
        }
        for (q, query) in v.queries.iter().enumerate() {
            if query.sql.trim().is_empty() {
                errors.push(at(
                    &[Key("verify"), Key("query"), Index(q), Key("sql")],
                    "empty test query".into(),
                ));
            }
            if query.value.is_some() && query.rows.is_some() {
                errors.push(at(
                    &[Key("verify"), Key("query"), Index(q)],
                    "a test query expects either value or rows, not both (neither: it must return true)".into(),
                ));
            }
        }
        if v.scratch_db.is_some() && !job.is_postgres() {
            errors.push(at(
                &[Key("verify"), Key("scratch-db")],
                "scratch-db is for PostgreSQL jobs (SQLite verifies into a temporary file)".into(),
            ));
        }
    }
    // Continuous replication.
    if let Some(r) = &job.replicate {
        if job.is_postgres() {
            errors.push(at(
                &[Key("replicate")],
                "[job.replicate] replicates an SQLite database, and this job's source is PostgreSQL: remove the table; a PostgreSQL cluster's continuous protection is its WAL archive (`kars-backup pg archive-wal` as archive_command, or `pg receive-wal`; see docs/operators/wal-archive.md)".into(),
            ));
        } else if r.enabled
            && !job.destinations.is_empty()
            && job.replica_destinations().next().is_none()
        {
            errors.push(at(
                &[Key("replicate")],
                "[job.replicate] has no destination: every [[job.destination]] says replicate = false; let one take the replica, or set enabled = false".into(),
            ));
        }
    }
    for (d, dest) in job.destinations.iter().enumerate() {
        if !dest.replicate && job.replicate.is_none() {
            errors.push(at(
                &[Key("destination"), Index(d), Key("replicate")],
                "replicate = false leaves the destination out of the job's replication, but the job has no [job.replicate] table: remove it, or add the table".into(),
            ));
        }
    }
    // PostgreSQL.
    if let Some(pg) = &job.postgres {
        let jobs = pg.jobs.unwrap_or(1);
        if jobs == 0 {
            errors.push(at(
                &[Key("postgres"), Key("jobs")],
                "jobs must be at least 1".into(),
            ));
        }
        if jobs > 1
            && pg
                .format
                .is_some_and(|f| f != kars_backup_postgres::DumpFormat::Directory)
        {
            errors.push(at(
                &[Key("postgres"), Key("jobs")],
                format!("jobs = {jobs} needs format = \"directory\" (pg_dump dumps in parallel only in that format)"),
            ));
        }
        if pg.schema_only && pg.data_only {
            errors.push(at(
                &[Key("postgres"), Key("data-only")],
                "schema-only and data-only exclude each other".into(),
            ));
        }
        let dump_options = pg.format.is_some()
            || pg.jobs.is_some()
            || !pg.tables.is_empty()
            || !pg.exclude_tables.is_empty()
            || pg.schema_only
            || pg.data_only;
        if pg.physical && dump_options {
            errors.push(at(
                &[Key("postgres"), Key("physical")],
                "physical = true takes a base backup of the whole cluster: format, jobs, tables, exclude-tables, schema-only and data-only do not apply".into(),
            ));
        }
    }
}

/// What must be done before the jobs can run, though the file is right: identity files that do
/// not exist yet.
pub(crate) fn notes(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    for job in &config.jobs {
        if let Some(file) = job.encryption_keys().and_then(|e| e.identity_file.as_ref())
            && !file.as_os_str().is_empty()
            && std::fs::symlink_metadata(file).is_err()
        {
            notes.push(format!(
                "job {}: the identity file {} does not exist yet; create it with `kars-backup key init --out {}` before the first backup, and keep a copy offline",
                job.name,
                file.display(),
                file.display()
            ));
        }
    }
    notes
}

fn validate_notify(
    n: &NotifyConfig,
    spans: &Spans<'_>,
    base: &[Seg],
    errors: &mut Vec<ConfigError>,
) {
    use Seg::Key;
    let mut check = |url: &Option<TokenUrl>, rest: &[Seg], what: &str| {
        if let Some(u) = url {
            let ok = url::Url::parse(u.expose())
                .ok()
                .is_some_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
            if !ok {
                let mut path = base.to_vec();
                path.extend_from_slice(rest);
                errors.push(spans.error(
                    &path,
                    format!("{what} {} is not an http(s) URL", u.redacted()),
                ));
            }
        }
    };
    check(&n.webhook, &[Key("webhook")], "webhook");
    if let Some(p) = &n.ping {
        check(&p.start, &[Key("ping"), Key("start")], "ping URL");
        check(&p.success, &[Key("ping"), Key("success")], "ping URL");
        check(&p.fail, &[Key("ping"), Key("fail")], "ping URL");
    }
}

/// A codec with another level (`compression-level`).
pub(crate) fn with_level(
    compression: kars_backup_core::Compression,
    level: u32,
) -> Result<kars_backup_core::Compression, String> {
    if compression == kars_backup_core::Compression::None {
        return Err("compression-level needs a codec: compression = \"gzip\" or \"zstd\"".into());
    }
    format!("{}:{level}", compression.name())
        .parse()
        .map_err(|e: String| format!("compression-level: {e}"))
}
