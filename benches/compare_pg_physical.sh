#!/usr/bin/env bash
# Physical backups and point-in-time recovery of PostgreSQL, kars-backup side by side with
# pgBackRest (Debian's pgbackrest, 2.45 here; installed by this script when missing) on the same
# cluster in the same run (issue 17). Run by hand, not in CI.
#
# One cluster (pgbench, SCALE 65 ≈ 1 GB) with wal_level=replica, archive_mode=on and an
# archive_command that pushes every WAL file to both archives (kars-backup pg archive-wal, then
# pgbackrest archive-push), so both tools restore from the same base state and the same WAL:
#
#   1. base backups, RUNS rounds, the four variants interleaved in each round:
#      kars-backup backup --physical (gzip 6, its default; and --compression zstd) to a local
#      directory, pgbackrest backup --type=full --start-fast (its defaults: gz 6; and
#      --compress-type=zst, level 3): wall s, CPU s (user+system of the tool and its children,
#      so pg_basebackup is included; the server's walsender is not), stored size, peak RSS.
#   2. a writer commits one row every 50 ms into pitr_log (track_commit_timestamp on, so the
#      commit times are the server's own) while pgbench writes WAL beside it; T is the middle
#      between two commits; the WAL is switched and archived.
#   3. restore to T, RUNS times each (from each tool's last default-compression backup):
#      kars-backup restore --physical --to-time T (verifies, promotes, leaves it stopped), then
#      pg_ctl start; pgbackrest restore --type=time --target=T --target-action=promote, then
#      pg_ctl start. Wall time until an INSERT succeeds (read-write); exact when the rows
#      committed ≤ T are all there and none after.
#   4. the same for the latest state (kars --latest; pgbackrest --type=default).
#   5. streaming RPO (RPO_RUNS runs) on a second, small cluster with archive_mode=off (the
#      managed-PostgreSQL case): kars-backup pg receive-wal through a slot, a writer committing
#      every 20 ms, then the postmaster, its children and the receiver SIGKILLed together;
#      kars-backup restore --latest from what the receiver shipped; RPO = commit time of the
#      last row committed − commit time of the newest restored row. pgBackRest has no streaming.
#   6. archive_command throughput: benches/compare_wal_archive.sh (unless SKIP_WAL_ARCHIVE=1).
#
# Medians of RUNS; one Markdown table at the end (also in $RESULTS, default
# /tmp/compare_pg_physical.md).
#
# Usage: benches/compare_pg_physical.sh
# Environment: SCALE (65), RUNS (3), BASE_RUNS (RUNS: rounds of base backups), RPO_RUNS (5,
# 0 skips the streaming runs), SKIP_WAL_ARCHIVE=1, KEEP_WORKDIR=1,
# KARS_BIN=path (else the release binary is built), CARGO_TARGET_DIR as for cargo.
set -euo pipefail

scale="${SCALE:-65}"
runs="${RUNS:-3}"
base_runs="${BASE_RUNS:-$runs}"
rpo_runs="${RPO_RUNS:-5}"
results="${RESULTS:-/tmp/compare_pg_physical.md}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "compare_pg_physical: $*" >&2; exit 2; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

if ! command -v pgbackrest >/dev/null; then
    log "installing pgbackrest (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest >/dev/null || die "apt-get install pgbackrest failed"
fi
[[ -x /usr/bin/time ]] || die "needs GNU time (apt-get install time)"

# shellcheck source=pg_cluster.sh
source "$here/pg_cluster.sh"

# The source cluster's settings, applied after pg_cluster_start (so the archive paths can be
# under its working directory) with ALTER SYSTEM and a restart.
pg_cluster_start compare-physical -c max_wal_size=4GB -c checkpoint_timeout=30min
big_work="$work"

# archive_command runs as the server's user: it needs a binary it may execute.
k="$work/kars-backup"
cp "$kars" "$k" && chmod 755 "$k"
own() { chown -R --reference="$work" "$@"; }
psql_q() { "$bin/psql" -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }
declare -A m # measurements: "key" → space-separated values

# pgBackRest's configuration and stanza.
pgbr="$work/pgbr"
pgbackrest_conf "$pgbr" repo1-retention-full=99 log-level-file=off
mkdir -p "$work/kwal" && own "$work/kwal"
pgbr() { "${run_as[@]}" pgbackrest --config="$pgbr/pgbackrest.conf" --stanza=bench "$@"; }

log "configuring archiving to both archives"
psql_q postgres <<SQL
ALTER SYSTEM SET wal_level = replica;
ALTER SYSTEM SET archive_mode = on;
ALTER SYSTEM SET archive_command = '$k pg archive-wal --to $work/kwal %p && pgbackrest --config=$pgbr/pgbackrest.conf --stanza=bench archive-push %p';
ALTER SYSTEM SET max_wal_senders = 10;
ALTER SYSTEM SET track_commit_timestamp = on;
SQL
"${run_as[@]}" "$bin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null
wait "$pid" 2>/dev/null || true
"${run_as[@]}" "$bin/postgres" -D "$work/data" -p "$port" -k "$work/sock" -c listen_addresses=127.0.0.1 \
    -c max_wal_size=4GB -c checkpoint_timeout=30min >>"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do "$bin/pg_isready" -q && break; sleep 0.2; done
pgbr stanza-create >/dev/null

# Waits until the segment being written now (switched first) is archived by both tools.
archived() {
    local seg done_seg=""
    seg="$(psql_q -c "SELECT pg_walfile_name(pg_switch_wal())" postgres)"
    for _ in $(seq 1200); do
        done_seg="$(psql_q -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver" postgres)"
        [[ "$done_seg" > "$seg" || "$done_seg" == "$seg" ]] && return
        sleep 0.2
    done
    die "segment $seg was not archived in 240 s (last: $done_seg)"
}

log "generating the cluster: pgbench -i -s $scale"
"$bin/pgbench" -q -i -s "$scale" postgres >/dev/null 2>&1 || die "pgbench -i failed"
psql_q -c "CHECKPOINT" postgres
# The first backup must not pay for archiving the generation's WAL.
archived
db_size="$(psql_q -c "SELECT sum(pg_database_size(oid)) FROM pg_database" postgres)"
log "cluster: $(( db_size / 1048576 )) MiB"

# Runs a command under GNU time; appends wall, CPU and peak RSS to m[KEY.wall|cpu|rss].
timed() {
    local key="$1"; shift
    local tf="$work/time.out"
    /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@" >"$work/cmd.out" 2>&1 || { cat "$work/cmd.out" >&2; die "failed: $*"; }
    read -r e u s r <"$tf"
    m[$key.wall]+="$e "
    m[$key.cpu]+="$(echo "$u + $s" | bc -l) "
    m[$key.rss]+="$(( r / 1024 )) "
}

# --- 1. base backups -----------------------------------------------------------------------
declare -A pgbr_label
for round in $(seq "$base_runs"); do
    for v in kars-gz kars-zst pgbr-gz pgbr-zst; do
        log "base backup round $round: $v"
        sync
        case $v in
        kars-gz)
            timed "base.$v" "$k" backup --physical --db "postgres://kars@127.0.0.1:$port/postgres" \
                --to "file://$work/kbase-gz-$round"
            m[base.$v.size]+="$(du -sb "$work/kbase-gz-$round" | cut -f1) " ;;
        kars-zst)
            timed "base.$v" "$k" backup --physical --db "postgres://kars@127.0.0.1:$port/postgres" \
                --to "file://$work/kbase-zst-$round" --compression zstd
            m[base.$v.size]+="$(du -sb "$work/kbase-zst-$round" | cut -f1) " ;;
        pgbr-gz | pgbr-zst)
            extra=(); [[ $v == pgbr-zst ]] && extra=(--compress-type=zst)
            timed "base.$v" "${run_as[@]}" pgbackrest --config="$pgbr/pgbackrest.conf" --stanza=bench \
                backup --type=full --start-fast "${extra[@]}"
            label="$(ls "$pgbr/repo/backup/bench" | grep -E '^[0-9]{8}-[0-9]{6}F$' | sort | tail -n 1)"
            pgbr_label[$v]="$label"
            m[base.$v.size]+="$(du -sb "$pgbr/repo/backup/bench/$label" | cut -f1) " ;;
        esac
    done
done

# --- 2. a writer with logged commits --------------------------------------------------------
log "writer: one committed row every 50 ms for 8 s, pgbench beside it"
psql_q -c "CREATE TABLE pitr_log (id bigserial PRIMARY KEY, note text NOT NULL)" postgres
echo "INSERT INTO pitr_log (note) VALUES ('x');" >"$work/insert.sql"
"$bin/pgbench" -n -c 1 -R 300 -T 8 postgres >/dev/null 2>&1 &
load=$!
"$bin/pgbench" -n -c 1 -R 20 -T 8 -f "$work/insert.sql" postgres >/dev/null 2>&1
wait "$load" || true
commits="$(psql_q -F ' ' -c "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM pitr_log ORDER BY id" postgres)"
total="$(wc -l <<<"$commits")"
(( total > 20 )) || die "the writer committed only $total rows"
mid=$(( total / 2 ))
target_id="$(sed -n "${mid}p" <<<"$commits" | cut -d' ' -f1)"
target="$(psql_q -c "SELECT to_char((a + (b - a) / 2) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'
    FROM (SELECT pg_xact_commit_timestamp(xmin) a FROM pitr_log WHERE id = $target_id) x,
         (SELECT min(pg_xact_commit_timestamp(xmin)) b FROM pitr_log WHERE id > $target_id) y" postgres)"
expect_time="$(psql_q -c "SELECT count(*) || ' ' || max(id) FROM pitr_log WHERE id <= $target_id" postgres)"
expect_latest="$(psql_q -c "SELECT count(*) || ' ' || max(id) FROM pitr_log" postgres)"
log "target $target: expect rows/max id $expect_time (latest: $expect_latest)"
archived

# --- 3./4. restores ------------------------------------------------------------------------
# Starts the restored cluster DIR, waits until it accepts an INSERT; prints "rows maxid".
open_rw() {
    local dir="$1" rport
    rport="$(free_port)"
    "${run_as[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir.log" -w -t 600 \
        -o "-p $rport -k $work/sock -c listen_addresses=''" start >/dev/null || die "$dir did not start: $(tail -n 5 "$dir.log")"
    for _ in $(seq 3000); do
        [[ "$(psql_q -h "$work/sock" -p "$rport" -c "SELECT pg_is_in_recovery()" postgres 2>/dev/null)" == f ]] && break
        sleep 0.05
    done
    psql_q -h "$work/sock" -p "$rport" -c "CREATE TABLE read_write_probe (x int); INSERT INTO read_write_probe VALUES (1)" postgres
    psql_q -h "$work/sock" -p "$rport" -c "SELECT count(*) || ' ' || max(id) FROM pitr_log" postgres >"$dir.rows"
    echo "$rport" >"$dir.port"
}
close() {
    "${run_as[@]}" "$bin/pg_ctl" -D "$1" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$1" "$1".*
}
# restore KIND TOOL ROUND: KIND is time or latest.
restore() {
    local kind="$1" tool="$2" round="$3" dir="$work/restored-$2-$1-$3" start end
    local which=(--latest) type=(--type=default)
    [[ $kind == time ]] && which=(--to-time "$target") && type=(--type=time "--target=$target" --target-action=promote)
    sync
    start=$(now)
    if [[ $tool == kars ]]; then
        timed "$kind.$tool" "$k" restore --physical --pgdata "$dir" --from "file://$work/kbase-gz-$base_runs" \
            --restore-command "$k pg fetch-wal --from $work/kwal %f %p" "${which[@]}" --yes
    else
        mkdir -m 700 "$dir" && own "$dir"
        timed "$kind.$tool" "${run_as[@]}" pgbackrest --config="$pgbr/pgbackrest.conf" --stanza=bench \
            --pg1-path="$dir" --set="${pgbr_label[pgbr-gz]}" "${type[@]}" restore
    fi
    open_rw "$dir"
    end=$(now)
    m[$kind.$tool.rw]+="$(echo "$end - $start" | bc -l) "
    local want="$expect_latest"; [[ $kind == time ]] && want="$expect_time"
    local got; got="$(cat "$dir.rows")"
    if [[ "$got" == "$want" ]]; then m[$kind.$tool.exact]+="yes "; else m[$kind.$tool.exact]+="NO(${got// //}≠${want// //}) "; fi
    log "restore $kind $tool round $round: $(echo "$end - $start" | bc -l) s, rows/max id $got (want $want)"
    close "$dir"
}
for kind in time latest; do
    for round in $(seq "$runs"); do
        restore "$kind" kars "$round"
        restore "$kind" pgbr "$round"
    done
done

# The rows of the table so far (the source cluster is stopped before the RPO runs).
fmt_mb() { echo "scale=1; $1 / 1048576" | bc -l; }
row_base() { # label variant
    printf '| base backup | %s | %.1f | %.1f | %s MiB | %s MiB | |\n' "$1" \
        "$(tr ' ' '\n' <<<"${m[base.$2.wall]}" | grep . | median)" \
        "$(tr ' ' '\n' <<<"${m[base.$2.cpu]}" | grep . | median)" \
        "$(fmt_mb "$(tr ' ' '\n' <<<"${m[base.$2.size]}" | grep . | median)")" \
        "$(tr ' ' '\n' <<<"${m[base.$2.rss]}" | grep . | median)"
}
row_restore() { # operation label kind tool
    printf '| %s | %s | %.1f | %.1f | | %s MiB | %s |\n' "$1" "$2" \
        "$(tr ' ' '\n' <<<"${m[$3.$4.rw]}" | grep . | median)" \
        "$(tr ' ' '\n' <<<"${m[$3.$4.cpu]}" | grep . | median)" \
        "$(tr ' ' '\n' <<<"${m[$3.$4.rss]}" | grep . | median)" \
        "$(tr ' ' '\n' <<<"${m[$3.$4.exact]}" | grep . | sort | uniq -c | awk '{printf "%s%s×%s", (NR>1?", ":""), $2, $1}')"
}
{
    echo "cluster: pgbench scale $scale, $(( db_size / 1048576 )) MiB ($("$bin/postgres" --version)), $(pgbackrest version)"
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "restore target $target (rows ≤ T / max id: $expect_time; latest: $expect_latest)"
    echo
    echo "| operation | tool | wall s | CPU s (the tool's) | stored | peak RSS | exact |"
    echo "|---|---|---|---|---|---|---|"
    row_base "kars-backup backup --physical (gzip 6)" kars-gz
    row_base "pgbackrest backup --type=full --start-fast (gz 6)" pgbr-gz
    row_base "kars-backup backup --physical --compression zstd" kars-zst
    row_base "pgbackrest backup … --compress-type=zst (zst 3)" pgbr-zst
    row_restore "restore to T, until read-write" "kars-backup restore --physical --to-time T; pg_ctl start" time kars
    row_restore "restore to T, until read-write" "pgbackrest restore --type=time; pg_ctl start (promote)" time pgbr
    row_restore "restore latest, until read-write" "kars-backup restore --physical --latest; pg_ctl start" latest kars
    row_restore "restore latest, until read-write" "pgbackrest restore --type=default; pg_ctl start" latest pgbr
} >"$results"
log "load average after the restores: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- 5. streaming RPO ----------------------------------------------------------------------
if (( rpo_runs > 0 )); then
pg_cluster_cleanup
trap - EXIT
pg_cluster_start compare-rpo -c wal_level=replica -c archive_mode=off -c max_wal_senders=10 \
    -c track_commit_timestamp=on -c wal_sender_timeout=10s
k="$work/kars-backup"
cp "$kars" "$k" && chmod 755 "$k"
rpo_settings=(-c wal_level=replica -c archive_mode=off -c max_wal_senders=10 -c track_commit_timestamp=on -c wal_sender_timeout=10s)
"$bin/pgbench" -q -i -s 1 postgres >/dev/null 2>&1
psql_q -c "CREATE TABLE pitr_log (id bigserial PRIMARY KEY, note text NOT NULL)" postgres
echo "INSERT INTO pitr_log (note) VALUES ('x');" >"$work/insert.sql"
db="postgres://kars@127.0.0.1:$port/postgres"
# The receiver runs as the server's user, so that restore_command (run by the restored server)
# may read what it shipped.
mkdir -p "$work/rwal" "$work/rspool" && own "$work/rwal" "$work/rspool"
recv_pid=""
start_receiver() {
    "${run_as[@]}" "$k" pg receive-wal --db "$db" --to "$work/rwal" --spool-dir "$work/rspool" --slot kars \
        --create-slot >>"$work/receiver.log" 2>&1 &
    recv_pid=$!
    for _ in $(seq 100); do
        [[ "$(psql_q -c "SELECT count(*) FROM pg_stat_replication" postgres)" -ge 1 ]] && return
        sleep 0.1
    done
    die "the receiver did not connect: $(tail -n 5 "$work/receiver.log")"
}
start_receiver
log "RPO: base backup of the small cluster into the receiver's destination"
"$k" backup --physical --db "$db" --to "file://$work/rwal" >/dev/null 2>&1 || die "base backup for the RPO runs failed"
for run in $(seq "$rpo_runs"); do
    "$bin/pgbench" -n -c 1 -R 50 -T 60 -f "$work/insert.sql" postgres >/dev/null 2>&1 &
    writer=$!
    sleep "$(( 4 + run ))"
    # The host dies: postmaster, its children, the receiver and pg_receivewal in one kill.
    victims=("$pid" $(pgrep -P "$pid" || true) "$recv_pid" $(pgrep -P "$recv_pid" || true))
    kill -9 "${victims[@]}" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    wait "$recv_pid" 2>/dev/null || true
    wait "$writer" 2>/dev/null || true
    dir="$work/rpo-$run"
    "$k" restore --physical --pgdata "$dir" --from "file://$work/rwal" --latest --yes >"$work/rpo-restore.log" 2>&1 ||
        die "restore --latest after the kill failed: $(tail -n 5 "$work/rpo-restore.log")"
    open_rw "$dir"
    got_id="$(cut -d' ' -f2 "$dir.rows")"
    close "$dir"
    # The source again (crash recovery), for the commit times, and the receiver for the next run.
    "${run_as[@]}" "$bin/postgres" -D "$work/data" -p "$port" -k "$work/sock" -c listen_addresses=127.0.0.1 \
        "${rpo_settings[@]}" >>"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do "$bin/pg_isready" -q && break; sleep 0.1; done
    rpo="$(psql_q -c "SELECT extract(epoch FROM (SELECT pg_xact_commit_timestamp(xmin) FROM pitr_log ORDER BY id DESC LIMIT 1)
        - coalesce((SELECT pg_xact_commit_timestamp(xmin) FROM pitr_log WHERE id = ${got_id:-0}), 'epoch'))" postgres)"
    last_id="$(psql_q -c "SELECT max(id) FROM pitr_log" postgres)"
    log "RPO run $run: last committed id $last_id, newest restored id $got_id, RPO $rpo s"
    m[rpo]+="$rpo "
    start_receiver
done
kill "$recv_pid" 2>/dev/null || true
wait "$recv_pid" 2>/dev/null || true
{
    rpos="$(tr ' ' '\n' <<<"${m[rpo]}" | grep . | sort -g | xargs printf '%.2f ' | sed 's/ $//')"
    printf '| streaming RPO (host killed) | kars-backup pg receive-wal (ship every 1 s), restore --latest | median %.2f s (runs: %s s) | | | | |\n' \
        "$(tr ' ' '\n' <<<"${m[rpo]}" | grep . | median)" "$rpos"
    echo "| streaming RPO | pgBackRest: no streaming (RPO = the segment being written, or archive_timeout) | | | | | |"
} >>"$results"
fi

# --- 6. archive_command throughput ---------------------------------------------------------
if [[ "${SKIP_WAL_ARCHIVE:-0}" != 1 ]]; then
    pg_cluster_cleanup
    trap - EXIT
    log "archive_command throughput: benches/compare_wal_archive.sh"
    { echo; echo '```text'; KARS_BIN="$kars" "$here/compare_wal_archive.sh" 2>&1 | grep -E '^\(|^raw'; echo '```'; } >>"$results"
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$results"
echo
cat "$results"
