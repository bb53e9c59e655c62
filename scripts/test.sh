#!/usr/bin/env bash
# `make test`'s stages, the set-up included, each timed, then one summary a reader of a CI log can
# trust: how many test binaries ran, how many tests passed and failed, how many could not run
# (a test that cannot run here says so in $CLEFD_TEST_NOT_RUN; under CI=true it fails instead),
# the kit's tests, and the wall time of every stage. Stops at the first stage that fails, but
# still prints the summary of what ran. Run by `make test`; paths are repo-relative.
set -uo pipefail
cd "$(dirname "$0")/.."

KIT_PY=.local/kit-venv/bin/python
LOG_DIR=.local/test-logs
mkdir -p "$LOG_DIR"
export CLEFD_TEST_NOT_RUN="$PWD/$LOG_DIR/not-run.txt"
: > "$CLEFD_TEST_NOT_RUN"

stages=()
times=()
results=()
failed_stage=""
strays=0

# run_stage NAME COMMAND...: runs one stage, its output both shown and kept in $LOG_DIR/NAME.log.
run_stage() {
  local name=$1
  shift
  local start rc
  start=$(date +%s)
  echo "== test stage: $name"
  # Into a file that `tail` follows until the stage ends, not through a pipe: a daemon a
  # failed test left behind would hold a pipe open, and the stage would never end. Such
  # daemons are ended here and counted.
  local pid left
  : > "$LOG_DIR/$name.log" # exists before tail opens it, however fast the stage starts
  "$@" >> "$LOG_DIR/$name.log" 2>&1 &
  pid=$!
  tail -n +1 --pid="$pid" -f "$LOG_DIR/$name.log"
  wait "$pid"
  rc=$?
  left=$(pgrep -f "^$PWD/target/release/clefd " || true)
  if [ -n "$left" ]; then
    echo "test.sh: $(echo "$left" | wc -l) clefd process(es) left running by stage $name: ended" >&2
    echo "$left" | xargs -r kill -9 2>/dev/null || true
    strays=$((strays + $(echo "$left" | wc -l)))
  fi
  stages+=("$name")
  times+=("$(($(date +%s) - start))")
  results+=("$rc")
  if [ "$rc" != 0 ] && [ -z "$failed_stage" ]; then failed_stage=$name; fi
  return "$rc"
}

summary() {
  local cargo_log=$LOG_DIR/cargo-test.log kit_log=$LOG_DIR/kit-tests.log
  local binaries=0 passed=0 failed=0 ignored=0 kit_run=0 kit_failed=0 not_run=0
  if [ -f "$cargo_log" ]; then
    binaries=$(grep -cE '^ +Running ' "$cargo_log")
    # "test result: ok. 12 passed; 0 failed; 0 ignored; ..."
    read -r passed failed ignored < <(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
          if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i; if ($(i+1) ~ /^ignored;/) g += $i
        } } END { print p+0, f+0, g+0 }' "$cargo_log")
  fi
  if [ -f "$kit_log" ]; then
    kit_run=$(awk '/^Ran [0-9]+ tests?/ { n += $2 } END { print n+0 }' "$kit_log")
    kit_failed=$(grep -oE 'FAILED \((failures|errors)=[0-9]+(, (failures|errors)=[0-9]+)?\)' "$kit_log" | grep -oE '[0-9]+' | awk '{ n += $1 } END { print n+0 }')
  fi
  not_run=$(grep -c . "$CLEFD_TEST_NOT_RUN" 2>/dev/null || true)
  echo
  echo "================ clefd test summary ================"
  printf '%-14s %8s  %s\n' stage seconds result
  for i in "${!stages[@]}"; do
    local r=ok
    [ "${results[$i]}" = 0 ] || r="FAILED (exit ${results[$i]})"
    printf '%-14s %8s  %s\n' "${stages[$i]}" "${times[$i]}" "$r"
  done
  echo "test binaries:      $binaries"
  echo "rust tests:         $passed passed, $failed failed, $ignored ignored"
  echo "could not run:      $not_run${CI:+ (must be 0 under CI)}"
  if [ "$not_run" != 0 ]; then sed 's/^/  - /' "$CLEFD_TEST_NOT_RUN"; fi
  echo "kit tests:          $kit_run run, $kit_failed failed"
  echo "daemons left over:  $strays (ended by test.sh; a test that fails may leave one)"
  if [ -n "$failed_stage" ]; then echo "first failed stage: $failed_stage"; fi
  echo "===================================================="
  # The one closing line any CI reads.
  echo "summary: $((passed + kit_run - kit_failed)) passed, $((failed + kit_failed)) failed"
  if [ -n "${CI:-}" ] && [ "$not_run" != 0 ]; then
    echo "test.sh: $not_run test(s) could not run under CI" >&2
    return 1
  fi
  [ -z "$failed_stage" ]
}

run_stage setup bash scripts/setup.sh --test &&
  CARGO="${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}" &&
  run_stage build "$CARGO" build --release --locked &&
  run_stage kit-setup bash scripts/setup-kit.sh &&
  run_stage arm64-build bash scripts/build-arm64.sh &&
  run_stage cargo-test "$CARGO" test --release --locked &&
  run_stage kit-tests bash -c "cd engines/kit && ../../$KIT_PY -m unittest discover -s tests" &&
  run_stage fmt "$CARGO" fmt --all -- --check &&
  run_stage clippy "$CARGO" clippy --release --locked --all-targets -- -D warnings
summary
