//! The WAL archive's library functions against local directories, with WAL-like files made
//! here (a long page header, then data): round trips, idempotence, conflicts, `.partial`,
//! missing files, encryption, read-ahead and the chain's gaps. The real-cluster tests drive the
//! binary (`kars-backup-cli/tests/wal_archive.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kars_backup_core::{DynBackupSink, Error, SinkExt};
use kars_backup_postgres::wal::{
    ArchiveOptions, ArchiveOutcome, DEFAULT_SEGMENT_SIZE, FetchOptions, FetchOutcome, PushOptions,
    SPOOL_DIR, SpoolOptions, StoredWal, WalName, archive_wal, fetch_wal, list_chains, push_spool,
    spool_status,
};
use kars_backup_storage::LocalSink;

const SYSID: u64 = 7_312_345_678_901_234_567;
const SEGMENT: usize = 16 * 1024 * 1024;

/// A segment-sized file with a long page header of `SYSID` and `seed`-dependent content.
fn segment_bytes(seed: u8) -> Vec<u8> {
    segment_of(seed, SEGMENT, 3 * 1024 * 1024, 0x0f)
}

/// A segment of `size` bytes with a long page header of `SYSID`, then bytes of `seed` masked
/// by `mask` (0xff: incompressible) up to `filled`, then zeros (like a switched segment).
fn segment_of(seed: u8, size: usize, filled: usize, mask: u32) -> Vec<u8> {
    let mut data = vec![0u8; size];
    data[..2].copy_from_slice(&0xD110u16.to_le_bytes());
    data[2..4].copy_from_slice(&0x0006u16.to_le_bytes());
    data[24..32].copy_from_slice(&SYSID.to_le_bytes());
    data[32..36].copy_from_slice(&(size as u32).to_le_bytes());
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    for b in data[8192..filled].iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = (x & mask) as u8;
    }
    data
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn local(dir: &Path) -> DynBackupSink {
    Arc::new(LocalSink::new(dir).unwrap())
}

/// Every key at a destination.
async fn keys_of(sink: &DynBackupSink) -> Vec<String> {
    let listed = sink.list(None).await.unwrap();
    listed.into_iter().map(|m| m.key).collect()
}

fn opts() -> ArchiveOptions {
    ArchiveOptions::default()
}

/// A temporary directory, a local sink in it (alone and as a list), and options naming the
/// cluster.
fn archive_with_id() -> (
    tempfile::TempDir,
    DynBackupSink,
    Vec<DynBackupSink>,
    ArchiveOptions,
) {
    let tmp = tempfile::tempdir().unwrap();
    let sink = local(&tmp.path().join("a"));
    let with_id = ArchiveOptions {
        system_identifier: Some(SYSID),
        ..opts()
    };
    (tmp, sink.clone(), vec![sink], with_id)
}

fn fetch_opts() -> FetchOptions {
    FetchOptions {
        system_identifier: Some(SYSID),
        ..FetchOptions::default()
    }
}

#[tokio::test]
async fn segments_round_trip_idempotently_and_conflicts_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (local(&tmp.path().join("a")), local(&tmp.path().join("b")));
    let sinks = vec![a.clone(), b.clone()];
    let pgwal = tmp.path().join("pg_wal");
    std::fs::create_dir(&pgwal).unwrap();
    let data = segment_bytes(1);
    let seg = write(&pgwal, "000000010000000000000003", &data);

    let report = archive_wal(&sinks, &seg, &opts()).await.unwrap();
    assert_eq!(report.system_identifier, SYSID);
    assert_eq!(report.size, SEGMENT as u64);
    assert_eq!(report.destinations.len(), 2);
    for d in &report.destinations {
        match d.outcome {
            ArchiveOutcome::Stored { stored_size } => assert!(stored_size < 3 * 1024 * 1024),
            ref o => panic!("{o:?}"),
        }
        assert!(d.key.ends_with(".zst"), "{}", d.key);
        let parsed = StoredWal::parse(&d.key).unwrap();
        assert_eq!(parsed.sha256, report.sha256);
    }

    // The same file again: nothing to do, at both.
    let again = archive_wal(&sinks, &seg, &opts()).await.unwrap();
    assert!(
        again
            .destinations
            .iter()
            .all(|d| d.outcome == ArchiveOutcome::AlreadyStored)
    );

    // Other content under the same name: refused loudly, nothing overwritten.
    let other = tempfile::tempdir().unwrap();
    let bad = write(other.path(), "000000010000000000000003", &segment_bytes(2));
    let err = archive_wal(&sinks, &bad, &opts()).await.unwrap_err();
    assert!(
        matches!(err, Error::VerificationFailed(ref m) if m.contains("other content")),
        "{err}"
    );
    assert_eq!(a.list(None).await.unwrap().len(), 1);

    // Fetch: byte-identical, from the second destination when the first lacks it.
    let restore = tempfile::tempdir().unwrap();
    let dest = restore.path().join("RECOVERYXLOG");
    std::fs::remove_dir_all(tmp.path().join("a").join(".kars-chains")).unwrap();
    let got = fetch_wal(&sinks, "000000010000000000000003", &dest, &fetch_opts())
        .await
        .unwrap();
    let FetchOutcome::Fetched(f) = got else {
        panic!("{got:?}")
    };
    assert!(!f.partial);
    assert!(f.from.contains("/b"), "{}", f.from);
    assert!(std::fs::read(&dest).unwrap() == data);
    // No temporary file is left beside it.
    assert_eq!(std::fs::read_dir(restore.path()).unwrap().count(), 1);

    // Missing: a distinct outcome, not an error.
    let missing = fetch_wal(&sinks, "000000010000000000000004", &dest, &fetch_opts())
        .await
        .unwrap();
    assert_eq!(missing, FetchOutcome::NotFound);
    let history = fetch_wal(&sinks, "00000002.history", &dest, &fetch_opts())
        .await
        .unwrap();
    assert_eq!(history, FetchOutcome::NotFound);
}

#[tokio::test]
async fn a_failing_destination_is_not_a_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = local(&tmp.path().join("a"));
    let seg = write(tmp.path(), "000000010000000000000003", &segment_bytes(1));
    let report = archive_wal(std::slice::from_ref(&sink), &seg, &opts())
        .await
        .unwrap();
    // Corrupt the stored bytes: the fetch fails (not "not found") and leaves no file.
    let key = &report.destinations[0].key;
    let mut stored = sink.get_bytes(key).await.unwrap().to_vec();
    let mid = stored.len() / 2;
    stored[mid] ^= 0xff;
    sink.put_bytes(key, stored.into()).await.unwrap();
    let dest = tmp.path().join("out");
    let err = fetch_wal(&[sink], "000000010000000000000003", &dest, &fetch_opts())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArchive { .. } | Error::ChecksumMismatch { .. }
        ),
        "{err}"
    );
    assert!(!dest.exists());
}

#[tokio::test]
async fn partials_are_served_under_the_segment_name_until_the_segment_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = local(&tmp.path().join("a"));
    let sinks = vec![sink.clone()];
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let mut growing = segment_bytes(3);
    growing[2 * 1024 * 1024..].fill(0);
    let partial = write(&spool, "000000010000000000000005.partial", &growing);
    archive_wal(&sinks, &partial, &opts()).await.unwrap();
    // Shipped again, grown: replaces the previous one.
    let full = segment_bytes(3);
    std::fs::write(&partial, &full).unwrap();
    archive_wal(&sinks, &partial, &opts()).await.unwrap();

    let dest = tmp.path().join("RECOVERYXLOG");
    let got = fetch_wal(&sinks, "000000010000000000000005", &dest, &fetch_opts())
        .await
        .unwrap();
    assert!(
        matches!(got, FetchOutcome::Fetched(ref f) if f.partial),
        "{got:?}"
    );
    assert!(std::fs::read(&dest).unwrap() == full);

    // The complete segment supersedes (and removes) the partial.
    let seg = write(&spool, "000000010000000000000005", &full);
    archive_wal(&sinks, &seg, &opts()).await.unwrap();
    let keys = keys_of(&sink).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains(".partial"));
    let got = fetch_wal(&sinks, "000000010000000000000005", &dest, &fetch_opts())
        .await
        .unwrap();
    assert!(
        matches!(got, FetchOutcome::Fetched(ref f) if !f.partial),
        "{got:?}"
    );
}

#[tokio::test]
async fn encrypted_round_trip_and_missing_key() {
    let tmp = tempfile::tempdir().unwrap();
    let identity = tmp.path().join("key.txt");
    let recipient = kars_backup_encrypt::generate_identity_file(&identity).unwrap();
    let sink = local(&tmp.path().join("a"));
    let data = segment_bytes(4);
    let seg = write(tmp.path(), "000000010000000000000007", &data);
    let options = ArchiveOptions {
        encryptor: kars_backup_encrypt::encryptor(&[recipient], None).unwrap(),
        ..ArchiveOptions::default()
    };
    let report = archive_wal(std::slice::from_ref(&sink), &seg, &options)
        .await
        .unwrap();
    assert!(report.destinations[0].key.ends_with(".zst.age"));
    // Stored bytes are age, not zstd.
    let stored = sink.get_bytes(&report.destinations[0].key).await.unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1"));
    // Idempotent without the identity: the checksum is in the key.
    let again = archive_wal(std::slice::from_ref(&sink), &seg, &options)
        .await
        .unwrap();
    assert_eq!(again.destinations[0].outcome, ArchiveOutcome::AlreadyStored);

    let dest = tmp.path().join("out");
    let err = fetch_wal(
        std::slice::from_ref(&sink),
        "000000010000000000000007",
        &dest,
        &fetch_opts(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::KeyMissing { .. }), "{err}");
    let keys = kars_backup_encrypt::DecryptionKeys::new()
        .with_identity_file(&identity)
        .unwrap();
    let with_key = FetchOptions {
        decryptor: Some(Arc::new(keys)),
        ..fetch_opts()
    };
    let got = fetch_wal(&[sink], "000000010000000000000007", &dest, &with_key)
        .await
        .unwrap();
    assert!(matches!(got, FetchOutcome::Fetched(_)));
    assert!(std::fs::read(&dest).unwrap() == data);
}

#[tokio::test]
async fn history_files_take_the_cluster_from_pg_control_and_gaps_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = local(&tmp.path().join("a"));
    let sinks = vec![sink.clone()];
    let pgdata = tmp.path().join("data");
    std::fs::create_dir_all(pgdata.join("global")).unwrap();
    let mut control = vec![0u8; 8192];
    control[..8].copy_from_slice(&SYSID.to_le_bytes());
    std::fs::write(pgdata.join("global/pg_control"), control).unwrap();
    let history = write(
        tmp.path(),
        "00000002.history",
        b"1\t0/5000148\tno recovery target specified\n",
    );
    // Without the data directory the cluster is unknown.
    let err = archive_wal(&sinks, &history, &opts()).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput(ref m) if m.contains("pg_control")),
        "{err}"
    );
    let with_pgdata = ArchiveOptions {
        pgdata: Some(pgdata.clone()),
        ..opts()
    };
    archive_wal(&sinks, &history, &with_pgdata).await.unwrap();

    for seg in [1u64, 2, 4] {
        let name = WalName::segment(1, seg, DEFAULT_SEGMENT_SIZE).name;
        let p = write(tmp.path(), &name, &segment_bytes(seg as u8));
        archive_wal(&sinks, &p, &opts()).await.unwrap();
    }
    let chains = list_chains(&sink, DEFAULT_SEGMENT_SIZE).await.unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].system_identifier, SYSID);
    let t1 = &chains[0].timelines[0];
    assert_eq!(t1.segments, 3);
    assert_eq!(t1.gaps.len(), 1);
    assert_eq!(t1.gaps[0].first, "000000010000000000000003");
    assert!(chains[0].timelines[1].history);

    // Fetch from the data directory (restore_command's cwd): the history file, and read-ahead.
    let pg_wal = pgdata.join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let fetch = FetchOptions {
        pgdata: Some(pgdata.clone()),
        read_ahead: 3,
        ..FetchOptions::default()
    };
    let dest = pg_wal.join("RECOVERYHISTORY");
    let got = fetch_wal(&sinks, "00000002.history", &dest, &fetch)
        .await
        .unwrap();
    assert!(matches!(got, FetchOutcome::Fetched(_)));
    assert!(
        std::fs::read_to_string(&dest)
            .unwrap()
            .starts_with("1\t0/5000148")
    );
    let dest = pg_wal.join("RECOVERYXLOG");
    fetch_wal(&sinks, "000000010000000000000001", &dest, &fetch)
        .await
        .unwrap();
    // 2 and 4 were read ahead (3 is missing); 2 is then served from the spool.
    let spool = pg_wal.join(SPOOL_DIR);
    assert!(spool.join("000000010000000000000002").is_file());
    assert!(spool.join("000000010000000000000004").is_file());
    let got = fetch_wal(&sinks, "000000010000000000000002", &dest, &fetch)
        .await
        .unwrap();
    assert!(
        matches!(got, FetchOutcome::Fetched(ref f) if f.from.contains(SPOOL_DIR)),
        "{got:?}"
    );
    assert!(std::fs::read(&dest).unwrap() == segment_bytes(2));
    assert!(!spool.join("000000010000000000000002").exists());
}

#[tokio::test]
async fn the_path_follows_timeline_switches_and_stops_at_the_first_gap() {
    use kars_backup_postgres::wal::wal_path;
    let (tmp, sink, sinks, with_id) = archive_with_id();
    let push = |name: String, seed: u8| {
        let p = write(tmp.path(), &name, &segment_bytes(seed));
        let sinks = sinks.clone();
        let o = with_id.clone();
        async move { archive_wal(&sinks, &p, &o).await.unwrap() }
    };
    // Timeline 1: 1, 2, and 3 only as the .partial PostgreSQL archives at a promotion.
    for seg in [1u64, 2] {
        push(
            WalName::segment(1, seg, DEFAULT_SEGMENT_SIZE).name,
            seg as u8,
        )
        .await;
    }
    push("000000010000000000000003.partial".into(), 3).await;
    let history = write(
        tmp.path(),
        "00000002.history",
        b"1\t0/3000148\tno recovery target specified\n",
    );
    archive_wal(&sinks, &history, &with_id).await.unwrap();
    // Timeline 2 from the switch's segment: 3, 4, then 6 (5 lost).
    for seg in [3u64, 4, 6] {
        push(
            WalName::segment(2, seg, DEFAULT_SEGMENT_SIZE).name,
            10 + seg as u8,
        )
        .await;
    }
    let path = wal_path(
        &sink,
        SYSID,
        "000000010000000000000001",
        None,
        None,
        DEFAULT_SEGMENT_SIZE,
    )
    .await
    .unwrap();
    assert_eq!(path.timeline, 2);
    let steps: Vec<(u32, &str, Option<&str>)> = path
        .steps
        .iter()
        .map(|s| (s.timeline, s.first.as_str(), s.last.as_deref()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (
                1,
                "000000010000000000000001",
                Some("000000010000000000000002")
            ),
            (
                2,
                "000000020000000000000003",
                Some("000000020000000000000004")
            ),
        ]
    );
    assert_eq!(
        path.first_missing.as_deref(),
        Some("000000020000000000000005")
    );

    // Once 5 is there, the path reaches the end; staying on timeline 1 ends at its .partial.
    push(WalName::segment(2, 5, DEFAULT_SEGMENT_SIZE).name, 15).await;
    let path = wal_path(
        &sink,
        SYSID,
        "000000010000000000000002",
        None,
        None,
        DEFAULT_SEGMENT_SIZE,
    )
    .await
    .unwrap();
    assert_eq!(path.first_missing, None);
    assert_eq!(path.last.as_deref(), Some("000000020000000000000006"));
    let t1 = wal_path(
        &sink,
        SYSID,
        "000000010000000000000001",
        Some(1),
        None,
        DEFAULT_SEGMENT_SIZE,
    )
    .await
    .unwrap();
    assert_eq!(t1.last.as_deref(), Some("000000010000000000000003"));
    assert!(t1.last_is_partial);
    assert_eq!(t1.first_missing, None);
}

#[tokio::test]
async fn pruning_keeps_what_the_oldest_base_backup_needs_and_every_history_file() {
    use kars_backup_postgres::wal::prune_wal;
    let (tmp, sink, sinks, with_id) = archive_with_id();
    for (tli, seg) in [(1u32, 1u64), (1, 2), (1, 3), (2, 3), (2, 4), (2, 5)] {
        let name = WalName::segment(tli, seg, DEFAULT_SEGMENT_SIZE).name;
        let p = write(tmp.path(), &name, &segment_bytes(seg as u8));
        archive_wal(&sinks, &p, &with_id).await.unwrap();
    }
    let history = write(tmp.path(), "00000002.history", b"1\t0/3000000\tx\n");
    archive_wal(&sinks, &history, &with_id).await.unwrap();
    let label = write(
        tmp.path(),
        "000000010000000000000002.00000028.backup",
        b"START WAL LOCATION: 0/2000028\n",
    );
    archive_wal(&sinks, &label, &with_id).await.unwrap();

    let plan = prune_wal(
        &sink,
        SYSID,
        "000000020000000000000004",
        DEFAULT_SEGMENT_SIZE,
        true,
    )
    .await
    .unwrap();
    let names: Vec<String> = plan
        .removed
        .iter()
        .map(|k| StoredWal::parse(k).unwrap().wal.name)
        .collect();
    assert_eq!(
        names,
        vec![
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
            "000000020000000000000003",
        ]
    );
    assert_eq!(plan.kept, 3);
    // A dry run deleted nothing; the real one deletes exactly the plan.
    assert_eq!(sink.list(None).await.unwrap().len(), 8);
    let done = prune_wal(
        &sink,
        SYSID,
        "000000020000000000000004",
        DEFAULT_SEGMENT_SIZE,
        false,
    )
    .await
    .unwrap();
    assert_eq!(done, plan);
    let left: Vec<String> = sink
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|m| StoredWal::parse(&m.key).unwrap().wal.name)
        .collect();
    assert_eq!(
        left,
        vec![
            "00000002.history",
            "000000020000000000000004",
            "000000020000000000000005"
        ]
    );
}

#[tokio::test]
async fn an_incompressible_segment_goes_through_a_temporary_file() {
    let (tmp, sink, sinks, with_id) = archive_with_id();
    let data = segment_of(9, SEGMENT, SEGMENT, 0xff);
    let seg = write(tmp.path(), "000000010000000000000007", &data);
    let report = archive_wal(&sinks, &seg, &with_id).await.unwrap();
    match report.destinations[0].outcome {
        // More than the 8 MiB kept in memory: spooled through a temporary file.
        ArchiveOutcome::Stored { stored_size } => assert!(stored_size > 15 * 1024 * 1024),
        ref o => panic!("{o:?}"),
    }
    let again = archive_wal(&sinks, &seg, &with_id).await.unwrap();
    assert_eq!(again.destinations[0].outcome, ArchiveOutcome::AlreadyStored);
    let dest = tmp.path().join("RECOVERYXLOG");
    let got = fetch_wal(&[sink], "000000010000000000000007", &dest, &fetch_opts())
        .await
        .unwrap();
    assert!(matches!(got, FetchOutcome::Fetched(_)), "{got:?}");
    assert!(std::fs::read(&dest).unwrap() == data);
}

#[tokio::test]
async fn segments_of_other_sizes_are_numbered_by_the_size_the_archive_records() {
    // 1 MiB segments (initdb --wal-segsize=1): 4,096 to a log file, so 000000010000000000000FFF
    // is followed by 000000010000000100000000 (with 16 MiB it would be a gap of thousands).
    const MIB: usize = 1024 * 1024;
    let (tmp, sink, sinks, with_id) = archive_with_id();
    for (i, name) in [
        "000000010000000000000FFE",
        "000000010000000000000FFF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    .into_iter()
    .enumerate()
    {
        let p = write(tmp.path(), name, &segment_of(i as u8, MIB, MIB / 2, 0x0f));
        archive_wal(&sinks, &p, &with_id).await.unwrap();
    }
    let keys = keys_of(&sink).await;
    assert!(
        keys.contains(&kars_backup_postgres::wal::segment_size_key(
            SYSID, MIB as u64
        )),
        "{keys:?}"
    );
    // Listed with the default size as the fallback: the recorded size wins.
    let chains = list_chains(&sink, DEFAULT_SEGMENT_SIZE).await.unwrap();
    let t1 = &chains[0].timelines[0];
    assert_eq!(t1.segments, 4);
    assert!(t1.gaps.is_empty(), "{:?}", t1.gaps);
    assert_eq!(t1.last.as_deref(), Some("000000010000000100000001"));

    // Read-ahead across the log boundary names the next segments right.
    let pg_wal = tmp.path().join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let fetch = FetchOptions {
        read_ahead: 2,
        ..fetch_opts()
    };
    fetch_wal(
        &sinks,
        "000000010000000000000FFF",
        &pg_wal.join("RECOVERYXLOG"),
        &fetch,
    )
    .await
    .unwrap();
    let spool = pg_wal.join(SPOOL_DIR);
    assert!(spool.join("000000010000000100000000").is_file());
    assert!(spool.join("000000010000000100000001").is_file());
}

#[tokio::test]
async fn a_full_spool_uploads_before_returning_and_the_pusher_drains_it_in_order() {
    let (tmp, sink, sinks, with_id) = archive_with_id();
    let spool_dir = tmp.path().join("spool");
    let mut spool = SpoolOptions::new(&spool_dir);
    // Room for one segment: the second goes straight to the destination.
    spool.max_bytes = 1;
    let spooled = ArchiveOptions {
        spool: Some(spool),
        ..with_id.clone()
    };
    let first = write(tmp.path(), "000000010000000000000001", &segment_bytes(1));
    let second = write(tmp.path(), "000000010000000000000002", &segment_bytes(2));
    let r = archive_wal(&sinks, &first, &spooled).await.unwrap();
    assert_eq!(r.destinations[0].outcome, ArchiveOutcome::Spooled);
    assert!(keys_of(&sink).await.is_empty(), "only queued so far");
    // The same file again while queued: fine; other content under its name: refused.
    archive_wal(&sinks, &first, &spooled).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let bad = write(other.path(), "000000010000000000000001", &segment_bytes(3));
    let e = archive_wal(&sinks, &bad, &spooled).await.unwrap_err();
    assert!(e.to_string().contains("queued in"), "{e}");
    let r = archive_wal(&sinks, &second, &spooled).await.unwrap();
    assert!(
        matches!(r.destinations[0].outcome, ArchiveOutcome::Stored { .. }),
        "{r:?}"
    );
    let status = spool_status(&spool_dir).unwrap();
    assert_eq!(status.queued.len(), 1);
    assert_eq!(status.queued[0].name, "000000010000000000000001");

    let pushed = push_spool(
        &sinks,
        &spool_dir,
        &PushOptions {
            archive: with_id,
            linger: std::time::Duration::ZERO,
            ..PushOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(pushed.pushed, 1);
    assert!(spool_status(&spool_dir).unwrap().queued.is_empty());
    let chains = list_chains(&sink, DEFAULT_SEGMENT_SIZE).await.unwrap();
    assert_eq!(chains[0].timelines[0].segments, 2);
    assert!(chains[0].timelines[0].gaps.is_empty());
}
