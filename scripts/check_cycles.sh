#!/usr/bin/env bash
# No import cycle between the modules of a library crate: a module never imports, directly or
# through others, a module that imports it. Checked with cargo-modules (`dependencies --acyclic`,
# module level), which CI installs here when it is missing.
#
# cargo-modules sees `use` declarations and item signatures, not paths written inside function
# bodies, attributes or function-local `use`s. So first, a reference from one module to another
# must go through a module-level `use` (lines in `#[cfg(test)] mod …` blocks are exempt, as test
# modules are not part of the graph); then the graph of those `use`s must be acyclic.
#
# Checked: every workspace member except kars-backup-cli (its job logic moves into the library
# in issue 15; check it once that has landed), tests/ and benches/ (test crates).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kars-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

crates=(
  kars-backup-core
  kars-backup-sqlite
  kars-backup-postgres
  kars-backup-storage
  kars-backup-encrypt
  kars-backup-config
  kars-backup-schedule
  kars-backup-notify
  kars-backup
)
# 0.28 needs a newer rustc than rust-version; 0.27 reads this workspace as it is.
cargo_modules_version=0.27.0

start=$SECONDS
status=0

# 1. Module references outside module-level `use` declarations (cargo-modules would miss them).
for crate in "${crates[@]}"; do
  while IFS= read -r -d '' file; do
    awk -v file="$file" '
      # A test module: skipped up to its closing brace at the same indentation.
      /^[ ]*#\[cfg\(test\)\]/ { pending = 1; next }
      pending && /^[ ]*#\[/ { next }
      pending && /^[ ]*(pub(\([a-z]+\))? )?mod [A-Za-z_0-9]+ *\{/ {
        pending = 0; match($0, /^[ ]*/); skip_indent = RLENGTH; skipping = 1; next
      }
      { pending = 0 }
      skipping {
        match($0, /^[ ]*/)
        if (RLENGTH == skip_indent && substr($0, RLENGTH + 1, 1) == "}") skipping = 0
        next
      }
      # Inline modules (`mod linux {`): their own `use`s sit one level in.
      /^(pub(\([a-z]+\))? )?mod [A-Za-z_0-9]+ *\{/ { inline = 1; next }
      inline && /^\}/ { inline = 0; next }
      /^[ ]*\/\// { next }
      {
        line = $0
        sub(/[ ]\/\/ .*$/, "", line)
        if (line !~ /(^|[^A-Za-z0-9_$:])(crate|super|self)::/) next
        if (line ~ /^[ ]*(pub(\([a-z]+\))? )?use /) {
          match(line, /^[ ]*/)
          if (RLENGTH == 0 || (inline && RLENGTH == 4)) next
          printf "%s:%d: a `use` inside a function: move it to the top of the module\n  %s\n", file, FNR, $0
        } else {
          printf "%s:%d: a path to another module outside a `use`: import it at the top of the module\n  %s\n", file, FNR, $0
        }
        found = 1
      }
      END { exit found }
    ' "$file" || status=1
  done < <(find "$crate/src" -name '*.rs' -print0 | sort -z)
done
if ((status)); then
  echo "check_cycles: module references that the cycle check cannot see (above)" >&2
  exit 1
fi

# 2. The module graph of each crate, from its `use` declarations, is acyclic.
if ! command -v cargo-modules >/dev/null; then
  echo "installing cargo-modules $cargo_modules_version"
  cargo install cargo-modules --locked --version "$cargo_modules_version"
fi
for crate in "${crates[@]}"; do
  if out="$(cargo modules dependencies --lib -p "$crate" --all-features \
    --no-externs --no-sysroot --no-fns --no-traits --no-types --no-owns --acyclic 2>&1 >/dev/null)"; then
    echo "no module cycle in $crate"
  else
    echo "module cycle in $crate:" >&2
    printf '%s\n' "$out" | sed -n '/^Error\|^[│┌└]/p' >&2
    status=1
  fi
done
echo "check_cycles: $((SECONDS - start)) s"
exit "$status"
