//! The rows of a sample KARS database: deterministic pseudo-random data shaped like the
//! application's, with fake values in every secret-bearing column.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Connection, params};

use super::size::SampleSize;

/// xorshift64*: small, fast, deterministic.
#[derive(Debug)]
pub(super) struct XorShift(u64);

impl XorShift {
    pub(super) fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub(super) fn next(&mut self) -> u64 {
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

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// `len` characters of `alphabet`.
    fn chars(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize] as char)
            .collect()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// A bijection of `u32`: distinct ids give distinct values (unique serial numbers and tokens).
fn scramble(id: i64) -> u32 {
    (id as u32).wrapping_mul(0x9e37_79b1) ^ 0x5bd1_e995
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const BCRYPT: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &[u8] = b"0123456789abcdef";

/// Standard base64 with padding (the images KARS keeps as text).
pub(super) fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let digits = chunk.len() + 1;
        for i in 0..4 {
            if i < digits {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// A time as KARS writes it in SQLite: ISO-8601 with milliseconds, UTC (`2026-12-05T09:30:18.123Z`).
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The data's clock: times within the three years before `now`.
pub(super) struct Clock {
    pub(super) now: DateTime<Utc>,
}

const HISTORY_SECS: u64 = 3 * 365 * 86_400;

impl Clock {
    /// A time between `from_secs_ago` and `to_secs_ago` before now.
    fn between(&self, rng: &mut XorShift, from_secs_ago: u64, to_secs_ago: u64) -> DateTime<Utc> {
        let span = from_secs_ago.saturating_sub(to_secs_ago).max(1);
        let ms = rng.below(span * 1000);
        self.now - Duration::seconds(to_secs_ago as i64) - Duration::milliseconds(ms as i64)
    }

    fn past(&self, rng: &mut XorShift) -> DateTime<Utc> {
        self.between(rng, HISTORY_SECS, 0)
    }
}

/// `(as shown, ASCII for e-mail addresses)`.
const FIRST_NAMES: &[(&str, &str)] = &[
    ("Anna", "anna"),
    ("Ben", "ben"),
    ("Chloé", "chloe"),
    ("Dmitri", "dmitri"),
    ("Émile", "emile"),
    ("Fatima", "fatima"),
    ("Grzegorz", "grzegorz"),
    ("Hana", "hana"),
    ("Íñigo", "inigo"),
    ("Jürgen", "juergen"),
    ("Kenji", "kenji"),
    ("Laura", "laura"),
    ("Mía", "mia"),
    ("Nguyễn", "nguyen"),
    ("Olga", "olga"),
    ("Priya", "priya"),
    ("Quentin", "quentin"),
    ("Renée", "renee"),
    ("Søren", "soeren"),
    ("Tomás", "tomas"),
    ("Uma", "uma"),
    ("Václav", "vaclav"),
    ("Wei", "wei"),
    ("Xóchitl", "xochitl"),
    ("Yusuf", "yusuf"),
    ("Zoë", "zoe"),
];
const LAST_NAMES: &[(&str, &str)] = &[
    ("Müller", "mueller"),
    ("García", "garcia"),
    ("Smith", "smith"),
    ("Østergaard", "oestergaard"),
    ("Kowalski", "kowalski"),
    ("Tanaka", "tanaka"),
    ("Dubois", "dubois"),
    ("Rossi", "rossi"),
    ("Nováková", "novakova"),
    ("O'Brien", "obrien"),
    ("Ibrahim", "ibrahim"),
    ("Jensen", "jensen"),
    ("Silva", "silva"),
    ("Schmidt", "schmidt"),
    ("Wong", "wong"),
    ("Петров", "petrov"),
    ("田中", "tanaka"),
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
/// `(name, display name, makes, models)`.
#[rustfmt::skip]
const ASSET_TYPES: &[(&str, &str, &[&str], &[&str])] = &[
    ("laptop", "Laptop", &["Lenovo", "Dell", "Apple", "HP"], &["ThinkPad T14", "Latitude 5440", "MacBook Pro 14", "EliteBook 840"]),
    ("desktop", "Desktop", &["Dell", "HP", "Apple"], &["OptiPlex 7010", "ProDesk 600", "Mac mini"]),
    ("monitor", "Monitor", &["Dell", "LG", "Samsung"], &["U2723QE", "27UL850", "ViewFinity S8"]),
    ("mobile_phone", "Mobile phone", &["Apple", "Samsung", "Google"], &["iPhone 15", "Galaxy S24", "Pixel 8"]),
    ("tablet", "Tablet", &["Apple", "Samsung"], &["iPad Air", "Galaxy Tab S9"]),
    ("headset", "Headset", &["Jabra", "Poly"], &["Evolve2 65", "Voyager 4320"]),
    ("keyboard_mouse", "Keyboard & mouse", &["Logitech", "Microsoft"], &["MX Keys", "Surface Keyboard"]),
    ("other", "Other", &["Generic"], &["—"]),
];
const STATUSES: &[&str] = &[
    "active", "active", "active", "active", "returned", "lost", "damaged", "retired",
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
    "CREATE", "UPDATE", "UPDATE", "UPDATE", "DELETE", "LOGIN", "EXPORT", "ATTEST",
];
const ENTITIES: &[&str] = &["asset", "asset", "asset", "user", "company", "attestation"];

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

/// A person: shown first and last name, and the ASCII parts of an e-mail address.
struct Person {
    first: &'static str,
    last: &'static str,
    first_ascii: &'static str,
    last_ascii: &'static str,
}

fn person(rng: &mut XorShift) -> Person {
    let (first, first_ascii) = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize];
    let (last, last_ascii) = LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize];
    Person {
        first,
        last,
        first_ascii,
        last_ascii,
    }
}

/// A user as other tables refer to it (assets' owner and manager, the audit log's actor).
struct User {
    first: &'static str,
    last: &'static str,
    email: String,
}

/// The e-mail address of user `id` (unique: the id is part of it).
fn user_email(p: &Person, id: i64, company: i64) -> String {
    format!(
        "{}.{}{id}@company{company}.example",
        p.first_ascii, p.last_ascii
    )
}

/// A fake bcrypt hash (`$2b$10$` and 53 characters), as KARS stores passwords.
fn bcrypt(rng: &mut XorShift) -> String {
    format!("$2b$10${}", rng.chars(BCRYPT, 53))
}

/// The number of rows of the tables that follow from the main four.
pub(super) struct Derived {
    pub(super) campaigns: u64,
    pub(super) records_per_campaign: u64,
    pub(super) passkeys: u64,
    pub(super) reset_tokens: u64,
    pub(super) sync_logs: u64,
}

impl Derived {
    pub(super) fn of(rows: SampleSize) -> Self {
        Derived {
            campaigns: 2 + rows.assets / 20_000,
            records_per_campaign: (rows.users / 3).max(1),
            passkeys: (rows.users / 10).max(1),
            reset_tokens: (rows.users / 20).max(1),
            sync_logs: 20 + rows.assets / 2_000,
        }
    }
}

/// Writes every table's rows.
pub(super) fn insert_all(
    tx: &Connection,
    rng: &mut XorShift,
    clock: &Clock,
    rows: SampleSize,
) -> rusqlite::Result<()> {
    let f = &mut Fill {
        tx,
        rng,
        clock,
        rows,
        derived: Derived::of(rows),
    };
    companies(f)?;
    let people = users(f)?;
    asset_types(tx, clock)?;
    assets(f, &people)?;
    audit_logs(f, &people)?;
    attestations(f)?;
    settings(f.tx, f.rng, clock)?;
    email_templates(tx, clock)?;
    hubspot_sync_log(f)?;
    passkeys(f)?;
    password_reset_tokens(f)?;
    Ok(())
}

/// What every table's generator needs: the transaction, the random numbers, the clock and the
/// sizes.
struct Fill<'a> {
    tx: &'a Connection,
    rng: &'a mut XorShift,
    clock: &'a Clock,
    rows: SampleSize,
    derived: Derived,
}

fn companies(f: &mut Fill) -> rusqlite::Result<()> {
    let (tx, rng, clock, rows) = (f.tx, &mut *f.rng, f.clock, f.rows);
    let mut stmt = tx.prepare(
        "INSERT INTO companies (id, name, description, created_date, hubspot_id, hubspot_synced_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let (words, kinds) = (COMPANY_WORDS.len() as i64, COMPANY_KINDS.len() as i64);
    for id in 1..=rows.companies as i64 {
        // Every combination once, then numbered: names are unique.
        let i = id - 1;
        let mut name = format!(
            "{} {} {}",
            COMPANY_WORDS[(i % words) as usize],
            COMPANY_WORDS[((i / words) % words) as usize],
            COMPANY_KINDS[((i / (words * words)) % kinds) as usize]
        );
        let round = i / (words * words * kinds);
        if round > 0 {
            name.push_str(&format!(" {}", round + 1));
        }
        let description = rng.chance(60).then(|| sentence(rng, 6));
        let synced = rng.chance(40);
        stmt.execute(params![
            id,
            name,
            description,
            iso(clock.between(rng, HISTORY_SECS, HISTORY_SECS * 2 / 3)),
            synced.then(|| format!("{}", 10_000_000 + scramble(id) % 90_000_000)),
            synced.then(|| iso(clock.between(rng, 30 * 86_400, 0))),
        ])?;
    }
    Ok(())
}

fn users(f: &mut Fill) -> rusqlite::Result<Vec<User>> {
    let (tx, rng, clock, rows) = (f.tx, &mut *f.rng, f.clock, f.rows);
    let mut people = Vec::with_capacity(rows.users as usize);
    let mut stmt = tx.prepare(
        "INSERT INTO users (id, email, password_hash, name, role, created_at, last_login, \
         first_name, last_name, manager_name, manager_first_name, manager_last_name, manager_email, \
         profile_image, oidc_sub, mfa_enabled, mfa_secret, mfa_backup_codes, profile_complete) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )?;
    for id in 1..=rows.users as i64 {
        let p = person(rng);
        let company = 1 + rng.below(rows.companies) as i64;
        // The first registered user becomes admin.
        let role = if id == 1 || rng.chance(2) {
            "admin"
        } else if rng.chance(15) {
            "manager"
        } else {
            "employee"
        };
        let sso = rng.chance(10);
        let manager = (rng.chance(70)).then(|| person(rng));
        let manager_company = 1 + rng.below(rows.companies) as i64;
        let mfa = rng.chance(20);
        let backup_codes = mfa.then(|| {
            let codes: Vec<String> = (0..8).map(|_| format!("\"{}\"", bcrypt(rng))).collect();
            format!("[{}]", codes.join(","))
        });
        let image = rng.chance(3).then(|| {
            let len = 600 + rng.below(1800) as usize;
            let bytes = rng.bytes(len);
            format!("data:image/png;base64,{}", base64(&bytes, BASE64, true))
        });
        let created = clock.between(rng, HISTORY_SECS, 86_400);
        let email = user_email(&p, id, company);
        stmt.execute(params![
            id,
            email,
            (!sso).then(|| bcrypt(rng)),
            format!("{} {}", p.first, p.last),
            role,
            iso(created),
            rng.chance(85)
                .then(|| iso(clock.between(rng, 90 * 86_400, 0))),
            p.first,
            p.last,
            manager.as_ref().map(|m| format!("{} {}", m.first, m.last)),
            manager.as_ref().map(|m| m.first),
            manager.as_ref().map(|m| m.last),
            manager.as_ref().map(|m| format!(
                "{}.{}@company{manager_company}.example",
                m.first_ascii, m.last_ascii
            )),
            image,
            sso.then(|| format!("oidc|{:08x}{:08x}", scramble(id), rng.next() as u32)),
            mfa,
            mfa.then(|| rng.chars(BASE32, 32)),
            backup_codes,
            rng.chance(90),
        ])?;
        people.push(User {
            first: p.first,
            last: p.last,
            email,
        });
    }
    Ok(people)
}

fn asset_types(tx: &Connection, clock: &Clock) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(
        "INSERT INTO asset_types (id, name, display_name, description, is_active, sort_order, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?6)",
    )?;
    let created = iso(clock.now - Duration::seconds(HISTORY_SECS as i64));
    for (i, (name, display, makes, _)) in ASSET_TYPES.iter().enumerate() {
        stmt.execute(params![
            i as i64 + 1,
            name,
            display,
            format!("{display} ({})", makes.join(", ")),
            i as i64 * 10,
            created,
        ])?;
    }
    Ok(())
}

/// User `id` (1-based) of `people`.
fn user(people: &[User], id: i64) -> &User {
    &people[(id - 1) as usize]
}

fn assets(f: &mut Fill, people: &[User]) -> rusqlite::Result<()> {
    let (tx, rng, clock, rows) = (f.tx, &mut *f.rng, f.clock, f.rows);
    let mut stmt = tx.prepare(
        "INSERT INTO assets (id, employee_first_name, employee_last_name, employee_email, owner_id, \
         manager_first_name, manager_last_name, manager_email, manager_id, company_id, asset_type, \
         make, model, serial_number, asset_tag, status, issued_date, returned_date, \
         registration_date, last_updated, notes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
         ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    )?;
    for id in 1..=rows.assets as i64 {
        let company = 1 + rng.below(rows.companies) as i64;
        // A registered owner (a user), or an employee who has not registered yet.
        let owner = rng.chance(80).then(|| 1 + rng.below(rows.users) as i64);
        let employee = match owner {
            Some(o) => {
                let u = user(people, o);
                (u.first, u.last, u.email.clone())
            }
            None => {
                let p = person(rng);
                let email = format!(
                    "{}.{}@company{company}.example",
                    p.first_ascii, p.last_ascii
                );
                (p.first, p.last, email)
            }
        };
        let manager_id = rng.chance(60).then(|| 1 + rng.below(rows.users) as i64);
        let manager = manager_id.map(|m| user(people, m));
        let (kind, _, makes, models) = ASSET_TYPES[rng.below(ASSET_TYPES.len() as u64) as usize];
        let make = rng.pick(makes);
        let model = rng.pick(models);
        let status = rng.pick(STATUSES);
        let registered = clock.between(rng, HISTORY_SECS, 86_400);
        let issued = clock.between(rng, HISTORY_SECS, 86_400);
        let returned = (status == "returned").then(|| iso(clock.between(rng, 180 * 86_400, 0)));
        let updated = clock.between(rng, 365 * 86_400, 0);
        let words = rng.below(40);
        let notes = rng.chance(60).then(|| sentence(rng, words));
        stmt.execute(params![
            id,
            employee.0,
            employee.1,
            employee.2,
            owner,
            manager.map(|m| m.first),
            manager.map(|m| m.last),
            manager.map(|m| m.email.as_str()),
            manager_id,
            company,
            kind,
            make,
            model,
            // Unique: `scramble` is a bijection of the id.
            format!(
                "{}{:08X}",
                &make[..make.len().min(2)].to_ascii_uppercase(),
                scramble(id)
            ),
            format!("KARS-{id:06}"),
            status,
            iso(issued)[..10].to_string(),
            returned,
            iso(registered),
            iso(updated),
            notes,
        ])?;
    }
    Ok(())
}

fn audit_logs(f: &mut Fill, people: &[User]) -> rusqlite::Result<()> {
    let (tx, rng, clock, rows) = (f.tx, &mut *f.rng, f.clock, f.rows);
    let mut stmt = tx.prepare(
        "INSERT INTO audit_logs (id, action, entity_type, entity_id, entity_name, details, \
         timestamp, user_email) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let n = rows.audit_logs.max(1);
    // The history in order, and the last twentieth within the six hours before "now" (the
    // newest a minute before it): today's activity, as a running KARS has.
    let recent = (n / 20).max(1);
    let old = n - recent;
    for i in 0..n {
        let id = i as i64 + 1;
        let at = if i < old {
            let secs_ago = HISTORY_SECS - HISTORY_SECS * i / old.max(1);
            clock.now - Duration::seconds(secs_ago as i64 + 6 * 3600)
                + Duration::milliseconds(rng.below(1000) as i64)
        } else {
            let j = i - old;
            let secs_ago = 60 + (6 * 3600 - 60) * (recent - 1 - j) / recent;
            clock.now - Duration::seconds(secs_ago as i64)
                + Duration::milliseconds(rng.below(1000) as i64)
        };
        let action = rng.pick(ACTIONS);
        let entity = rng.pick(ENTITIES);
        let (entity_id, entity_name) = match entity {
            "asset" => {
                let a = 1 + rng.below(rows.assets) as i64;
                (Some(a), Some(format!("KARS-{a:06}")))
            }
            "user" => {
                let u = 1 + rng.below(rows.users) as i64;
                let who = user(people, u);
                (Some(u), Some(format!("{} {}", who.first, who.last)))
            }
            "company" => {
                let c = 1 + rng.below(rows.companies) as i64;
                (Some(c), Some(format!("company #{c}")))
            }
            _ => (None, None),
        };
        let details = rng.chance(85).then(|| {
            format!(
                r#"{{"ip":"10.{}.{}.{}","userAgent":"Mozilla/5.0","changes":"{}"}}"#,
                rng.below(256),
                rng.below(256),
                rng.below(256),
                sentence(rng, 4)
            )
        });
        let actor = user(people, 1 + rng.below(rows.users) as i64);
        stmt.execute(params![
            id,
            action,
            entity,
            entity_id,
            entity_name,
            details,
            iso(at),
            actor.email,
        ])?;
    }
    Ok(())
}

fn attestations(f: &mut Fill) -> rusqlite::Result<()> {
    let (tx, rng, clock, rows, d) = (f.tx, &mut *f.rng, f.clock, f.rows, &f.derived);
    let mut campaign = tx.prepare(
        "INSERT INTO attestation_campaigns (id, name, description, start_date, end_date, status, \
         reminder_days, escalation_days, target_type, target_user_ids, target_company_ids, \
         created_by, created_at, updated_at, unregistered_reminder_days) VALUES (?1, ?2, ?3, ?4, \
         ?5, ?6, 7, 14, ?7, NULL, ?8, 1, ?9, ?9, 7)",
    )?;
    let mut record = tx.prepare(
        "INSERT INTO attestation_records (id, campaign_id, user_id, status, started_at, \
         completed_at, reminder_sent_at, escalation_sent_at, notes, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, ?9)",
    )?;
    let mut attested = tx.prepare(
        "INSERT INTO attestation_assets (id, attestation_record_id, asset_id, attested_status, \
         previous_status, notes, attested_at) VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6)",
    )?;
    let mut new_asset = tx.prepare(
        "INSERT INTO attestation_new_assets (id, attestation_record_id, asset_type, make, model, \
         serial_number, asset_tag, company_id, notes, status, issued_date, returned_date, \
         created_at, employee_first_name, employee_last_name, employee_email, manager_first_name, \
         manager_last_name, manager_email) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, NULL, \
         'active', ?8, NULL, ?9, ?10, ?11, ?12, NULL, NULL, NULL)",
    )?;
    let mut invite = tx.prepare(
        "INSERT INTO attestation_pending_invites (id, campaign_id, employee_email, \
         employee_first_name, employee_last_name, invite_token, invite_sent_at, reminder_sent_at, \
         escalation_sent_at, registered_at, converted_record_id, created_at) VALUES (?1, ?2, ?3, \
         ?4, ?5, ?6, ?7, NULL, NULL, ?8, ?9, ?7)",
    )?;
    let (mut record_id, mut asset_row, mut new_row, mut invite_id) = (0i64, 0i64, 0i64, 0i64);
    let per = d.records_per_campaign.min(rows.users);
    for c in 1..=d.campaigns as i64 {
        let active = c == d.campaigns as i64;
        let start = clock.now
            - Duration::days(30 * (d.campaigns as i64 - c + 1))
            - Duration::hours(rng.below(24) as i64);
        let target_companies = rng.chance(30).then(|| {
            format!(
                "[{},{}]",
                1 + rng.below(rows.companies),
                1 + rng.below(rows.companies)
            )
        });
        campaign.execute(params![
            c,
            format!("Asset attestation {}", start.format("%B %Y")),
            "Please confirm the equipment registered to you.",
            iso(start),
            iso(start + Duration::days(21)),
            if active { "active" } else { "completed" },
            if target_companies.is_some() {
                "companies"
            } else {
                "all"
            },
            target_companies,
            iso(start - Duration::days(1)),
        ])?;
        let first_record = record_id + 1;
        for k in 0..per as i64 {
            record_id += 1;
            // Distinct users within a campaign.
            let user = 1 + (c * 7 + k) % rows.users as i64;
            let done = !active || rng.chance(40);
            let started = start + Duration::hours(1 + rng.below(24 * 14) as i64);
            record.execute(params![
                record_id,
                c,
                user,
                if done { "completed" } else { "pending" },
                done.then(|| iso(started)),
                done.then(|| iso(started + Duration::minutes(3))),
                rng.chance(30).then(|| iso(start + Duration::days(7))),
                rng.chance(5).then(|| sentence(rng, 5)),
                iso(start),
            ])?;
            if done {
                for _ in 0..1 + rng.below(2) {
                    asset_row += 1;
                    attested.execute(params![
                        asset_row,
                        record_id,
                        1 + rng.below(rows.assets) as i64,
                        if rng.chance(95) { "active" } else { "lost" },
                        rng.chance(5).then(|| sentence(rng, 4)),
                        iso(started + Duration::minutes(2)),
                    ])?;
                }
                if rng.chance(5) {
                    new_row += 1;
                    let p = person(rng);
                    let (kind, _, makes, models) =
                        ASSET_TYPES[rng.below(ASSET_TYPES.len() as u64) as usize];
                    new_asset.execute(params![
                        new_row,
                        record_id,
                        kind,
                        rng.pick(makes),
                        rng.pick(models),
                        format!("NEW{:08X}", scramble(new_row + 1_000_000)),
                        1 + rng.below(rows.companies) as i64,
                        iso(started)[..10].to_string(),
                        iso(started + Duration::minutes(2)),
                        p.first,
                        p.last,
                        format!("{}.{}@new.example", p.first_ascii, p.last_ascii),
                    ])?;
                }
            }
        }
        for _ in 0..3 + rng.below(4) {
            invite_id += 1;
            let p = person(rng);
            let registered = rng.chance(40);
            invite.execute(params![
                invite_id,
                c,
                format!(
                    "{}.{}{invite_id}@unregistered.example",
                    p.first_ascii, p.last_ascii
                ),
                p.first,
                p.last,
                // Unique: the scrambled id leads.
                format!("{:08x}{}", scramble(invite_id), rng.chars(HEX, 56)),
                iso(start + Duration::hours(2)),
                registered.then(|| iso(start + Duration::days(2))),
                registered.then(|| first_record + rng.below(per) as i64),
            ])?;
        }
    }
    Ok(())
}

/// The one-row settings tables, every secret a fake.
fn settings(tx: &Connection, rng: &mut XorShift, clock: &Clock) -> rusqlite::Result<()> {
    let updated = iso(clock.between(rng, 200 * 86_400, 86_400));
    let mut logo = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    logo.extend(rng.bytes(45_000));
    let mut favicon = b"\0\0\x01\0\x01\0\x10\x10".to_vec();
    favicon.extend(rng.bytes(1_100));
    tx.execute(
        "INSERT INTO branding_settings (id, logo_data, logo_filename, logo_content_type, site_name, \
         sub_title, favicon_data, favicon_filename, favicon_content_type, primary_color, \
         include_logo_in_emails, app_url, footer_label, updated_at, updated_by) VALUES (1, ?1, \
         'logo.png', 'image/png', 'KARS', 'Asset registration', ?2, 'favicon.ico', \
         'image/x-icon', '#1f6feb', 1, 'https://kars.example.com', 'Example Corp IT', ?3, \
         'admin@company.example')",
        params![
            base64(&logo, BASE64, true),
            base64(&favicon, BASE64, true),
            updated
        ],
    )?;
    tx.execute(
        "INSERT INTO oidc_settings (id, enabled, issuer_url, client_id, client_secret, redirect_uri, \
         scope, role_claim_path, default_role, sso_button_text, sso_button_help_text, \
         sso_button_variant, updated_at, updated_by) VALUES (1, 1, \
         'https://login.example.com/realms/corp', 'kars', ?1, \
         'https://kars.example.com/api/auth/oidc/callback', 'openid email profile', \
         'realm_access.roles', 'employee', 'Sign in with SSO', 'Use your company account', \
         'primary', ?2, 'admin@company.example')",
        params![rng.chars(BASE64URL, 40), updated],
    )?;
    tx.execute(
        "INSERT INTO smtp_settings (id, enabled, host, port, use_tls, username, password_encrypted, \
         auth_method, from_name, from_email, default_recipient, created_at, updated_at) VALUES (1, \
         1, 'smtp.example.com', 587, 1, 'kars@example.com', ?1, 'login', 'KARS', \
         'kars@example.com', 'it@example.com', ?2, ?2)",
        params![
            format!("{}:{}", rng.chars(HEX, 32), rng.chars(HEX, 64)),
            updated
        ],
    )?;
    tx.execute(
        "INSERT INTO hubspot_settings (id, enabled, access_token, auto_sync_enabled, sync_interval, \
         last_sync, last_sync_status, companies_synced, created_at, updated_at) VALUES (1, 1, ?1, \
         1, 'daily', ?2, 'success', 42, ?3, ?3)",
        params![
            format!(
                "pat-eu1-{}-{}-{}-{}-{}",
                rng.chars(HEX, 8),
                rng.chars(HEX, 4),
                rng.chars(HEX, 4),
                rng.chars(HEX, 4),
                rng.chars(HEX, 12)
            ),
            iso(clock.between(rng, 86_400, 0)),
            updated
        ],
    )?;
    tx.execute(
        "INSERT INTO passkey_settings (id, rp_id, rp_name, origin, enabled, updated_at, updated_by) \
         VALUES (1, 'kars.example.com', 'KARS', 'https://kars.example.com', 1, ?1, \
         'admin@company.example')",
        params![updated],
    )?;
    tx.execute(
        "INSERT INTO system_settings (id, trust_proxy, proxy_type, proxy_trust_level, \
         rate_limit_enabled, rate_limit_window_ms, rate_limit_max_requests, updated_at, updated_by) \
         VALUES (1, 1, 'cloudflare', 1, 1, 900000, 100, ?1, 'admin@company.example')",
        params![updated],
    )?;
    Ok(())
}

fn email_templates(tx: &Connection, clock: &Clock) -> rusqlite::Result<()> {
    const TEMPLATES: &[(&str, &str, &str)] = &[
        (
            "attestation_launch",
            "Attestation launch",
            "Action required: confirm your assets",
        ),
        (
            "attestation_reminder",
            "Attestation reminder",
            "Reminder: confirm your assets",
        ),
        (
            "attestation_escalation",
            "Attestation escalation",
            "Overdue attestation of {{employeeName}}",
        ),
        (
            "attestation_complete",
            "Attestation complete",
            "Thank you for confirming your assets",
        ),
        (
            "unregistered_invite",
            "Invitation",
            "You are invited to register your assets",
        ),
        (
            "password_reset",
            "Password reset",
            "Reset your KARS password",
        ),
        ("test_email", "Test e-mail", "KARS e-mail settings work"),
        ("welcome", "Welcome", "Welcome to KARS"),
    ];
    let mut stmt = tx.prepare(
        "INSERT INTO email_templates (id, template_key, name, description, subject, html_body, \
         text_body, variables, is_custom, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, \
         ?7, ?8, ?9, ?10, NULL)",
    )?;
    let updated = iso(clock.now - Duration::days(120));
    for (i, (key, name, subject)) in TEMPLATES.iter().enumerate() {
        let text = format!(
            "Hello {{{{employeeName}}}},\n\n{subject}.\n\nOpen {{{{attestationUrl}}}} to continue.\n\n— {{{{siteName}}}}"
        );
        let html = format!(
            "<!DOCTYPE html><html><body style=\"font-family: sans-serif\"><table width=\"100%\"><tr><td>\
             <img src=\"cid:logo\" alt=\"{{{{siteName}}}}\" height=\"48\"></td></tr><tr><td>\
             <h1>{name}</h1><p>Hello {{{{employeeName}}}},</p><p>{subject}.</p>\
             <p><a href=\"{{{{attestationUrl}}}}\" style=\"background:#1f6feb;color:#fff;padding:8px 16px\">Open KARS</a></p>\
             <p style=\"color:#666\">{{{{footerLabel}}}}</p></td></tr></table></body></html>"
        );
        stmt.execute(params![
            i as i64 + 1,
            key,
            name,
            format!("Sent for: {name}"),
            subject,
            html,
            text,
            r#"["employeeName","attestationUrl","siteName","footerLabel"]"#,
            i == 0,
            updated,
        ])?;
    }
    Ok(())
}

fn hubspot_sync_log(f: &mut Fill) -> rusqlite::Result<()> {
    let (tx, rng, clock, d) = (f.tx, &mut *f.rng, f.clock, &f.derived);
    let mut stmt = tx.prepare(
        "INSERT INTO hubspot_sync_log (id, sync_started_at, sync_completed_at, status, \
         companies_found, companies_created, companies_updated, error_message) VALUES (?1, ?2, ?3, \
         ?4, ?5, ?6, ?7, ?8)",
    )?;
    for id in 1..=d.sync_logs as i64 {
        let started = clock.now - Duration::days(d.sync_logs as i64 - id + 1);
        let failed = rng.chance(5);
        stmt.execute(params![
            id,
            iso(started),
            iso(started + Duration::seconds(5 + rng.below(60) as i64)),
            if failed { "error" } else { "success" },
            40 + rng.below(10) as i64,
            rng.below(3) as i64,
            rng.below(8) as i64,
            failed.then_some("HubSpot API rate limit exceeded (429)"),
        ])?;
    }
    Ok(())
}

fn passkeys(f: &mut Fill) -> rusqlite::Result<()> {
    let (tx, rng, clock, rows, d) = (f.tx, &mut *f.rng, f.clock, f.rows, &f.derived);
    let mut stmt = tx.prepare(
        "INSERT INTO passkeys (id, user_id, name, credential_id, public_key, counter, transports, \
         created_at, last_used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for id in 1..=d.passkeys as i64 {
        let mut credential = scramble(id).to_be_bytes().to_vec();
        credential.extend(rng.bytes(28));
        let mut cose = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20];
        cose.extend(rng.bytes(32));
        cose.extend([0x22, 0x58, 0x20]);
        cose.extend(rng.bytes(32));
        stmt.execute(params![
            id,
            1 + rng.below(rows.users) as i64,
            rng.pick(&["MacBook Touch ID", "YubiKey 5", "iPhone", "Windows Hello"]),
            base64(&credential, BASE64URL, false),
            base64(&cose, BASE64URL, false),
            rng.below(500) as i64,
            r#"["internal","hybrid"]"#,
            iso(clock.between(rng, 365 * 86_400, 30 * 86_400)),
            rng.chance(70)
                .then(|| iso(clock.between(rng, 30 * 86_400, 0))),
        ])?;
    }
    Ok(())
}

fn password_reset_tokens(f: &mut Fill) -> rusqlite::Result<()> {
    let (tx, rng, clock, rows, d) = (f.tx, &mut *f.rng, f.clock, f.rows, &f.derived);
    let mut stmt = tx.prepare(
        "INSERT INTO password_reset_tokens (id, user_id, token, expires_at, used, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for id in 1..=d.reset_tokens as i64 {
        let created = clock.past(rng);
        stmt.execute(params![
            id,
            1 + rng.below(rows.users) as i64,
            format!("{:08x}{}", scramble(id), rng.chars(HEX, 56)),
            iso(created + Duration::hours(1)),
            rng.chance(70),
            iso(created),
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
    fn base64_matches_the_standard() {
        assert_eq!(base64(b"", BASE64, true), "");
        assert_eq!(base64(b"f", BASE64, true), "Zg==");
        assert_eq!(base64(b"fo", BASE64, true), "Zm8=");
        assert_eq!(base64(b"foo", BASE64, true), "Zm9v");
        assert_eq!(base64(b"foob", BASE64, true), "Zm9vYg==");
        assert_eq!(base64(&[0xfb, 0xff], BASE64URL, false), "-_8");
    }

    #[test]
    fn scrambled_ids_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        assert!((1..100_000).all(|id| seen.insert(scramble(id))));
    }
}
