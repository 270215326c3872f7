#!/usr/bin/env bash
# Operations: the operator runs coffer serve with metrics on loopback and
# alerts to a local Mailpit (SMTP) and a signed webhook; a drive folder is
# removed, the nightly scrub finds its shards missing, one alert e-mail and
# one webhook arrive, /metrics shows the failed drive and the scrub's
# problems; then the weekly reports go out (the idle and the locked tenant
# flagged, nothing for the shredded one), and a second run sends nothing
# twice. Needs mailpit (go install github.com/axllent/mailpit@v1.33.1;
# .ci/run installs it). Run from the repository root (make demo-ops).
set -euo pipefail
COFFER=${COFFER:-$PWD/bin/coffer}
SRC=${1:-$PWD/engine}
MAILPIT=${MAILPIT:-$(command -v mailpit || echo "$(go env GOPATH)/bin/mailpit")}
if [ ! -x "$MAILPIT" ]; then
  echo "mailpit is not installed: go install github.com/axllent/mailpit@v1.33.1" >&2
  exit 1
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-demo-ops.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
REPO=$WORK/repo
step() { printf '\n== %s\n' "$*"; }

# free_port prints a loopback port nobody listens on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}
# get PORT PATH prints the body of http://127.0.0.1:PORT/PATH (bash only).
get() {
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}
# wait_for FILE PATTERN waits up to 20 s for PATTERN in FILE.
wait_for() {
  for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1
}
subjects() { get "$API" /api/v1/messages | grep -o '"Subject":"[^"]*"' | sed 's/"Subject":/  /'; }
count() { get "$API" /api/v1/messages | grep -o '"total":[0-9]*' | cut -d: -f2; }

step "a local Mailpit (SMTP and its API on loopback) and a webhook receiver"
SMTP=$(free_port) API=$(free_port)
"$MAILPIT" --smtp "127.0.0.1:$SMTP" --listen "127.0.0.1:$API" --quiet --disable-version-check \
  --smtp-disable-rdns --database "$WORK/mailpit.db" >"$WORK/mailpit.log" 2>&1 &
PIDS+=($!)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/hook.secret"
go build -o "$WORK/hookecho" ./scripts/hookecho
"$WORK/hookecho" -secret "$WORK/hook.secret" >"$WORK/hook.out" 2>&1 &
PIDS+=($!)
wait_for "$WORK/hook.out" '^listening on '
HOOK=$(sed -n 's/^listening on //p' "$WORK/hook.out")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$API") 2>/dev/null && break; sleep 0.1; done
echo "Mailpit SMTP 127.0.0.1:$SMTP, API http://127.0.0.1:$API; webhook http://$HOOK/hook"

step "operator: a repository, tenants idle (backed up), locked, gone (shredded)"
"$COFFER" --repo "$REPO" init >/dev/null 2>&1
for t in idle locked gone; do
  "$COFFER" --repo "$REPO" tenant create "$t" --contact "ops@$t.example" >/dev/null
done
"$COFFER" --repo "$REPO" --tenant idle backup "$SRC" | head -n 1
"$COFFER" --repo "$REPO" tenant lock locked | head -n 1
"$COFFER" --repo "$REPO" tenant shred gone --confirm gone 2>/dev/null | head -n 1

step "operator: coffer serve with metrics; alerts to the operator and the webhook"
export COFFER_SMTP=127.0.0.1:$SMTP COFFER_OPERATOR_EMAIL=ops@provider.example \
  COFFER_MAIL_FROM=coffer@backup1.provider.example \
  COFFER_WEBHOOKS=http://$HOOK/hook COFFER_WEBHOOK_SECRET_FILE=$WORK/hook.secret
"$COFFER" --repo "$REPO" serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --notify-retry 1s \
  >"$WORK/serve.out" 2>"$WORK/serve.log" &
PIDS+=($!)
wait_for "$WORK/serve.out" '^admin socket: '
cat "$WORK/serve.out"
METRICS=$(sed -n 's#^metrics on http://127.0.0.1:\([0-9]*\)/metrics#\1#p' "$WORK/serve.out")
"$COFFER" --repo "$REPO" notify test

step "a drive folder disappears; the nightly scrub (through the server) finds the damage"
DRIVE=$(ls -d "$REPO"/drives/* | head -n 1)
DRIVE_ID=$("$COFFER" --repo "$REPO" drive list | awk -v p="$DRIVE" '$0 ~ p {print $1}')
rm -rf "$DRIVE"
echo "removed $DRIVE (drive $DRIVE_ID)"
if "$COFFER" --repo "$REPO" scrub | head -n 2; then :; fi
wait_for "$WORK/hook.out" '^webhook scrub.damage'
for _ in $(seq 100); do [ "$(count)" -ge 2 ] && break; sleep 0.1; done
echo "the webhook receiver got:"; grep -A1 '^webhook scrub.damage' "$WORK/hook.out"
echo "Mailpit holds:"; subjects

step "/metrics shows the failed drive and the scrub's problems"
get "$METRICS" /metrics | grep -E "^coffer_drive_failed\{drive=\"$DRIVE_ID\"|^coffer_scrub_last_problems\{kind=\"missing\"|^coffer_packs_below|^coffer_tenant_backup_overdue"
echo "healthz: $(get "$METRICS" /healthz)"

step "the weekly reports a week on: idle and locked flagged, the summary to the operator, nothing for gone"
AT=$(date -u -d '+8 days' +%Y-%m-%dT%H:%M:%SZ)
"$COFFER" --repo "$REPO" report --send --at "$AT" >/dev/null
echo "and again, the same week:"
"$COFFER" --repo "$REPO" report --send --at "$AT" >/dev/null
echo "Mailpit holds $(count) messages:"; subjects
if subjects | grep -q 'gone'; then echo "the shredded tenant got mail" >&2; exit 1; fi
