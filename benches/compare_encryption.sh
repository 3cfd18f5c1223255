#!/usr/bin/env bash
# Backup and restore throughput and peak RSS of `kars-backup` with encryption off and on, on a
# generated KARS database, next to the runbook's `tar czf` + `gpg --encrypt`.
#
#   backup:  none | age (X25519 recipient) | age passphrase (scrypt) | OpenPGP (gpg:KEY, rsa3072)
#            runbook: tar czf - -C dir . | gpg --encrypt -r KEY
#   restore: none | age | OpenPGP (through gpg --decrypt)
#
# Each is timed best of $RUNS (wall seconds) with /usr/bin/time, which also gives the peak RSS
# (largest of the process and its children; the worst of the runs is shown). MB/s = database
# MB / seconds.
#
# Usage: benches/compare_encryption.sh
# Environment: SIZE_MB (300), RUNS (3), KEEP_WORKDIR=1, KARS_BIN=path (else a release build),
# CARGO_TARGET_DIR as for cargo.
set -euo pipefail

size_mb="${SIZE_MB:-300}"
runs="${RUNS:-3}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
kars="${KARS_BIN:-$target_dir/release/kars-backup}"

for tool in /usr/bin/time age age-keygen gpg gpgconf tar gzip awk; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "compare_encryption: $tool is required (apt-get install time age gnupg)" >&2
        exit 2
    }
done

work="$(mktemp -d /tmp/kars-encrypt-bench.XXXXXX)"
export GNUPGHOME="$work/gnupg"
cleanup() {
    gpgconf --kill gpg-agent 2>/dev/null || true
    if [[ "${KEEP_WORKDIR:-0}" == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [[ -z "${KARS_BIN:-}" ]]; then
    (cd "$repo" && cargo build --release --bin kars-backup)
fi

mkdir -p "$work/data" "$GNUPGHOME"
chmod 700 "$GNUPGHOME"
db="$work/data/assets.db"
echo "== generating a ${size_mb} MB KARS database"
"$kars" demo-db --path "$db" --size-mb "$size_mb" >/dev/null
db_mb="$(awk -v b="$(stat -c %s "$db")" 'BEGIN { printf "%.1f", b / 1048576 }')"
cat "$db" >/dev/null

age-keygen -o "$work/key.txt" 2>/dev/null
recipient="$(age-keygen -y "$work/key.txt")"
printf 'a long benchmark passphrase\n' >"$work/pass"
gpg --batch --passphrase '' --quick-gen-key 'Bench <bench@example.com>' default default never 2>/dev/null

# measure LABEL COMMAND...: best wall time and worst peak RSS over $runs runs.
measure() {
    local label="$1"
    shift
    local best="" rss=0
    for _ in $(seq "$runs"); do
        rm -rf "$work/out" "$work/restored.db"* && mkdir -p "$work/out"
        /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" ||
            { cat "$work/err" >&2; exit 1; }
        read -r secs kb <"$work/time"
        best="$(awk -v a="$best" -v b="$secs" 'BEGIN { print (a == "" || b < a) ? b : a }')"
        ((kb > rss)) && rss="$kb"
    done
    local size="-"
    if compgen -G "$work/out/*" >/dev/null; then
        size="$(du -cm "$work"/out/* | tail -1 | cut -f1) MB"
    fi
    printf '| %-44s | %6.2f | %7.1f | %7.1f | %8s |\n' "$label" "$best" \
        "$(awk -v m="$db_mb" -v s="$best" 'BEGIN { print m / s }')" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$size"
}

echo "database: $db_mb MB; best of $runs; 2 cores"
echo "| backup | s | MB/s | peak RSS MB | archive |"
echo "|---|---|---|---|---|"
measure "kars-backup backup (gzip, no encryption)" "$kars" backup --db "$db" --to "$work/out"
measure "kars-backup backup --encrypt-to age1…" "$kars" backup --db "$db" --to "$work/out" --encrypt-to "$recipient"
measure "kars-backup backup --passphrase-file (age)" "$kars" backup --db "$db" --to "$work/out" --passphrase-file "$work/pass"
measure "kars-backup backup --encrypt-to gpg:KEY" "$kars" backup --db "$db" --to "$work/out" --encrypt-to gpg:bench@example.com
measure "runbook: tar czf - | gpg --encrypt" sh -c "tar czf - -C '$work/data' . | gpg --batch --trust-model always -e -r bench@example.com -o '$work/out/x.tar.gz.gpg'"

mkdir -p "$work/keep"
for mode in plain age gpg; do
    case "$mode" in
        plain) "$kars" backup --db "$db" --to "$work/keep/$mode" >/dev/null ;;
        age) "$kars" backup --db "$db" --to "$work/keep/$mode" --encrypt-to "$recipient" >/dev/null ;;
        gpg) "$kars" backup --db "$db" --to "$work/keep/$mode" --encrypt-to gpg:bench@example.com >/dev/null ;;
    esac
done
echo
echo "| restore (staged, integrity_check, counts, swap) | s | MB/s | peak RSS MB | |"
echo "|---|---|---|---|---|"
measure "kars-backup restore (no encryption)" "$kars" restore --db "$work/restored.db" --from "$work/keep/plain" --latest
measure "kars-backup restore --identity (age)" "$kars" restore --db "$work/restored.db" --from "$work/keep/age" --latest --identity "$work/key.txt"
measure "kars-backup restore (OpenPGP via gpg --decrypt)" "$kars" restore --db "$work/restored.db" --from "$work/keep/gpg" --latest
