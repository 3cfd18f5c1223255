//! Restores of a SQLite database interrupted at random points, through the real binary, with
//! stop, start and health-check hooks that sleep a little and log what they do:
//! - SIGINT/SIGTERM in any phase roll back exactly as a failure does: the old database stays (or
//!   comes back), no staging is left, the application is started again if it was stopped, no hook
//!   is left running, and the exit code is 130/143 (0 when the restore had finished);
//! - SIGKILL at any point leaves the old or the new database at the live path, complete, never
//!   none and never a mix, and the next restore reports and removes what the killed one left.
//!
//! Each trial picks a phase in turn and a random moment inside it (measured from the log line or
//! the staging directory that begins it, within the phase's length in a first, uninterrupted
//! restore); the seed is printed and `KARS_TEST_SEED` repeats a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

mod common;
use common::restore::*;
use common::*;

/// The size of the sample database: large enough that staging and verification take a while.
const SIZE_MB: u64 = 20;

/// Trials per phase (7 phases for the interruptions, 9 for the kills).
const ROUNDS: usize = 3;

/// How long one restore may take before a trial counts as hung.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// The sample's restore into `trial` with `-v` and hooks that sleep a little and log
/// `stop`/`stopped`, `start`/`started` and `health`.
fn with_hooks(sample: &Sample, trial: &Trial) -> std::process::Command {
    let log = s(&trial.hooks_log);
    let mut c = sample.restore(trial);
    c.args([
        "-v",
        "--stop-cmd",
        &format!("echo stop >> '{log}'; sleep 0.2; echo stopped >> '{log}'"),
        "--start-cmd",
        &format!("echo start >> '{log}'; sleep 0.2; echo started >> '{log}'"),
        "--health-cmd",
        &format!("sleep 0.1; echo health >> '{log}'"),
    ]);
    c
}

/// What marks a moment of a restore with hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Spawned,
    /// Its staging directory appeared.
    Staging,
    /// A line of its log (`-v`).
    Line(&'static str),
    /// The hooks logged this line for the n-th time.
    Hooked(&'static str, usize),
    /// The swap's journal appeared in the staging directory.
    Journal,
    Exit,
}

const EXTRACTED: Event = Event::Line("archive extracted");
const VERIFIED: Event = Event::Line("staging copy verified");
const STOP: Event = Event::Line("running hook hook=stop");
const STOPPED: Event = Event::Hooked("stopped", 1);
const JOURNAL: Event = Event::Journal;
const SWAPPED: Event = Event::Line("staging copy swapped in");
const START: Event = Event::Line("running hook hook=start");
const HEALTH: Event = Event::Line("running hook hook=health-check");
const HEALTHY: Event = Event::Line("the application is healthy");

/// The events of an uninterrupted restore, in order.
const EVENTS: [Event; 12] = [
    Event::Spawned,
    Event::Staging,
    EXTRACTED,
    VERIFIED,
    STOP,
    STOPPED,
    JOURNAL,
    SWAPPED,
    START,
    HEALTH,
    HEALTHY,
    Event::Exit,
];

/// A stretch of a restore, from the event that begins it to the one that ends it; a trial
/// strikes at a random moment of it (as long as it took in an uninterrupted restore).
#[derive(Debug, Clone, Copy)]
struct Phase {
    name: &'static str,
    from: Event,
    to: Event,
}

const fn phase(name: &'static str, from: Event, to: Event) -> Phase {
    Phase { name, from, to }
}

/// Every phase of a restore with hooks.
const PHASES: [Phase; 7] = [
    phase("start-up", Event::Spawned, Event::Staging),
    phase("download and staging", Event::Staging, EXTRACTED),
    phase("verification", EXTRACTED, VERIFIED),
    phase("stop hook and swap", STOP, SWAPPED),
    phase("start hook", START, HEALTH),
    phase("health check", HEALTH, HEALTHY),
    phase("after the health check", HEALTHY, Event::Exit),
];

/// The time of `event` in a running restore, if it has come.
fn seen(w: &Watched, event: Event, trial: &Trial) -> Option<Instant> {
    match event {
        Event::Spawned => Some(w.spawned),
        Event::Staging => (!staging_dirs(&trial.dir).is_empty()).then(Instant::now),
        Event::Line(needle) => w.line_seen(needle),
        Event::Hooked(line, n) => {
            let events = trial.hook_events();
            (events.iter().filter(|e| *e == line).count() >= n).then(Instant::now)
        }
        Event::Journal => staging_dirs(&trial.dir)
            .iter()
            .any(|d| d.join(".kars-restore-journal").exists())
            .then(Instant::now),
        Event::Exit => None,
    }
}

/// The time of each event of one restore run to its end (which must succeed).
fn calibrate(sample: &Sample) -> BTreeMap<Event, Instant> {
    let trial = sample.trial("calibration");
    let mut w = Watched::spawn(with_hooks(sample, &trial));
    let mut at = BTreeMap::new();
    for event in &EVENTS[..EVENTS.len() - 1] {
        let t = w
            .wait_for(RESTORE_TIMEOUT, &|w| seen(w, *event, &trial))
            .unwrap_or_else(|| panic!("the restore ended before {event:?}"));
        at.insert(*event, t);
    }
    let f = w.finish(RESTORE_TIMEOUT);
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    at.insert(Event::Exit, Instant::now());
    assert_eq!(sample.which(&trial.db), "new");
    let lengths: Vec<String> = KILL_PHASES
        .iter()
        .filter(|p| p.name != "the rollback")
        .map(|p| format!("{} {:?}", p.name, at[&p.to].duration_since(at[&p.from])))
        .collect();
    println!(
        "calibration: {:?} in all; {}",
        f.elapsed,
        lengths.join(", ")
    );
    at
}

/// A random moment of `phase`, as the time after its first event.
fn moment(rng: &mut StdRng, calibration: &BTreeMap<Event, Instant>, phase: &Phase) -> Duration {
    let length = calibration[&phase.to].duration_since(calibration[&phase.from]);
    length.mul_f64(rng.gen_range(0.0..=1.0))
}

/// Starts a restore into `trial` and waits until `offset` after the first event of `phase`.
fn start_and_wait(sample: &Sample, trial: &Trial, phase: &Phase, offset: Duration) -> Watched {
    let mut w = Watched::spawn(with_hooks(sample, trial));
    let from = w
        .wait_for(RESTORE_TIMEOUT, &|w| seen(w, phase.from, trial))
        .unwrap_or_else(|| panic!("the restore ended before {:?}", phase.from));
    std::thread::sleep((from + offset).saturating_duration_since(Instant::now()));
    w
}

fn signal_name(signal: Signal) -> &'static str {
    if signal == Signal::INT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

/// The phase the tool says it was interrupted in: `interrupted during the swap; …`.
fn interrupted_during(stderr: &str) -> Option<String> {
    let at = stderr.rfind("error: interrupted during ")?;
    let rest = &stderr[at + "error: interrupted during ".len()..];
    let end = rest.find([';', '(', '\n']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// Checks that the start hook ran to its end after the last time the stop hook began (the
/// application runs again after any interruption), and that a restore that finished ran each
/// hook once.
fn check_hook_order(events: &[String], finished: bool) -> Result<(), String> {
    if finished {
        let expected = ["stop", "stopped", "start", "started", "health"];
        return (events == expected)
            .then_some(())
            .ok_or_else(|| format!("hooks of a finished restore: {events:?}"));
    }
    match events.iter().rposition(|e| e == "stop") {
        Some(stop) if !events[stop..].iter().any(|e| e == "started") => Err(format!(
            "the application was stopped and not started again: {events:?}"
        )),
        _ => Ok(()),
    }
}

#[test]
fn sigint_and_sigterm_in_any_phase_roll_back_and_exit_128_plus_the_signal() {
    let mut rng = seeded_rng("sigint_and_sigterm");
    let sample = Sample::new(SIZE_MB);
    let started = Instant::now();
    let calibration = calibrate(&sample);
    let mut reached: BTreeMap<String, usize> = BTreeMap::new();
    let trials = PHASES.len() * ROUNDS;
    for n in 0..trials {
        let phase = &PHASES[n % PHASES.len()];
        let offset = moment(&mut rng, &calibration, phase);
        let signal = if rng.gen_bool(0.5) {
            Signal::INT
        } else {
            Signal::TERM
        };
        // A second signal now and then: it must not cut the rollback short.
        let second = rng
            .gen_bool(1.0 / 3.0)
            .then(|| Duration::from_millis(rng.gen_range(0..300)));
        let trial = sample.trial(&format!("int-{n}"));
        let mut w = start_and_wait(&sample, &trial, phase, offset);
        let sent = w.signal(signal);
        if let Some(after) = second {
            std::thread::sleep(after);
            w.signal(Signal::INT);
        }
        let f = w.finish(RESTORE_TIMEOUT);
        let outcome = match (f.status.code(), interrupted_during(&f.stderr)) {
            (Some(0), _) => "finished first".to_string(),
            (Some(_), Some(during)) => during,
            // Before its handlers are installed (right after start-up) a signal ends the tool
            // as it ends any program; nothing was touched yet.
            (None, _) if phase.from == Event::Spawned => "before the signal handlers".into(),
            _ => "?".into(),
        };
        let label = format!(
            "trial {n}: {} at +{offset:?} into {}{} -> {} ({outcome}) in {:?}",
            signal_name(signal),
            phase.name,
            second.map_or(String::new(), |d| format!(", SIGINT {d:?} later")),
            describe(f.status),
            f.elapsed
        );
        println!("{label}");
        let context = format!("{label}\nstderr:\n{}", f.stderr);
        let interrupted = match f.status.code() {
            Some(0) => false,
            Some(code) => {
                assert!(sent, "{context}");
                assert_eq!(code, 128 + signal.as_raw(), "{context}");
                assert!(
                    outcome != "?",
                    "an interrupted restore names its phase: {context}"
                );
                true
            }
            None => {
                assert_eq!(outcome, "before the signal handlers", "{context}");
                assert_eq!(
                    std::os::unix::process::ExitStatusExt::signal(&f.status),
                    Some(signal.as_raw()),
                    "{context}"
                );
                true
            }
        };
        let expected = if interrupted { "old" } else { "new" };
        assert_eq!(sample.which(&trial.db), expected, "{context}");
        let copies = previous_copies(&trial.db);
        if interrupted {
            assert_eq!(copies, [] as [PathBuf; 0], "{context}");
        } else {
            // The previous database is kept, whole.
            assert_eq!(copies.len(), 1, "{context}");
            assert_eq!(sample.which(&copies[0]), "old", "{context}");
        }
        assert_eq!(staging_dirs(&trial.dir), [] as [PathBuf; 0], "{context}");
        check_hook_order(&trial.hook_events(), !interrupted)
            .unwrap_or_else(|e| panic!("{e}\n{context}"));
        assert_eq!(
            trial.hooks_left_running(Duration::from_secs(1)),
            [] as [String; 0],
            "{context}"
        );
        // The hooks' log files go once the hooks are gone.
        assert_eq!(files_in(&trial.tmp), [] as [PathBuf; 0], "{context}");
        *reached.entry(outcome).or_default() += 1;
        std::fs::remove_dir_all(&trial.dir).unwrap();
    }
    println!(
        "{trials} trials in {:?}; outcomes: {reached:?}",
        started.elapsed()
    );
    let phases_interrupted = reached
        .keys()
        .filter(|k| *k != "finished first" && *k != "before the signal handlers")
        .count();
    assert!(
        phases_interrupted >= 4,
        "the trials should interrupt most phases: {reached:?}"
    );
}

/// How a killed restore's staging directory shows how far it got.
fn journal_state(dir: &Path) -> String {
    let stagings = staging_dirs(dir);
    if stagings.is_empty() {
        return "no staging".into();
    }
    stagings
        .iter()
        .map(|staging| {
            let journal =
                std::fs::read_to_string(staging.join(".kars-restore-journal")).unwrap_or_default();
            match journal.lines().last() {
                None => "staged, no journal".to_string(),
                Some(line) => {
                    let op: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                    format!(
                        "journal ends with {}",
                        op["op"].as_str().unwrap_or("a torn line")
                    )
                }
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that what the next restore says about a killed one agrees with the database the kill
/// left at the live path (`old` or `new`).
fn check_report(line: &str, live: &str) -> Result<(), String> {
    let claims = if line.contains("ended before its swap") || line.contains("had rolled back") {
        Some("old")
    } else if line.contains("ended after its swap") {
        Some("new")
    } else {
        None
    };
    match claims {
        Some(claimed) if claimed != live => Err(format!(
            "the report implies the {claimed} database, the kill left the {live} one: {line}"
        )),
        _ => Ok(()),
    }
}

/// The phases of the kill trials: every phase, the swap itself, and the rollback after a SIGINT
/// in the start hook.
const KILL_PHASES: [Phase; 9] = [
    PHASES[0],
    PHASES[1],
    PHASES[2],
    PHASES[3],
    phase("the swap", JOURNAL, SWAPPED),
    PHASES[4],
    PHASES[5],
    PHASES[6],
    phase("the rollback", START, HEALTH),
];

#[test]
fn sigkill_at_any_point_leaves_the_old_or_the_new_database_and_the_next_restore_tidies_up() {
    let mut rng = seeded_rng("sigkill");
    let sample = Sample::new(SIZE_MB);
    let started = Instant::now();
    let calibration = calibrate(&sample);
    let swap_length = calibration[&SWAPPED].duration_since(calibration[&STOPPED]);
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let trials = KILL_PHASES.len() * ROUNDS;
    for n in 0..trials {
        let phase = &KILL_PHASES[n % KILL_PHASES.len()];
        let offset = moment(&mut rng, &calibration, phase);
        let trial = sample.trial(&format!("kill-{n}"));
        let mut w = start_and_wait(&sample, &trial, phase, offset);
        let pid = w.pid();
        let mut how = format!("SIGKILL at +{offset:?} into {}", phase.name);
        if phase.name == "the rollback" {
            // Killed as the rollback's stop hook ends: in the swap back, or just before or after.
            let after = swap_length.mul_f64(rng.gen_range(0.0..=1.5));
            w.signal(Signal::INT);
            let stopped_again = Event::Hooked("stopped", 2);
            if let Some(t) = w.wait_for(RESTORE_TIMEOUT, &|w| seen(w, stopped_again, &trial)) {
                std::thread::sleep((t + after).saturating_duration_since(Instant::now()));
            }
            how = format!(
                "SIGINT at +{offset:?} into the start hook, SIGKILL {after:?} after the rollback's stop hook"
            );
        }
        w.signal(Signal::KILL);
        let f = w.finish(RESTORE_TIMEOUT);
        // Hooks the killed restore was running go on alone, and end by themselves.
        let orphans = trial.hooks_left_running(Duration::from_secs(10));
        let mut state = journal_state(&trial.dir);
        if !aliases(&trial.db).is_empty() {
            state.push_str(", a second name of the live file");
        }
        let live = sample.which(&trial.db);
        let label = format!(
            "trial {n}: {how} -> {}, {state}, the {live} database at the live path",
            describe(f.status)
        );
        println!("{label}");
        let context = format!("{label}\nstderr:\n{}", f.stderr);
        assert_eq!(orphans, [] as [String; 0], "{context}");
        match f.status.code() {
            None => {}
            Some(0) => assert_eq!(live, "new", "{context}"),
            Some(130) => assert_eq!(live, "old", "{context}"),
            Some(_) => panic!("unexpected exit: {context}"),
        }
        // A previous copy that is not the live file is the old database, complete.
        let aliases_left = aliases(&trial.db);
        for copy in previous_copies(&trial.db) {
            if !aliases_left.contains(&copy) {
                assert_eq!(sample.which(&copy), "old", "{}: {context}", copy.display());
            }
        }
        let left: Vec<String> = staging_dirs(&trial.dir)
            .iter()
            .chain(&aliases_left)
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();

        // The next restore reports what it tidied, in JSON or as steps.
        let as_json = n % 2 == 0;
        let mut next = sample.restore(&trial);
        if as_json {
            next.arg("--json");
        }
        let o = ok(next.output().unwrap());
        let reported: Vec<String> = if as_json {
            json(&o)["restore"]["leftovers_removed"]
                .as_array()
                .map(|a| a.iter().map(|l| l.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        } else {
            stdout(&o)
                .lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("- cleaned up after an interrupted restore: ")
                })
                .map(str::to_string)
                .collect()
        };
        let context = format!("{context}\nnext restore: {}", text(&o));
        // Each line names what it removed, or the killed restore (a half-done swap rolled back
        // takes its staging directory and any second name of the live file with it).
        let killed = format!("pid {pid},");
        for name in &left {
            assert!(
                reported
                    .iter()
                    .any(|r| r.contains(name.as_str()) || r.contains(&killed)),
                "{name} is not reported: {context}"
            );
        }
        for line in &reported {
            check_report(line, live).unwrap_or_else(|e| panic!("{e}: {context}"));
        }
        assert_eq!(left.is_empty(), reported.is_empty(), "{context}");
        assert_eq!(staging_dirs(&trial.dir), [] as [PathBuf; 0], "{context}");
        assert_eq!(aliases(&trial.db), [] as [PathBuf; 0], "{context}");
        assert_eq!(sample.which(&trial.db), "new", "{context}");
        *states.entry(state).or_default() += 1;
        std::fs::remove_dir_all(&trial.dir).unwrap();
    }
    println!(
        "{trials} trials in {:?}; states after the kill: {states:?}",
        started.elapsed()
    );
}
