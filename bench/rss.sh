#!/usr/bin/env bash
# Peak RSS of the same backup into repositories storing 1 GiB and 20 GiB
# (docs/benchmarks.md, "Peak RSS against the size of the repository").
# Needs about 35 GB of free disk and the mkdata set in /tmp/mk.
set -e
C=/tmp/coffer-rss
cd "$(dirname "$0")/.." && go build -o $C ./cmd/coffer
for size in 1 20; do
  export COFFER_REPO=/tmp/rss-repo-$size
  rm -rf $COFFER_REPO /tmp/rss-fill
  $C init >/dev/null 2>&1
  $C tenant create filler >/dev/null
  mkdir -p /tmp/rss-fill
  for i in $(seq 1 $size); do head -c 1G /dev/urandom > /tmp/rss-fill/f$i; done
  $C --tenant filler backup /tmp/rss-fill >/dev/null
  rm -rf /tmp/rss-fill
  stored=$(du -sb $COFFER_REPO/drives | cut -f1)
  $C tenant create probe >/dev/null
  sync; echo 3 > /proc/sys/vm/drop_caches
  /usr/bin/time -f "repo ${size}GiB (drives $stored bytes): probe backup %e s, peak RSS %M KB" $C --tenant probe backup /tmp/mk >/dev/null
  rm -rf $COFFER_REPO
done
