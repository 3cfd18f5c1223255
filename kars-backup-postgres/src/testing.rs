//! Test support: a throwaway PostgreSQL cluster, and a fixture schema that uses most of what
//! PostgreSQL offers.
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
}

static SHARED: OnceLock<Option<TestCluster>> = OnceLock::new();

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
        })
    }

    /// Starts a new cluster in a temporary directory.
    ///
    /// # Errors
    /// What failed: no binaries, `initdb` or the server failed.
    pub fn start() -> Result<TestCluster, String> {
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
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, TEST_PASSWORD).map_err(|e| cleanup(e.to_string()))?;
        if let Some((_, uid, gid)) = &runas {
            for p in [dir.as_path(), &dir.join("sock"), &pwfile] {
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
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port().map_err(&cleanup)?;
            match launch(&dir, port, &bin_dir, &prefix) {
                Ok(pid) => {
                    return Ok(TestCluster {
                        base_url: format!(
                            "postgres://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:{port}/postgres"
                        ),
                        bin_dir,
                        supervisor: Some(pid),
                        dir: Some(dir),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(cleanup(last))
    }

    /// A URL for database `db` on this server (with the password).
    pub fn url(&self, db: &str) -> String {
        replace_db(&self.base_url, db)
    }

    /// A URL for the maintenance database `postgres`.
    pub fn server_url(&self) -> String {
        self.url("postgres")
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

    /// Creates database `name` holding the [`RICH_SCHEMA`] fixture.
    pub fn create_rich_database(&self, name: &str) {
        self.create_database(name);
        self.psql(name, RICH_SCHEMA);
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
"$@" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir/sock" \
  -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
  -c full_page_writes=off -c max_connections=100 -c shared_buffers=128MB \
  -c max_wal_size=2GB >"$dir/server.log" 2>&1 &
pid=$!
stop() { kill -INT "$pid" 2>/dev/null; wait "$pid"; rm -rf "$dir"; exit 0; }
trap stop TERM INT HUP
wait "$pid"
echo "postgres exited: $(tail -n 5 "$dir/server.log" 2>/dev/null)" >&2
exit 1
"#;

fn launch(dir: &Path, port: u16, bin_dir: &Path, prefix: &[String]) -> Result<u32, String> {
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

/// A schema that exercises what a dump must carry: an extension from contrib (`citext`), enum
/// types, a domain, identity and serial columns (with sequence values ahead of the rows), a
/// generated column, jsonb, arrays, bytea, numeric, timestamptz, a partitioned table, a view and
/// a materialized view, a plpgsql function with a trigger, foreign keys, check constraints,
/// comments, and a non-public schema with mixed-case quoted names.
pub const RICH_SCHEMA: &str = r#"
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE asset_status AS ENUM ('active', 'retired', 'lost');
CREATE DOMAIN email_address AS citext CHECK (VALUE LIKE '%_@_%');
CREATE TABLE companies (
  id serial PRIMARY KEY,
  name text NOT NULL UNIQUE CHECK (char_length(name) > 1),
  founded date
);
COMMENT ON TABLE companies IS 'Companies that own assets';
CREATE TABLE users (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  company_id int REFERENCES companies(id) ON DELETE CASCADE,
  email email_address NOT NULL UNIQUE,
  name text,
  tags text[] NOT NULL DEFAULT '{}',
  settings jsonb NOT NULL DEFAULT '{}',
  avatar bytea,
  created_at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00'
);
COMMENT ON COLUMN users.email IS 'Login e-mail, case-insensitive';
CREATE TABLE audit_logs (
  id bigserial,
  at timestamptz NOT NULL,
  action text NOT NULL,
  detail jsonb,
  PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE audit_logs_2024 PARTITION OF audit_logs FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE audit_logs_2025 PARTITION OF audit_logs FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE assets (
  id serial PRIMARY KEY,
  owner_id bigint REFERENCES users(id),
  tag text NOT NULL,
  status asset_status NOT NULL DEFAULT 'active',
  price numeric(12,2) CHECK (price >= 0),
  quantity int NOT NULL DEFAULT 1 CHECK (quantity > 0),
  total numeric GENERATED ALWAYS AS (price * quantity) STORED,
  bought_at timestamptz,
  specs jsonb,
  dimensions int[]
);
CREATE INDEX assets_owner_idx ON assets (owner_id);
CREATE INDEX assets_specs_idx ON assets USING gin (specs);
CREATE FUNCTION log_asset_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit_logs (at, action, detail)
  VALUES (coalesce(NEW.bought_at, '2024-06-01 00:00:00+00'), TG_OP, jsonb_build_object('id', NEW.id, 'tag', NEW.tag));
  RETURN NEW;
END $$;
COMMENT ON FUNCTION log_asset_change() IS 'Writes an audit log row per asset change';
CREATE TRIGGER assets_audit AFTER INSERT OR UPDATE ON assets FOR EACH ROW EXECUTE FUNCTION log_asset_change();
CREATE VIEW active_assets AS
  SELECT a.id, a.tag, u.email FROM assets a JOIN users u ON u.id = a.owner_id WHERE a.status = 'active';
CREATE SCHEMA "Sales";
COMMENT ON SCHEMA "Sales" IS 'A mixed-case schema';
CREATE TABLE "Sales"."Orders" (
  "OrderID" serial PRIMARY KEY,
  "Customer" text NOT NULL,
  "Amount" numeric(10,2) CHECK ("Amount" >= 0),
  "PlacedAt" timestamptz NOT NULL DEFAULT '2024-03-01 12:00:00+00',
  "AssetID" int REFERENCES assets(id)
);
CREATE TABLE app_settings (key text PRIMARY KEY, value jsonb NOT NULL, updated_at timestamptz);

INSERT INTO app_settings
  SELECT 'setting.' || g, jsonb_build_object('v', g), timestamptz '2024-02-02 00:00:00+00' + (g || ' hours')::interval
  FROM generate_series(1, 25) g;
INSERT INTO companies (name, founded)
  SELECT 'Company ' || g, date '2000-01-01' + g FROM generate_series(1, 12) g;
INSERT INTO users (company_id, email, name, tags, settings, avatar)
  SELECT 1 + g % 12, 'User' || g || '@Example.com', CASE WHEN g % 7 = 0 THEN NULL ELSE 'Jürgen ' || g END,
         ARRAY['t' || g % 3, 'quote''s', 'comma,x'], jsonb_build_object('theme', 'dark', 'n', g, 'nested', jsonb_build_array(g, 'x')),
         CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text) || '00ff', 'hex') END
  FROM generate_series(1, 300) g;
INSERT INTO assets (owner_id, tag, status, price, quantity, bought_at, specs, dimensions)
  SELECT 1 + g % 300, 'ASSET-' || g, (ARRAY['active', 'retired', 'lost'])[1 + g % 3]::asset_status,
         round((g * 13.37)::numeric, 2), 1 + g % 4,
         timestamptz '2024-01-15 08:00:00+00' + (g || ' days')::interval,
         jsonb_build_object('cpu', 'x' || g % 5, 'ram', g % 64),
         ARRAY[g, g * 2, g % 7]
  FROM generate_series(1, 500) g;
UPDATE assets SET price = price + 1 WHERE id % 50 = 0;
INSERT INTO "Sales"."Orders" ("Customer", "Amount", "AssetID")
  SELECT 'Customer ' || g, g * 1.5, g FROM generate_series(1, 40) g;
DELETE FROM users WHERE id > 295 AND id NOT IN (SELECT owner_id FROM assets WHERE owner_id IS NOT NULL);
SELECT setval('companies_id_seq', 1000);
CREATE MATERIALIZED VIEW asset_totals AS
  SELECT status, count(*) AS n, sum(total) AS value FROM assets GROUP BY status;
COMMENT ON MATERIALIZED VIEW asset_totals IS 'Totals by status';
"#;
