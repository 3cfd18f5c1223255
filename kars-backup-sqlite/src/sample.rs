//! A sample KARS database for tests, examples and benchmarks.
//!
//! The schema is KARS's shape: `companies`, `users` (→ company), `assets` (→ company, owner;
//! with a BLOB photo, NULLable columns and Unicode text) and `audit_logs` (JSON details), an index
//! per foreign key, the view `active_assets`, and the trigger `assets_audit_update` that writes
//! an audit log row when an asset changes. The data is pseudo-random but deterministic: the same
//! [`SampleSize`] always gives the same rows.

use std::path::Path;

use chrono::DateTime;
use rusqlite::{Connection, params};

use crate::error::{Error, Result};

/// How many rows of each table a sample database gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleSize {
    /// Rows of `companies`.
    pub companies: u64,
    /// Rows of `users`.
    pub users: u64,
    /// Rows of `assets`.
    pub assets: u64,
    /// Rows of `audit_logs`.
    pub audit_logs: u64,
}

/// Approximate bytes an asset with its share of users, companies and audit logs takes on disk.
const BYTES_PER_ASSET: u64 = 890;

impl SampleSize {
    /// A small database of about 1 MB.
    pub fn demo() -> Self {
        Self::for_bytes(1_000_000)
    }

    /// A database of roughly `bytes` bytes (within about 20%), for benchmarks.
    pub fn for_bytes(bytes: u64) -> Self {
        let assets = (bytes / BYTES_PER_ASSET).max(10);
        SampleSize {
            companies: (assets / 400).max(2),
            users: (assets / 15).max(5),
            assets,
            audit_logs: assets * 2,
        }
    }

    /// All rows together.
    pub fn total_rows(&self) -> u64 {
        self.companies + self.users + self.assets + self.audit_logs
    }
}

/// The KARS schema.
pub const SCHEMA: &str = r#"
CREATE TABLE companies (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    country     TEXT NOT NULL,
    city        TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    company_id    INTEGER NOT NULL REFERENCES companies(id),
    email         TEXT NOT NULL UNIQUE,
    full_name     TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'manager', 'employee', 'auditor')),
    phone         TEXT,
    created_at    TEXT NOT NULL,
    last_login_at TEXT
);
CREATE TABLE assets (
    id             INTEGER PRIMARY KEY,
    company_id     INTEGER NOT NULL REFERENCES companies(id),
    owner_id       INTEGER REFERENCES users(id),
    asset_tag      TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    category       TEXT NOT NULL,
    manufacturer   TEXT,
    serial_number  TEXT,
    status         TEXT NOT NULL DEFAULT 'active',
    purchase_price REAL,
    purchased_on   TEXT,
    location       TEXT,
    notes          TEXT,
    photo          BLOB,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE TABLE audit_logs (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER REFERENCES users(id),
    action      TEXT NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   INTEGER,
    created_at  TEXT NOT NULL,
    details     TEXT
);
CREATE INDEX idx_users_company ON users(company_id);
CREATE INDEX idx_assets_company ON assets(company_id);
CREATE INDEX idx_assets_owner ON assets(owner_id);
CREATE INDEX idx_audit_logs_user ON audit_logs(user_id);
CREATE VIEW active_assets AS
    SELECT a.id, a.asset_tag, a.name, a.category, c.name AS company, u.full_name AS owner
    FROM assets a
    JOIN companies c ON c.id = a.company_id
    LEFT JOIN users u ON u.id = a.owner_id
    WHERE a.status = 'active';
CREATE TRIGGER assets_audit_update AFTER UPDATE ON assets
BEGIN
    INSERT INTO audit_logs (user_id, action, entity, entity_id, created_at, details)
    VALUES (NEW.owner_id, 'update', 'asset', NEW.id, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),
            json_object('old_status', OLD.status, 'new_status', NEW.status));
END;
"#;

/// Creates a new KARS database at `path` with `rows` rows, in WAL mode.
///
/// Everything is written in one transaction with prepared statements (`synchronous=OFF` while it
/// runs), so a 300 MB database takes seconds.
///
/// # Errors
/// [`Error::Io`] when `path` exists already (it is never overwritten), [`Error::Sqlite`] otherwise.
pub fn create_kars_database(path: &Path, rows: SampleSize) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::io(
            "create sample database",
            path,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the file exists already"),
        ));
    }
    let sql = |e| Error::sqlite("create sample database", path, e);
    let mut conn = Connection::open(path).map_err(sql)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA foreign_keys = ON;",
    )
    .map_err(sql)?;
    let tx = conn.transaction().map_err(sql)?;
    tx.execute_batch(SCHEMA).map_err(sql)?;
    let mut rng = XorShift::new(0x4b41_5253);
    insert_companies(&tx, &mut rng, rows).map_err(sql)?;
    insert_users(&tx, &mut rng, rows).map_err(sql)?;
    insert_assets(&tx, &mut rng, rows).map_err(sql)?;
    insert_audit_logs(&tx, &mut rng, rows).map_err(sql)?;
    tx.commit().map_err(sql)?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(sql)?;
    conn.close().map_err(|(_, e)| sql(e))
}

/// xorshift64*: small, fast, deterministic.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A time between 2019 and 2025 as ISO-8601 text.
    fn timestamp(&mut self) -> String {
        let secs = 1_546_300_800 + self.below(6 * 365 * 86_400) as i64;
        DateTime::from_timestamp(secs, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    }
}

const FIRST_NAMES: &[&str] = &[
    "Anna",
    "Ben",
    "Chloé",
    "Dmitri",
    "Émile",
    "Fatima",
    "Grzegorz",
    "Hana",
    "Íñigo",
    "Jürgen",
    "Kenji",
    "Laura",
    "Mía",
    "Nguyễn",
    "Olga",
    "Priya",
    "Quentin",
    "Renée",
    "Søren",
    "Tomás",
    "Uma",
    "Václav",
    "Wei",
    "Xóchitl",
    "Yusuf",
    "Zoë",
    "李",
    "Ольга",
];
const LAST_NAMES: &[&str] = &[
    "Müller",
    "García",
    "Smith",
    "Østergaard",
    "Kowalski",
    "Tanaka",
    "Dubois",
    "Rossi",
    "Nováková",
    "O'Brien",
    "Ibrahim",
    "Jensen",
    "Silva",
    "Schmidt",
    "Wong",
    "Петров",
    "田中",
];
const COUNTRIES: &[&str] = &["DE", "FR", "NL", "PL", "ES", "JP", "US", "BR", "NO", "CZ"];
const CITIES: &[&str] = &[
    "Berlin",
    "Zürich",
    "Kraków",
    "São Paulo",
    "Malmö",
    "東京",
    "Lyon",
    "Utrecht",
    "Bergen",
];
const COMPANY_WORDS: &[&str] = &[
    "Acme", "Nordic", "Atlas", "Helios", "Quantum", "Blue", "River", "Summit", "Kraft", "Lumen",
];
const COMPANY_KINDS: &[&str] = &[
    "GmbH",
    "Ltd",
    "S.A.",
    "B.V.",
    "AS",
    "K.K.",
    "Inc.",
    "sp. z o.o.",
];
const ROLES: &[&str] = &[
    "admin", "manager", "employee", "employee", "employee", "auditor",
];
const CATEGORIES: &[&str] = &[
    "laptop",
    "monitor",
    "phone",
    "vehicle",
    "furniture",
    "server",
    "printer",
    "tablet",
];
const MANUFACTURERS: &[&str] = &[
    "Lenovo", "Dell", "Apple", "HP", "Samsung", "Bosch", "Volvo", "IKEA", "Brother",
];
const STATUSES: &[&str] = &["active", "active", "active", "in_repair", "retired", "lost"];
const LOCATIONS: &[&str] = &[
    "HQ floor 1",
    "HQ floor 2",
    "Warehouse Süd",
    "Remote",
    "Branch office Østre",
    "Lab 3",
];
const WORDS: &[&str] = &[
    "battery",
    "replaced",
    "screen",
    "warranty",
    "until",
    "checked",
    "by",
    "IT",
    "the",
    "device",
    "was",
    "returned",
    "after",
    "repair",
    "keyboard",
    "missing",
    "key",
    "charger",
    "included",
    "scratch",
    "on",
    "lid",
    "assigned",
    "to",
    "new",
    "employee",
    "inventory",
    "audit",
    "passed",
    "ok",
    "naïve",
    "café",
    "résumé",
    "größe",
    "überprüft",
];
const ACTIONS: &[&str] = &[
    "create", "update", "assign", "return", "login", "export", "delete",
];
const ENTITIES: &[&str] = &["asset", "user", "company", "report"];

fn sentence(rng: &mut XorShift, words: u64) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s
}

fn person(rng: &mut XorShift) -> String {
    format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES))
}

fn insert_companies(tx: &Connection, rng: &mut XorShift, rows: SampleSize) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(
        "INSERT INTO companies (id, name, country, city, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for id in 1..=rows.companies as i64 {
        let name = format!(
            "{} {} {}",
            rng.pick(COMPANY_WORDS),
            rng.pick(COMPANY_WORDS),
            rng.pick(COMPANY_KINDS)
        );
        let city = rng.chance(80).then(|| rng.pick(CITIES));
        stmt.execute(params![
            id,
            name,
            rng.pick(COUNTRIES),
            city,
            rng.timestamp()
        ])?;
    }
    Ok(())
}

fn insert_users(tx: &Connection, rng: &mut XorShift, rows: SampleSize) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(
        "INSERT INTO users (id, company_id, email, full_name, role, phone, created_at, last_login_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for id in 1..=rows.users as i64 {
        let company = 1 + rng.below(rows.companies) as i64;
        let email = format!("user{id}@company{company}.example");
        let phone = rng
            .chance(60)
            .then(|| format!("+49 {:03} {:07}", rng.below(1000), rng.below(10_000_000)));
        let last_login = rng.chance(85).then(|| rng.timestamp());
        stmt.execute(params![
            id,
            company,
            email,
            person(rng),
            rng.pick(ROLES),
            phone,
            rng.timestamp(),
            last_login
        ])?;
    }
    Ok(())
}

fn insert_assets(tx: &Connection, rng: &mut XorShift, rows: SampleSize) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(
        "INSERT INTO assets (id, company_id, owner_id, asset_tag, name, category, manufacturer, \
         serial_number, status, purchase_price, purchased_on, location, notes, photo, created_at, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    for id in 1..=rows.assets as i64 {
        let company = 1 + rng.below(rows.companies) as i64;
        let owner = rng.chance(75).then(|| 1 + rng.below(rows.users) as i64);
        let category = rng.pick(CATEGORIES);
        let manufacturer = rng.chance(90).then(|| rng.pick(MANUFACTURERS));
        let name = format!(
            "{} {} {}",
            manufacturer.unwrap_or("Generic"),
            category,
            rng.below(900) + 100
        );
        let serial = rng
            .chance(70)
            .then(|| format!("SN-{:012X}", rng.next() >> 16));
        let price = rng.chance(80).then(|| (rng.below(500_000) as f64) / 100.0);
        let purchased = rng.chance(80).then(|| rng.timestamp()[..10].to_string());
        let words = rng.below(60);
        let notes = rng.chance(70).then(|| sentence(rng, words));
        let photo = rng.chance(20).then(|| photo(rng));
        let created = rng.timestamp();
        stmt.execute(params![
            id,
            company,
            owner,
            format!("KARS-{id:08}"),
            name,
            category,
            manufacturer,
            serial,
            rng.pick(STATUSES),
            price,
            purchased,
            rng.pick(LOCATIONS),
            notes,
            photo,
            created,
            created
        ])?;
    }
    Ok(())
}

/// A small "thumbnail": a header, some structure, and incompressible noise.
fn photo(rng: &mut XorShift) -> Vec<u8> {
    let len = 256 + rng.below(1536) as usize;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn insert_audit_logs(
    tx: &Connection,
    rng: &mut XorShift,
    rows: SampleSize,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(
        "INSERT INTO audit_logs (id, user_id, action, entity, entity_id, created_at, details) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for id in 1..=rows.audit_logs as i64 {
        let user = rng.chance(95).then(|| 1 + rng.below(rows.users) as i64);
        let action = rng.pick(ACTIONS);
        let entity = rng.pick(ENTITIES);
        let entity_id = 1 + rng.below(rows.assets) as i64;
        let details = rng.chance(90).then(|| {
            format!(
                r#"{{"ip":"10.{}.{}.{}","agent":"Mozilla/5.0","note":"{}"}}"#,
                rng.below(256),
                rng.below(256),
                rng.below(256),
                sentence(rng, 4)
            )
        });
        stmt.execute(params![
            id,
            user,
            action,
            entity,
            entity_id,
            rng.timestamp(),
            details
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        assert_eq!(
            (0..10).map(|_| a.next()).collect::<Vec<_>>(),
            (0..10).map(|_| b.next()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn sizes_scale() {
        let small = SampleSize::demo();
        let big = SampleSize::for_bytes(300_000_000);
        assert!(big.assets > 100 * small.assets);
        assert!(small.companies >= 2 && small.users >= 5);
    }
}
