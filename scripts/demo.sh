#!/usr/bin/env bash
# The main job on the embedded default: init a repository on local folders,
# back up a real folder, lose two drives, restore, and verify the restore is
# identical. Run from the repository root (make demo).
set -euo pipefail
COFFER=${COFFER:-$PWD/bin/coffer}
SRC=${1:-$PWD}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export COFFER_REPO=$WORK/repo COFFER_TENANT=demo

step() { printf '\n== %s\n' "$*"; }

step "init a repository: 6 drive folders in 3 racks, 4 data + 2 parity shards"
"$COFFER" init
step "create a tenant"
"$COFFER" tenant create demo --contact ops@example.com
"$COFFER" tenant list
step "back up $SRC (without .git and build output)"
"$COFFER" backup "$SRC" --exclude .git --exclude bin --tag demo
step "back up again: unchanged files are not read, nothing new is stored"
"$COFFER" backup "$SRC" --exclude .git --exclude bin --tag demo
"$COFFER" snapshots
step "lose two drives (d1 in rack r1 and d3 in rack r2)"
rm -rf "$COFFER_REPO/drives/d1" "$COFFER_REPO/drives/d3"
ls "$COFFER_REPO/drives"
step "restore the latest snapshot from the four remaining drives"
"$COFFER" restore latest --target "$WORK/restore" 2>&1
step "verify: the restore is identical to the source"
if diff -r --no-dereference -x .git -x bin "$SRC" "$WORK/restore$SRC"; then
  echo "restore is identical to $SRC"
else
  echo "restore differs from $SRC" >&2
  exit 1
fi
step "check reports the lost drives as damage (exit 14 is expected here)"
set +e
"$COFFER" check >"$WORK/check.txt"
rc=$?
set -e
tail -n 2 "$WORK/check.txt"
echo "coffer check exited $rc"

step "replace the lost drives: mark them failed, add two new ones, heal"
for d in $("$COFFER" drive list 2>/dev/null | awk '$3 == "unavailable" { print $1 }'); do
  "$COFFER" drive fail "$d"
done
"$COFFER" drive add --rack r1 "$COFFER_REPO/drives/d7"
"$COFFER" drive add --rack r2 "$COFFER_REPO/drives/d8"
"$COFFER" scrub --repair | tail -n 2
"$COFFER" check | tail -n 1

step "lose the head node: keep only the drive folders and the master key"
mkdir -p "$WORK/kept"
cp -a "$COFFER_REPO/master.key" "$WORK/kept/"
for d in "$COFFER_REPO"/drives/d*; do mv "$d" "$WORK/kept/"; done
rm -rf "$COFFER_REPO"
drives=$(for d in "$WORK"/kept/d*; do printf 'any:%s,' "$d"; done)
COFFER_REPO=$WORK/newhead "$COFFER" --master-key-file "$WORK/kept/master.key" index rebuild --drives "${drives%,}" | tail -n 3
COFFER_REPO=$WORK/newhead "$COFFER" --master-key-file "$WORK/kept/master.key" restore latest --target "$WORK/restore2" | tail -n 1
diff -r --no-dereference -x .git -x bin "$SRC" "$WORK/restore2$SRC" && echo "restore from the rebuilt index is identical to $SRC"
