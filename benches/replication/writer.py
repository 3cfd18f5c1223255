#!/usr/bin/env python3
"""The application side of benches/replication: commits one ~1 KB `audit_logs` row per
transaction at a target rate into a WAL-mode SQLite database, until it is killed.

Like the KARS application, it leaves checkpoints to SQLite's automatic PASSIVE checkpoint
(`wal_autocheckpoint`, 1,000 pages by default) run by the committing connection, so a commit
that triggers one pays for it in its latency, as in the application.

After each commit returns it appends one line to the commit log with a single unbuffered
write(2), so a SIGKILL loses no logged commit (a commit can be in the database without its line,
never the reverse):

    <row id> <commit-returned wall time, µs since the epoch> <commit latency, µs>

The latency is measured from BEGIN to the return of COMMIT. The schedule is open loop: commit i
is due at start + i / rate; a writer that falls behind commits at once (catching up), and skips
ahead rather than bursting when it is more than 50 ms late.

Usage: writer.py DB LOG --rate 200 [--duration SECONDS] [--checkpoint-pages 1000]
                 [--synchronous NORMAL]
"""

import argparse
import json
import os
import random
import sqlite3
import time

ACTIONS = ["create", "update", "delete", "assign", "return", "attest"]
ENTITIES = ["asset", "user", "company", "attestation_campaign", "attestation_record"]
MAKES = ["Apple", "Dell", "Lenovo", "HP", "Microsoft", "Samsung"]


def details(rng, row):
    """A ~1 KB JSON document like the application's change records: field names and words
    compress, the serial numbers, tokens and notes (random hex) do not."""
    changes = {}
    for field in ("status", "owner", "manager", "notes", "location", "asset_tag"):
        changes[field] = {
            "old": f"{field}-{rng.randrange(10**6)}",
            "new": f"{field}-{rng.randrange(10**6)}",
        }
    doc = {
        "row": row,
        "make": rng.choice(MAKES),
        "serial_number": os.urandom(8).hex(),
        "changes": changes,
        "request": {"ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                    "user_agent": "Mozilla/5.0 (X11; Linux x86_64) KARS/2.4"},
        "note": os.urandom(210).hex(),
    }
    return json.dumps(doc, separators=(",", ":"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("log")
    p.add_argument("--rate", type=float, required=True, help="target commits per second")
    p.add_argument("--duration", type=float, default=0, help="stop after SECONDS (0: run until killed)")
    p.add_argument("--checkpoint-pages", type=int, default=1000, help="wal_autocheckpoint (PASSIVE)")
    p.add_argument("--synchronous", default="NORMAL", help="PRAGMA synchronous")
    a = p.parse_args()

    con = sqlite3.connect(a.db, isolation_level=None, timeout=30)
    con.execute("PRAGMA busy_timeout=30000")
    mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    if mode != "wal":
        raise SystemExit(f"writer: {a.db} is in journal mode {mode}, expected wal")
    con.execute(f"PRAGMA synchronous={a.synchronous}")
    con.execute(f"PRAGMA wal_autocheckpoint={a.checkpoint_pages}")
    log = os.open(a.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    rng = random.Random(os.getpid())
    interval = 1.0 / a.rate
    start = time.monotonic()
    due = start
    insert = ("INSERT INTO audit_logs (action, entity_type, entity_id, entity_name, details,"
              " timestamp, user_email) VALUES (?, ?, ?, ?, ?, ?, ?)")
    n = 0
    while not a.duration or time.monotonic() - start < a.duration:
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.05:
            due = now  # more than 50 ms behind: skip ahead rather than burst
        due += interval
        n += 1
        row = (rng.choice(ACTIONS), rng.choice(ENTITIES), rng.randrange(1, 5000),
               f"{rng.choice(MAKES)} laptop {rng.randrange(10**5):05d}", details(rng, n),
               time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
               f"user{rng.randrange(300)}@example.com")
        t0 = time.perf_counter_ns()
        con.execute("BEGIN IMMEDIATE")
        cur = con.execute(insert, row)
        con.execute("COMMIT")
        t1 = time.perf_counter_ns()
        wall_us = time.time_ns() // 1000
        os.write(log, f"{cur.lastrowid} {wall_us} {(t1 - t0) // 1000}\n".encode())
    os.close(log)
    con.close()


if __name__ == "__main__":
    main()
