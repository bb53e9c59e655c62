#!/usr/bin/env bash
# The demo: renders the astronaut clip (once), makes sure a broker listens on
# 127.0.0.1:1883 (starting a private mosquitto if none does), prints every event that
# reaches the broker as one line, and runs the daemon over both clips once: the real-face
# bundle on the astronaut, the context-bias bundle on assets/context-bias-anti.mp4 (its
# events scored against the clip's ground truth, with a tally at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
CLEFD=target/release/clefd
CLIP=.local/demo/astronaut.mp4
PORT=1883

if [ ! -f "$CLIP" ]; then
  mkdir -p "$(dirname "$CLIP")"
  "$CLEFD" make-clip --image assets/astronaut.png --out "$CLIP" --seconds 6 --fps 15
fi

broker_pid=""
if ! (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
  echo "demo: no broker on 127.0.0.1:$PORT; starting mosquitto"
  mosquitto -p "$PORT" >/dev/null 2>&1 &
  broker_pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
fi
watch_pid=""
cleanup() {
  [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null || true
  # Wait for our broker to be gone, so a demo started right after starts its own.
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null; fi || true
}
trap cleanup EXIT

echo "demo: events as a consumer sees them on mqtt://127.0.0.1:$PORT (clefd/demo/+/emotion)."
echo "demo: camera context-bias plays a rendered clip whose scenes never go with the expression;"
echo "      each of its events is scored against the clip's truth: the factual decision"
echo "      φ(Y_c,Y_e) against the debiased one (TIE), with a tally at the end."
"$CLEFD" watch --mqtt "mqtt://127.0.0.1:$PORT" --until-offline demo --timeout 90 \
  --truth assets/context-bias-anti.mp4.truth.csv --truth-camera context-bias 2>/dev/null &
watch_pid=$!
sleep 0.5
RUST_LOG="${RUST_LOG:-warn,clefd=info}" "$CLEFD" run --config config/demo.toml 2> .local/demo/clefd.log
wait "$watch_pid" || true
watch_pid=""
echo "demo: done. The daemon's log is in .local/demo/clefd.log:"
grep -E "run summary" .local/demo/clefd.log | sed 's/^/  /'
