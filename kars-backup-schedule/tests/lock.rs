//! The per-job run lock, across handles and across processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kars_backup_schedule::{Error, JobLock, StateStore};

/// Not a test by itself: the child process of `lock_held_by_another_process_is_refused`.
/// It takes the lock, says so, and holds it until its stdin closes.
#[test]
fn lock_holder_child() {
    let Ok(dir) = std::env::var("KARS_TEST_LOCK_DIR") else {
        return;
    };
    let _lock = JobLock::try_acquire(dir.as_ref(), "nightly", "child-run").unwrap();
    println!("locked");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn second_handle_in_one_process_is_refused_until_release() {
    let dir = tempfile::tempdir().unwrap();
    let first = JobLock::try_acquire(dir.path(), "nightly", "run-1").unwrap();
    let err = JobLock::try_acquire(dir.path(), "nightly", "run-2").unwrap_err();
    match &err {
        Error::Locked { job, holder, .. } => {
            assert_eq!(job, "nightly");
            assert!(holder.contains("run-1"), "{holder}");
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("expected Locked, got {other}"),
    }
    assert!(err.is_retryable());
    assert!(err.to_string().contains("already running"), "{err}");
    let holder = JobLock::holder(dir.path(), "nightly").unwrap().unwrap();
    assert_eq!(holder.run_id, "run-1");
    // Another job is independent.
    let _other = JobLock::try_acquire(dir.path(), "weekly", "run-3").unwrap();
    drop(first);
    assert_eq!(JobLock::holder(dir.path(), "nightly").unwrap(), None);
    let again = StateStore::new(dir.path())
        .lock("nightly", "run-4")
        .unwrap();
    assert_eq!(again.job(), "nightly");
    assert_eq!(again.path(), dir.path().join("nightly.lock"));
}

#[test]
fn lock_held_by_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KARS_TEST_LOCK_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before locking"
        );
        if line.trim_end().ends_with("locked") {
            break;
        }
    }
    let err = JobLock::try_acquire(dir.path(), "nightly", "parent-run").unwrap_err();
    let Error::Locked { holder, .. } = &err else {
        panic!("expected Locked, got {err}");
    };
    assert!(holder.contains(&format!("pid {}", child.id())), "{holder}");
    assert!(holder.contains("child-run"), "{holder}");
    // A killed holder leaves no stale lock: the kernel drops it with the process.
    child.kill().unwrap();
    child.wait().unwrap();
    let lock = JobLock::try_acquire(dir.path(), "nightly", "parent-run").unwrap();
    assert_eq!(
        JobLock::holder(dir.path(), "nightly")
            .unwrap()
            .unwrap()
            .run_id,
        "parent-run"
    );
    drop(lock);
}

#[test]
fn job_names_that_cannot_name_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["", "../etc", "a/b", ".hidden", "with space"] {
        let err = JobLock::try_acquire(dir.path(), name, "r").unwrap_err();
        assert!(matches!(err, Error::InvalidJobName { .. }), "{name}: {err}");
    }
}
