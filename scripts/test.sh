#!/usr/bin/env bash
# The whole test suite: unit, integration, end-to-end and doc tests of every crate, with every
# storage backend, against real SQLite files, a throwaway PostgreSQL cluster that the tests start,
# and the S3/GCS/Azure emulators that scripts/services.sh starts on 127.0.0.1 (and stops again).
# Under CI=true a missing tool, server or emulator is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kars-target}"

log="$(mktemp)"
started_services=0
cleanup() {
  rm -f "$log"
  if ((started_services)); then bash scripts/services.sh down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

if [[ -z "${KARS_TEST_S3_ENDPOINT:-}" ]]; then
  env_lines="$(bash scripts/services.sh up)"
  started_services=1
  eval "$env_lines"
fi

status=0
cargo test --workspace --all-features --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# One closing line for the whole run: cargo prints one "test result" line per test binary.
awk '/^test result: / { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
