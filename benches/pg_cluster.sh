# Shared by the PostgreSQL comparison scripts (sourced, not run): finds the server programs and
# kars-backup, and starts a throwaway cluster (as the postgres user when root) that stops, and
# whose directory goes (unless KEEP_WORKDIR=1), when the script exits.
#
#   pg_cluster_start NAME [-c setting=value …]
#
# sets: bin (PostgreSQL programs), kars (the binary: KARS_BIN, else the release build), work
# (the working directory, mode 755, owned by the server's user), run_as (setpriv prefix or
# empty), port, pid; exports PGHOST, PGPORT, PGUSER=kars. Uses die() of the caller.

pg_cluster_start() {
    local name="$1"; shift
    keep_workdir="${KEEP_WORKDIR:-0}"
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local target_dir="${CARGO_TARGET_DIR:-$repo/target}"
    kars="${KARS_BIN:-$target_dir/release/kars-backup}"

    bin="$(pg_config --bindir 2>/dev/null || true)"
    [[ -x "$bin/initdb" ]] || bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [[ -x "$bin/initdb" ]] || die "no PostgreSQL server programs (apt-get install postgresql)"

    if [[ -z "${KARS_BIN:-}" ]]; then
        echo "building kars-backup (release)…"
        (cd "$repo" && cargo build --release --locked -q -p kars-backup-cli)
    fi
    [[ -x "$kars" ]] || die "no kars-backup binary at $kars"

    work="$(mktemp -d "/tmp/kars-$name.XXXXXX")"
    chmod 755 "$work"
    run_as=()
    if [[ "$(id -u)" -eq 0 ]]; then
        run_as=(setpriv --reuid=postgres --regid=postgres --clear-groups --)
        chown postgres:postgres "$work"
    fi
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    pid=""
    trap pg_cluster_cleanup EXIT

    echo "starting a throwaway PostgreSQL ($("$bin/postgres" --version)) on port $port"
    "${run_as[@]}" "$bin/initdb" -D "$work/data" -U kars --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
    mkdir -p "$work/sock" "$work/out" && chown -R --reference="$work" "$work/sock" "$work/out"
    "${run_as[@]}" "$bin/postgres" -D "$work/data" -p "$port" -k "$work/sock" \
        -c listen_addresses=127.0.0.1 "$@" >"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || die "server did not start: $(tail "$work/server.log")"
    export PGHOST=127.0.0.1 PGPORT="$port" PGUSER=kars
}

# Writes DIR/pgbackrest.conf for pgBackRest's stanza "bench" of the running cluster: repository
# DIR/repo, locks in DIR, console warnings only, more [global] lines as arguments
# ("compress-type=zst"); DIR belongs to the server's user.
pgbackrest_conf() {
    local dir="$1"; shift
    mkdir -p "$dir/repo"
    {
        printf '%s\n' "[global]" "repo1-path=$dir/repo" "lock-path=$dir" "log-level-console=warn" "$@"
        printf '%s\n' "[bench]" "pg1-path=$work/data" "pg1-port=$port" "pg1-socket-path=$work/sock" "pg1-user=kars"
    } >"$dir/pgbackrest.conf"
    chown -R --reference="$work" "$dir"
}

pg_cluster_cleanup() {
    if [[ -n "${pid:-}" ]]; then kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [[ "${keep_workdir:-0}" == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
