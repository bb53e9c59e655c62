#!/usr/bin/env bash
# Long runs of the seeded torture test (tests/torture.rs): the real daemon through N random
# steps drawn from seed S, every invariant checked after each step, resources compared
# between the reset after the warm-up and the final one (RSS and the heap in use, read from
# the daemon's clefd_heap_in_use_bytes, as the least of the later resets against the least
# of the earlier ones). A failure prints its seed and the shortest step list found that
# reproduces it.
#
#   scripts/torture.sh --steps 2000 --seed 7 [--keep-going] [--shrink 8] [--deadline 60] [--report FILE]
#                      [--heap | --heap-trim] [--arenas N]
#
# --keep-going reports every invariant that fails (with the step that first broke it)
# instead of stopping at the first; --shrink bounds the replays spent shortening a failure;
# --heap prints the heap held and in use at each reset (gdb calls malloc_stats in the
# daemon; --heap-trim calls malloc_trim after it, which lowers later RSS samples);
# --arenas sets the daemon's MALLOC_ARENA_MAX (the daemon limits itself to 2 by default).
set -euo pipefail
cd "$(dirname "$0")/.."

steps=200 seed=1 keep=0 shrink=6 deadline=60 report=""
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --keep-going) keep=1; shift ;;
    --shrink) shrink=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    --report) report=$2; shift 2 ;;
    --heap) export CLEFD_TORTURE_HEAP=1; shift ;;
    --heap-trim) export CLEFD_TORTURE_HEAP=trim; shift ;;
    --arenas) export CLEFD_TORTURE_ARENAS=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

export CLEFD_TORTURE_STEPS=$steps CLEFD_TORTURE_SEED=$seed CLEFD_TORTURE_SHRINK=$shrink
export CLEFD_TORTURE_DEADLINE_S=$deadline CLEFD_TORTURE_KEEP_GOING=$keep
[ -n "$report" ] && export CLEFD_TORTURE_REPORT=$report
exec "${CARGO:-cargo}" test --release --locked --test torture -- --nocapture
