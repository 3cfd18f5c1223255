#!/usr/bin/env bash
# No import cycle between the modules of a crate: a module never depends, directly or through
# others, on a module that depends on it. A module depends on what it imports and on the
# submodules it declares (`mod child;`, `mod child { … }`: it calls into them), so a submodule
# never calls back into its parent. Checked with cargo-modules (`dependencies`, module level),
# which CI installs here when it is missing.
#
# cargo-modules sees `use` declarations, item signatures and `mod` declarations, not paths written
# inside function bodies, attributes or function-local `use`s. So first, a `crate::`, `super::` or
# `self::` path must sit in a module-level `use` (lines in `#[cfg(test)] mod …` and
# `#[cfg(all(test, …))] mod …` blocks are exempt: test modules are not part of the graph, which is
# read without cfg(test)); a path into a submodule (`child::f()`) needs no `use`, as the `mod`
# declaration is an edge already. Then the graph of those edges must be acyclic.
#
# Checked: every workspace member (libraries, and the CLI's binary) but the test crates tests/ and
# benches/.
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
  kars-backup-job
  kars-backup-cli
  kars-backup
)
# `scripts/check_cycles.sh CRATE…` checks only those.
if (($#)); then crates=("$@"); fi
# 0.28 needs a newer rustc than rust-version; 0.27 reads this workspace as it is.
cargo_modules_version=0.27.0

start=$SECONDS
status=0

# 1. Module references outside module-level `use` declarations (cargo-modules would miss them).
for crate in "${crates[@]}"; do
  while IFS= read -r -d '' file; do
    awk -v file="$file" '
      # A test module: skipped up to its closing brace at the same indentation.
      /^[ ]*#\[cfg\((all\()?test[,)]/ { pending = 1; next }
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

# 2. The module graph of each crate, its `use` and `mod` edges ("uses" and "owns"), is acyclic.
#    cargo-modules' own `--acyclic` looks at items (a type and its methods) before the filters
#    apply, so the module-level graph it prints is checked with tsort instead. Two crates at a
#    time (each run loads the workspace and its dependencies, 10-20 s).
if ! command -v cargo-modules >/dev/null; then
  echo "installing cargo-modules $cargo_modules_version"
  cargo install cargo-modules --locked --version "$cargo_modules_version"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Build scripts and proc macros once, so the parallel runs do not wait on each other's locks.
cargo check -q --lib --all-features -p kars-backup
check_crate() {
  local crate="$1" work="$2" target=(--lib)
  # A crate without a library (the CLI): its binary, the first `[[bin]]` of its manifest.
  if [[ ! -f "$crate/src/lib.rs" ]]; then
    target=(--bin "$(sed -n '/^\[\[bin\]\]/,/^name/s/^name = "\(.*\)"/\1/p' "$crate/Cargo.toml" | head -1)")
  fi
  if ! cargo modules dependencies "${target[@]}" -p "$crate" --all-features \
    --no-externs --no-sysroot --no-fns --no-traits --no-types \
    >"$work/$crate.dot" 2>"$work/$crate.err"; then
    echo "cargo modules failed for $crate:" >&2
    cat "$work/$crate.err" >&2
    return 1
  fi
  # "a" -> "b" [label="uses"|"owns", …] → a b, for tsort; it fails on a loop and names its
  # modules.
  sed -n 's/^ *"\([^"]*\)" -> "\([^"]*\)" \[label="\(uses\|owns\)".*/\1 \2/p' "$work/$crate.dot" >"$work/$crate.edges"
  if ! [[ -s "$work/$crate.edges" ]] && grep -q -- ' -> ' "$work/$crate.dot"; then
    echo "no module edges read for $crate (has the output of cargo-modules changed?)" >&2
    return 1
  fi
  if tsort "$work/$crate.edges" >/dev/null 2>"$work/$crate.loop"; then
    echo "no module cycle in $crate"
  else
    echo "module cycle in $crate (each imports or declares the next, the last the first):" >&2
    sed -n 's/^tsort: \([A-Za-z_][A-Za-z0-9_:]*\)$/  \1/p' "$work/$crate.loop" >&2
    return 1
  fi
}
export -f check_crate
printf '%s\n' "${crates[@]}" | xargs -P 2 -I{} bash -c 'check_crate "$1" "$2"' _ {} "$work" || status=1
echo "check_cycles: $((SECONDS - start)) s"
exit "$status"
