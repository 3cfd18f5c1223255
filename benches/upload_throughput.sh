#!/usr/bin/env bash
# Upload throughput to the S3 emulator (moto) against local disk, and peak RSS during the upload.
# Usage: benches/upload_throughput.sh [MiB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kars-target}"
started=""
if ! services_env=$(bash scripts/services.sh env 2>/dev/null); then
  services_env=$(bash scripts/services.sh up)
  started=1
fi
eval "$services_env"
[[ -n "$started" ]] && trap 'bash scripts/services.sh down >/dev/null 2>&1 || true' EXIT
cargo run -q --release -p kars-backup-storage --features s3 --example upload_throughput -- "${1:-1024}"
