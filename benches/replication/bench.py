#!/usr/bin/env python3
"""Continuous SQLite replication side by side: kars-backup replicate and Litestream on the same
workload in the same run (benches/replication/compare.sh installs the tools and calls this).

For each target rate and run, and for each tool ("baseline": the writer alone, no replicator;
"litestream": `litestream replicate DB file:///DIR` at its defaults; "kars": `kars-backup
replicate --db DB --to file:///DIR --sync-interval 1s`), on a fresh copy of one seed database:
  1. start the replicator and wait until it has written its first file (then 1 s more);
  2. start writer.py (one ~1 KB audit_logs row per transaction at the target rate, WAL mode,
     SQLite's automatic PASSIVE checkpoints) for DURATION seconds plus a random fraction of a
     second (so that the kill falls at a random phase of the replicator's cycle), sampling the
     size of the database's -wal every 20 ms;
  3. read the replicator's CPU time (utime + stime, /proc/PID/stat), then SIGKILL the writer and
     the replicator together (one process group, one killpg: "the host dies");
  4. restore the latest state (timed) and compare it with the writer's commit log: RPO is the time
     between the last logged commit and the newest commit present in the restore;
  5. restore to INSTANTS random instants T in the replicated window and compare each with the
     log: a commit that returned before T must be there, a commit that began after T must not
     (one in flight at T may be either); the error of a restore is how long before T the first
     missing commit returned, or how long after T the first extra one began (0 when exact).
The medians over the runs (with the range) go to one Markdown table on stdout and, with every
run's figures, to a JSON file.
"""

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
WRITER = os.path.join(HERE, "writer.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg):
    print(f"replication bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --- the tools ---------------------------------------------------------------------------------

class Litestream:
    name = "litestream"
    label = "Litestream 0.5.17 (defaults: 1 s sync)"

    def __init__(self, binary):
        self.bin = binary

    def replicate(self, db, replica):
        return [self.bin, "replicate", db, "file://" + replica]

    def restore(self, replica, out, instant=None):
        cmd = [self.bin, "restore", "-o", out]
        if instant is not None:
            cmd += ["-timestamp", iso(instant)]
        return cmd + ["file://" + replica]


class Kars:
    name = "kars"
    label = "kars-backup replicate (--sync-interval 1s)"

    def __init__(self, binary):
        self.bin = binary

    def replicate(self, db, replica):
        return [self.bin, "replicate", "--db", db, "--to", "file://" + replica,
                "--sync-interval", "1s"]

    def restore(self, replica, out, instant=None):
        cmd = [self.bin, "restore", "--db", out, "--from", "file://" + replica]
        cmd += ["--latest"] if instant is None else ["--to-time", iso(instant)]
        return cmd + ["--yes"]


def kars_availability(binary, build_error):
    """None when `kars-backup replicate --help` succeeds, otherwise why the kars side cannot run."""
    if build_error:
        return build_error
    if not binary or not os.access(binary, os.X_OK):
        return f"no kars-backup binary at {binary!r}"
    try:
        r = subprocess.run([binary, "replicate", "--help"], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`kars-backup replicate --help` failed: {e}"
    if r.returncode != 0:
        first = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[0]
        return f"`kars-backup replicate --help` exited {r.returncode}: {first}"
    return None


# --- helpers -------------------------------------------------------------------------------------

def iso(t_us):
    """An instant (µs since the epoch) as 2026-12-05T10:00:00.250Z (millisecond precision)."""
    dt = datetime.fromtimestamp(t_us // 1000 / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{(t_us // 1000) % 1000:03d}Z"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def has_file(path):
    return any(files for _, _, files in os.walk(path))


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except FileNotFoundError:
        return "(no output)"


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


# Some of the KARS application's tables (see shared/reference/kars-schema.md).
SCHEMA = """
    CREATE TABLE companies (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, description TEXT,
        created_date TEXT, hubspot_id TEXT, hubspot_synced_at TEXT);
    CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, password_hash TEXT,
        name TEXT, role TEXT, created_at TEXT, last_login TEXT, first_name TEXT, last_name TEXT);
    CREATE TABLE assets (id INTEGER PRIMARY KEY, employee_first_name TEXT,
        employee_last_name TEXT, employee_email TEXT,
        owner_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
        company_id INTEGER REFERENCES companies(id) ON DELETE RESTRICT, asset_type TEXT,
        make TEXT, model TEXT, serial_number TEXT UNIQUE, asset_tag TEXT UNIQUE, status TEXT,
        issued_date TEXT, registration_date TEXT, last_updated TEXT, notes TEXT);
    CREATE TABLE audit_logs (id INTEGER PRIMARY KEY, action TEXT, entity_type TEXT,
        entity_id INTEGER, entity_name TEXT, details TEXT, timestamp TEXT, user_email TEXT);
"""


def insert_reference_rows(con, assets):
    """20 companies, 300 users and `assets` assets, in the open transaction of `con`."""
    rng = random.Random(16)
    for i in range(1, 21):
        con.execute("INSERT INTO companies (id, name, created_date) VALUES (?, ?, ?)",
                    (i, f"Company {i}", "2026-01-01T00:00:00.000Z"))
    for i in range(1, 301):
        con.execute("INSERT INTO users (id, email, password_hash, name, role, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (i, f"user{i}@example.com", os.urandom(30).hex(), f"User {i}", "employee",
                     "2026-01-01T00:00:00.000Z"))
    for i in range(1, assets + 1):
        con.execute("INSERT INTO assets (id, employee_email, owner_id, company_id, asset_type,"
                    " make, model, serial_number, asset_tag, status, notes)"
                    " VALUES (?, ?, ?, ?, 'laptop', 'Dell', 'Latitude', ?, ?, 'active', ?)",
                    (i, f"user{i % 300 + 1}@example.com", i % 300 + 1, i % 20 + 1,
                     os.urandom(8).hex(), f"TAG-{i:06d}", "issued " * rng.randrange(1, 20)))


def make_seed(path, rows):
    """A small KARS-like database (some of the application's tables, `rows` audit_logs rows of
    about 1 KB), in WAL mode and fully checkpointed, so every run starts from the same file."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    con.execute("BEGIN")
    insert_reference_rows(con, 2000)
    for i in range(1, rows + 1):
        con.execute("INSERT INTO audit_logs (action, entity_type, entity_id, entity_name, details,"
                    " timestamp, user_email) VALUES ('create', 'asset', ?, ?, ?, ?, ?)",
                    (i, f"asset {i}", '{"note":"' + os.urandom(450).hex() + '"}',
                     "2026-01-01T00:00:00.000Z", f"user{i % 300 + 1}@example.com"))
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    seed_max = con.execute("SELECT max(id) FROM audit_logs").fetchone()[0]
    con.close()
    return seed_max


def read_log(path):
    """The writer's commit log: ids, commit-returned times and latencies (µs), in commit order."""
    ids, ends, lats = [], [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue  # never expected: each line is written whole by one write(2)
            ids.append(int(parts[0]))
            ends.append(int(parts[1]))
            lats.append(int(parts[2]))
    return ids, ends, lats


def inspect(db):
    """(newest audit_logs id or None, quick_check's verdict) of a restored database: a restore
    that SQLite finds damaged is a result of the run, not an error of the bench."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        try:
            verdict = con.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            verdict = str(e)
        try:
            newest = con.execute("SELECT coalesce(max(id), 0) FROM audit_logs").fetchone()[0]
        except sqlite3.DatabaseError:
            newest = None
        return newest, verdict
    finally:
        con.close()


# --- one run -------------------------------------------------------------------------------------

class WalSampler(threading.Thread):
    def __init__(self, wal):
        super().__init__(daemon=True)
        self.wal, self.max, self.stop = wal, 0, threading.Event()

    def run(self):
        while not self.stop.wait(0.02):
            try:
                self.max = max(self.max, os.stat(self.wal).st_size)
            except FileNotFoundError:
                pass


def run_once(tool, seed, seed_max, rate, args, work, rng):
    """One run of one tool; whatever fails (or an interrupt), no process of it outlives it."""
    groups = []
    try:
        return _run_once(tool, seed, seed_max, rate, args, work, rng, groups)
    except BaseException:
        for g in groups:
            try:
                os.killpg(g, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise


def _run_once(tool, seed, seed_max, rate, args, work, rng, groups):
    os.makedirs(work)
    db, replica, log = (os.path.join(work, n) for n in ("assets.db", "replica", "commits.log"))
    shutil.copyfile(seed, db)
    os.makedirs(replica)
    out = {"tool": tool.name if tool else "baseline", "rate": rate}
    rep = None
    rep_log = os.path.join(work, "replicator.log")
    if tool:
        with open(rep_log, "wb") as f:
            rep = subprocess.Popen(tool.replicate(db, replica), stdout=f, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, process_group=0)
        groups.append(rep.pid)
        deadline = time.monotonic() + 30
        while not has_file(replica):
            if rep.poll() is not None:
                raise BenchError(f"{tool.name} replicate exited {rep.returncode} before writing"
                                 f" anything:\n{tail(rep_log)}")
            if time.monotonic() > deadline:
                os.killpg(rep.pid, signal.SIGKILL)
                rep.wait()
                raise BenchError(f"{tool.name} replicate wrote nothing to {replica} in 30 s:"
                                 f"\n{tail(rep_log)}")
            time.sleep(0.05)
        time.sleep(1.0)
    sampler = WalSampler(db + "-wal")
    sampler.start()
    writer_cmd = [sys.executable, WRITER, db, log, "--rate", str(rate),
                  "--checkpoint-pages", str(args.checkpoint_pages), "--synchronous",
                  args.synchronous]
    writer_err = os.path.join(work, "writer.err")
    with open(writer_err, "wb") as f:
        if rep:
            writer = subprocess.Popen(writer_cmd, stderr=f, stdin=subprocess.DEVNULL,
                                      process_group=rep.pid)
        else:
            writer = subprocess.Popen(writer_cmd, stderr=f, stdin=subprocess.DEVNULL,
                                      process_group=0)
            groups.append(writer.pid)
    group = rep.pid if rep else writer.pid
    # A random extra fraction of a second, so the kill falls at a random phase of the
    # replicators' 1 s cycles (otherwise it would land at the same point of every cycle).
    end = time.monotonic() + args.duration + rng.random()
    while time.monotonic() < end:
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
        for p, what, plog in ((writer, "writer", writer_err), (rep, "replicator", rep_log)):
            if p is not None and p.poll() is not None:
                os.killpg(group, signal.SIGKILL)
                raise BenchError(f"the {what} exited {p.returncode} during the run:\n{tail(plog)}")
    # The host dies: the replicator's CPU time first, then one SIGKILL for the whole group.
    if rep:
        out["cpu_s"] = cpu_seconds(rep.pid)
    os.killpg(group, signal.SIGKILL)
    writer.wait()
    if rep:
        rep.wait()
    sampler.stop.set()
    sampler.join()
    out["load1"] = loadavg()[0]
    out["max_wal_bytes"] = sampler.max

    ids, ends, lats = read_log(log)
    if len(ids) < 2:
        raise BenchError(f"the writer logged {len(ids)} commits:\n{tail(writer_err)}")
    out["commits"] = len(ids)
    out["achieved_rate"] = (len(ids) - 1) / ((ends[-1] - ends[0]) / 1e6)
    out["p50_ms"] = percentile(lats, 0.50) / 1000
    out["p99_ms"] = percentile(lats, 0.99) / 1000
    if not tool:
        return out

    out["replica_bytes"] = tree_bytes(replica)
    latest = os.path.join(work, "latest.db")
    t0 = time.monotonic()
    r = subprocess.run(tool.restore(replica, latest), capture_output=True, text=True)
    out["restore_s"] = time.monotonic() - t0
    if r.returncode != 0:
        raise BenchError(f"{tool.name} restore of the latest state exited {r.returncode}:"
                         f"\n{r.stderr.strip() or r.stdout.strip()}")
    got, verdict = inspect(latest)
    out["latest_ok"] = verdict == "ok" and got is not None
    if verdict != "ok":
        out["latest_damage"] = verdict
    pos = {i: k for k, i in enumerate(ids)}
    newest = None  # commit time of the newest commit in the restore
    if not out["latest_ok"]:
        out["rpo_s"] = None  # no RPO from a damaged restore: the run is reported as damaged
    elif got > ids[-1]:
        # Committed but killed before its line was written: nothing logged is lost.
        out["rpo_s"] = 0.0
        newest = ends[-1]
    elif got in pos:
        newest = ends[pos[got]]
        out["rpo_s"] = (ends[-1] - newest) / 1e6
    else:
        # None of the writer's commits made it.
        out["rpo_s"] = (ends[-1] - (ends[0] - lats[0])) / 1e6
    if out["latest_ok"]:
        out["restored_commits"] = max(0, got - seed_max)
        out["lost_commits"] = max(0, ids[-1] - got)

    # Restores to instants in the replicated window (up to the newest commit of the latest
    # restore, or of the log when that restore is damaged), checked against the log.
    begins = [e - l for e, l in zip(ends, lats)]
    checks = []
    window_end = newest if newest is not None else ends[-1]
    if window_end > ends[0]:
        for k in range(args.instants):
            t = rng.randrange(ends[0], window_end + 1)
            t -= t % 1000  # the restore tools take milliseconds
            path = os.path.join(work, f"at-{k}.db")
            r = subprocess.run(tool.restore(replica, path, t), capture_output=True, text=True)
            if r.returncode != 0:
                checks.append({"instant": iso(t), "error": (r.stderr.strip() or r.stdout.strip())})
                continue
            got_t, verdict = inspect(path)
            if not args.keep:
                os.remove(path)
            if verdict != "ok" or got_t is None:
                checks.append({"instant": iso(t), "error": f"restored database damaged: {verdict}"})
                continue
            # must: every commit that returned by T; may: those that began by T.
            must = max((i for i, e in zip(ids, ends) if e <= t), default=seed_max)
            may = max((i for i, b in zip(ids, begins) if b <= t), default=seed_max)
            c = {"instant": iso(t), "restored_id": got_t, "missed": max(0, must - got_t),
                 "extra": max(0, got_t - may)}
            if got_t < must:
                c["error_ms"] = (t - ends[pos.get(got_t + 1, 0)]) / 1000
            elif got_t > may:
                c["error_ms"] = (begins[pos[may + 1]] - t) / 1000 if may + 1 in pos else 0.0
            else:
                c["error_ms"] = 0.0
            c["within_50ms"] = c["extra"] == 0 and c["error_ms"] <= 50
            checks.append(c)
    out["instants"] = checks
    return out


# --- report --------------------------------------------------------------------------------------

def summarize(runs):
    def med(key, scale=1.0):
        v = [r[key] * scale for r in runs if r.get(key) is not None]
        return (statistics.median(v), min(v), max(v)) if v else None

    s = {"runs": len(runs), "achieved_rate": med("achieved_rate"), "p50_ms": med("p50_ms"),
         "p99_ms": med("p99_ms"), "max_wal_mb": med("max_wal_bytes", 1e-6),
         "load1": med("load1")}
    if runs and runs[0]["tool"] != "baseline":
        s.update(rpo_s=med("rpo_s"), cpu_s=med("cpu_s"), replica_mb=med("replica_bytes", 1e-6),
                 restore_s=med("restore_s"),
                 latest_damaged=sum(1 for r in runs if not r["latest_ok"]))
        checks = [c for r in runs for c in r.get("instants", [])]
        ok = [c for c in checks if "error" not in c]
        missed = [c["missed"] for c in ok if c["missed"]]
        s["instants"] = {
            "total": len(checks),
            "failed": len(checks) - len(ok),
            "within_50ms": sum(1 for c in ok if c["within_50ms"]),
            "missed_min": min(missed) if missed else 0,
            "missed_max": max(missed) if missed else 0,
            "extra": sum(c["extra"] for c in ok),
            "error_ms_median": statistics.median(c["error_ms"] for c in ok) if ok else None,
            "error_ms_max": max(c["error_ms"] for c in ok) if ok else None,
        }
    return s


def fmt(m, digits=2):
    if m is None:
        return "–"
    v, lo, hi = m
    if round(lo, digits) == round(hi, digits):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def table(results, unavailable):
    lines = [
        "| tx/s (achieved) | replicator | RPO s | restore to T within 50 ms | commits missed"
        " (extra) | error ms median / max | CPU s | commit p50 / p99 ms | replica MB |"
        " restore s | max -wal MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate, by_tool in results.items():
        for name, entry in by_tool.items():
            if "unavailable" in entry:
                lines.append(f"| {rate} | {name} | not available: {entry['unavailable']} |"
                             " | | | | | | | |")
                continue
            if "error" in entry:
                lines.append(f"| {rate} | {name} | FAILED: {entry['error'].splitlines()[0]} |"
                             " | | | | | | | |")
                continue
            s = entry["summary"]
            ach = f"{rate} ({s['achieved_rate'][0]:.0f})"
            lat = f"{fmt(s['p50_ms'])} / {fmt(s['p99_ms'])}"
            wal = fmt(s["max_wal_mb"], 1)
            if name == "baseline":
                lines.append(f"| {ach} | none (baseline) | | | | | | {lat} | | | {wal} |")
                continue
            i = s["instants"]
            within = f"{i['within_50ms']} of {i['total']}" + (
                f" ({i['failed']} failed or damaged)" if i["failed"] else "")
            missed = (f"{i['missed_min']}–{i['missed_max']}" if i["missed_max"] else "0") + \
                f" ({i['extra']})"
            err = ("–" if i["error_ms_median"] is None
                   else f"{i['error_ms_median']:.0f} / {i['error_ms_max']:.0f}")
            rpo = fmt(s["rpo_s"])
            if s["latest_damaged"]:
                rpo += f"; latest restore damaged in {s['latest_damaged']} of {s['runs']} runs"
            lines.append(f"| {ach} | {entry['label']} | {rpo} | {within} | {missed} |"
                         f" {err} | {fmt(s['cpu_s'])} | {lat} | {fmt(s['replica_mb'], 1)} |"
                         f" {fmt(s['restore_s'])} | {wal} |")
    for why in unavailable:
        lines.append("")
        lines.append(f"kars-backup: not available ({why}); its rows are pending the replicator.")
    return "\n".join(lines)


def targets(results):
    """The issue's targets for kars-backup, checked against Litestream's and the baseline's rows
    of the same run: (description, met) pairs; none when the kars side did not run."""
    checks = []
    for rate, by_tool in results.items():
        kars, lite, base = (by_tool.get(n, {}).get("summary") for n in ("kars", "litestream",
                                                                         "baseline"))
        if not kars:
            continue
        i = kars["instants"]
        if kars["rpo_s"]:
            checks.append((f"{rate} tx/s: RPO {kars['rpo_s'][0]:.2f} s <= 1 s",
                           kars["rpo_s"][0] <= 1.0))
        checks.append((f"{rate} tx/s: latest restore intact in every run"
                       f" ({kars['latest_damaged']} damaged)", kars["latest_damaged"] == 0))
        checks.append((f"{rate} tx/s: every restore to an instant within 50 ms, none with a later"
                       f" commit ({i['within_50ms']} of {i['total']}, {i['extra']} extra)",
                       i["total"] > 0 and i["within_50ms"] == i["total"] and i["extra"] == 0))
        if base:
            over = kars["p99_ms"][0] / base["p99_ms"][0] - 1
            checks.append((f"{rate} tx/s: p99 commit latency overhead {over:+.0%} <= 10%"
                           f" ({kars['p99_ms'][0]:.3f} vs {base['p99_ms'][0]:.3f} ms)", over <= 0.10))
        if lite:
            checks.append((f"{rate} tx/s: CPU {kars['cpu_s'][0]:.2f} s <= 1.5 x Litestream's"
                           f" {lite['cpu_s'][0]:.2f} s", kars["cpu_s"][0] <= 1.5 * lite["cpu_s"][0]))
            checks.append((f"{rate} tx/s: replica {kars['replica_mb'][0]:.1f} MB <= Litestream's"
                           f" {lite['replica_mb'][0]:.1f} MB",
                           kars["replica_mb"][0] <= lite["replica_mb"][0]))
            checks.append((f"{rate} tx/s: restore {kars['restore_s'][0]:.2f} s <= Litestream's"
                           f" {lite['restore_s'][0]:.2f} s",
                           kars["restore_s"][0] <= lite["restore_s"][0]))
    return checks


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--litestream", required=True, help="path of the litestream binary")
    p.add_argument("--kars", default="", help="path of the kars-backup binary")
    p.add_argument("--kars-unavailable", default="", help="why kars-backup could not be built")
    p.add_argument("--tools", default="litestream kars")
    p.add_argument("--rates", default="200 1000")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=25)
    p.add_argument("--instants", type=int, default=10, help="restores to an instant per run")
    p.add_argument("--seed-rows", type=int, default=2000)
    p.add_argument("--checkpoint-pages", type=int, default=1000)
    p.add_argument("--synchronous", default="NORMAL")
    p.add_argument("--work", default="")
    p.add_argument("--json", default="/tmp/kars-replication-bench.json")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # An interrupted bench kills its writer and replicator (run_once) before it exits.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)

    tools, unavailable = [], []
    names = args.tools.split()
    if "litestream" in names:
        tools.append(Litestream(args.litestream))
    if "kars" in names:
        why = kars_availability(args.kars, args.kars_unavailable)
        if why:
            unavailable.append(why)
            say(f"kars-backup: not available ({why})")
        else:
            tools.append(Kars(args.kars))

    work = args.work or tempfile.mkdtemp(prefix="kars-repl-bench.")
    os.makedirs(work, exist_ok=True)
    seed = os.path.join(work, "seed.db")
    seed_max = make_seed(seed, args.seed_rows)
    say(f"work directory {work}; seed database {os.path.getsize(seed) / 1e6:.1f} MB")
    load_start = loadavg()
    rng = random.Random(1616)
    rates = [int(r) for r in args.rates.split()]
    results = {}
    raw = []
    for rate in rates:
        by_tool = {"baseline": {"runs": []}}
        for t in tools:
            by_tool[t.name] = {"runs": [], "label": t.label}
        if "kars" in names and unavailable:
            by_tool["kars"] = {"unavailable": unavailable[0]}
        for run in range(1, args.runs + 1):
            # Every tool once per round, so all see the same background load.
            for t in [None] + tools:
                name = t.name if t else "baseline"
                entry = by_tool[name]
                if "error" in entry:
                    continue
                say(f"{rate} tx/s, run {run} of {args.runs}: {name}")
                try:
                    r = run_once(t, seed, seed_max, rate, args,
                                 os.path.join(work, f"{rate}-{run}-{name}"), rng)
                except BenchError as e:
                    say(f"{name} FAILED: {e}")
                    entry["error"] = str(e)
                    continue
                entry["runs"].append(r)
                raw.append(r)
                brief = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                         if k not in ("instants", "tool", "rate")}
                if "instants" in r:
                    ok = [c for c in r["instants"] if "error" not in c]
                    brief["within_50ms"] = f"{sum(c['within_50ms'] for c in ok)}/{len(r['instants'])}"
                    brief["missed"] = [c["missed"] for c in ok]
                say(f"  {brief}")
        for name, entry in by_tool.items():
            if entry.get("runs"):
                entry["summary"] = summarize(entry["runs"])
        results[rate] = by_tool
    load_end = loadavg()

    header = (f"Continuous replication, {args.duration:.0f} s per run, medians of {args.runs} runs"
              f" (range in parentheses); {os.cpu_count()} CPUs, load average"
              f" {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end;"
              f" {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print()
    print(header)
    print()
    print(table(results, unavailable))
    with open(args.json, "w") as f:
        json.dump({"header": header, "args": vars(args), "load_start": load_start,
                   "targets": [{"target": w, "met": m} for w, m in targets(results)],
                   "load_end": load_end, "unavailable": unavailable,
                   "results": {str(k): v for k, v in results.items()}}, f, indent=1)
    say(f"JSON: {args.json}")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    checks = targets(results)
    if checks:
        print()
        for what, met in checks:
            print(f"{'target met:   ' if met else 'TARGET MISSED:'} {what}")
    failed = any("error" in e for by_tool in results.values() for e in by_tool.values())
    sys.exit(1 if failed or not all(met for _, met in checks) else 0)


if __name__ == "__main__":
    main()
