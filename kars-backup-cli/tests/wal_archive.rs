//! The WAL archive against a real PostgreSQL cluster started here with `archive_mode = on` and
//! `archive_command` running the built `kars-backup` (through a small wrapper that can kill one
//! upload with SIGKILL, as a crash would): segments from real `pg_switch_wal()` calls arrive,
//! fetch back byte-identical (plain and encrypted), pushes are idempotent, a missing file exits
//! 7, a killed upload leaves nothing a fetch would use and PostgreSQL's retry stores it, a
//! removed segment is reported as a gap, `receive-wal` ships a `.partial` within seconds, and a
//! spooled `archive-wal`'s pusher uploads the queue (encrypted when archive-wal encrypts).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{bin, code, free_port, ok, s, stderr, text};
use kars_backup::postgres::testing::TestCluster;

/// The cluster of this test binary and the places its archive_command uses.
struct Archiving {
    cluster: TestCluster,
    /// Holds the copy of the binary, the wrapper and the archive (readable by the server's
    /// user).
    dir: PathBuf,
    /// Where archive_command stores.
    archive: PathBuf,
}

/// A copy of the binary the server's user can run (the build directory may be private).
fn shared_binary(dir: &Path) -> PathBuf {
    let to = dir.join("kars-backup");
    std::fs::copy(env!("CARGO_BIN_EXE_kars-backup"), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// Removes `dir` when the test process ends, as the cluster's supervisor does with its own: a
/// child with `--pdeathsig`, spawned from a thread that lives as long as the process (the
/// signal follows the spawning thread).
fn remove_at_exit(dir: &Path) {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let watchdog = Command::new("setpriv")
            .args(["--pdeathsig", "TERM", "--", "sh", "-c"])
            .arg("trap 'rm -rf \"$0\"; exit 0' TERM; while :; do sleep 1; done")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if watchdog.is_ok() {
            loop {
                std::thread::park();
            }
        }
    });
}

fn chown_to_server(path: &Path) {
    if let Some((uid, gid)) = TestCluster::server_owner() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// archive_command: `archive.sh %p`. While `kill-next` exists, the first attempt of each file
/// starts `kars-backup pg archive-wal`, kills it with SIGKILL after a moment and fails.
const WRAPPER: &str = r#"#!/bin/sh
dir="$(dirname "$0")"; f="$1"; marker="$dir/killed-$(basename "$f")"
if [ -e "$dir/kill-next" ] && [ ! -e "$marker" ]; then
  : > "$marker"
  "$dir/kars-backup" pg archive-wal --to "$dir/archive" "$f" & pid=$!
  sleep 0.03; kill -9 $pid; wait $pid
  exit 1
fi
exec "$dir/kars-backup" pg archive-wal --to "$dir/archive" "$f"
"#;

fn archiving() -> Option<&'static Archiving> {
    static CELL: OnceLock<Option<Archiving>> = OnceLock::new();
    CELL.get_or_init(start_archiving).as_ref()
}

/// A new cluster archiving through the binary (a test whose checkpoints would recycle the
/// `pg_wal` files other tests compare with takes its own).
fn start_archiving() -> Option<Archiving> {
    {
        let dir = tempfile::Builder::new()
            .prefix("kars-wal-test-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        remove_at_exit(&dir);
        shared_binary(&dir);
        let wrapper = dir.join("archive.sh");
        std::fs::write(&wrapper, WRAPPER).unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let archive = dir.join("archive");
        std::fs::create_dir(&archive).unwrap();
        std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown_to_server(&archive);
        chown_to_server(&dir);
        let command = format!("{} %p", wrapper.display());
        match TestCluster::start_with(&[
            ("wal_level", "replica"),
            ("archive_mode", "on"),
            ("archive_command", &command),
            ("max_wal_senders", "5"),
        ]) {
            Ok(cluster) => Some(Archiving {
                cluster,
                dir,
                archive,
            }),
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("the WAL archive tests need PostgreSQL and CI=true forbids skipping: {why}")
            }
            Err(why) => {
                eprintln!("SKIPPING the WAL archive tests: {why}");
                None
            }
        }
    }
}

/// Writes some WAL, switches to a new segment and returns the name of the one just finished.
fn switch(a: &Archiving, table: &str) -> String {
    a.cluster.psql(
        "postgres",
        &format!(
            "CREATE TABLE IF NOT EXISTS {table} (id serial, at timestamptz DEFAULT now(), pad text);
             INSERT INTO {table} (pad) SELECT repeat('x', 200) FROM generate_series(1, 2000);"
        ),
    );
    a.cluster
        .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
}

/// Waits until PostgreSQL reports `name` (or a later file) archived.
fn wait_archived(a: &Archiving, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = a.cluster.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if last.len() >= 24 && last[..24] >= *name {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not archived after 60 s (last: {last:?}): {}",
            a.cluster.psql("postgres", "SELECT * FROM pg_stat_archiver")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn system_id(a: &Archiving) -> String {
    a.cluster.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    )
}

fn pg_wal(a: &Archiving, name: &str) -> PathBuf {
    a.cluster.data_dir().unwrap().join("pg_wal").join(name)
}

/// The stored keys of the archive at `dir` whose file name starts with `name`.
fn stored(dir: &Path, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with(name) {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

fn fetch(
    from: &Path,
    sysid: &str,
    name: &str,
    dest: &Path,
    extra: &[&str],
) -> std::process::Output {
    bin()
        .args(["pg", "fetch-wal", "--from", &s(from), "--system-id", sysid])
        .args(extra)
        .arg(name)
        .arg(dest)
        .output()
        .unwrap()
}

#[test]
fn switched_segments_are_archived_and_fetch_back_identical() {
    let Some(a) = archiving() else { return };
    let sysid = system_id(a);
    let mut names = Vec::new();
    for i in 0..3 {
        names.push(switch(a, &format!("arch_{i}")));
    }
    wait_archived(a, names.last().unwrap());
    let out = tempfile::tempdir().unwrap();
    for name in &names {
        let keys = stored(&a.archive, &format!("{name}-"));
        assert_eq!(keys.len(), 1, "{name}: {keys:?}");
        assert!(keys[0].starts_with(&format!(
            ".kars-chains/postgres/{sysid}/wal/00000001/{name}-"
        )));
        let dest = out.path().join("RECOVERYXLOG");
        ok(fetch(&a.archive, &sysid, name, &dest, &[]));
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(pg_wal(a, name)).unwrap(),
            "{name} differs from pg_wal's"
        );
    }

    // The cluster is found from pg_control when fetch-wal runs in the data directory.
    let dest = out.path().join("from-pgdata");
    ok(bin()
        .current_dir(a.cluster.data_dir().unwrap())
        .args(["pg", "fetch-wal", "--from", &s(&a.archive), &names[0]])
        .arg(&dest)
        .output()
        .unwrap());
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(pg_wal(a, &names[0])).unwrap());

    // Pushed again by hand: the same content is fine, other content is refused loudly.
    let again = bin()
        .args(["pg", "archive-wal", "--to", &s(&a.archive)])
        .arg(pg_wal(a, &names[0]))
        .output()
        .unwrap();
    ok(again);
    let other = out.path().join(&names[0]);
    let mut bytes = std::fs::read(pg_wal(a, &names[0])).unwrap();
    bytes[100_000] ^= 0xff;
    std::fs::write(&other, bytes).unwrap();
    let refused = bin()
        .args(["pg", "archive-wal", "--to", &s(&a.archive)])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(code(&refused), 5, "{}", text(&refused));
    assert!(
        stderr(&refused).contains("other content"),
        "{}",
        text(&refused)
    );
    assert_eq!(stored(&a.archive, &format!("{}-", names[0])).len(), 1);

    // A file the archive does not have: exit 7, nothing on either stream.
    let missing = fetch(&a.archive, &sysid, "0000000100000000000000FE", &dest, &[]);
    assert_eq!(code(&missing), 7, "{}", text(&missing));
    assert!(
        missing.stdout.is_empty() && missing.stderr.is_empty(),
        "{}",
        text(&missing)
    );
    let history = fetch(&a.archive, &sysid, "00000002.history", &dest, &[]);
    assert_eq!(code(&history), 7, "{}", text(&history));
}

#[test]
fn encrypted_segments_fetch_back_with_the_identity_only() {
    let Some(a) = archiving() else { return };
    let sysid = system_id(a);
    let name = switch(a, "enc");
    wait_archived(a, &name);
    let tmp = tempfile::tempdir().unwrap();
    let identity = tmp.path().join("key.txt");
    let recipient = kars_backup::encrypt::generate_identity_file(&identity).unwrap();
    let enc = tmp.path().join("encrypted");
    ok(bin()
        .args([
            "pg",
            "archive-wal",
            "--to",
            &s(&enc),
            "--encrypt-to",
            &recipient,
        ])
        .arg(pg_wal(a, &name))
        .output()
        .unwrap());
    let keys = stored(&enc, &format!("{name}-"));
    assert!(keys.len() == 1 && keys[0].ends_with(".zst.age"), "{keys:?}");
    let raw = std::fs::read(enc.join(&keys[0])).unwrap();
    assert!(raw.starts_with(b"age-encryption.org/v1"));

    let dest = tmp.path().join("RECOVERYXLOG");
    let no_key = fetch(&enc, &sysid, &name, &dest, &[]);
    // A missing key stops the recovery (126), unlike a missing file (7).
    assert_eq!(code(&no_key), 126, "{}", text(&no_key));
    assert!(stderr(&no_key).contains("--identity"), "{}", text(&no_key));
    assert!(!dest.exists());
    ok(fetch(
        &enc,
        &sysid,
        &name,
        &dest,
        &["--identity", &s(&identity)],
    ));
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(pg_wal(a, &name)).unwrap());

    // From a job of the configuration file: its destination and its identity file, which
    // encrypts the WAL and opens it again (no URL or key on the command line).
    let job_dir = tmp.path().join("job-archive");
    let config = tmp.path().join("kars.toml");
    std::fs::write(
        &config,
        format!(
            "[[job]]\nname = \"pg\"\nsource = \"{}\"\n\n[[job.destination]]\nurl = \"{}\"\n\n[job.encryption]\nidentity-file = \"{}\"\n",
            a.cluster.server_url(),
            job_dir.display(),
            identity.display()
        ),
    )
    .unwrap();
    ok(bin()
        .args(["pg", "archive-wal", "--config", &s(&config)])
        .arg(pg_wal(a, &name))
        .output()
        .unwrap());
    assert!(stored(&job_dir, &format!("{name}-"))[0].ends_with(".zst.age"));
    let from_job = tmp.path().join("from-job");
    ok(bin()
        .args([
            "pg",
            "fetch-wal",
            "--config",
            &s(&config),
            "--system-id",
            &sysid,
        ])
        .arg(&name)
        .arg(&from_job)
        .output()
        .unwrap());
    assert!(std::fs::read(&from_job).unwrap() == std::fs::read(pg_wal(a, &name)).unwrap());

    // Off-site destinations refuse plaintext before reading anything.
    let refused = bin()
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-east-1")
        .args(["pg", "archive-wal", "--to", "s3://nowhere/wal"])
        .arg(pg_wal(a, &name))
        .output()
        .unwrap();
    assert_eq!(code(&refused), 2, "{}", text(&refused));
    assert!(
        stderr(&refused).contains("--no-encrypt"),
        "{}",
        text(&refused)
    );
}

#[test]
fn a_killed_upload_leaves_nothing_used_and_postgres_retries() {
    let Some(a) = archiving() else { return };
    let sysid = system_id(a);
    // Through archive_command: the first attempt is SIGKILLed, PostgreSQL's retry stores it.
    let kill_next = a.dir.join("kill-next");
    std::fs::write(&kill_next, b"").unwrap();
    let name = switch(a, "killed");
    wait_archived(a, &name);
    std::fs::remove_file(&kill_next).unwrap();
    assert!(
        a.dir.join(format!("killed-{name}")).exists(),
        "the wrapper did not kill"
    );
    let failed: i64 = a
        .cluster
        .psql("postgres", "SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    assert!(failed >= 1);
    assert_eq!(stored(&a.archive, &format!("{name}-")).len(), 1);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("RECOVERYXLOG");
    ok(fetch(&a.archive, &sysid, &name, &dest, &[]));
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(pg_wal(a, &name)).unwrap());

    // Directly, at many instants of an upload: after each kill the archive holds either
    // nothing usable for the file or the whole file, and a rerun always stores it.
    let segment = pg_wal(a, &name);
    let mut killed_midway = 0;
    for delay_ms in (0..120).step_by(8) {
        let to = tmp.path().join(format!("kill-{delay_ms}"));
        let mut child = bin()
            .args(["pg", "archive-wal", "--to", &s(&to)])
            .arg(&segment)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed_midway += 1;
        }
        let dest = tmp.path().join(format!("out-{delay_ms}"));
        let got = fetch(&to, &sysid, &name, &dest, &[]);
        match code(&got) {
            7 => assert!(!dest.exists()),
            0 => assert!(std::fs::read(&dest).unwrap() == std::fs::read(&segment).unwrap()),
            _ => panic!("after a kill at {delay_ms} ms: {}", text(&got)),
        }
        ok(bin()
            .args(["pg", "archive-wal", "--to", &s(&to)])
            .arg(&segment)
            .output()
            .unwrap());
        ok(fetch(&to, &sysid, &name, &dest, &[]));
        assert!(std::fs::read(&dest).unwrap() == std::fs::read(&segment).unwrap());
    }
    assert!(killed_midway > 0, "no run was killed before it finished");
}

#[test]
fn a_removed_segment_is_reported_as_a_gap() {
    let Some(a) = archiving() else { return };
    let mut names = Vec::new();
    for i in 0..3 {
        names.push(switch(a, &format!("gap_{i}")));
    }
    wait_archived(a, names.last().unwrap());
    // A copy of the archive, with the middle segment removed.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&a.archive)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let healthy = bin()
        .args(["pg", "wal-status", "--from", &s(&copy), "--json"])
        .output()
        .unwrap();
    let healthy_json = common::json(&healthy);
    let gaps_before = healthy_json["clusters"][0]["timelines"][0]["gaps"]
        .as_array()
        .map_or(0, Vec::len);
    for key in stored(&copy, &names[1]) {
        std::fs::remove_file(copy.join(key)).unwrap();
    }
    // A damaged file: fetch-wal exits 126 (PostgreSQL stops the recovery) and writes nothing.
    let damaged = copy.join(&stored(&copy, &format!("{}-", names[2]))[0]);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&damaged, bytes).unwrap();
    let dest = tmp.path().join("RECOVERYXLOG");
    let sysid = system_id(a);
    let got = fetch(&copy, &sysid, &names[2], &dest, &[]);
    assert_eq!(code(&got), 126, "{}", text(&got));
    assert!(!dest.exists());
    let report = bin()
        .args(["pg", "wal-status", "--from", &s(&copy)])
        .output()
        .unwrap();
    assert_eq!(code(&report), 5, "{}", text(&report));
    let out = common::stdout(&report);
    assert!(out.contains("GAP") && out.contains(&names[1]), "{out}");
    let json = common::json(
        &bin()
            .args(["pg", "wal-status", "--from", &s(&copy), "--json"])
            .output()
            .unwrap(),
    );
    let gaps = json["clusters"][0]["timelines"][0]["gaps"]
        .as_array()
        .unwrap();
    assert_eq!(gaps.len(), gaps_before + 1, "{json}");
    assert!(
        gaps.iter().any(|g| g["first"] == names[1].as_str()),
        "{json}"
    );
}

#[test]
fn receive_wal_ships_the_partial_segment_within_seconds() {
    let Some(a) = archiving() else { return };
    let sysid = system_id(a);
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("streamed");
    let spool = tmp.path().join("spool");
    let mut child = bin()
        .args([
            "pg",
            "receive-wal",
            "--to",
            &s(&to),
            "--spool-dir",
            &s(&spool),
        ])
        .args([
            "--slot",
            "kars_test",
            "--create-slot",
            "--ship-interval",
            "0.5",
        ])
        .env("DATABASE_URL", a.cluster.server_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Other tests switch segments meanwhile: any .partial shipped after this write counts.
    a.cluster.psql(
        "postgres",
        "CREATE TABLE IF NOT EXISTS streamed (v int); INSERT INTO streamed SELECT generate_series(1, 1000);",
    );
    let written = Instant::now();
    let deadline = written + Duration::from_secs(20);
    let partial = loop {
        let found = stored(&to, "0000000");
        if let Some(k) = found.iter().find(|k| k.contains(".partial")) {
            break k.clone();
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "receive-wal exited ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no .partial shipped within 20 s; stored {found:?}, spool {:?}",
            std::fs::read_dir(&spool)
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("{partial} shipped {:?} after the insert", written.elapsed());
    let segment = Path::new(&partial)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    // Served under the plain segment name.
    let dest = tmp.path().join("RECOVERYXLOG");
    ok(fetch(&to, &sysid, &segment, &dest, &[]));
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 16 * 1024 * 1024);
    assert!(
        std::fs::read(&dest).unwrap()[..8192]
            == std::fs::read(pg_wal(a, &segment)).unwrap()[..8192]
    );

    // A switch completes the segment: it is shipped and its partial goes.
    a.cluster.psql("postgres", "SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let complete = stored(&to, &format!("{segment}-"));
        if !complete.is_empty() && stored(&to, &format!("{segment}.partial")).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the completed segment was not shipped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A role without REPLICATION is told what to change, before anything starts.
    a.cluster.psql(
        "postgres",
        "DO $$ BEGIN CREATE ROLE wal_norepl LOGIN PASSWORD 'norepl-secret'; EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
    );
    let url = a.cluster.server_url();
    let norepl = url.replace(
        &url[url.find("://").unwrap() + 3..url.rfind('@').unwrap()],
        "wal_norepl:norepl-secret",
    );
    let refused = bin()
        .args(["pg", "receive-wal", "--to", &s(&to), "--spool-dir"])
        .arg(tmp.path().join("spool2"))
        .env("DATABASE_URL", &norepl)
        .output()
        .unwrap();
    assert_eq!(code(&refused), 2, "{}", text(&refused));
    assert!(
        stderr(&refused).contains("ALTER ROLE wal_norepl REPLICATION"),
        "{}",
        text(&refused)
    );
    assert!(
        !text(&refused).contains("norepl-secret"),
        "{}",
        text(&refused)
    );

    // SIGTERM: a clean stop.
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.cluster
        .psql("postgres", "SELECT pg_drop_replication_slot('kars_test')");
}

#[test]
fn segments_round_trip_through_the_s3_emulator() {
    let Some(a) = archiving() else { return };
    let (Some(endpoint), Some(bucket)) = (
        kars_backup::core::testing::service_var("KARS_TEST_S3_ENDPOINT"),
        kars_backup::core::testing::service_var("KARS_TEST_S3_BUCKET"),
    ) else {
        return;
    };
    let sysid = system_id(a);
    let name = switch(a, "s3");
    wait_archived(a, &name);
    let segment = pg_wal(a, &name);
    let run = TestCluster::unique_name("wal");
    let url = format!("s3://{bucket}/{run}?endpoint={endpoint}&allow_http=true");
    let tmp = tempfile::tempdir().unwrap();
    let identity = tmp.path().join("key.txt");
    let recipient = kars_backup::encrypt::generate_identity_file(&identity).unwrap();
    let archive_cmd = |path: &Path| {
        let mut c = common::bin_s3();
        c.args([
            "pg",
            "archive-wal",
            "--to",
            &url,
            "--encrypt-to",
            &recipient,
        ])
        .arg(path);
        c
    };
    let push = |path: &Path| archive_cmd(path).output().unwrap();
    let pull = |name: &str, dest: &Path| {
        common::bin_s3()
            .args(["pg", "fetch-wal", "--from", &url, "--system-id", &sysid])
            .args(["--identity", &s(&identity)])
            .arg(name)
            .arg(dest)
            .output()
            .unwrap()
    };
    // Killed at several instants of its upload: nothing half-stored is ever fetched.
    for delay_ms in [5u64, 20, 40, 80] {
        let mut child = archive_cmd(&segment)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let dest = tmp.path().join(format!("after-kill-{delay_ms}"));
        let got = pull(&name, &dest);
        match code(&got) {
            7 => assert!(!dest.exists()),
            0 => assert!(std::fs::read(&dest).unwrap() == std::fs::read(&segment).unwrap()),
            _ => panic!("after a kill at {delay_ms} ms: {}", text(&got)),
        }
    }
    ok(push(&segment));
    ok(push(&segment));
    let dest = tmp.path().join("RECOVERYXLOG");
    ok(pull(&name, &dest));
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(&segment).unwrap());
    let missing = pull("0000000100000000000000FD", &dest);
    assert_eq!(code(&missing), 7, "{}", text(&missing));
    let other = tmp.path().join(&name);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[200_000] ^= 0xff;
    std::fs::write(&other, bytes).unwrap();
    let refused = push(&other);
    assert_eq!(code(&refused), 5, "{}", text(&refused));
    let status = common::bin_s3()
        .args(["pg", "wal-status", "--from", &url, "--json"])
        .output()
        .unwrap();
    let json = common::json(&ok(status));
    assert_eq!(json["clusters"][0]["timelines"][0]["segments"], 1, "{json}");
}

#[test]
fn a_base_backup_recovers_through_fetch_wal_as_restore_command() {
    let Some(a) = archiving() else { return };
    let bin_dir = a.cluster.bin_dir().to_path_buf();
    let tmp = tempfile::Builder::new()
        .prefix("kars-wal-restore-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_to_server(tmp.path());
    let data = tmp.path().join("data");
    // A base backup without WAL: everything after its start comes from the archive.
    let basebackup = Command::new(bin_dir.join("pg_basebackup"))
        .arg(format!("--dbname={}", a.cluster.server_url()))
        .arg(format!("--pgdata={}", data.display()))
        .args(["--wal-method=none", "--checkpoint=fast", "--no-sync"])
        .output()
        .unwrap();
    assert!(
        basebackup.status.success(),
        "{}",
        String::from_utf8_lossy(&basebackup.stderr)
    );
    a.cluster.psql(
        "postgres",
        "CREATE TABLE after_base (v int); INSERT INTO after_base SELECT generate_series(1, 500);",
    );
    let last = switch(a, "after_base_pad");
    wait_archived(a, &last);

    let restore_command = format!(
        "{} pg fetch-wal --from {} --read-ahead 2 %f %p",
        a.dir.join("kars-backup").display(),
        a.archive.display()
    );
    std::fs::write(data.join("recovery.signal"), b"").unwrap();
    // The promoted cluster archives its new timeline elsewhere: the history file's cluster
    // comes from global/pg_control (archive_command runs in the data directory).
    let new_archive = tmp.path().join("new-archive");
    std::fs::create_dir(&new_archive).unwrap();
    chown_to_server(&new_archive);
    let archive_command = format!(
        "{} pg archive-wal --to {} %p",
        a.dir.join("kars-backup").display(),
        new_archive.display()
    );
    let sock = tmp.path().join("sock");
    std::fs::create_dir(&sock).unwrap();
    if let Some((uid, gid)) = TestCluster::server_owner() {
        for p in [&data, &sock] {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(p)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let port = free_port();
    let mut server = match TestCluster::server_owner() {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
            ])
            .arg(bin_dir.join("postgres"));
            c
        }
        None => Command::new(bin_dir.join("postgres")),
    };
    let log = std::fs::File::create(tmp.path().join("server.log")).unwrap();
    let mut server = server
        .arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&sock)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "archive_mode=on"])
        .args(["-c", &format!("archive_command={archive_command}")])
        .args(["-c", &format!("restore_command={restore_command}")])
        .args(["-c", "recovery_target_action=promote"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = a.cluster.server_url().replace(
        &format!(":{}/", url_port(&a.cluster.server_url())),
        &format!(":{port}/"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let done = Command::new(bin_dir.join("psql"))
            .args(["--no-psqlrc", "-tA", "-c"])
            .arg("SELECT NOT pg_is_in_recovery() AND (SELECT count(*) FROM after_base) = 500")
            .arg(&url)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&done.stdout).trim() == "t" {
            break true;
        }
        if server.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let sysid = system_id(a);
    let history = format!(".kars-chains/postgres/{sysid}/wal/00000002/00000002.history-");
    let deadline = Instant::now() + Duration::from_secs(30);
    let history_archived = loop {
        if stored(&new_archive, "00000002.history-")
            .iter()
            .any(|k| k.starts_with(&history))
        {
            break true;
        }
        if !rows || Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(tmp.path().join("server.log")).unwrap_or_default();
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
    assert!(
        rows,
        "the recovered cluster lacks the rows written after the base backup:\n{log}"
    );
    // The end of recovery asked for files the archive does not have (exit 7): no failure.
    assert!(log.contains("archive recovery complete"), "{log}");
    assert!(log.contains("restored log file"), "{log}");
    assert!(
        history_archived,
        "00000002.history was not archived under {history}: {log}"
    );
    // (FATAL lines of the polling connections while the server starts are no failure.)
    let failures = log.lines().filter(|l| {
        (l.contains("FATAL") || l.contains("PANIC"))
            && !l.contains("starting up")
            && !l.contains("not yet accepting connections")
    });
    assert_eq!(failures.count(), 0, "{log}");
}

/// The port of a `postgres://…@host:port/db` URL.
fn url_port(url: &str) -> u16 {
    let after_at = url.rsplit_once('@').map_or(url, |(_, r)| r);
    let host_port = after_at.split('/').next().unwrap();
    host_port.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Segment names stored at `dir` (every timeline), sorted.
fn stored_segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = stored(dir, "0")
        .iter()
        .filter_map(|k| {
            let file = Path::new(k).file_name()?.to_string_lossy().to_string();
            let name = file.get(..24)?.to_string();
            (name.chars().all(|c| c.is_ascii_hexdigit()) && file.as_bytes().get(24) == Some(&b'-'))
                .then_some(name)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn prune_keeps_the_wal_of_the_oldest_kept_base_and_verify_and_status_find_a_gap() {
    // A cluster of its own: the base backups' checkpoints recycle pg_wal.
    let Some(own) = start_archiving() else { return };
    let a = &own;
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let url = a.cluster.url("postgres");
    let bin_dir = s(a.cluster.bin_dir());
    let base = || {
        let doc = common::json(&ok(bin()
            .args(["backup", "--physical", "--db", &url, "--to", &s(&store)])
            .args(["--pg-bin-dir", &bin_dir, "--json"])
            .output()
            .unwrap()));
        doc["manifest"]["physical"]["start_wal"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = base();
    let mut last = String::new();
    for i in 0..2 {
        last = switch(a, &format!("prune_{i}"));
    }
    wait_archived(a, &last);
    let second = base();
    assert!(second > first, "{first} {second}");
    for i in 2..4 {
        last = switch(a, &format!("prune_{i}"));
    }
    wait_archived(a, &last);
    // The WAL beside the base backups: a copy of the archive's chains.
    let cp = Command::new("cp")
        .arg("-a")
        .arg(a.archive.join(".kars-chains"))
        .arg(&store)
        .status()
        .unwrap();
    assert!(cp.success());
    let before = stored_segments(&store);
    assert!(before.iter().any(|n| *n < second), "{before:?}");

    let doc = common::json(&ok(bin()
        .args(["pg", "wal-status", "--from", &s(&store), "--json"])
        .output()
        .unwrap()));
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["bases"].as_array().unwrap().len(), 2, "{doc}");

    // Keep one base backup: the WAL before its first segment goes (a dry run first).
    let prune = |extra: &[&str]| {
        common::json(&ok(bin()
            .args(["prune", "--policy=last=1", "--json", "--from"])
            .arg(&store)
            .args(extra)
            .output()
            .unwrap()))
    };
    let plan = prune(&["--dry-run"]);
    assert_eq!(plan["wal"][0]["kept_from"], second.as_str(), "{plan}");
    assert_eq!(stored_segments(&store), before, "a dry run removes nothing");
    let done = prune(&[]);
    assert_eq!(done["deleted"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(
        done["wal"][0]["report"]["removed"], plan["wal"][0]["report"]["removed"],
        "{done}"
    );
    let after = stored_segments(&store);
    assert!(after.iter().all(|n| *n >= second), "{after:?}");
    assert_eq!(
        after,
        before
            .into_iter()
            .filter(|n| *n >= second)
            .collect::<Vec<_>>()
    );
    assert!(after.contains(&last), "{after:?}");
    // The WAL the kept base needs is all there: status is content.
    let status = |rpo: &str| {
        let o = bin()
            .args(["status", "--from", &s(&store), "--rpo", rpo, "--json"])
            .output()
            .unwrap();
        (code(&o), common::json(&o))
    };
    let (status_code, doc) = status("1h");
    assert_eq!(status_code, 0, "{doc}");
    assert_eq!(doc["wal"][0]["within_rpo"], true, "{doc}");
    assert!(doc["wal"][0]["lag_secs"].as_i64().unwrap() < 3600, "{doc}");
    // Older than the RPO: exit 6.
    std::thread::sleep(Duration::from_millis(2100));
    let (status_code, doc) = status("1s");
    assert_eq!(status_code, 6, "{doc}");
    assert_eq!(doc["wal"][0]["within_rpo"], false, "{doc}");

    // A segment lost after the kept base's start: every check names it, verify restores nothing.
    let lost = after
        .iter()
        .find(|n| **n > second && **n < last)
        .unwrap()
        .clone();
    for key in stored(&store, &format!("{lost}-")) {
        std::fs::remove_file(store.join(key)).unwrap();
    }
    let o = bin()
        .args(["pg", "wal-status", "--from", &s(&store)])
        .output()
        .unwrap();
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        common::stdout(&o).contains(&format!("WAL segment {lost} is missing")),
        "{}",
        text(&o)
    );
    let o = bin()
        .args(["status", "--from", &s(&store), "--rpo", "1h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(common::stdout(&o).contains(&lost), "{}", text(&o));
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let o = bin()
        .args(["verify", "--physical", "--latest", "--from", &s(&store)])
        .args(["--pgdata", &s(&scratch), "--pg-bin-dir", &bin_dir])
        .output()
        .unwrap();
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains(&lost), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

/// Copies the WAL files `names` to `dir/pg_wal` and archives them from there with `pg
/// archive-wal --spool-dir dir/spool --to dir/dest` and `extra`; returns the spool, the
/// destination and the copies' directory.
fn archive_spooled(
    a: &Archiving,
    dir: &Path,
    names: &[String],
    extra: &[&str],
) -> (PathBuf, PathBuf, PathBuf) {
    let (spool, dest) = (dir.join("spool"), dir.join("dest"));
    let copies = dir.join("pg_wal");
    std::fs::create_dir(&copies).unwrap();
    let sysid = system_id(a);
    for name in names {
        std::fs::copy(pg_wal(a, name), copies.join(name)).unwrap();
        ok(bin()
            .args(["pg", "archive-wal", "--to", &s(&dest)])
            .args(["--system-id", &sysid, "--spool-dir", &s(&spool)])
            .args(extra)
            .arg(copies.join(name))
            .output()
            .unwrap());
    }
    (spool, dest, copies)
}

/// Waits until the spool at `spool` is empty and `dest` holds each of `names`, with no error.
fn wait_drained(spool: &Path, dest: &Path, names: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let o = bin()
            .args([
                "pg",
                "wal-status",
                "--from",
                &s(dest),
                "--spool-dir",
                &s(spool),
            ])
            .arg("--json")
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if doc["spool"]["queued"]
            .as_array()
            .is_some_and(|q| q.is_empty())
            && names
                .iter()
                .all(|n| stored(dest, &format!("{n}-")).len() == 1)
        {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "the spool was not drained: {doc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        status["spool"]["last_error"],
        serde_json::Value::Null,
        "{status}"
    );
}

#[test]
fn an_encrypted_spool_is_pushed_encrypted_and_fetches_back_with_the_identity() {
    let Some(a) = archiving() else { return };
    let sysid = system_id(a);
    let names: Vec<String> = (0..2)
        .map(|i| switch(a, &format!("spool_enc_{i}")))
        .collect();
    wait_archived(a, names.last().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let identity = tmp.path().join("key.txt");
    let recipient = kars_backup::encrypt::generate_identity_file(&identity).unwrap();
    let (spool, dest, copies) =
        archive_spooled(a, tmp.path(), &names, &["--encrypt-to", &recipient]);
    // The pusher was started with the same recipient: what it stores is encrypted.
    wait_drained(&spool, &dest, &names);
    for name in &names {
        let keys = stored(&dest, &format!("{name}-"));
        assert!(keys[0].ends_with(".zst.age"), "{keys:?}");
        let raw = std::fs::read(dest.join(&keys[0])).unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1"), "{}", keys[0]);
        let back = tmp.path().join("RECOVERYXLOG");
        let no_key = fetch(&dest, &sysid, name, &back, &[]);
        assert_eq!(code(&no_key), 126, "{}", text(&no_key));
        ok(fetch(
            &dest,
            &sysid,
            name,
            &back,
            &["--identity", &s(&identity)],
        ));
        assert!(std::fs::read(&back).unwrap() == std::fs::read(copies.join(name)).unwrap());
    }
}

#[test]
fn a_spooled_archive_wal_returns_at_once_and_its_pusher_uploads_the_queue() {
    let Some(a) = archiving() else { return };
    let sysid = system_id(a);
    let names: Vec<String> = (0..3).map(|i| switch(a, &format!("spool_{i}"))).collect();
    wait_archived(a, names.last().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dest, copies) = archive_spooled(a, tmp.path(), &names, &[]);
    // The background pusher (`pg push-wal`, started by archive-wal) drains the queue in order.
    wait_drained(&spool, &dest, &names);
    for name in &names {
        let back = tmp.path().join("RECOVERYXLOG");
        ok(fetch(&dest, &sysid, name, &back, &[]));
        assert!(std::fs::read(&back).unwrap() == std::fs::read(copies.join(name)).unwrap());
    }

    // A full queue (bound 0): the file is uploaded before archive-wal returns.
    let inline = tmp.path().join("inline");
    ok(bin()
        .args([
            "pg",
            "archive-wal",
            "--to",
            &s(&inline),
            "--system-id",
            &sysid,
        ])
        .args(["--spool-dir", &s(&spool), "--spool-max-bytes", "0"])
        .arg(copies.join(&names[0]))
        .output()
        .unwrap());
    assert_eq!(stored(&inline, &format!("{}-", names[0])).len(), 1);

    // push-wal by hand on an empty queue: nothing to do, exit 0.
    ok(bin()
        .args([
            "pg",
            "push-wal",
            "--spool-dir",
            &s(&spool),
            "--to",
            &s(&dest),
        ])
        .args(["--system-id", &sysid])
        .output()
        .unwrap());
}
