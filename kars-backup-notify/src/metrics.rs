//! Prometheus metrics per job and destination, in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use kars_backup_schedule::{RunReport, RunStatus};

use crate::error::{Error, Result};

/// The destination label used when a run reports no destinations and none are registered
/// for its job (e.g. the source failed before any upload began).
pub const ALL_DESTINATIONS: &str = "all";

/// The metric families, in output order: (name, type, help).
const FAMILIES: [(&str, &str, &str); 7] = [
    (
        "kars_backup_last_success_timestamp_seconds",
        "gauge",
        "Unix time the last successful run of the job to the destination finished.",
    ),
    (
        "kars_backup_last_run_timestamp_seconds",
        "gauge",
        "Unix time the last run of the job to the destination finished, whatever its outcome.",
    ),
    (
        "kars_backup_last_run_success",
        "gauge",
        "1 if the last run of the job to the destination succeeded, 0 if it failed.",
    ),
    (
        "kars_backup_last_duration_seconds",
        "gauge",
        "Wall time of the last run of the job, in seconds.",
    ),
    (
        "kars_backup_last_size_bytes",
        "gauge",
        "Size of the last backup archive stored at the destination, in bytes.",
    ),
    (
        "kars_backup_runs_total",
        "counter",
        "Runs of the job for the destination.",
    ),
    (
        "kars_backup_failures_total",
        "counter",
        "Failed runs of the job for the destination.",
    ),
];

/// The values of one (job, destination) series set. Unknown values are `None` and not exported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesValues {
    /// `kars_backup_last_success_timestamp_seconds`.
    pub last_success_timestamp_seconds: Option<f64>,
    /// `kars_backup_last_run_timestamp_seconds`.
    pub last_run_timestamp_seconds: Option<f64>,
    /// `kars_backup_last_run_success` (1/0).
    pub last_run_success: Option<bool>,
    /// `kars_backup_last_duration_seconds`.
    pub last_duration_seconds: Option<f64>,
    /// `kars_backup_last_size_bytes`.
    pub last_size_bytes: Option<u64>,
    /// `kars_backup_runs_total`.
    pub runs_total: u64,
    /// `kars_backup_failures_total`.
    pub failures_total: u64,
}

impl SeriesValues {
    fn value(&self, family: &str) -> Option<f64> {
        match family {
            "kars_backup_last_success_timestamp_seconds" => self.last_success_timestamp_seconds,
            "kars_backup_last_run_timestamp_seconds" => self.last_run_timestamp_seconds,
            "kars_backup_last_run_success" => self.last_run_success.map(|s| f64::from(u8::from(s))),
            "kars_backup_last_duration_seconds" => self.last_duration_seconds,
            "kars_backup_last_size_bytes" => self.last_size_bytes.map(|b| b as f64),
            "kars_backup_runs_total" => Some(self.runs_total as f64),
            "kars_backup_failures_total" => Some(self.failures_total as f64),
            _ => None,
        }
    }

    fn set(&mut self, family: &str, value: f64) -> bool {
        let count = || {
            if value.is_finite() && value >= 0.0 {
                value as u64
            } else {
                0
            }
        };
        match family {
            "kars_backup_last_success_timestamp_seconds" => {
                self.last_success_timestamp_seconds = Some(value)
            }
            "kars_backup_last_run_timestamp_seconds" => {
                self.last_run_timestamp_seconds = Some(value)
            }
            "kars_backup_last_run_success" => self.last_run_success = Some(value != 0.0),
            "kars_backup_last_duration_seconds" => self.last_duration_seconds = Some(value),
            "kars_backup_last_size_bytes" => self.last_size_bytes = Some(count()),
            "kars_backup_runs_total" => self.runs_total = count(),
            "kars_backup_failures_total" => self.failures_total = count(),
            _ => return false,
        }
        true
    }
}

/// Backup metrics by job and destination, shared by clones (one registry per process).
///
/// | metric | type |
/// |---|---|
/// | `kars_backup_last_success_timestamp_seconds{job,destination}` | gauge |
/// | `kars_backup_last_run_timestamp_seconds{job,destination}` | gauge |
/// | `kars_backup_last_run_success{job,destination}` | gauge (1/0) |
/// | `kars_backup_last_duration_seconds{job,destination}` | gauge |
/// | `kars_backup_last_size_bytes{job,destination}` | gauge |
/// | `kars_backup_runs_total{job,destination}` | counter |
/// | `kars_backup_failures_total{job,destination}` | counter |
///
/// Rendered in the Prometheus text exposition format 0.0.4 ([`render`](Self::render)), served
/// by [`MetricsServer`](crate::MetricsServer) or written for node_exporter's textfile collector
/// ([`write_textfile`](Self::write_textfile)).
///
/// ```
/// use kars_backup_notify::Metrics;
/// let metrics = Metrics::new();
/// metrics.register("asset-data", ["local", "s3"]);
/// assert!(metrics.render().contains(r#"kars_backup_runs_total{job="asset-data",destination="s3"} 0"#));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Registry>>,
}

/// Everything a [`Metrics`] holds.
#[derive(Debug, Default)]
struct Registry {
    /// Runs, by (job, destination).
    runs: BTreeMap<(String, String), SeriesValues>,
    /// Replicas, by (job, database, destination).
    replicas: BTreeMap<(String, String, String), ReplicaValues>,
    /// Replicators, by (job, database).
    replicators: BTreeMap<(String, String), ReplicatorValues>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `job`'s series for each destination exist (counters at 0) before any run, so
    /// alerts on `absent()` and rates work from the start. A run that reports no destinations
    /// counts for all of its job's registered destinations.
    pub fn register<I, S>(&self, job: &str, destinations: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut reg = self.lock();
        for d in destinations {
            reg.runs.entry((job.to_string(), d.into())).or_default();
        }
    }

    /// Records a finished run: for each destination it reports (or, if it reports none, each
    /// registered destination of the job, else [`ALL_DESTINATIONS`]), the run and its outcome.
    pub fn record(&self, report: &RunReport) {
        let finished = report.finished_at.timestamp_millis() as f64 / 1000.0;
        let duration = report.duration().as_secs_f64();
        let mut reg = self.lock();
        let map = &mut reg.runs;
        let mut targets: Vec<(String, RunStatus, Option<u64>)> = report
            .outcome
            .destinations
            .iter()
            .map(|d| (d.name.clone(), d.status, d.bytes.or(report.outcome.bytes)))
            .collect();
        if targets.is_empty() {
            targets = map
                .keys()
                .filter(|(j, _)| *j == report.job)
                .map(|(_, d)| (d.clone(), report.status(), report.outcome.bytes))
                .collect();
        }
        if targets.is_empty() {
            targets.push((
                ALL_DESTINATIONS.to_string(),
                report.status(),
                report.outcome.bytes,
            ));
        }
        for (destination, status, bytes) in targets {
            let s = map.entry((report.job.clone(), destination)).or_default();
            s.runs_total += 1;
            s.last_run_timestamp_seconds = Some(finished);
            s.last_duration_seconds = Some(duration);
            if status == RunStatus::Success {
                s.last_run_success = Some(true);
                s.last_success_timestamp_seconds = Some(finished);
                if bytes.is_some() {
                    s.last_size_bytes = bytes;
                }
            } else {
                s.last_run_success = Some(false);
                s.failures_total += 1;
            }
        }
    }

    /// The values of one series set.
    pub fn get(&self, job: &str, destination: &str) -> Option<SeriesValues> {
        self.lock()
            .runs
            .get(&(job.to_string(), destination.to_string()))
            .cloned()
    }

    /// The (job, destination) pairs known.
    pub fn series(&self) -> Vec<(String, String)> {
        self.lock().runs.keys().cloned().collect()
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let reg = self.lock();
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for ((job, destination), values) in reg.runs.iter() {
                if let Some(v) = values.value(name) {
                    let _ = writeln!(
                        out,
                        "{name}{{job=\"{}\",destination=\"{}\"}} {}",
                        escape_label(job),
                        escape_label(destination),
                        format_value(v)
                    );
                }
            }
        }
        reg.render_replication(&mut out);
        out
    }

    /// Writes [`render`](Self::render) to `path` atomically (a temporary file in the same
    /// directory, synced, renamed over `path`), as node_exporter's textfile collector needs.
    /// Give the file a `.prom` name in the collector's directory, one file per job: two
    /// processes that load, record and write one file at the same time lose one's update.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write_textfile(&self, path: &Path) -> Result<()> {
        let text = self.render();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "metrics.prom".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("write metrics file", &tmp, e)
        })?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("replace metrics file", path, e)
        })
    }

    /// Loads the values of a file written by [`write_textfile`](Self::write_textfile) into this
    /// registry, so one-shot runs keep counting across processes (load, record, write).
    /// Returns `false` when the file does not exist. Unknown metrics in the file are ignored.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::InvalidMetricsText`].
    pub fn load_textfile(&self, path: &Path) -> Result<bool> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("read metrics file", path, e)),
        };
        let samples = parse_text(&text)?;
        let mut reg = self.lock();
        for sample in samples {
            if reg.load_replication(&sample) {
                continue;
            }
            let map = &mut reg.runs;
            let (Some(job), Some(destination)) =
                (sample.labels.get("job"), sample.labels.get("destination"))
            else {
                continue;
            };
            let mut values = map
                .get(&(job.clone(), destination.clone()))
                .cloned()
                .unwrap_or_default();
            if values.set(&sample.name, sample.value) {
                map.insert((job.clone(), destination.clone()), values);
            }
        }
        Ok(true)
    }
}

/// The replication metric families, in output order: (name, type, help, per destination).
const REPLICATION_FAMILIES: [(&str, &str, &str, bool); 7] = [
    (
        "kars_backup_replication_lag_seconds",
        "gauge",
        "How long the oldest commit of the database not yet stored at the destination has waited, in seconds (0: caught up).",
        true,
    ),
    (
        "kars_backup_replication_last_shipped_commit_timestamp_seconds",
        "gauge",
        "Unix time the newest commit stored at the destination was observed.",
        true,
    ),
    (
        "kars_backup_replication_transactions_shipped_total",
        "counter",
        "Transactions of the database stored at the destination.",
        true,
    ),
    (
        "kars_backup_replication_up",
        "gauge",
        "1 while the replicator of the database runs, 0 while it is down (failed, waiting to restart).",
        false,
    ),
    (
        "kars_backup_replication_wal_resets_total",
        "counter",
        "WAL resets behind the replicator's back (each forced a new snapshot).",
        false,
    ),
    (
        "kars_backup_replication_generations_started_total",
        "counter",
        "Generations (new snapshots starting a new chain) the replicator started.",
        false,
    ),
    (
        "kars_backup_replication_failures_total",
        "counter",
        "Times the replicator stopped with an error (and was restarted).",
        false,
    ),
];

/// The replication series of one (job, database, destination).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaValues {
    /// `kars_backup_replication_lag_seconds`.
    pub lag_seconds: Option<f64>,
    /// `kars_backup_replication_last_shipped_commit_timestamp_seconds`.
    pub last_shipped_commit_timestamp_seconds: Option<f64>,
    /// `kars_backup_replication_transactions_shipped_total`.
    pub transactions_shipped_total: u64,
}

/// The replicator series of one (job, database).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicatorValues {
    /// `kars_backup_replication_up` (1/0).
    pub up: Option<bool>,
    /// `kars_backup_replication_wal_resets_total`.
    pub wal_resets_total: u64,
    /// `kars_backup_replication_generations_started_total`.
    pub generations_started_total: u64,
    /// `kars_backup_replication_failures_total`.
    pub failures_total: u64,
}

fn count(value: f64) -> u64 {
    if value.is_finite() && value >= 0.0 {
        value as u64
    } else {
        0
    }
}

impl Registry {
    fn replication_value(&self, family: &str, key: &[String]) -> Option<f64> {
        if let [job, db, dest] = key {
            let v = self
                .replicas
                .get(&(job.clone(), db.clone(), dest.clone()))?;
            return match family {
                "kars_backup_replication_lag_seconds" => v.lag_seconds,
                "kars_backup_replication_last_shipped_commit_timestamp_seconds" => {
                    v.last_shipped_commit_timestamp_seconds
                }
                "kars_backup_replication_transactions_shipped_total" => {
                    Some(v.transactions_shipped_total as f64)
                }
                _ => None,
            };
        }
        let [job, db] = key else { return None };
        let v = self.replicators.get(&(job.clone(), db.clone()))?;
        match family {
            "kars_backup_replication_up" => v.up.map(|u| f64::from(u8::from(u))),
            "kars_backup_replication_wal_resets_total" => Some(v.wal_resets_total as f64),
            "kars_backup_replication_generations_started_total" => {
                Some(v.generations_started_total as f64)
            }
            "kars_backup_replication_failures_total" => Some(v.failures_total as f64),
            _ => None,
        }
    }

    /// Appends the replication families (only when there is a replication).
    fn render_replication(&self, out: &mut String) {
        if self.replicas.is_empty() && self.replicators.is_empty() {
            return;
        }
        for (name, kind, help, per_destination) in REPLICATION_FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let keys: Vec<Vec<String>> = if per_destination {
                self.replicas
                    .keys()
                    .map(|(j, d, t)| vec![j.clone(), d.clone(), t.clone()])
                    .collect()
            } else {
                self.replicators
                    .keys()
                    .map(|(j, d)| vec![j.clone(), d.clone()])
                    .collect()
            };
            for key in keys {
                let Some(v) = self.replication_value(name, &key) else {
                    continue;
                };
                let mut labels = format!(
                    "job=\"{}\",database=\"{}\"",
                    escape_label(&key[0]),
                    escape_label(&key[1])
                );
                if let Some(dest) = key.get(2) {
                    let _ = write!(labels, ",destination=\"{}\"", escape_label(dest));
                }
                let _ = writeln!(out, "{name}{{{labels}}} {}", format_value(v));
            }
        }
    }

    /// Takes a replication sample into the registry; `false` when it is not one.
    fn load_replication(&mut self, sample: &Sample) -> bool {
        if !sample.name.starts_with("kars_backup_replication_") {
            return false;
        }
        let (Some(job), Some(db)) = (sample.labels.get("job"), sample.labels.get("database"))
        else {
            return true;
        };
        let value = sample.value;
        if let Some(dest) = sample.labels.get("destination") {
            let v = self
                .replicas
                .entry((job.clone(), db.clone(), dest.clone()))
                .or_default();
            match sample.name.as_str() {
                "kars_backup_replication_lag_seconds" => v.lag_seconds = Some(value),
                "kars_backup_replication_last_shipped_commit_timestamp_seconds" => {
                    v.last_shipped_commit_timestamp_seconds = Some(value)
                }
                "kars_backup_replication_transactions_shipped_total" => {
                    v.transactions_shipped_total = count(value)
                }
                _ => {}
            }
        } else {
            let v = self
                .replicators
                .entry((job.clone(), db.clone()))
                .or_default();
            match sample.name.as_str() {
                "kars_backup_replication_up" => v.up = Some(value != 0.0),
                "kars_backup_replication_wal_resets_total" => v.wal_resets_total = count(value),
                "kars_backup_replication_generations_started_total" => {
                    v.generations_started_total = count(value)
                }
                "kars_backup_replication_failures_total" => v.failures_total = count(value),
                _ => {}
            }
        }
        true
    }
}

impl Metrics {
    /// Changes the replication series of (`job`, `database`, `destination`), making it exist.
    ///
    /// | metric | type |
    /// |---|---|
    /// | `kars_backup_replication_lag_seconds{job,database,destination}` | gauge |
    /// | `kars_backup_replication_last_shipped_commit_timestamp_seconds{job,database,destination}` | gauge |
    /// | `kars_backup_replication_transactions_shipped_total{job,database,destination}` | counter |
    ///
    /// ```
    /// use kars_backup_notify::Metrics;
    /// let metrics = Metrics::new();
    /// metrics.update_replica("kars", "assets.db", "file:///r", |v| v.lag_seconds = Some(1.5));
    /// assert!(metrics.render().contains(
    ///     r#"kars_backup_replication_lag_seconds{job="kars",database="assets.db",destination="file:///r"} 1.5"#
    /// ));
    /// ```
    pub fn update_replica(
        &self,
        job: &str,
        database: &str,
        destination: &str,
        f: impl FnOnce(&mut ReplicaValues),
    ) {
        let mut reg = self.lock();
        f(reg
            .replicas
            .entry((
                job.to_string(),
                database.to_string(),
                destination.to_string(),
            ))
            .or_default());
    }

    /// Changes the replicator series of (`job`, `database`), making it exist:
    /// `kars_backup_replication_up`, `…_wal_resets_total`, `…_generations_started_total`,
    /// `…_failures_total`.
    pub fn update_replicator(
        &self,
        job: &str,
        database: &str,
        f: impl FnOnce(&mut ReplicatorValues),
    ) {
        let mut reg = self.lock();
        f(reg
            .replicators
            .entry((job.to_string(), database.to_string()))
            .or_default());
    }

    /// The replication series of (`job`, `database`, `destination`).
    pub fn replica(&self, job: &str, database: &str, destination: &str) -> Option<ReplicaValues> {
        self.lock()
            .replicas
            .get(&(
                job.to_string(),
                database.to_string(),
                destination.to_string(),
            ))
            .cloned()
    }

    /// The replicator series of (`job`, `database`).
    pub fn replicator(&self, job: &str, database: &str) -> Option<ReplicatorValues> {
        self.lock()
            .replicators
            .get(&(job.to_string(), database.to_string()))
            .cloned()
    }

    /// Copies `job`'s replication series from `from` into this registry (what a process that
    /// rewrites a job's textfile takes from its live registry).
    pub fn copy_replication(&self, from: &Metrics, job: &str) {
        if Arc::ptr_eq(&self.inner, &from.inner) {
            return;
        }
        let (replicas, replicators) = {
            let src = from.lock();
            (
                src.replicas
                    .iter()
                    .filter(|((j, _, _), _)| j == job)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>(),
                src.replicators
                    .iter()
                    .filter(|((j, _), _)| j == job)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>(),
            )
        };
        let mut reg = self.lock();
        reg.replicas.extend(replicas);
        reg.replicators.extend(replicators);
    }
}

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        // Rust's shortest round-trip form ("1732500000.123", "0", "12.5") is valid for
        // Prometheus' parser (Go's ParseFloat).
        format!("{v}")
    }
}

/// One sample of the text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses the Prometheus text exposition format (samples only; `#` lines are skipped; an
/// optional timestamp after the value is ignored).
///
/// # Errors
/// [`Error::InvalidMetricsText`] naming the line.
pub fn parse_text(text: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| Error::InvalidMetricsText {
            line: i + 1,
            reason: reason.to_string(),
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| bad("a sample needs a value"))?;
        let name = &line[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(bad("invalid metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let mut end = None;
            loop {
                while chars
                    .next_if(|(_, c)| c.is_whitespace() || *c == ',')
                    .is_some()
                {}
                match chars.peek() {
                    Some((pos, '}')) => {
                        end = Some(*pos + 1);
                        break;
                    }
                    None => break,
                    _ => {}
                }
                let mut key = String::new();
                while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=') {
                    key.push(c);
                }
                let key = key.trim().to_string();
                if key.is_empty() || chars.next().is_none() {
                    return Err(bad("invalid label"));
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(bad("a label value must be quoted"));
                }
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            _ => return Err(bad("invalid escape in a label value")),
                        },
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err(bad("unterminated label value"));
                }
                labels.insert(key, value);
            }
            let end = end.ok_or_else(|| bad("unterminated label set"))?;
            rest = &after[end..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("a sample needs a value"))?;
        let value = match value {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse::<f64>()
                .map_err(|_| bad("the value is not a number"))?,
        };
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}
