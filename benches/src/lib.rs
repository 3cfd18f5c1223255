//! Benches of the kars-backup pipeline, and the realistic data they run on.
//!
//! - `benches/pipeline.rs` (criterion): the gzip compressor at levels 1 and 6 with 1 and 2
//!   threads, the backup pipeline's compression stage end to end, and the restore side's
//!   decompress-and-hash stage: `cargo bench -p kars-backup-benches -- --quick`.
//! - `sample-db`: writes a realistic SQLite database of a given size
//!   (`cargo run --release -p kars-backup-benches --bin sample-db -- PATH SIZE_MB`).
//! - `gzip-throughput`: compresses a file with the parallel gzip writer and prints MB/s
//!   (`cargo run --release -p kars-backup-benches --bin gzip-throughput -- FILE [LEVEL] [THREADS]
//!   [BLOCK_KIB]`).
//! - `compare_sqlite.sh`: the runbook's `tar czf` procedures against `kars-backup backup`.
//!
//! The data is an asset-management database like the one the runbook backs up: companies,
//! users, assets and an event log, with Zipf-distributed words, hex tokens and JSON payloads, in
//! real SQLite pages with indexes. It compresses about as well as production databases do
//! (roughly 3× with `gzip -6`), unlike repeated or random bytes.
//!
//! ```no_run
//! let bytes = kars_backup_benches::sample_database_bytes(32 << 20).unwrap();
//! assert!(bytes.len() >= 32 << 20);
//! ```

use std::fmt::Write as _;
use std::path::Path;

use rusqlite::{Connection, params};

/// A small, fast, deterministic pseudo-random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A vocabulary whose words are drawn with Zipf frequencies, as words of real text are.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Vocabulary {
    /// `size` made-up words built from syllables, ranked by a Zipf law with exponent 1.2.
    pub fn new(size: usize, rng: &mut Rng) -> Self {
        const SYLLABLES: [&str; 32] = [
            "ka", "ro", "ne", "ti", "sa", "lu", "mer", "an", "ve", "do", "pri", "st", "or", "el",
            "qu", "ba", "ze", "li", "mon", "ta", "re", "us", "ing", "ex", "co", "pa", "ni", "go",
            "hu", "fi", "ra", "tor",
        ];
        let words = (0..size)
            .map(|_| {
                let n = 1 + rng.below(4) as usize;
                (0..n)
                    .map(|_| SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize])
                    .collect::<String>()
            })
            .collect();
        let mut total = 0.0;
        let cumulative = (1..=size)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(1.2);
                total
            })
            .collect();
        Vocabulary { words, cumulative }
    }

    /// One word, frequent words more often.
    pub fn word(&self, rng: &mut Rng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.unit() * total;
        let i = self.cumulative.partition_point(|&c| c < x);
        &self.words[i.min(self.words.len() - 1)]
    }

    /// `n` words separated by spaces.
    pub fn sentence(&self, n: usize, rng: &mut Rng) -> String {
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.word(rng));
        }
        s
    }
}

fn hex_token(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes.div_ceil(8) {
        let _ = write!(s, "{:016x}", rng.next_u64());
    }
    s.truncate(bytes * 2);
    s
}

fn timestamp(rng: &mut Rng) -> String {
    // 2022-01-01 plus up to three years, in seconds.
    let t = 1_640_995_200 + rng.below(3 * 365 * 86_400);
    let (days, secs) = (t / 86_400, t % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Creates the sample database at `path` (a new file), growing it until it holds at least
/// `target_bytes`. The content depends only on `target_bytes`.
///
/// # Errors
/// `AlreadyExists` if `path` exists; any SQLite error.
pub fn create_sample_database(path: &Path, target_bytes: u64) -> std::io::Result<()> {
    if path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists; the sample database must be a new file",
                path.display()
            ),
        ));
    }
    fill(
        &mut Connection::open(path).map_err(std::io::Error::other)?,
        target_bytes,
    )
    .map_err(std::io::Error::other)
}

fn fill(conn: &mut Connection, target_bytes: u64) -> rusqlite::Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;
         CREATE TABLE IF NOT EXISTS companies (
             id INTEGER PRIMARY KEY, name TEXT NOT NULL, domain TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS users (
             id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL, email TEXT NOT NULL,
             name TEXT NOT NULL, created_at TEXT NOT NULL, api_token TEXT NOT NULL, bio TEXT);
         CREATE TABLE IF NOT EXISTS assets (
             id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL, owner_id INTEGER,
             serial TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
             price_cents INTEGER NOT NULL, purchased_at TEXT NOT NULL, description TEXT);
         CREATE TABLE IF NOT EXISTS events (
             id INTEGER PRIMARY KEY, asset_id INTEGER NOT NULL, user_id INTEGER NOT NULL,
             at TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS users_email ON users(email);
         CREATE INDEX IF NOT EXISTS assets_owner ON assets(owner_id);
         CREATE INDEX IF NOT EXISTS events_asset_at ON events(asset_id, at);",
    )?;
    let mut rng = Rng::new(0x6b61_7273);
    let vocab = Vocabulary::new(5_000, &mut rng);
    const KINDS: [&str; 8] = [
        "laptop", "monitor", "phone", "dock", "license", "tablet", "headset", "keyboard",
    ];
    const STATUSES: [&str; 5] = ["in_use", "in_stock", "repair", "retired", "lost"];
    const EVENTS: [&str; 6] = [
        "assigned", "returned", "updated", "audited", "repaired", "moved",
    ];
    let size = |conn: &Connection| -> rusqlite::Result<u64> {
        conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as u64)
    };
    let (mut users, mut assets, mut events) = (0u64, 0u64, 0u64);
    let companies = 200u64;
    {
        let tx = conn.transaction()?;
        for id in 1..=companies {
            tx.execute(
                "INSERT INTO companies VALUES (?1, ?2, ?3)",
                params![
                    id as i64,
                    vocab.sentence(2, &mut rng),
                    format!("{}.example", vocab.word(&mut rng))
                ],
            )?;
        }
        tx.commit()?;
    }
    while size(conn)? < target_bytes {
        let tx = conn.transaction()?;
        {
            let mut add_user =
                tx.prepare_cached("INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
            let mut add_asset = tx
                .prepare_cached("INSERT INTO assets VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?;
            let mut add_event =
                tx.prepare_cached("INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            for _ in 0..1000 {
                users += 1;
                let first = vocab.word(&mut rng).to_owned();
                let last = vocab.word(&mut rng).to_owned();
                let bio_words = 3 + rng.below(25) as usize;
                add_user.execute(params![
                    users as i64,
                    (1 + rng.below(companies)) as i64,
                    format!(
                        "{first}.{last}{}@{}.example",
                        users % 97,
                        vocab.word(&mut rng)
                    ),
                    format!("{first} {last}"),
                    timestamp(&mut rng),
                    hex_token(&mut rng, 32),
                    vocab.sentence(bio_words, &mut rng),
                ])?;
                for _ in 0..3 {
                    assets += 1;
                    let description_words = 8 + rng.below(50) as usize;
                    add_asset.execute(params![
                        assets as i64,
                        (1 + rng.below(companies)) as i64,
                        (1 + rng.below(users)) as i64,
                        hex_token(&mut rng, 6).to_uppercase(),
                        KINDS[rng.below(KINDS.len() as u64) as usize],
                        STATUSES[rng.below(STATUSES.len() as u64) as usize],
                        (5_000 + rng.below(300_000)) as i64,
                        timestamp(&mut rng),
                        vocab.sentence(description_words, &mut rng),
                    ])?;
                }
                for _ in 0..8 {
                    events += 1;
                    let kind = EVENTS[rng.below(EVENTS.len() as u64) as usize];
                    let payload = format!(
                        r#"{{"ip":"10.{}.{}.{}","agent":"kars-web/{}.{}","request_id":"{}","changes":{{"status":"{}","location":"{}"}},"note":"{}"}}"#,
                        rng.below(256),
                        rng.below(256),
                        rng.below(256),
                        1 + rng.below(3),
                        rng.below(20),
                        hex_token(&mut rng, 8),
                        STATUSES[rng.below(STATUSES.len() as u64) as usize],
                        vocab.sentence(2, &mut rng),
                        vocab.sentence(2 + rng.below(12) as usize, &mut rng),
                    );
                    add_event.execute(params![
                        events as i64,
                        (1 + rng.below(assets)) as i64,
                        (1 + rng.below(users)) as i64,
                        timestamp(&mut rng),
                        kind,
                        payload,
                    ])?;
                }
            }
        }
        tx.commit()?;
    }
    Ok(())
}

/// The bytes of a fresh sample database of at least `target_bytes` (built in a temporary
/// directory, which is removed).
///
/// # Errors
/// Any I/O or SQLite error.
pub fn sample_database_bytes(target_bytes: u64) -> std::io::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("assets.db");
    create_sample_database(&path, target_bytes)?;
    std::fs::read(path)
}
