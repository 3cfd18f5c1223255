//! PostgreSQL restores through the real binary on a real server: killed (SIGKILL) at random
//! points they leave the old or the new database under the live name, never none, and the next
//! restore drops the staging database they left; `--live` is refused in safe mode (exit 2).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kars_backup::postgres::testing::TestCluster;
use rand::Rng;

mod common;
use common::restore::*;
use common::*;

/// A rich database with a bulk table (so that loading takes a while) and a marker.
fn sample_database(prefix: &str) -> Option<(&'static TestCluster, String)> {
    let (pg, db) = rich_pg_database(prefix)?;
    pg.psql(
        &db,
        "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 200000) g;
         ALTER TABLE bulk ADD PRIMARY KEY (id);
         CREATE TABLE kars_marker (label text NOT NULL);
         INSERT INTO kars_marker VALUES ('new');",
    );
    Some((pg, db))
}

/// A database of the test server, backed up to a local destination; dropped (with the copies
/// restores made of it) at the end.
struct BackedUp {
    pg: &'static TestCluster,
    db: String,
    url: String,
    dir: tempfile::TempDir,
    store: PathBuf,
}

impl BackedUp {
    fn new(pg: &'static TestCluster, db: String) -> BackedUp {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let url = pg.url(&db);
        ok_pg(run(&["backup", "--db", &url, "--to", &s(&store)]));
        BackedUp {
            pg,
            db,
            url,
            dir,
            store,
        }
    }

    /// `restore --latest --yes` of the backup over the database.
    fn restore(&self) -> Command {
        let mut c = bin();
        c.env("TMPDIR", self.dir.path()).args([
            "restore",
            "--db",
            &self.url,
            "--from",
            &s(&self.store),
            "--latest",
            "--yes",
        ]);
        c
    }

    /// The staging databases restores made (`<db>_kars_staging_<time>`).
    fn staging_databases(&self) -> Vec<String> {
        self.pg
            .databases_like(&self.db)
            .into_iter()
            .filter(|d| d.contains("_kars_staging_"))
            .collect()
    }
}

impl Drop for BackedUp {
    fn drop(&mut self) {
        for d in self.pg.databases_like(&self.db) {
            self.pg.drop_database(&d);
        }
    }
}

#[test]
fn sigkill_at_random_points_leaves_the_old_or_the_new_database_and_the_next_restore_drops_the_staging_one()
 {
    let Some((pg, db)) = sample_database("sig_kill") else {
        return;
    };
    let mut rng = seeded_rng("postgres_sigkill");
    let started = Instant::now();
    let new = pg.content_hashes(&db);
    let sample = BackedUp::new(pg, db.clone());
    let make_old = "UPDATE kars_marker SET label = 'old'; DELETE FROM bulk WHERE id % 7 = 0;";
    pg.psql(&db, make_old);
    let old = pg.content_hashes(&db);
    assert_ne!(old, new);
    let which = |hashes: &BTreeMap<String, String>| {
        if *hashes == old {
            "old"
        } else if *hashes == new {
            "new"
        } else {
            panic!("{db} holds neither the old nor the new database: {hashes:?}")
        }
    };
    let restore = || {
        let mut c = sample.restore();
        c.arg("-v");
        c
    };

    // One restore to its end (-v) gives the moments its phases begin.
    let events = [
        "staging database created; loading",
        "staging copy verified",
        "restored database swapped in",
    ];
    pg.psql(&db, make_old);
    let mut w = Watched::spawn(restore());
    let mut at = vec![w.spawned];
    for needle in events {
        at.push(
            w.wait_for(Duration::from_secs(120), &|w| w.line_seen(needle))
                .unwrap_or_else(|| panic!("the restore ended before {needle:?}")),
        );
    }
    let f = w.finish(Duration::from_secs(120));
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    at.push(at[0] + f.elapsed);
    assert_eq!(which(&pg.content_hashes(&db)), "new");
    // (name, index in `at` of its first event): start-up, loading and verification (most of
    // the time), the swap (the renames, in one transaction), after the swap.
    let phases = [
        ("start-up", 0),
        ("loading and verification", 1),
        ("loading and verification", 1),
        ("the swap", 2),
        ("the swap", 2),
        ("after the swap", 3),
    ];
    println!(
        "calibration: {:?}",
        at.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    );

    let mut states = BTreeMap::<String, usize>::new();
    for (n, (phase, i)) in phases.iter().enumerate() {
        pg.psql(&db, make_old);
        let offset = (at[i + 1] - at[*i]).mul_f64(rng.gen_range(0.0..=1.0));
        let mut w = Watched::spawn(restore());
        let from = match i {
            0 => Some(w.spawned),
            _ => w.wait_for(Duration::from_secs(120), &|w| w.line_seen(events[i - 1])),
        }
        .unwrap_or_else(|| panic!("trial {n}: the restore ended before {phase}"));
        std::thread::sleep((from + offset).saturating_duration_since(Instant::now()));
        let at = offset;
        w.signal(Signal::KILL);
        let f = w.finish(Duration::from_secs(120));
        assert!(
            pg.database_exists(&db),
            "trial {n}: no database under the live name"
        );
        let live = which(&pg.content_hashes(&db));
        let staging = sample.staging_databases();
        let label = format!(
            "trial {n}: SIGKILL at +{at:?} into {phase} -> {}, {} staging database(s), the {live} database under the live name",
            describe(f.status),
            staging.len()
        );
        println!("{label}");
        match f.status.code() {
            None => {}
            Some(0) => assert_eq!(live, "new", "{label}"),
            Some(_) => panic!("{label}\n{}", f.stderr),
        }

        let o = ok_pg(restore().arg("--json").output().unwrap());
        let reported = json(&o)["restore"]["leftovers_removed"].clone();
        let reported: Vec<&str> = reported
            .as_array()
            .map(|a| a.iter().map(|l| l.as_str().unwrap()).collect())
            .unwrap_or_default();
        for name in &staging {
            assert!(
                reported
                    .iter()
                    .any(|l| l.contains(name.as_str()) && l.contains("dropped")),
                "{name} not reported as dropped: {label}\n{}",
                text(&o)
            );
        }
        assert_eq!(reported.len(), staging.len(), "{label}\n{}", text(&o));
        assert_eq!(sample.staging_databases(), [] as [String; 0], "{label}");
        assert_eq!(which(&pg.content_hashes(&db)), "new", "{label}");
        *states
            .entry(format!("{live}, {} staging", staging.len()))
            .or_default() += 1;
    }
    println!(
        "{} trials in {:?}: {states:?}",
        phases.len(),
        started.elapsed()
    );
}

#[test]
fn live_is_a_usage_error_in_safe_mode() {
    let Some((pg, db)) = rich_pg_database("sig_live") else {
        return;
    };
    let sample = BackedUp::new(pg, db.clone());
    let before = pg.content_hashes(&db);
    let o = no_leak(sample.restore().arg("--live").output().unwrap());
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        stderr(&o).contains("--live restores PostgreSQL in place")
            && stderr(&o).contains("--mode in-place"),
        "{}",
        text(&o)
    );
    assert_eq!(pg.content_hashes(&db), before);
    assert_eq!(sample.staging_databases(), [] as [String; 0]);
}
