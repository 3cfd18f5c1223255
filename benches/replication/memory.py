#!/usr/bin/env python3
"""Memory and idle CPU of `kars-backup replicate` on a large database (issue 16: at most 100 MB
RSS whatever the database size, low CPU while idle).

For each size: builds (once, cached) a KARS-like database of that size in WAL mode
(`audit_logs` rows of about 1.3 KB, plus companies, users and assets), copies it into a work
directory, and runs `kars-backup replicate --db DB --to file://REPLICA --sync-interval 1s`
through four phases while sampling its RSS (/proc/PID/status VmRSS every 20 ms):

  snapshot  until the initial snapshot is stored;
  burst     BIG_TX large transactions, each rewriting about BIG_TX_MB of `audit_logs` pages in
            one UPDATE, while a second connection commits small ~1 KB rows at 200 tx/s;
  drain     until everything is shipped (the replica stops growing);
  idle      IDLE seconds without writes: the replicator's CPU time (utime + stime) over them.

Then SIGTERM, VmHWM (the peak RSS the kernel recorded) read just before, and a restore of the
latest state checked against the writer (integrity and row counts). Prints one Markdown row
per size and writes every figure to JSON_OUT.

Usage: memory.py --kars BIN [--sizes-mb "256 1024"] [--big-tx 3] [--big-tx-mb 200]
                 [--idle 20] [--cache DIR] [--json OUT] [--keep]
"""

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

from bench import SCHEMA, cpu_seconds, insert_reference_rows, tree_bytes


def say(msg):
    print(f"memory bench: {msg}", file=sys.stderr, flush=True)


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def make_db(path, size_mb):
    """A KARS-like database of about `size_mb` MB, in WAL mode, fully checkpointed."""
    tmp = path + ".building"
    for p in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
        if os.path.exists(p):
            os.remove(p)
    con = sqlite3.connect(tmp, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.executescript(SCHEMA)
    con.execute("BEGIN")
    insert_reference_rows(con, 20000)
    con.execute("COMMIT")
    target = size_mb << 20
    i = 0
    while os.path.getsize(tmp) < target:
        rows = []
        for _ in range(20000):
            i += 1
            rows.append((i, f"asset {i}", '{"note":"' + os.urandom(450).hex() + '"}',
                         f"user{i % 300 + 1}@example.com"))
        con.execute("BEGIN")
        con.executemany("INSERT INTO audit_logs (action, entity_type, entity_id, entity_name,"
                        " details, timestamp, user_email) VALUES ('create', 'asset', ?, ?, ?,"
                        " '2026-01-01T00:00:00.000Z', ?)", rows)
        con.execute("COMMIT")
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    os.rename(tmp, path)
    return i


class Sampler(threading.Thread):
    """Samples a process's RSS every 20 ms; `peak` per phase."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.phase = "start"
        self.peaks = {}
        self.stop = False

    def run(self):
        while not self.stop:
            try:
                rss = status_kb(self.pid, "VmRSS")
            except (FileNotFoundError, ProcessLookupError):
                return
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            time.sleep(0.02)


def small_writer(db, stop, counter):
    con = sqlite3.connect(db, isolation_level=None, timeout=60)
    con.execute("PRAGMA synchronous=NORMAL")
    due = time.monotonic()
    while not stop.is_set():
        con.execute("BEGIN")
        con.execute("INSERT INTO audit_logs (action, entity_type, entity_id, entity_name, details,"
                    " timestamp, user_email) VALUES ('update', 'asset', 1, 'asset 1', ?,"
                    " strftime('%Y-%m-%dT%H:%M:%fZ'), 'user1@example.com')",
                    ('{"note":"' + os.urandom(450).hex() + '"}',))
        con.execute("COMMIT")
        counter[0] += 1
        due += 1 / 200
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.05:
            due = time.monotonic()
    con.close()


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise SystemExit(f"memory bench: timed out waiting for {what}")


def run_size(args, size_mb, work):
    cache = os.path.expanduser(args.cache)
    os.makedirs(cache, exist_ok=True)
    seed = os.path.join(cache, f"kars-{size_mb}mb.db")
    if not os.path.exists(seed):
        say(f"building a {size_mb} MB KARS-like database in {seed}")
        t = time.monotonic()
        make_db(seed, size_mb)
        say(f"built in {time.monotonic() - t:.0f} s")
    db = os.path.join(work, "assets.db")
    replica = os.path.join(work, "replica")
    shutil.copyfile(seed, db)
    db_bytes = os.path.getsize(db)
    con = sqlite3.connect(db, isolation_level=None, timeout=60)
    max_id = con.execute("SELECT max(id) FROM audit_logs").fetchone()[0]
    log = open(os.path.join(work, "replicate.log"), "w")
    proc = subprocess.Popen([args.kars, "replicate", "--db", db, "--to", "file://" + replica,
                             "--sync-interval", "1s"], stdout=log, stderr=subprocess.STDOUT)
    sampler = Sampler(proc.pid)
    sampler.phase = "snapshot"
    sampler.start()
    result = {"size_mb": size_mb, "db_bytes": db_bytes}
    try:
        t = time.monotonic()

        def snapshot_stored():
            for root, _, files in os.walk(replica):
                if any(f.endswith(".snap") for f in files):
                    return True
            return False

        wait_for(snapshot_stored, 1800, "the initial snapshot")
        result["snapshot_s"] = round(time.monotonic() - t, 1)
        say(f"{size_mb} MB: snapshot stored in {result['snapshot_s']} s")

        sampler.phase = "burst"
        stop = threading.Event()
        counter = [0]
        small = threading.Thread(target=small_writer, args=(db, stop, counter))
        small.start()
        rows_per_tx = int(args.big_tx_mb * (1 << 20) / 1300)
        t = time.monotonic()
        for k in range(args.big_tx):
            lo = 1 + (k * rows_per_tx) % max(1, max_id - rows_per_tx)
            con.execute("BEGIN IMMEDIATE")
            con.execute("UPDATE audit_logs SET details = '{\"note\":\"' || hex(randomblob(450))"
                        " || '\"}' WHERE id BETWEEN ? AND ?", (lo, lo + rows_per_tx - 1))
            con.execute("COMMIT")
            time.sleep(1)
        stop.set()
        small.join()
        result["burst_s"] = round(time.monotonic() - t, 1)
        result["small_commits"] = counter[0]
        say(f"{size_mb} MB: burst of {args.big_tx} x ~{args.big_tx_mb} MB transactions and"
            f" {counter[0]} small ones in {result['burst_s']} s")

        sampler.phase = "drain"
        last = [tree_bytes(replica), time.monotonic(), cpu_seconds(proc.pid)]

        def settled():
            # The replica stopped growing for 3 s and the replicator is quiet (a snapshot is
            # written to a local spool file first: the replica does not grow meanwhile).
            now, cpu = tree_bytes(replica), cpu_seconds(proc.pid)
            busy = cpu - last[2] > 0.05
            last[2] = cpu
            if now != last[0] or busy:
                last[0], last[1] = now, time.monotonic()
            return time.monotonic() - last[1] > 3

        wait_for(settled, 1800, "the replica to catch up")

        sampler.phase = "idle"
        cpu0 = cpu_seconds(proc.pid)
        time.sleep(args.idle)
        result["idle_cpu_s"] = round(cpu_seconds(proc.pid) - cpu0, 3)
        result["idle_s"] = args.idle
        result["vm_hwm_mb"] = round(status_kb(proc.pid, "VmHWM") / 1024, 1)
        result["rss_end_mb"] = round(status_kb(proc.pid, "VmRSS") / 1024, 1)
        result["cpu_total_s"] = round(cpu_seconds(proc.pid), 2)
    finally:
        sampler.stop = True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    for phase, kb in sampler.peaks.items():
        result[f"peak_{phase}_mb"] = round(kb / 1024, 1)
    result["replica_mb"] = round(tree_bytes(replica) / 1e6, 1)
    chain = os.path.join(replica, ".kars-chains", "sqlite", "assets.db", "generations")
    result["generations"] = len(os.listdir(chain)) if os.path.isdir(chain) else 0

    # The replica restores to what the database holds.
    expected = con.execute("SELECT count(*), max(id) FROM audit_logs").fetchone()
    con.close()
    out = os.path.join(work, "restored.db")
    t = time.monotonic()
    r = subprocess.run([args.kars, "restore", "--db", out, "--from", "file://" + replica,
                        "--latest", "--yes"], capture_output=True, text=True)
    result["restore_s"] = round(time.monotonic() - t, 1)
    if r.returncode != 0:
        result["restore"] = f"failed ({r.returncode}): {r.stderr.strip()[-300:]}"
    else:
        rc = sqlite3.connect(out)
        got = rc.execute("SELECT count(*), max(id) FROM audit_logs").fetchone()
        ok = rc.execute("PRAGMA quick_check").fetchone()[0]
        rc.close()
        result["restore"] = "ok" if (ok == "ok" and tuple(got) == tuple(expected)) else (
            f"mismatch: {ok}, {got} != {expected}")
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kars", required=True, help="path of the kars-backup binary")
    p.add_argument("--sizes-mb", default="256 1024")
    p.add_argument("--big-tx", type=int, default=3, help="large transactions in the burst")
    p.add_argument("--big-tx-mb", type=float, default=200, help="MB of rows each rewrites")
    p.add_argument("--idle", type=float, default=20)
    p.add_argument("--cache", default="~/.cache/kars-bench-memory")
    p.add_argument("--json", default="/tmp/kars-replication-memory.json")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    results = []
    for size in [int(s) for s in args.sizes_mb.split()]:
        work = tempfile.mkdtemp(prefix="kars-memory-bench-")
        try:
            results.append(run_size(args, size, work))
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
            else:
                say(f"kept {work}")
        say(json.dumps(results[-1]))
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print("| database | snapshot s | peak RSS MB: snapshot / burst / drain / idle | VmHWM MB |"
          " idle CPU s | generations | replica MB | restore s (latest) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        peaks = " / ".join(str(r.get(f"peak_{ph}_mb", "-"))
                           for ph in ("snapshot", "burst", "drain", "idle"))
        print(f"| {r['db_bytes'] / (1 << 20):.0f} MiB | {r.get('snapshot_s')} | {peaks} |"
              f" {r.get('vm_hwm_mb')} | {r.get('idle_cpu_s')} in {r.get('idle_s')} s |"
              f" {r.get('generations')} | {r.get('replica_mb')} | {r.get('restore_s')} ({r.get('restore')}) |")


if __name__ == "__main__":
    main()
