//! Test support: a throwaway PostgreSQL cluster, the KARS schema as the application creates it
//! in PostgreSQL ([`KARS_SCHEMA`], with plausible data in [`KARS_DATA`]), and a rich fixture
//! that adds most of what PostgreSQL offers ([`RICH_SCHEMA`], [`RICH_DATA`]).
//!
//! [`TestCluster::shared`] gives every test of a test binary the same cluster (each test makes
//! its own databases): the one at `KARS_TEST_PG_URL` if set, else a new one made with `initdb` in
//! a temporary directory, listening on 127.0.0.1 on a free port with password (SCRAM)
//! authentication and its unix socket in that directory. As root, the server runs as the
//! `postgres` user (or `nobody`). The server stops, and its directory is removed, when the test
//! process exits (or when a [`TestCluster::start`]ed cluster is dropped).
//!
//! Without a server, `shared` returns `None` after printing why, so a test can skip; under
//! `CI=true` it panics instead: in CI a missing server is a failure, never a skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The superuser the throwaway cluster is made with.
pub const TEST_USER: &str = "kars";
/// Its password.
pub const TEST_PASSWORD: &str = "kars-test-secret";

/// A PostgreSQL server for tests.
#[derive(Debug)]
pub struct TestCluster {
    base_url: String,
    bin_dir: PathBuf,
    supervisor: Option<u32>,
    dir: Option<PathBuf>,
    os_user: Option<String>,
}

static SHARED: OnceLock<Option<TestCluster>> = OnceLock::new();
static SHARED_ARCHIVING: OnceLock<Option<TestCluster>> = OnceLock::new();

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

impl TestCluster {
    /// The cluster shared by the tests of this process; `None` (after printing why) when no
    /// PostgreSQL is available outside CI.
    ///
    /// # Panics
    /// Under `CI=true` when no server can be had.
    pub fn shared() -> Option<&'static TestCluster> {
        SHARED
            .get_or_init(|| {
                let started = match std::env::var("KARS_TEST_PG_URL") {
                    Ok(url) if !url.is_empty() => Self::external(&url),
                    _ => Self::start(),
                };
                match started {
                    Ok(c) => Some(c),
                    Err(why) if in_ci() => panic!(
                        "PostgreSQL tests need a server and CI=true forbids skipping them: {why}"
                    ),
                    Err(why) => {
                        eprintln!("SKIPPING PostgreSQL tests: {why}");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// A cluster shared by the tests of this process that archives its WAL (see
    /// [`start_archiving`](Self::start_archiving); `KARS_TEST_PG_URL` is not used: the tests
    /// need its archive directory); `None` (after printing why) when no PostgreSQL is available
    /// outside CI.
    ///
    /// # Panics
    /// Under `CI=true` when no server can be had.
    pub fn shared_archiving() -> Option<&'static TestCluster> {
        SHARED_ARCHIVING
            .get_or_init(|| match Self::start_archiving() {
                Ok(c) => Some(c),
                Err(why) if in_ci() => panic!(
                    "PostgreSQL tests need a server and CI=true forbids skipping them: {why}"
                ),
                Err(why) => {
                    eprintln!("SKIPPING PostgreSQL archiving tests: {why}");
                    None
                }
            })
            .as_ref()
    }

    /// Uses an existing server (a URL whose user may create databases).
    ///
    /// # Errors
    /// When the client programs cannot be found.
    pub fn external(url: &str) -> Result<TestCluster, String> {
        Ok(TestCluster {
            base_url: url.to_string(),
            bin_dir: find_bin_dir()?,
            supervisor: None,
            dir: None,
            os_user: None,
        })
    }

    /// Starts a new cluster in a temporary directory.
    ///
    /// # Errors
    /// What failed: no binaries, `initdb` or the server failed.
    pub fn start() -> Result<TestCluster, String> {
        Self::start_with(&[])
    }

    /// Starts a new cluster that archives its WAL (`wal_level = replica`, `archive_mode = on`)
    /// by copying each file into [`archive_dir`](Self::archive_dir), as a plain
    /// `archive_command` does (`test ! -f … && cp %p …`), with commit timestamps tracked
    /// (`pg_xact_commit_timestamp`, the time a restore to an instant compares with).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_archiving() -> Result<TestCluster, String> {
        // The archive directory is made by the supervisor's user inside the cluster directory.
        Self::start_with(&[
            ("wal_level", "replica"),
            ("archive_mode", "on"),
            (
                "archive_command",
                "test ! -f ARCHIVE/%f && cp %p ARCHIVE/%f.tmp && mv ARCHIVE/%f.tmp ARCHIVE/%f",
            ),
            ("track_commit_timestamp", "on"),
            ("max_wal_senders", "4"),
        ])
    }

    /// The directory [`start_archiving`](Self::start_archiving) archives WAL into.
    pub fn archive_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("archive"))
    }

    /// The OS user the server runs as, when it is not this process's (running as root).
    pub fn os_user(&self) -> Option<&str> {
        self.os_user.as_deref()
    }

    /// Starts a new cluster in a temporary directory with extra settings, written to
    /// `postgresql.conf` (values quoted as given: `("archive_mode", "on")`) and passed as `-c
    /// name=value` (where the text `ARCHIVE` is the cluster's [`archive_dir`](Self::archive_dir)).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(settings: &[(&str, &str)]) -> Result<TestCluster, String> {
        Self::start_with_initdb(&[], settings)
    }

    /// [`start_with`](Self::start_with), with more `initdb` arguments (`--wal-segsize=64`).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_initdb(
        initdb_args: &[&str],
        settings: &[(&str, &str)],
    ) -> Result<TestCluster, String> {
        let bin_dir = find_bin_dir()?;
        let runas = run_as_user()?;
        let dir = tempfile::Builder::new()
            .prefix("kars-pg-test-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?
            .keep();
        let cleanup = |e: String| {
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        std::fs::create_dir(dir.join("sock")).map_err(|e| cleanup(e.to_string()))?;
        std::fs::create_dir(dir.join("archive")).map_err(|e| cleanup(e.to_string()))?;
        let extra: Vec<String> = settings
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.replace("ARCHIVE", &dir.join("archive").display().to_string())
                )
            })
            .collect();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, TEST_PASSWORD).map_err(|e| cleanup(e.to_string()))?;
        if let Some((_, uid, gid)) = &runas {
            for p in [
                dir.as_path(),
                &dir.join("sock"),
                &dir.join("archive"),
                &pwfile,
            ] {
                std::os::unix::fs::chown(p, Some(*uid), Some(*gid))
                    .map_err(|e| cleanup(format!("chown {}: {e}", p.display())))?;
            }
        }
        let prefix: Vec<String> = match &runas {
            Some((name, _, _)) => vec![
                "setpriv".into(),
                format!("--reuid={name}"),
                format!("--regid={name}"),
                "--clear-groups".into(),
                "--".into(),
            ],
            None => Vec::new(),
        };
        let mut initdb = Command::new(if prefix.is_empty() {
            bin_dir.join("initdb").display().to_string()
        } else {
            prefix[0].clone()
        });
        if !prefix.is_empty() {
            initdb.args(&prefix[1..]).arg(bin_dir.join("initdb"));
        }
        let out = initdb
            .arg("--pgdata")
            .arg(dir.join("data"))
            .arg(format!("--username={TEST_USER}"))
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .args(initdb_args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| cleanup(format!("cannot run initdb: {e}")))?;
        let _ = std::fs::remove_file(&pwfile);
        if !out.status.success() {
            return Err(cleanup(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if !settings.is_empty() {
            use std::io::Write;
            let conf = dir.join("data").join("postgresql.conf");
            let lines: String = settings
                .iter()
                .map(|(k, v)| format!("{k} = '{}'\n", v.replace('\'', "''")))
                .collect();
            std::fs::OpenOptions::new()
                .append(true)
                .open(&conf)
                .and_then(|mut f| f.write_all(lines.as_bytes()))
                .map_err(|e| cleanup(format!("cannot write {}: {e}", conf.display())))?;
        }
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port().map_err(&cleanup)?;
            match launch(&dir, port, &bin_dir, &prefix, &extra) {
                Ok(pid) => {
                    return Ok(TestCluster {
                        base_url: format!(
                            "postgres://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:{port}/postgres"
                        ),
                        bin_dir,
                        supervisor: Some(pid),
                        dir: Some(dir),
                        os_user: runas.map(|(name, _, _)| name),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(cleanup(last))
    }

    /// Waits (up to two minutes) until the server reports WAL file `name`, or a later one,
    /// archived: its `archive_command` returned 0.
    ///
    /// # Panics
    /// When it is not archived in time, with the archiver's statistics.
    pub fn wait_archived(&self, name: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let last = self.psql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            if last.len() >= 24 && last[..24] >= *name {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} not archived in time (last: {last:?}): {}",
                self.psql("postgres", "SELECT * FROM pg_stat_archiver")
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// A URL for database `db` on this server (with the password).
    pub fn url(&self, db: &str) -> String {
        replace_db(&self.base_url, db)
    }

    /// A URL for the maintenance database `postgres`.
    pub fn server_url(&self) -> String {
        self.url("postgres")
    }

    /// The data directory of a cluster this process started (`None` for an external one).
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("data"))
    }

    /// The uid and gid the server runs as when the tests run as root (`None` otherwise: it
    /// runs as the test process's user). Files the server's programs (`archive_command`) write
    /// must be writable by them.
    pub fn server_owner() -> Option<(u32, u32)> {
        run_as_user().ok().flatten().map(|(_, uid, gid)| (uid, gid))
    }

    /// The directory of the client and server programs.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A database name no other test uses: `<prefix>_<pid>_<n>`.
    pub fn unique_name(prefix: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{prefix}_{}_{n}_{:x}", std::process::id(), nanos & 0xffff)
    }

    /// Runs SQL with `psql` against `db` (stops at the first error) and returns its unaligned,
    /// tuples-only output.
    ///
    /// # Panics
    /// When `psql` fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql on {db} failed: {e}\nSQL: {sql}"))
    }

    /// [`psql`](Self::psql) that returns the error instead of panicking.
    ///
    /// # Errors
    /// psql's standard error.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin_dir.join("psql"))
            .arg("--no-psqlrc")
            .arg("--quiet")
            .arg("--tuples-only")
            .arg("--no-align")
            .arg("--set=ON_ERROR_STOP=1")
            .arg(format!("--dbname={}", self.url(db)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("piped stdin")
                    .write_all(sql.as_bytes())?;
                child.wait_with_output()
            })
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Creates an empty database.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Drops a database if it exists.
    pub fn drop_database(&self, name: &str) {
        let _ = self.try_psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        );
    }

    /// Whether a database exists.
    pub fn database_exists(&self, name: &str) -> bool {
        self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                name.replace('\'', "''")
            ),
        ) == "1"
    }

    /// Databases whose names start with `prefix`.
    pub fn databases_like(&self, prefix: &str) -> Vec<String> {
        self.psql(
            "postgres",
            &format!(
                "SELECT datname FROM pg_database WHERE starts_with(datname, '{}') ORDER BY 1",
                prefix.replace('\'', "''")
            ),
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Creates database `name` holding the KARS tables with their data ([`KARS_SCHEMA`],
    /// [`KARS_DATA`]) and nothing else.
    pub fn create_kars_database(&self, name: &str) {
        self.create_database(name);
        self.psql(name, KARS_SCHEMA);
        self.psql(name, KARS_DATA);
    }

    /// Creates database `name` holding the rich fixture: the KARS tables ([`KARS_SCHEMA`]) and
    /// the PostgreSQL features of [`RICH_SCHEMA`], with their data ([`KARS_DATA`],
    /// [`RICH_DATA`]).
    pub fn create_rich_database(&self, name: &str) {
        self.create_database(name);
        self.psql(name, KARS_SCHEMA);
        self.psql(name, RICH_SCHEMA);
        self.psql(name, KARS_DATA);
        self.psql(name, RICH_DATA);
    }

    /// A fingerprint of a database's content: an md5 of every table's and materialized view's
    /// rows (in a stable order), and every sequence's state.
    pub fn content_hashes(&self, db: &str) -> BTreeMap<String, String> {
        let relations = self.psql(
            db,
            "SELECT c.relkind::text || ' ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
        );
        let mut out = BTreeMap::new();
        for line in relations.lines() {
            let (kind, name) = line.split_once(' ').expect("kind and name");
            let sql = match kind {
                "S" => format!("SELECT last_value || '/' || is_called FROM {name}"),
                _ => format!(
                    "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {name} t"
                ),
            };
            out.insert(format!("{kind} {name}"), self.psql(db, &sql));
        }
        out
    }

    /// `pg_dump --schema-only` of a database, without the lines that differ between two dumps of
    /// equal databases (`\restrict` keys).
    pub fn schema_dump(&self, db: &str) -> String {
        let out = Command::new(self.bin_dir.join("pg_dump"))
            .arg("--schema-only")
            .arg(format!("--dbname={}", self.url(db)))
            .stdin(Stdio::null())
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump --schema-only failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(pid) = self.supervisor.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            // The supervisor stops the server and removes the directory; wait for it a little.
            let deadline = Instant::now() + Duration::from_secs(20);
            while let Some(dir) = &self.dir {
                if !dir.exists() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The supervisor: runs the server, and on SIGTERM (sent by `Drop`, or by the kernel when the
/// test process dies: `setpriv --pdeathsig`) stops it fast and removes the directory.
const SUPERVISOR: &str = r#"
dir=$1; port=$2; bin=$3; shift 3
extra=()
while IFS= read -r line; do [ -n "$line" ] && extra+=(-c "$line"); done <<<"${KARS_PG_EXTRA:-}"
"$@" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir/sock" \
  -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
  -c full_page_writes=off -c max_connections=100 -c shared_buffers=128MB \
  -c max_wal_size=2GB "${extra[@]}" >"$dir/server.log" 2>&1 &
pid=$!
stop() { kill -INT "$pid" 2>/dev/null; wait "$pid"; rm -rf "$dir"; exit 0; }
trap stop TERM INT HUP
wait "$pid"
echo "postgres exited: $(tail -n 5 "$dir/server.log" 2>/dev/null)" >&2
exit 1
"#;

fn launch(
    dir: &Path,
    port: u16,
    bin_dir: &Path,
    prefix: &[String],
    extra: &[String],
) -> Result<u32, String> {
    let extra = extra.join("\n");
    let (tx, rx) = std::sync::mpsc::channel();
    let dir_s = dir.display().to_string();
    let bin_s = bin_dir.display().to_string();
    let prefix = prefix.to_vec();
    // The thread that spawns the supervisor lives as long as the process: the kernel sends the
    // supervisor SIGTERM when it (so: the process) ends.
    std::thread::Builder::new()
        .name("kars-pg-test-cluster".into())
        .spawn(move || {
            let child = Command::new("setpriv")
                .args([
                    "--pdeathsig",
                    "TERM",
                    "--",
                    "bash",
                    "-c",
                    SUPERVISOR,
                    "kars-pg",
                ])
                .arg(&dir_s)
                .arg(port.to_string())
                .arg(&bin_s)
                .args(&prefix)
                .env("KARS_PG_EXTRA", &extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn();
            match child {
                Ok(mut c) => {
                    let _ = tx.send(Ok(c.id()));
                    let _ = c.wait();
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start setpriv/bash: {e}")));
                }
            }
        })
        .map_err(|e| e.to_string())?;
    let pid = rx
        .recv()
        .map_err(|e| format!("the cluster thread died: {e}"))??;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(bin_dir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            return Ok(pid);
        }
        let alive = Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z");
        if !alive || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            return Err(format!(
                "the PostgreSQL server did not start on port {port}: {log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// As root, the user the server runs as (`postgres`, else `nobody`), with uid and gid.
fn run_as_user() -> Result<Option<(String, u32, u32)>, String> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id(&["-u"]) != Some(0) {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let (Some(uid), Some(gid)) = (id(&["-u", name]), id(&["-g", name])) {
            return Ok(Some((name.to_string(), uid, gid)));
        }
    }
    Err("running as root, and neither a postgres nor a nobody user exists to run the server".into())
}

/// The PostgreSQL programs: `KARS_TEST_PG_BIN`, `pg_config --bindir`, or the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf, String> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("pg_dump").is_file();
    if let Ok(d) = std::env::var("KARS_TEST_PG_BIN") {
        let d = PathBuf::from(d);
        return if has_server(&d) {
            Ok(d)
        } else {
            Err(format!(
                "KARS_TEST_PG_BIN={} has no initdb/pg_dump",
                d.display()
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&d) {
            return Ok(d);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
                    let bin = e.path().join("bin");
                    has_server(&bin).then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, d)| d).ok_or_else(|| {
        "no PostgreSQL server programs found (initdb): install postgresql (Debian: apt-get install postgresql), set KARS_TEST_PG_BIN, or set KARS_TEST_PG_URL to a server".to_string()
    })
}

/// `url` with its database replaced by `db`.
fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    let mut out = format!("{base}/{db}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The KARS schema as the application creates it in PostgreSQL: the 20 tables of the SQLite
/// variant with the same columns, `SERIAL` ids and `TIMESTAMP` (without time zone, UTC) time
/// columns; `assets.serial_number` and `assets.asset_tag` unique, `assets.company_id` →
/// `companies` ON DELETE RESTRICT, owner and manager → `users` ON DELETE SET NULL,
/// `companies.name` and `users.email` unique, and the attestation, passkey and token tables
/// referencing their parents.
pub const KARS_SCHEMA: &str = r#"
CREATE TABLE companies (
  id SERIAL PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  description TEXT,
  created_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  hubspot_id TEXT,
  hubspot_synced_at TIMESTAMP
);
CREATE TABLE users (
  id SERIAL PRIMARY KEY,
  email TEXT NOT NULL UNIQUE,
  password_hash TEXT,
  name TEXT NOT NULL,
  role TEXT NOT NULL DEFAULT 'employee' CHECK (role IN ('admin', 'manager', 'employee')),
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  last_login TIMESTAMP,
  first_name TEXT,
  last_name TEXT,
  manager_name TEXT,
  manager_first_name TEXT,
  manager_last_name TEXT,
  manager_email TEXT,
  profile_image TEXT,
  oidc_sub TEXT,
  mfa_enabled INTEGER NOT NULL DEFAULT 0,
  mfa_secret TEXT,
  mfa_backup_codes TEXT,
  profile_complete INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE asset_types (
  id SERIAL PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  display_name TEXT NOT NULL,
  description TEXT,
  is_active INTEGER NOT NULL DEFAULT 1,
  sort_order INTEGER NOT NULL DEFAULT 0,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE assets (
  id SERIAL PRIMARY KEY,
  employee_first_name TEXT,
  employee_last_name TEXT,
  employee_email TEXT,
  owner_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
  manager_first_name TEXT,
  manager_last_name TEXT,
  manager_email TEXT,
  manager_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
  company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE RESTRICT,
  asset_type TEXT NOT NULL,
  make TEXT,
  model TEXT,
  serial_number TEXT NOT NULL UNIQUE,
  asset_tag TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL DEFAULT 'active',
  issued_date TIMESTAMP,
  returned_date TIMESTAMP,
  registration_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  last_updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  notes TEXT
);
CREATE TABLE audit_logs (
  id SERIAL PRIMARY KEY,
  action TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  entity_id INTEGER,
  entity_name TEXT,
  details TEXT,
  timestamp TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  user_email TEXT
);
CREATE TABLE attestation_campaigns (
  id SERIAL PRIMARY KEY,
  name TEXT NOT NULL,
  description TEXT,
  start_date TIMESTAMP NOT NULL,
  end_date TIMESTAMP,
  status TEXT NOT NULL DEFAULT 'draft',
  reminder_days INTEGER,
  escalation_days INTEGER,
  target_type TEXT NOT NULL DEFAULT 'all',
  target_user_ids TEXT,
  target_company_ids TEXT,
  created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  unregistered_reminder_days INTEGER
);
CREATE TABLE attestation_records (
  id SERIAL PRIMARY KEY,
  campaign_id INTEGER NOT NULL REFERENCES attestation_campaigns(id) ON DELETE CASCADE,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  status TEXT NOT NULL DEFAULT 'pending',
  started_at TIMESTAMP,
  completed_at TIMESTAMP,
  reminder_sent_at TIMESTAMP,
  escalation_sent_at TIMESTAMP,
  notes TEXT,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE attestation_assets (
  id SERIAL PRIMARY KEY,
  attestation_record_id INTEGER NOT NULL REFERENCES attestation_records(id) ON DELETE CASCADE,
  asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
  attested_status TEXT,
  previous_status TEXT,
  notes TEXT,
  attested_at TIMESTAMP
);
CREATE TABLE attestation_new_assets (
  id SERIAL PRIMARY KEY,
  attestation_record_id INTEGER NOT NULL REFERENCES attestation_records(id) ON DELETE CASCADE,
  asset_type TEXT NOT NULL,
  make TEXT,
  model TEXT,
  serial_number TEXT,
  asset_tag TEXT,
  company_id INTEGER REFERENCES companies(id),
  notes TEXT,
  status TEXT,
  issued_date TIMESTAMP,
  returned_date TIMESTAMP,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  employee_first_name TEXT,
  employee_last_name TEXT,
  employee_email TEXT,
  manager_first_name TEXT,
  manager_last_name TEXT,
  manager_email TEXT
);
CREATE TABLE attestation_pending_invites (
  id SERIAL PRIMARY KEY,
  campaign_id INTEGER NOT NULL REFERENCES attestation_campaigns(id) ON DELETE CASCADE,
  employee_email TEXT NOT NULL,
  employee_first_name TEXT,
  employee_last_name TEXT,
  invite_token TEXT NOT NULL UNIQUE,
  invite_sent_at TIMESTAMP,
  reminder_sent_at TIMESTAMP,
  escalation_sent_at TIMESTAMP,
  registered_at TIMESTAMP,
  converted_record_id INTEGER REFERENCES attestation_records(id) ON DELETE SET NULL,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE branding_settings (
  id SERIAL PRIMARY KEY,
  logo_data TEXT,
  logo_filename TEXT,
  logo_content_type TEXT,
  site_name TEXT,
  sub_title TEXT,
  favicon_data TEXT,
  favicon_filename TEXT,
  favicon_content_type TEXT,
  primary_color TEXT,
  include_logo_in_emails INTEGER NOT NULL DEFAULT 0,
  app_url TEXT,
  footer_label TEXT,
  updated_at TIMESTAMP,
  updated_by TEXT
);
CREATE TABLE email_templates (
  id SERIAL PRIMARY KEY,
  template_key TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  description TEXT,
  subject TEXT NOT NULL,
  html_body TEXT NOT NULL,
  text_body TEXT,
  variables TEXT,
  is_custom INTEGER NOT NULL DEFAULT 0,
  updated_at TIMESTAMP,
  updated_by TEXT
);
CREATE TABLE hubspot_settings (
  id SERIAL PRIMARY KEY,
  enabled INTEGER NOT NULL DEFAULT 0,
  access_token TEXT,
  auto_sync_enabled INTEGER NOT NULL DEFAULT 0,
  sync_interval TEXT,
  last_sync TIMESTAMP,
  last_sync_status TEXT,
  companies_synced INTEGER NOT NULL DEFAULT 0,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE hubspot_sync_log (
  id SERIAL PRIMARY KEY,
  sync_started_at TIMESTAMP NOT NULL,
  sync_completed_at TIMESTAMP,
  status TEXT NOT NULL,
  companies_found INTEGER NOT NULL DEFAULT 0,
  companies_created INTEGER NOT NULL DEFAULT 0,
  companies_updated INTEGER NOT NULL DEFAULT 0,
  error_message TEXT
);
CREATE TABLE oidc_settings (
  id SERIAL PRIMARY KEY,
  enabled INTEGER NOT NULL DEFAULT 0,
  issuer_url TEXT,
  client_id TEXT,
  client_secret TEXT,
  redirect_uri TEXT,
  scope TEXT,
  role_claim_path TEXT,
  default_role TEXT,
  sso_button_text TEXT,
  sso_button_help_text TEXT,
  sso_button_variant TEXT,
  updated_at TIMESTAMP,
  updated_by TEXT
);
CREATE TABLE passkey_settings (
  id SERIAL PRIMARY KEY,
  rp_id TEXT,
  rp_name TEXT,
  origin TEXT,
  enabled INTEGER NOT NULL DEFAULT 0,
  updated_at TIMESTAMP,
  updated_by TEXT
);
CREATE TABLE passkeys (
  id SERIAL PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  name TEXT,
  credential_id TEXT NOT NULL UNIQUE,
  public_key TEXT NOT NULL,
  counter INTEGER NOT NULL DEFAULT 0,
  transports TEXT,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  last_used_at TIMESTAMP
);
CREATE TABLE password_reset_tokens (
  id SERIAL PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  token TEXT NOT NULL UNIQUE,
  expires_at TIMESTAMP NOT NULL,
  used INTEGER NOT NULL DEFAULT 0,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE smtp_settings (
  id SERIAL PRIMARY KEY,
  enabled INTEGER NOT NULL DEFAULT 0,
  host TEXT,
  port INTEGER,
  use_tls INTEGER NOT NULL DEFAULT 1,
  username TEXT,
  password_encrypted TEXT,
  auth_method TEXT,
  from_name TEXT,
  from_email TEXT,
  default_recipient TEXT,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE system_settings (
  id SERIAL PRIMARY KEY,
  trust_proxy INTEGER NOT NULL DEFAULT 0,
  proxy_type TEXT,
  proxy_trust_level INTEGER,
  rate_limit_enabled INTEGER NOT NULL DEFAULT 1,
  rate_limit_window_ms INTEGER,
  rate_limit_max_requests INTEGER,
  updated_at TIMESTAMP,
  updated_by TEXT
);
"#;

/// Plausible KARS rows for [`KARS_SCHEMA`]: 12 companies, 300 users (the first an `admin`) with
/// fake password hashes and MFA secrets, 500 assets with unique serial numbers and asset tags,
/// 600 audit-log rows whose newest is a minute old (UTC), attestation campaigns, passkeys,
/// reset and invite tokens, and the settings rows with fake secrets and a base64 logo.
pub const KARS_DATA: &str = r#"
INSERT INTO companies (name, description, created_date, hubspot_id)
  SELECT (ARRAY['Acme', 'Nordic', 'Atlas', 'Helios', 'Quantum', 'Blue'])[1 + g % 6] || ' ' ||
         (ARRAY['GmbH', 'Ltd', 'S.A.', 'B.V.'])[1 + g % 4] || ' ' || g,
         'Customer since ' || (2015 + g % 9), timestamp '2023-01-02 09:00:00' + (g || ' days')::interval,
         CASE WHEN g % 3 = 0 THEN (10000000 + g * 7919)::text END
  FROM generate_series(1, 12) g;
INSERT INTO users (email, password_hash, name, role, created_at, last_login, first_name, last_name,
                   manager_name, manager_first_name, manager_last_name, manager_email, oidc_sub,
                   mfa_enabled, mfa_secret, mfa_backup_codes, profile_complete)
  SELECT 'user' || g || '@company' || (1 + g % 12) || '.example',
         '$2b$10$' || substr(md5('pw' || g) || md5('salt' || g), 1, 53),
         (ARRAY['Anna', 'Jürgen', 'Søren', 'Chloé', 'Wei'])[1 + g % 5] || ' ' || (ARRAY['Müller', 'García', 'Østergaard', 'O''Brien'])[1 + g % 4],
         CASE WHEN g = 1 THEN 'admin' WHEN g % 10 = 0 THEN 'manager' ELSE 'employee' END,
         timestamp '2024-01-01 08:00:00' + (g || ' hours')::interval,
         CASE WHEN g % 7 <> 0 THEN timestamp '2024-12-01 08:00:00' + (g || ' minutes')::interval END,
         (ARRAY['Anna', 'Jürgen', 'Søren', 'Chloé', 'Wei'])[1 + g % 5], (ARRAY['Müller', 'García', 'Østergaard', 'O''Brien'])[1 + g % 4],
         CASE WHEN g > 1 THEN 'Manager ' || (g / 10) END, CASE WHEN g > 1 THEN 'Manager' END,
         CASE WHEN g > 1 THEN (g / 10)::text END, CASE WHEN g > 1 THEN 'manager' || (g / 10) || '@company.example' END,
         CASE WHEN g % 9 = 0 THEN 'oidc|' || md5('sub' || g) END,
         (g % 5 = 0)::int, CASE WHEN g % 5 = 0 THEN upper(translate(substr(md5('mfa' || g) || md5('x' || g), 1, 32), '0189', 'ABCD')) END,
         CASE WHEN g % 5 = 0 THEN '["$2b$10$' || md5('c1' || g) || '","$2b$10$' || md5('c2' || g) || '"]' END,
         (g % 11 <> 0)::int
  FROM generate_series(1, 305) g;
DELETE FROM users WHERE id > 300;
INSERT INTO asset_types (name, display_name, description, sort_order, created_at, updated_at)
  SELECT n, initcap(replace(n, '_', ' ')), 'Asset type ' || n, 10 * o, timestamp '2023-01-01 00:00:00', timestamp '2023-01-01 00:00:00'
  FROM unnest(ARRAY['laptop', 'desktop', 'monitor', 'mobile_phone', 'tablet', 'headset', 'keyboard_mouse', 'other']) WITH ORDINALITY AS t(n, o);
INSERT INTO assets (employee_first_name, employee_last_name, employee_email, owner_id, manager_first_name,
                    manager_last_name, manager_email, manager_id, company_id, asset_type, make, model,
                    serial_number, asset_tag, status, issued_date, returned_date, registration_date, last_updated, notes)
  SELECT u.first_name, u.last_name, u.email, CASE WHEN g % 5 <> 0 THEN u.id END,
         CASE WHEN g % 3 = 0 THEN 'Manager' END, CASE WHEN g % 3 = 0 THEN (g / 10)::text END,
         CASE WHEN g % 3 = 0 THEN 'manager' || (g / 10) || '@company.example' END,
         CASE WHEN g % 3 = 0 THEN 1 + (g * 7) % 300 END,
         1 + g % 12, (ARRAY['laptop', 'monitor', 'mobile_phone', 'tablet'])[1 + g % 4],
         (ARRAY['Lenovo', 'Dell', 'Apple', 'Samsung'])[1 + g % 4], 'Model ' || (g % 17),
         'C02' || lpad(g::text, 6, '0') || upper(substr(md5('sn' || g), 1, 3)), 'KARS-' || lpad(g::text, 6, '0'),
         (ARRAY['active', 'active', 'returned', 'lost', 'damaged'])[1 + g % 5],
         timestamp '2024-01-10 00:00:00' + (g || ' days')::interval,
         CASE WHEN g % 5 = 2 THEN timestamp '2025-06-01 00:00:00' + (g || ' hours')::interval END,
         timestamp '2024-01-15 08:00:00' + (g || ' days')::interval,
         timestamp '2025-06-01 00:00:00' + (g || ' minutes')::interval,
         CASE WHEN g % 4 = 0 THEN 'Charger included; überprüft ' || g END
  FROM generate_series(1, 500) g JOIN users u ON u.id = 1 + g % 300;
INSERT INTO audit_logs (action, entity_type, entity_id, entity_name, details, timestamp, user_email)
  SELECT (ARRAY['CREATE', 'UPDATE', 'UPDATE', 'DELETE', 'LOGIN'])[1 + g % 5], (ARRAY['asset', 'user', 'company'])[1 + g % 3],
         1 + g % 500, 'KARS-' || lpad((1 + g % 500)::text, 6, '0'),
         '{"ip":"10.0.' || (g % 256) || '.1","changes":"status"}',
         (now() AT TIME ZONE 'UTC') - interval '1 minute' - ((600 - g) || ' minutes')::interval * 10,
         'user' || (1 + g % 300) || '@company' || (1 + (1 + g % 300) % 12) || '.example'
  FROM generate_series(1, 600) g;
INSERT INTO attestation_campaigns (name, description, start_date, end_date, status, reminder_days,
                                   escalation_days, target_type, target_company_ids, created_by,
                                   created_at, updated_at, unregistered_reminder_days)
  VALUES ('Asset attestation Q1', 'Confirm your equipment', '2025-01-06 09:00', '2025-01-27 09:00', 'completed', 7, 14, 'all', NULL, 1, '2025-01-05 09:00', '2025-01-27 09:00', 7),
         ('Asset attestation Q2', 'Confirm your equipment', '2025-04-07 09:00', '2025-04-28 09:00', 'active', 7, 14, 'companies', '[1,2,3]', 1, '2025-04-06 09:00', '2025-04-06 09:00', 7);
INSERT INTO attestation_records (campaign_id, user_id, status, started_at, completed_at, created_at, updated_at)
  SELECT 1 + g % 2, 1 + g % 300, CASE WHEN g % 3 = 0 THEN 'pending' ELSE 'completed' END,
         timestamp '2025-01-06 10:00:00' + (g || ' hours')::interval,
         CASE WHEN g % 3 <> 0 THEN timestamp '2025-01-06 10:05:00' + (g || ' hours')::interval END,
         timestamp '2025-01-06 09:00:00', timestamp '2025-01-06 09:00:00'
  FROM generate_series(1, 100) g;
INSERT INTO attestation_assets (attestation_record_id, asset_id, attested_status, previous_status, attested_at)
  SELECT 1 + g % 100, 1 + (g * 13) % 500, 'active', 'active', timestamp '2025-01-07 10:00:00' + (g || ' minutes')::interval
  FROM generate_series(1, 150) g;
INSERT INTO attestation_new_assets (attestation_record_id, asset_type, make, model, serial_number, company_id,
                                    status, created_at, employee_first_name, employee_last_name, employee_email)
  SELECT g * 10, 'monitor', 'Dell', 'U2723QE', 'NEW' || lpad(g::text, 6, '0'), 1 + g % 12, 'active',
         timestamp '2025-01-08 12:00:00', 'Olga', 'Petrov', 'olga.petrov' || g || '@new.example'
  FROM generate_series(1, 5) g;
INSERT INTO attestation_pending_invites (campaign_id, employee_email, employee_first_name, employee_last_name,
                                         invite_token, invite_sent_at, registered_at, converted_record_id, created_at)
  SELECT 1 + g % 2, 'new' || g || '@unregistered.example', 'Uma', 'Ibrahim', md5('invite' || g) || md5('token' || g),
         timestamp '2025-01-06 11:00:00', CASE WHEN g % 2 = 0 THEN timestamp '2025-01-08 11:00:00' END,
         CASE WHEN g % 2 = 0 THEN g END, timestamp '2025-01-06 11:00:00'
  FROM generate_series(1, 6) g;
INSERT INTO branding_settings (logo_data, logo_filename, logo_content_type, site_name, sub_title, favicon_data,
                               favicon_filename, favicon_content_type, primary_color, include_logo_in_emails,
                               app_url, footer_label, updated_at, updated_by)
  SELECT replace(encode(decode('89504e470d0a1a0a' || string_agg(md5('logo' || g), '' ORDER BY g), 'hex'), 'base64'), E'\n', ''),
         'logo.png', 'image/png', 'KARS', 'Asset registration',
         replace(encode(decode('00000100' || md5('favicon') || md5('icon'), 'hex'), 'base64'), E'\n', ''),
         'favicon.ico', 'image/x-icon', '#1f6feb', 1, 'https://kars.example.com', 'Example Corp IT',
         timestamp '2025-02-01 12:00:00', 'user1@company2.example'
  FROM generate_series(1, 1500) g;
INSERT INTO email_templates (template_key, name, description, subject, html_body, text_body, variables, is_custom, updated_at)
  SELECT k, initcap(replace(k, '_', ' ')), 'Sent for ' || k, 'KARS: ' || replace(k, '_', ' '),
         '<html><body><h1>{{siteName}}</h1><p>Hello {{employeeName}},</p><p><a href="{{attestationUrl}}">Open KARS</a></p></body></html>',
         'Hello {{employeeName}}, open {{attestationUrl}}', '["employeeName","attestationUrl","siteName"]', 0, timestamp '2025-01-01 00:00:00'
  FROM unnest(ARRAY['attestation_launch', 'attestation_reminder', 'password_reset']) k;
INSERT INTO hubspot_settings (enabled, access_token, auto_sync_enabled, sync_interval, last_sync, last_sync_status, companies_synced, created_at, updated_at)
  VALUES (1, 'pat-eu1-' || md5('hubspot-fake-token'), 1, 'daily', '2025-06-01 02:00', 'success', 4, '2024-06-01 00:00', '2025-06-01 02:00');
INSERT INTO hubspot_sync_log (sync_started_at, sync_completed_at, status, companies_found, companies_created, companies_updated, error_message)
  SELECT timestamp '2025-05-20 02:00:00' + (g || ' days')::interval, timestamp '2025-05-20 02:00:30' + (g || ' days')::interval,
         CASE WHEN g = 4 THEN 'error' ELSE 'success' END, 4, 0, g % 2, CASE WHEN g = 4 THEN 'HubSpot API rate limit exceeded (429)' END
  FROM generate_series(1, 10) g;
INSERT INTO oidc_settings (enabled, issuer_url, client_id, client_secret, redirect_uri, scope, role_claim_path, default_role,
                           sso_button_text, sso_button_help_text, sso_button_variant, updated_at, updated_by)
  VALUES (1, 'https://login.example.com/realms/corp', 'kars', md5('fake-oidc-client-secret') || md5('x'),
          'https://kars.example.com/api/auth/oidc/callback', 'openid email profile', 'realm_access.roles', 'employee',
          'Sign in with SSO', 'Use your company account', 'primary', '2025-02-01 12:00', 'user1@company2.example');
INSERT INTO passkey_settings (rp_id, rp_name, origin, enabled, updated_at, updated_by)
  VALUES ('kars.example.com', 'KARS', 'https://kars.example.com', 1, '2025-02-01 12:00', 'user1@company2.example');
INSERT INTO passkeys (user_id, name, credential_id, public_key, counter, transports, created_at, last_used_at)
  SELECT 1 + g * 11 % 300, 'YubiKey 5', md5('cred' || g), replace(encode(decode(md5('pk' || g) || md5('pk2' || g) || md5('pk3' || g), 'hex'), 'base64'), E'\n', ''),
         g * 3, '["usb","nfc"]', timestamp '2025-03-01 00:00:00', timestamp '2025-06-01 00:00:00'
  FROM generate_series(1, 20) g;
INSERT INTO password_reset_tokens (user_id, token, expires_at, used, created_at)
  SELECT 1 + g * 17 % 300, md5('reset' || g) || md5('token' || g), timestamp '2025-06-01 01:00:00', (g % 2), timestamp '2025-06-01 00:00:00'
  FROM generate_series(1, 15) g;
INSERT INTO smtp_settings (enabled, host, port, use_tls, username, password_encrypted, auth_method, from_name, from_email, default_recipient, created_at, updated_at)
  VALUES (1, 'smtp.example.com', 587, 1, 'kars@example.com', md5('iv') || ':' || md5('fake-smtp-password') || md5('y'), 'login', 'KARS',
          'kars@example.com', 'it@example.com', '2024-06-01 00:00', '2025-02-01 12:00');
INSERT INTO system_settings (trust_proxy, proxy_type, proxy_trust_level, rate_limit_enabled, rate_limit_window_ms, rate_limit_max_requests, updated_at, updated_by)
  VALUES (1, 'cloudflare', 1, 1, 900000, 100, '2025-02-01 12:00', 'user1@company2.example');
"#;

/// The rows of the [`RICH_SCHEMA`] objects (after [`KARS_DATA`]): one `asset_specs` row per
/// asset, 510 `asset_events` (500 inserts and 10 updates of assets, through the trigger), 40
/// orders, 25 settings, the materialized view, and `companies_id_seq` moved to 1000.
pub const RICH_DATA: &str = r#"
INSERT INTO asset_specs (asset_id, contact, condition, price, quantity, bought_at, specs, dimensions, tags, photo)
  SELECT g, 'Owner' || g || '@Example.com', (ARRAY['good', 'worn', 'broken'])[1 + g % 3]::asset_condition,
         round((g * 13.37)::numeric, 2), 1 + g % 4,
         timestamptz '2024-01-15 08:00:00+00' + (g || ' days')::interval,
         jsonb_build_object('cpu', 'x' || g % 5, 'ram', g % 64, 'nested', jsonb_build_array(g, 'x')),
         ARRAY[g, g * 2, g % 7], ARRAY['t' || g % 3, 'quote''s', 'comma,x'],
         CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text) || '00ff', 'hex') END
  FROM generate_series(1, 500) g;
UPDATE assets SET last_updated = last_updated + interval '1 day' WHERE id % 50 = 0;
CREATE VIEW active_assets AS
  SELECT a.id, a.asset_tag, a.serial_number, c.name AS company, u.email
  FROM assets a JOIN companies c ON c.id = a.company_id LEFT JOIN users u ON u.id = a.owner_id
  WHERE a.status = 'active';
CREATE SCHEMA "Sales";
COMMENT ON SCHEMA "Sales" IS 'A mixed-case schema';
CREATE TABLE "Sales"."Orders" (
  "OrderID" serial PRIMARY KEY,
  "Customer" text NOT NULL,
  "Amount" numeric(10,2) CHECK ("Amount" >= 0),
  "PlacedAt" timestamptz NOT NULL DEFAULT '2024-03-01 12:00:00+00',
  "AssetID" int REFERENCES assets(id)
);
INSERT INTO "Sales"."Orders" ("Customer", "Amount", "AssetID")
  SELECT 'Customer ' || g, g * 1.5, g FROM generate_series(1, 40) g;
CREATE TABLE app_settings (key text PRIMARY KEY, value jsonb NOT NULL, updated_at timestamptz);
INSERT INTO app_settings
  SELECT 'setting.' || g, jsonb_build_object('v', g), timestamptz '2024-02-02 00:00:00+00' + (g || ' hours')::interval
  FROM generate_series(1, 25) g;
SELECT setval('companies_id_seq', 1000);
CREATE MATERIALIZED VIEW asset_totals AS
  SELECT s.condition, count(*) AS n, sum(s.total) AS value FROM asset_specs s GROUP BY s.condition;
COMMENT ON MATERIALIZED VIEW asset_totals IS 'Totals by condition';
"#;

/// The KARS tables with data ([`KARS_SCHEMA`], [`KARS_DATA`]) plus what else a dump must carry:
/// an extension from contrib (`citext`), an enum type, a domain, an identity column, a
/// generated column, jsonb, arrays, bytea, numeric and timestamptz columns (`asset_specs`), a
/// partitioned table filled by a plpgsql trigger on `assets` (`asset_events`), a view and a
/// materialized view, check constraints, comments, a sequence ahead of its rows, and a
/// non-public schema with mixed-case quoted names (`"Sales"."Orders"`).
pub const RICH_SCHEMA: &str = r#"
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE asset_condition AS ENUM ('good', 'worn', 'broken');
CREATE DOMAIN email_address AS citext CHECK (VALUE LIKE '%_@_%');
COMMENT ON TABLE companies IS 'Companies that own assets';
COMMENT ON COLUMN users.email IS 'Login e-mail';
CREATE TABLE asset_specs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  asset_id int NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
  contact email_address,
  condition asset_condition NOT NULL DEFAULT 'good',
  price numeric(12,2) CHECK (price >= 0),
  quantity int NOT NULL DEFAULT 1 CHECK (quantity > 0),
  total numeric GENERATED ALWAYS AS (price * quantity) STORED,
  bought_at timestamptz,
  specs jsonb,
  dimensions int[],
  tags text[] NOT NULL DEFAULT '{}',
  photo bytea
);
COMMENT ON COLUMN asset_specs.contact IS 'Case-insensitive e-mail';
CREATE INDEX asset_specs_asset_idx ON asset_specs (asset_id);
CREATE INDEX asset_specs_specs_idx ON asset_specs USING gin (specs);
CREATE TABLE asset_events (
  id bigserial,
  at timestamptz NOT NULL,
  action text NOT NULL,
  detail jsonb,
  PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE asset_events_2024 PARTITION OF asset_events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE asset_events_2025 PARTITION OF asset_events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE FUNCTION log_asset_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO asset_events (at, action, detail)
  VALUES (NEW.registration_date AT TIME ZONE 'UTC', TG_OP, jsonb_build_object('id', NEW.id, 'tag', NEW.asset_tag));
  RETURN NEW;
END $$;
COMMENT ON FUNCTION log_asset_change() IS 'Writes an asset event per asset change';
CREATE TRIGGER assets_events AFTER INSERT OR UPDATE ON assets FOR EACH ROW EXECUTE FUNCTION log_asset_change();
"#;
