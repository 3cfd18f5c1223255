#!/usr/bin/env bash
# Compares the runbook's PostgreSQL backups and restores with kars-backup's on a generated
# database (pgbench tables plus a KARS-like table with text and jsonb), in one run:
#
#   backup  (a) runbook: pg_dump DB | gzip > x.sql.gz        (b) runbook: pg_dump -Fc DB > x.dump
#           (c) kars-backup backup --db URL --to DIR          (plain SQL, parallel gzip)
#           (d) kars-backup backup --format custom            (e) kars-backup backup --jobs 2
#   restore (f) runbook: gunzip < x.sql.gz | psql NEWDB       (g) runbook: pg_restore -j2 -d NEWDB x.dump
#           (h) kars-backup restore of (c) into a new database (safe mode: staging, parallel load,
#               verify with the default checks: amcheck bt_index_check, row counts; swap)                         (i) kars-backup restore --jobs 2 of (d)
#           (j) (h) without amcheck (--integrity off) (k) (h) with --jobs 1 (one psql, no parallel load)
#           (l) (h) with --integrity full (amcheck with heapallindexed)
#
# Times are wall seconds, the best of REPEAT rounds (each round runs every command once, in the
# order above, so all see the same machine load; the database is warm in the page cache after
# the generation). Before each timed command the server checkpoints and the kernel writes back
# dirty pages (`CHECKPOINT; sync`), so no command pays for the writes of the one before it
# (without it, the first restore of a round ran on a clean page cache and the later ones while
# the kernel flushed the earlier restores' hundreds of MB, stalling them by up to a second). Ratios printed at the end; targets from issue 3: backup (c) <= 0.5 x (a) with
# an archive no larger than (a)'s; restore (h) <= 0.7 x (f).
#
# Usage: benches/compare_postgres.sh
# Environment: SIZE_MB (400, approximate database size), REPEAT (3), KEEP_WORKDIR=1, KARS_BIN=path (else the
# release binary is built), KARS_BENCH_COMPRESSION (kars-backup --compression; default gzip),
# CARGO_TARGET_DIR as for cargo. Starts its own throwaway cluster (as the postgres user when root).
set -euo pipefail

size_mb="${SIZE_MB:-400}"
repeat="${REPEAT:-3}"
compression="${KARS_BENCH_COMPRESSION:-gzip}"

die() { echo "compare_postgres: $*" >&2; exit 2; }

# shellcheck source=pg_cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg_cluster.sh"
pg_cluster_start compare-pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_wal_size=4GB -c shared_buffers=256MB -c maintenance_work_mem=256MB

url() { echo "postgres://kars@127.0.0.1:$port/$1"; }
psql_q() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "generating a ~${size_mb} MB database…"
"$bin/createdb" bench
# pgbench: ~15 MB per scale unit; half of the size goes to a KARS-like audit table.
scale=$(( size_mb / 2 / 15 )); (( scale < 1 )) && scale=1
"$bin/pgbench" -i -q -s "$scale" bench >/dev/null 2>&1
audit_rows=$(( size_mb * 1024 * 1024 / 2 / 300 ))
psql_q -d bench <<SQL
CREATE TABLE audit_logs (id bigserial PRIMARY KEY, at timestamptz NOT NULL, user_id int, action text,
  detail jsonb, note text);
INSERT INTO audit_logs (at, user_id, action, detail, note)
  SELECT timestamptz '2024-01-01' + (g || ' seconds')::interval, g % 5000,
         (ARRAY['login','update','create','delete'])[1 + g % 4],
         jsonb_build_object('asset', g % 100000, 'ip', '10.0.' || (g % 250) || '.' || (g % 200), 'ok', g % 7 <> 0),
         md5(g::text) || ' ' || md5((g * 7)::text) || ' asset ' || (g % 100000) || ' moved to room ' || (g % 311)
  FROM generate_series(1, $audit_rows) g;
CREATE INDEX audit_logs_at ON audit_logs (at);
VACUUM ANALYZE;
SQL
size=$(psql_q -d bench -At -c "SELECT pg_database_size('bench')")
echo "database size: $((size / 1024 / 1024)) MB"

declare -A t
declare -A bytes
timeit() { # name command... (keeps the best time over the rounds)
    local name="$1"; shift
    local start end took
    psql_q -d postgres -c CHECKPOINT && sync
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    took=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    if [[ -z "${t[$name]:-}" ]] || awk -v a="$took" -v b="${t[$name]}" 'BEGIN { exit !(a < b) }'; then
        t[$name]=$took
    fi
    echo "  $name: $took s"
}
out="$work/out"
archive_size() { find "$1" -maxdepth 1 -type f -name 'kars-postgres-*' ! -name '*.meta' -printf '%s\n' | head -n 1; }
for round in $(seq "$repeat"); do
    echo "round $round of $repeat"
    rm -rf "$out" && mkdir -p "$out" && chown --reference="$work" "$out"
    for d in r_f r_g r_h r_i r_j r_k r_l; do "$bin/dropdb" --if-exists "$d" 2>/dev/null; done
    echo "backups:"
    timeit a sh -c "'$bin/pg_dump' '$(url bench)' | gzip > '$out/runbook.sql.gz'"
    bytes[a]=$(stat -c %s "$out/runbook.sql.gz")
    timeit b sh -c "'$bin/pg_dump' -Fc '$(url bench)' > '$out/runbook.dump'"
    bytes[b]=$(stat -c %s "$out/runbook.dump")
    timeit c "$kars" backup --db "$(url bench)" --to "$out/plain" --compression "$compression" >/dev/null
    bytes[c]=$(archive_size "$out/plain")
    timeit d "$kars" backup --db "$(url bench)" --to "$out/custom" --format custom >/dev/null
    bytes[d]=$(archive_size "$out/custom")
    timeit e "$kars" backup --db "$(url bench)" --to "$out/dir" --jobs 2 >/dev/null
    bytes[e]=$(archive_size "$out/dir")

    echo "restores:"
    "$bin/createdb" r_f; "$bin/createdb" r_g
    timeit f sh -c "gunzip < '$out/runbook.sql.gz' | '$bin/psql' -X -q -o /dev/null -d r_f"
    timeit g "$bin/pg_restore" -j 2 -d r_g "$out/runbook.dump"
    timeit h "$kars" restore --db "$(url r_h)" --from "$out/plain" --latest --yes >/dev/null
    timeit i "$kars" restore --db "$(url r_i)" --from "$out/custom" --latest --yes --jobs 2 >/dev/null
    timeit j "$kars" restore --db "$(url r_j)" --from "$out/plain" --latest --yes --integrity off >/dev/null
    timeit k "$kars" restore --db "$(url r_k)" --from "$out/plain" --latest --yes --jobs 1 >/dev/null
    timeit l "$kars" restore --db "$(url r_l)" --from "$out/plain" --latest --yes --integrity full >/dev/null
done
for d in r_f r_g r_h r_i r_j r_k r_l; do
    echo "  $d: $(psql_q -d "$d" -At -c 'SELECT count(*) FROM pgbench_accounts') pgbench_accounts, $(psql_q -d "$d" -At -c 'SELECT count(*) FROM audit_logs') audit_logs"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1048576 }'; }
echo
echo "database $((size / 1024 / 1024)) MB, $(nproc) cores, $("$bin/pg_dump" --version), best of $repeat, load average $(cut -d ' ' -f 1-3 /proc/loadavg)"
printf '%-44s %8s %12s %8s\n' "" seconds archive "x (a)"
printf '%-44s %8s %12s %8s\n' "(a) pg_dump | gzip" "${t[a]}" "$(mb "${bytes[a]}")" 1.00
printf '%-44s %8s %12s %8s\n' "(b) pg_dump -Fc" "${t[b]}" "$(mb "${bytes[b]}")" "$(ratio "${t[b]}" "${t[a]}")"
printf '%-44s %8s %12s %8s\n' "(c) kars-backup backup (plain, $compression)" "${t[c]}" "$(mb "${bytes[c]}")" "$(ratio "${t[c]}" "${t[a]}")"
printf '%-44s %8s %12s %8s\n' "(d) kars-backup backup --format custom" "${t[d]}" "$(mb "${bytes[d]}")" "$(ratio "${t[d]}" "${t[a]}")"
printf '%-44s %8s %12s %8s\n' "(e) kars-backup backup --jobs 2" "${t[e]}" "$(mb "${bytes[e]}")" "$(ratio "${t[e]}" "${t[a]}")"
printf '%-44s %8s %12s %8s\n' "" "" "" "x (f)"
printf '%-44s %8s %12s %8s\n' "(f) gunzip | psql" "${t[f]}" "" 1.00
printf '%-44s %8s %12s %8s\n' "(g) pg_restore -j2" "${t[g]}" "" "$(ratio "${t[g]}" "${t[f]}")"
printf '%-44s %8s %12s %8s\n' "(h) kars-backup restore (plain, safe, auto jobs)" "${t[h]}" "" "$(ratio "${t[h]}" "${t[f]}")"
printf '%-44s %8s %12s %8s\n' "(i) kars-backup restore --jobs 2 (custom)" "${t[i]}" "" "$(ratio "${t[i]}" "${t[f]}")"
printf '%-44s %8s %12s %8s\n' "(j) (h) with --integrity off (no amcheck)" "${t[j]}" "" "$(ratio "${t[j]}" "${t[f]}")"
printf '%-44s %8s %12s %8s\n' "(k) (h) with --jobs 1 (one psql)" "${t[k]}" "" "$(ratio "${t[k]}" "${t[f]}")"
printf '%-44s %8s %12s %8s\n' "(l) (h) with --integrity full (heapallindexed)" "${t[l]}" "" "$(ratio "${t[l]}" "${t[f]}")"
echo
echo "targets: backup (c) <= 0.50 x (a): $(ratio "${t[c]}" "${t[a]}"); archive (c) <= (a): $(ratio "${bytes[c]}" "${bytes[a]}"); restore (h) <= 0.70 x (f): $(ratio "${t[h]}" "${t[f]}")"
