#!/usr/bin/env bash
# Drives on other machines: three S3 servers (versitygw on loopback ports, one
# per rack, three buckets each), a repository of nine S3 drives (k=4, m=2),
# a backup, one server stopped, a restore from the other two, and a check that
# the restore is identical. Run from the repository root (make demo-s3).
set -euo pipefail
COFFER=${COFFER:-$PWD/bin/coffer}
SRC=${1:-$PWD}
GOBIN_DIR="$(go env GOBIN)"; GOBIN_DIR="${GOBIN_DIR:-$(go env GOPATH)/bin}"
VGW=$(command -v versitygw || echo "$GOBIN_DIR/versitygw")
if ! [ -x "$VGW" ]; then
  echo "versitygw is not installed: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0" >&2
  exit 1
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-demo-s3.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export COFFER_REPO=$WORK/repo COFFER_TENANT=demo
# Loopback-only demo credentials: the servers are started with them below.
export AWS_ACCESS_KEY_ID=coffer-demo AWS_SECRET_ACCESS_KEY=coffer-demo-secret-key

step() { printf '\n== %s\n' "$*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

start_server() { # index
  local i=$1
  ROOT_ACCESS_KEY=$AWS_ACCESS_KEY_ID ROOT_SECRET_KEY=$AWS_SECRET_ACCESS_KEY \
    "$VGW" --port "127.0.0.1:${PORT[$i]}" posix "$WORK/server$i" >"$WORK/server$i.log" 2>&1 &
  PIDS[$i]=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$i]}") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server $i did not start" >&2; exit 1
}

step "start three S3 servers (one per rack), three buckets each"
PORT=()
DRIVES=""
for i in 1 2 3; do
  PORT[$i]=$(free_port)
  mkdir -p "$WORK/server$i/drive-a" "$WORK/server$i/drive-b" "$WORK/server$i/drive-c"
  start_server "$i"
  for b in drive-a drive-b drive-c; do
    DRIVES="$DRIVES${DRIVES:+,}r$i:s3+http://127.0.0.1:${PORT[$i]}/$b"
  done
  echo "server $i: http://127.0.0.1:${PORT[$i]} (pid ${PIDS[$i]})"
done

step "init a repository on the nine buckets: 4 data + 2 parity shards"
"$COFFER" init --drives "$DRIVES"
"$COFFER" drive list
step "create a tenant and back up $SRC (without .git and build output)"
"$COFFER" tenant create demo --contact ops@example.com
"$COFFER" backup "$SRC" --exclude .git --exclude bin --tag demo
"$COFFER" snapshots

step "stop server 2 (rack r2): three drives gone"
kill "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true; PIDS[2]=""
step "restore the latest snapshot from the two remaining servers"
"$COFFER" restore latest --target "$WORK/restore" 2>&1
step "verify: the restore is identical to the source"
if diff -r --no-dereference -x .git -x bin "$SRC" "$WORK/restore$SRC"; then
  echo "restore is identical to $SRC"
else
  echo "restore differs from $SRC" >&2
  exit 1
fi

step "bring server 2 back; scrub finds everything in place"
start_server 2
"$COFFER" scrub | tail -n 2
step "stop the servers"
