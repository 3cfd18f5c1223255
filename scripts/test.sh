#!/usr/bin/env bash
# The whole test suite: unit, integration, end-to-end and doc tests of every crate.
# Under CI=true a missing tool or service is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kars-target}"
cargo test --workspace --locked "$@"
