#!/usr/bin/env bash
# Runs `make test` N times (default 3) while two busy loops keep both cores loaded: the
# suite must pass on a loaded machine (tests wait for conditions, never time them).
# Prints each run's exit code and wall time. Usage: scripts/test-under-load.sh [N]
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
failed=0
for i in $(seq 1 "$runs"); do
  timeout 3600 sh -c 'while :; do :; done' & hog1=$!
  timeout 3600 sh -c 'while :; do :; done' & hog2=$!
  start=$(date +%s)
  make test > ".local/under-load-$i.log" 2>&1
  rc=$?
  end=$(date +%s)
  kill "$hog1" "$hog2" 2>/dev/null
  wait "$hog1" "$hog2" 2>/dev/null
  echo "run $i: exit $rc, $((end - start)) s (log: .local/under-load-$i.log)"
  [ "$rc" = 0 ] || failed=1
done
exit "$failed"
