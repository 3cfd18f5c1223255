#!/usr/bin/env bash
# Upload throughput to S3 emulators against local disk, and peak RSS during the upload.
#
# Each emulator gets the same run of the `upload_throughput` example: 1 GiB (or MiB as given)
# written through LocalSink (fsync), then uploaded through ObjectStoreSink as a multipart upload.
#   moto    the project's S3 emulator (scripts/services.sh); its CompleteMultipartUpload joins
#           the parts in Python, which dominates.
#   s3rver  a second emulator (npm 's3rver', Node.js, parts on disk), installed by this script
#           into .services/bench/ (not needed by the tests or CI), to show what part of the limit
#           is the emulator's.
#
# Usage: benches/upload_throughput.sh [MiB]   (default 1024)
# Environment: EMULATORS ("moto s3rver"), BENCH_PART_MIB (8), BENCH_CONCURRENCY (4),
# BENCH_DIR (where the local copy is written; default the repository), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kars-target}"
mib="${1:-1024}"
emulators="${EMULATORS:-moto s3rver}"
cargo build -q --release -p kars-backup-storage --features s3 --example upload_throughput
example="$CARGO_TARGET_DIR/release/examples/upload_throughput"

cleanup=()
trap 'for c in "${cleanup[@]}"; do eval "$c"; done' EXIT

for emulator in $emulators; do
  case "$emulator" in
    moto)
      started=""
      if ! services_env=$(bash scripts/services.sh env 2>/dev/null); then
        services_env=$(bash scripts/services.sh up)
        started=1
      fi
      eval "$services_env"
      [[ -n "$started" ]] && cleanup+=("bash scripts/services.sh down >/dev/null 2>&1 || true")
      echo "== moto"
      BENCH_S3_NAME=moto "$example" "$mib"
      ;;
    s3rver)
      prefix=".services/bench"
      if [[ ! -x "$prefix/node_modules/.bin/s3rver" ]]; then
        echo "installing s3rver (npm, into $prefix/)" >&2
        mkdir -p "$prefix"
        npm install --silent --no-audit --no-fund --prefix "$prefix" s3rver@3.7.1 >&2
      fi
      data="$(mktemp -d /tmp/kars-s3rver.XXXXXX)"
      port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
      "$prefix/node_modules/.bin/s3rver" -d "$data" -a 127.0.0.1 -p "$port" --silent \
        --configure-bucket kars-bench >"$data.log" 2>&1 &
      pid=$!
      cleanup+=("kill $pid 2>/dev/null || true; rm -rf '$data' '$data.log'")
      for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
      echo "== s3rver"
      # s3rver's fixed development credentials (public, not a secret).
      KARS_TEST_S3_ENDPOINT="http://127.0.0.1:$port" KARS_TEST_S3_BUCKET=kars-bench \
        BENCH_S3_NAME=s3rver BENCH_S3_KEY=S3RVER BENCH_S3_SECRET=S3RVER "$example" "$mib"
      # The emulator's own ceiling: one plain PUT of the same size with curl (no multipart).
      file="$data.bin"
      head -c "$((mib * 1024 * 1024))" /dev/urandom >"$file"
      cleanup+=("rm -f '$file'")
      rate=$(curl -s -o /dev/null -w '%{speed_upload}' --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user S3RVER:S3RVER -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -T "$file" \
        "http://127.0.0.1:$port/kars-bench/curl.bin")
      echo "curl, one PUT of the same size to s3rver: $(awk -v r="$rate" 'BEGIN { printf "%.0f", r / 1048576 }') MiB/s"
      ;;
    *) echo "unknown emulator $emulator (moto, s3rver)" >&2; exit 2 ;;
  esac
done
