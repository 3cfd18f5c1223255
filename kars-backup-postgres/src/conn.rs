//! [`ConnInfo`]: a parsed `postgres://` URL: redaction, child-process environment, connections
//! with clear errors.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Error, Result, db_message};

/// The database a maintenance connection (create, rename, drop databases) uses.
pub(crate) const MAINTENANCE_DB: &str = "postgres";

/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
pub(crate) const MAX_IDENT: usize = 63;

/// Where and how to connect: a parsed `postgres://user:password@host:port/db?…` URL (or a
/// `key=value` connection string). The password never leaves this type except to the server and,
/// through the environment variable `PGPASSWORD`, to the client programs.
#[derive(Clone)]
pub struct ConnInfo {
    config: Config,
    user: String,
    dbname: String,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("url", &self.redacted())
            .finish()
    }
}

impl ConnInfo {
    /// Parses a URL (`postgres://`, `postgresql://`) or a `key=value` connection string.
    ///
    /// A missing user is `PGUSER`, else the operating-system user; a missing database is the user's
    /// name, as libpq does. A missing password may come from `PGPASSWORD` or `~/.pgpass` for
    /// the client programs.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] with the redacted URL.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        if url.contains("://")
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "not a postgres:// or postgresql:// URL".to_string(),
            ));
        }
        let mut config = Config::from_str(url).map_err(|e| invalid(e.to_string()))?;
        if config.get_hosts().is_empty() {
            let host = std::env::var("PGHOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "/var/run/postgresql".to_string());
            config.host(&host);
        }
        if config.get_ports().is_empty() {
            let port = std::env::var("PGPORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432);
            config.port(port);
        }
        let user = match config.get_user() {
            Some(u) => u.to_string(),
            None => std::env::var("PGUSER")
                .ok()
                .filter(|u| !u.is_empty())
                .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
                .unwrap_or_else(|| "postgres".to_string()),
        };
        config.user(&user);
        if config.get_password().is_none() {
            if let Ok(p) = std::env::var("PGPASSWORD") {
                config.password(p);
            }
        }
        let dbname = config
            .get_dbname()
            .map(str::to_string)
            .or_else(|| std::env::var("PGDATABASE").ok().filter(|d| !d.is_empty()))
            .unwrap_or_else(|| user.clone());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(15));
        }
        if config.get_application_name().is_none() {
            config.application_name("kars-backup");
        }
        config.dbname(&dbname);
        Ok(ConnInfo {
            config,
            user,
            dbname,
        })
    }

    /// The database's name.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> ConnInfo {
        let mut c = self.clone();
        c.config.dbname(dbname);
        c.dbname = dbname.to_string();
        c
    }

    /// `host:port` (the first host), for messages.
    pub fn server(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        if host.contains(':') && !host.starts_with('/') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// The server is on this machine: a Unix socket, `localhost` or a loopback address.
    pub(crate) fn is_local(&self) -> bool {
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => {
                h == "localhost"
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            Some(Host::Unix(_)) => true,
            None => true,
        }
    }

    /// The URL without its password: `postgres://user@host:port/db`.
    pub fn redacted(&self) -> String {
        let host = self.server();
        let host = if host.starts_with('/') {
            host.replace('/', "%2F")
        } else {
            host
        };
        format!(
            "postgres://{}@{}/{}",
            encode(&self.user),
            host,
            encode(&self.dbname)
        )
    }

    /// Environment variables that make libpq programs connect like this URL. `PGPASSWORD` holds the
    /// password (never the command line).
    pub(crate) fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        env.push(("PGHOST", hosts.join(",")));
        let ports: Vec<String> = self.config.get_ports().iter().map(u16::to_string).collect();
        env.push(("PGPORT", ports.join(",")));
        env.push(("PGUSER", self.user.clone()));
        env.push(("PGDATABASE", self.dbname.clone()));
        if let Some(p) = self.config.get_password() {
            env.push(("PGPASSWORD", String::from_utf8_lossy(p).into_owned()));
        }
        let ssl = match self.config.get_ssl_mode() {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            _ => "prefer",
        };
        env.push(("PGSSLMODE", ssl.to_string()));
        if let Some(t) = self.config.get_connect_timeout() {
            env.push(("PGCONNECT_TIMEOUT", t.as_secs().max(2).to_string()));
        }
        env.push(("PGAPPNAME", "kars-backup".to_string()));
        env
    }

    /// Connects, spawning the connection's task; errors say what to check.
    ///
    /// # Errors
    /// [`Error::Connect`] or [`Error::NoSuchDatabase`].
    pub async fn connect(&self) -> Result<Client> {
        if self.config.get_ssl_mode() == SslMode::Require {
            return Err(Error::Connect {
                target: self.redacted(),
                reason: "sslmode=require is not supported by kars-backup's metadata connection yet; connect without it (e.g. over a private network or an SSH tunnel)".into(),
            });
        }
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| self.connect_error(&e))?;
        let target = self.redacted();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(target = %target, error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> Error {
        use tokio_postgres::error::SqlState;
        if let Some(db) = e.as_db_error() {
            if *db.code() == SqlState::INVALID_CATALOG_NAME {
                return Error::NoSuchDatabase {
                    database: self.dbname.clone(),
                    server: self.server(),
                };
            }
            if *db.code() == SqlState::INVALID_PASSWORD
                || *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return Error::Connect {
                    target: self.redacted(),
                    reason: format!(
                        "{}; check the user and password (in the URL, or PGPASSWORD)",
                        db.message()
                    ),
                };
            }
        }
        let message = db_message(e);
        let hint = if message.contains("lookup")
            || message.contains("resolve")
            || message.contains("Name or service not known")
        {
            "; the host name does not resolve: check the host in the URL"
        } else if message.contains("refused") {
            "; nothing listens there: check host and port, and that the server runs"
        } else if message.contains("timed out") || message.contains("timeout") {
            "; the server did not answer in time: check host, port and firewalls"
        } else if message.contains("password missing") {
            "; give the password in the URL or in PGPASSWORD"
        } else {
            ""
        };
        Error::Connect {
            target: self.redacted(),
            reason: format!("{message}{hint}"),
        }
    }
}

/// Percent-encodes the characters that would break a URL's user or path part.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL or connection string with any password replaced by `***`: the `user:password@` part,
/// and `password=` in a query or a `key=value` string.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map(|i| rest_start + i)
            .unwrap_or(out.len());
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                let end = rest_start + at;
                out.replace_range(start..end, "***");
            }
        }
    }
    // password=... in a query string or a key=value connection string.
    let lower = out.to_ascii_lowercase();
    if let Some(pos) = lower.find("password=") {
        let start = pos + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map(|i| start + i)
            .unwrap_or(out.len());
        out.replace_range(start..end, "***");
    }
    out
}

/// Quotes an SQL identifier (`"Sales"`, `users`).
pub(crate) fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Quotes an SQL string literal.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db?sslmode=disable"),
            "postgres://u:***@h/db?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://h/db?password=x&user=u"),
            "postgres://h/db?password=***&user=u"
        );
        assert_eq!(
            redact_url("host=h password=x dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn urls_parse_and_describe_without_password() {
        let c = ConnInfo::parse("postgres://kars:secret@127.0.0.1:5433/assets").unwrap();
        assert_eq!(c.dbname(), "assets");
        assert_eq!(c.user(), "kars");
        assert_eq!(c.redacted(), "postgres://kars@127.0.0.1:5433/assets");
        assert!(!format!("{c:?}").contains("secret"));
        let env = c.child_env();
        assert!(env.contains(&("PGPASSWORD", "secret".to_string())));
        assert!(env.contains(&("PGDATABASE", "assets".to_string())));
        let other = c.with_dbname("x y");
        assert_eq!(other.redacted(), "postgres://kars@127.0.0.1:5433/x%20y");
        let s = ConnInfo::parse("postgres://kars@%2Ftmp%2Fsock:5432/db").unwrap();
        assert_eq!(s.server(), "/tmp/sock:5432");
        assert!(ConnInfo::parse("mysql://x/y").is_err());
        let err = ConnInfo::parse("postgres://u:pw@h:notaport/db").unwrap_err();
        assert!(!err.to_string().contains("pw@"), "{err}");
    }

    #[test]
    fn local_servers_are_recognised() {
        let local = |url: &str| ConnInfo::parse(url).unwrap().is_local();
        assert!(local("postgres://u@127.0.0.1:5432/db"));
        assert!(local("postgres://u@localhost/db"));
        assert!(local("postgres://u@[::1]:5432/db"));
        assert!(local("postgres://u@%2Ftmp%2Fsock/db"));
        assert!(!local("postgres://u@db.example.com/db"));
        assert!(!local("postgres://u@10.1.2.3/db"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("users"), "users");
        assert_eq!(quote_ident("Sales"), "\"Sales\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
