#!/usr/bin/env bash
# Remote backups: the operator runs coffer serve on a repository; a
# customer makes a key pair, the operator registers its public key, and the
# customer backs up and restores over TLS 1.3 with only what the server
# lacks sent. While the server runs, the operator's commands on the same
# repository go through its admin socket: locking the tenant refuses the
# customer at once, unlocking lets it back. Run from the repository root
# (make demo-remote).
set -euo pipefail
COFFER=${COFFER:-$PWD/bin/coffer}
SRC=${1:-$PWD}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-demo-remote.XXXXXX")
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
REPO=$WORK/repo
step() { printf '\n== %s\n' "$*"; }

step "operator: init a repository and a tenant"
"$COFFER" --repo "$REPO" init
"$COFFER" --repo "$REPO" tenant create acme --contact ops@acme.example

step "customer: make a key pair; operator: register its public key"
"$COFFER" keygen --out "$WORK/id"
"$COFFER" --repo "$REPO" tenant key add acme "$WORK/id.pub" --role backup,restore

step "operator: coffer serve on a loopback port"
"$COFFER" --repo "$REPO" serve --listen 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$WORK/serve.out" 2>/dev/null && break
  sleep 0.1
done
cat "$WORK/serve.out"
ADDR=$(sed -n 's/^listening on //p' "$WORK/serve.out")
FP=$(sed -n 's/^server fingerprint: //p' "$WORK/serve.out")
[ -n "$ADDR" ] && [ -n "$FP" ] || { echo "coffer serve did not start:"; cat "$WORK/serve.log"; exit 1; } >&2
export COFFER_REMOTE=$ADDR COFFER_IDENTITY=$WORK/id COFFER_SERVER_FINGERPRINT=$FP

step "customer: back up $SRC twice (the second sends almost nothing)"
"$COFFER" backup --exclude .git --exclude bin "$SRC"
"$COFFER" backup --exclude .git --exclude bin "$SRC"
"$COFFER" snapshots

step "operator, while the server runs: lock the tenant (through REPO/admin.sock)"
"$COFFER" --repo "$REPO" tenant lock acme
if "$COFFER" snapshots 2>"$WORK/refused"; then
  echo "a locked tenant's customer was served" >&2; exit 1
fi
echo "customer refused: $(cat "$WORK/refused")"
"$COFFER" --repo "$REPO" tenant unlock acme

step "customer: restore and compare"
"$COFFER" restore latest --target "$WORK/restore"
diff -r --exclude .git --exclude bin "$SRC" "$WORK/restore$SRC"
echo "restore is identical to $SRC"

step "operator: check and the audit trail, still through the server"
"$COFFER" --repo "$REPO" check
"$COFFER" --repo "$REPO" audit | tail -n 6
