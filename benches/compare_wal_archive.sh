#!/usr/bin/env bash
# Archive throughput of WAL segments through archive_command, one process per segment as
# PostgreSQL runs it: kars-backup pg archive-wal (zstd, optionally age) against pgBackRest's
# synchronous archive-push (when installed: Debian pgbackrest), on the same segments of a real
# cluster (pgbench writes, then pg_switch_wal), to a local directory, in one run:
#
#   (a) kars-backup pg archive-wal --to DIR SEG                 (b) (a) with --encrypt-to age1…
#   (c) pgbackrest archive-push SEG (compress-type=zst, level 3) (d) pgbackrest, compress-type=gz
#   then (e) kars-backup pg fetch-wal of every segment (restore_command).
#
# Prints per-segment wall time (mean over SEGMENTS segments, best of REPEAT rounds), segments/s
# and the stored size. Target from issue 17: (a) at least as many segments/s as (c).
#
# Usage: benches/compare_wal_archive.sh
# Environment: SEGMENTS (32), REPEAT (3), KEEP_WORKDIR=1, KARS_BIN=path (else the release binary
# is built), CARGO_TARGET_DIR as for cargo. Starts its own throwaway cluster (as the postgres
# user when root).
set -euo pipefail

segments="${SEGMENTS:-32}"
repeat="${REPEAT:-3}"

die() { echo "compare_wal_archive: $*" >&2; exit 2; }

# shellcheck source=pg_cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg_cluster.sh"
pg_cluster_start compare-wal -c fsync=off -c synchronous_commit=off -c max_wal_size=8GB \
    -c shared_buffers=256MB
psql_q() { "$bin/psql" -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }

echo "writing ${segments} WAL segments (pgbench)…"
"$bin/pgbench" -q -i -s 10 postgres >/dev/null 2>&1
mkdir -p "$work/segs"
first="$(psql_q -c "SELECT pg_walfile_name(pg_current_wal_lsn())" postgres)"
while :; do
    "$bin/pgbench" -n -T 1 -c 2 postgres >/dev/null 2>&1
    last="$(psql_q -c "SELECT pg_walfile_name(pg_switch_wal())" postgres)"
    n=$(( 16#${last:16:8} - 16#${first:16:8} + 1 ))
    (( n >= segments )) && break
done
for f in $(ls "$work/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$segments"); do
    cp "$work/data/pg_wal/$f" "$work/segs/$f"
done
chown -R --reference="$work" "$work/segs"
count="$(ls "$work/segs" | wc -l)"
sysid="$(psql_q -c "SELECT system_identifier FROM pg_control_system()" postgres)"
echo "$count segments of 16 MiB, system identifier $sysid"
age_key="$work/age.txt"
recipient="$("$kars" key init --out "$age_key" 2>/dev/null)"

# Runs "$@" once per segment ({} replaced by the path); prints the wall seconds of all.
per_segment() {
    local start end
    start=$(date +%s.%N)
    for f in "$work"/segs/*; do
        "${@//\{\}/$f}" >/dev/null
    done
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}
best() { sort -g | head -n 1; }
report() { # label seconds stored-bytes
    printf '%-58s %7.1f ms/segment %7.1f segments/s  stored %s\n' "$1" \
        "$(echo "$2 * 1000 / $count" | bc -l)" "$(echo "$count / $2" | bc -l)" "$3"
}
size_of() { du -sb "$1" 2>/dev/null | cut -f1; }

have_pgbackrest=0
if command -v pgbackrest >/dev/null; then
    have_pgbackrest=1
    for c in zst gz; do
        pgbackrest_conf "$work/pgbr-$c" "compress-type=$c" compress-level=3 "log-path=$work/pgbr-$c"
        "${run_as[@]}" pgbackrest --config="$work/pgbr-$c/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
    done
fi

declare -A times
for round in $(seq "$repeat"); do
    rm -rf "$work/kars-plain" "$work/kars-age"
    times[a]+="$(per_segment "$kars" pg archive-wal --to "$work/kars-plain" {}) "
    times[b]+="$(per_segment "$kars" pg archive-wal --to "$work/kars-age" --encrypt-to "$recipient" {}) "
    if ((have_pgbackrest)); then
        for c in zst gz; do
            rm -rf "$work/pgbr-$c/repo/archive/bench/15-1"
            chown -R --reference="$work" "$work/pgbr-$c"
            times[$c]+="$(per_segment "${run_as[@]}" pgbackrest --config="$work/pgbr-$c/pgbackrest.conf" --stanza=bench archive-push {}) "
        done
    fi
    mkdir -p "$work/fetched"
    start=$(date +%s.%N)
    for f in "$work"/segs/*; do
        "$kars" pg fetch-wal --from "$work/kars-plain" --system-id "$sysid" "$(basename "$f")" "$work/fetched/x"
    done
    times[e]+="$(echo "$(date +%s.%N) - $start" | bc -l) "
done

echo
report "(a) kars-backup pg archive-wal (zstd 3)" "$(tr ' ' '\n' <<<"${times[a]}" | grep . | best)" "$(size_of "$work/kars-plain")"
report "(b) kars-backup pg archive-wal --encrypt-to (zstd 3, age)" "$(tr ' ' '\n' <<<"${times[b]}" | grep . | best)" "$(size_of "$work/kars-age")"
if ((have_pgbackrest)); then
    report "(c) pgbackrest archive-push (zst 3)" "$(tr ' ' '\n' <<<"${times[zst]}" | grep . | best)" "$(size_of "$work/pgbr-zst/repo/archive")"
    report "(d) pgbackrest archive-push (gz 3)" "$(tr ' ' '\n' <<<"${times[gz]}" | grep . | best)" "$(size_of "$work/pgbr-gz/repo/archive")"
else
    echo "(c), (d) skipped: pgbackrest is not installed (apt-get install pgbackrest)"
fi
report "(e) kars-backup pg fetch-wal" "$(tr ' ' '\n' <<<"${times[e]}" | grep . | best)" "-"
echo "raw: $(( count * 16 )) MiB"
