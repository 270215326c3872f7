#!/usr/bin/env bash
# coffer mount against coffer restore, restic 0.18.1's mount and coffer ls,
# side by side in one run (docs/benchmarks.md, "Mount"; issue 12 item 4):
#   1. a large file read sequentially through the mount, through coffer
#      restore (--include of that file) and through restic's mount;
#   2. ls -lR of a mounted many-file tree against coffer ls and ls --json;
#   3. peak RSS of coffer mount reading the large file twice.
# Usage: bench/mount.sh [FILE_MIB [NFILES]] (default 1024 MiB, 50000 files).
# Needs root (drop_caches), fuse3 (fusermount3), restic in PATH or
# ~/go/bin, /usr/bin/time, and about 3 × FILE_MIB of free disk under $W.
set -euo pipefail
MIB=${1:-1024}
NFILES=${2:-50000}
W=${W:-/tmp/coffer-mountbench}
C=$W/coffer
export PATH=$HOME/go/bin:$PATH
cd "$(dirname "$0")/.."
rm -rf "$W"
mkdir -p "$W/src/tree" "$W/mnt" "$W/rmnt"
go build -o "$C" ./cmd/coffer

now() { date +%s.%N; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f MiB/s", b / 1048576 / s }'; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
waitmount() { for _ in $(seq 200); do [ -e "$1/$2" ] && return 0; sleep 0.05; done; echo "mount at $1 did not come up" >&2; exit 1; }

# The data: one large random file and a tree of small files.
head -c "${MIB}M" /dev/urandom > "$W/src/big.bin"
python3 - "$W/src/tree" "$NFILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 500))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d.txt" % i), "w") as f:
        f.write("file %d\n" % i * (1 + i % 40))
EOF
BYTES=$((MIB << 20))

export COFFER_REPO=$W/repo COFFER_TENANT=bench
$C init >/dev/null 2>&1
$C tenant create bench >/dev/null
$C backup --host bench "$W/src" >/dev/null
SNAP=$($C --json snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"][:8])')
export RESTIC_REPOSITORY=$W/restic RESTIC_PASSWORD=bench
restic init >/dev/null
restic backup --host bench "$W/src" >/dev/null 2>&1

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); file $MIB MiB, $NFILES files"

# 1. The large file.
drop
t=$(now); $C restore "$SNAP" --target "$W/restored" --include "$W/src/big.bin" >/dev/null; s=$(since "$t")
cmp "$W/restored/$W/src/big.bin" "$W/src/big.bin"
echo "coffer restore of big.bin:        ${s} s  $(rate $BYTES "$s")"
rm -rf "$W/restored"

$C mount "$W/mnt" >/dev/null & MP=$!
waitmount "$W/mnt" "ids/$SNAP"
drop
t=$(now); cat "$W/mnt/ids/$SNAP/$W/src/big.bin" > /dev/null; s=$(since "$t")
echo "coffer mount, cat big.bin:        ${s} s  $(rate $BYTES "$s")"

restic mount "$W/rmnt" >/dev/null 2>&1 & RP=$!
waitmount "$W/rmnt" "snapshots/latest"
drop
t=$(now); cat "$W/rmnt/snapshots/latest/$W/src/big.bin" > /dev/null; s=$(since "$t")
echo "restic mount, cat big.bin:        ${s} s  $(rate $BYTES "$s")"
kill -INT $RP; wait $RP || true

# 2. Listing the many-file tree.
drop
t=$(now); ls -lR "$W/mnt/ids/$SNAP/$W/src/tree" > "$W/ls-mount.txt"; s=$(since "$t")
echo "ls -lR of the mounted tree:       ${s} s  ($(grep -c '^-' "$W/ls-mount.txt") files)"
t=$(now); ls -lR "$W/mnt/ids/$SNAP/$W/src/tree" > /dev/null; s=$(since "$t")
echo "ls -lR again (kernel caches):     ${s} s"
kill -INT $MP; wait $MP
drop
t=$(now); $C ls "$SNAP" "$W/src/tree" > /dev/null; s=$(since "$t")
echo "coffer ls of the tree:            ${s} s"
t=$(now); $C --json ls "$SNAP" "$W/src/tree" > /dev/null; s=$(since "$t")
echo "coffer ls --json of the tree:     ${s} s"

# 3. Peak RSS of the mount reading the large file twice (default 64 MiB cache).
/usr/bin/time -v -o "$W/time.txt" $C mount "$W/mnt" >/dev/null & TP=$!
waitmount "$W/mnt" "ids/$SNAP"
for _ in 1 2; do drop; cat "$W/mnt/ids/$SNAP/$W/src/big.bin" > /dev/null; done
kill -INT "$(pgrep -P $TP)"; wait $TP
echo "coffer mount peak RSS, big.bin read twice: $(awk -F': ' '/Maximum resident/ {print $2}' "$W/time.txt") KB (cache 64 MiB)"
rm -rf "$W"
