#!/usr/bin/env bash
# Peak RSS and idle CPU of `kars-backup replicate` on large databases (issue 16: at most 100 MB
# whatever the database size; low CPU while idle). See memory.py for the phases measured.
#
# Usage: benches/replication/memory.sh
# Environment:
#   SIZES_MB   database sizes in MB (default "256 1024"); databases are built once and cached
#   BIG_TX     large transactions in the write burst (default 3)
#   BIG_TX_MB  MB of rows each of them rewrites (default 200)
#   IDLE       seconds without writes over which CPU is measured (default 20)
#   KARS_BIN   a kars-backup binary to use instead of building one (release, CARGO_TARGET_DIR)
#   CACHE      where the databases are kept (default ~/.cache/kars-bench-memory)
#   JSON_OUT   (default /tmp/kars-replication-memory.json); KEEP_WORKDIR=1 keeps the runs' files
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

kars="${KARS_BIN:-}"
if [[ -z "$kars" ]]; then
    echo "memory bench: building the release CLI" >&2
    (cd "$repo" && cargo build -q --release --bin kars-backup >&2)
    kars="${CARGO_TARGET_DIR:-$repo/target}/release/kars-backup"
fi

args=(--kars "$kars" --sizes-mb "${SIZES_MB:-256 1024}" --big-tx "${BIG_TX:-3}"
    --big-tx-mb "${BIG_TX_MB:-200}" --idle "${IDLE:-20}"
    --cache "${CACHE:-$HOME/.cache/kars-bench-memory}"
    --json "${JSON_OUT:-/tmp/kars-replication-memory.json}")
[[ "${KEEP_WORKDIR:-0}" == 1 ]] && args+=(--keep)
exec python3 "$here/memory.py" "${args[@]}"
