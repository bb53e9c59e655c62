#!/usr/bin/env bash
# Installs what clefd needs on a fresh Debian/Ubuntu machine, and nothing twice:
#   - apt packages: GStreamer (+ plugins, RTSP server), mosquitto, build tools, python3
#   - a Rust toolchain (rustup) when cargo is missing or too old for edition 2024
#   - ONNX Runtime's shared library, from the PyPI `onnxruntime` wheel, into .local/onnxruntime/
#   - promtool for the tests; with --test, ONNX Runtime 1.18 (npm `onnxruntime-node`) too
# Safe to run again: each step checks first. Run from anywhere; paths are repo-relative.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION="${ORT_VERSION:-1.31.1}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  build-essential pkg-config ca-certificates curl python3 python3-venv python3-pip
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  libgstrtspserver-1.0-dev gstreamer1.0-rtsp
  mosquitto mosquitto-clients openssl systemd
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution's mosquitto service is not needed (tests and the demo start their own).

need_rust=0
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  need_rust=1
else
  PATH="$HOME/.cargo/bin:$PATH"
  ver=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n1.85.0\n' "$ver" | sort -V | head -n1)" != "1.85.0" ]; then need_rust=1; fi
fi
if [ "$need_rust" = 1 ]; then
  echo "setup: installing a Rust toolchain with rustup (clefd needs Rust 1.85+)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

ORT_DIR=.local/onnxruntime
if [ ! -f "$ORT_DIR/libonnxruntime.so" ] || [ "$(cat "$ORT_DIR/VERSION" 2>/dev/null)" != "$ORT_VERSION" ]; then
  echo "setup: fetching ONNX Runtime $ORT_VERSION (PyPI wheel) into $ORT_DIR"
  rm -rf .local/wheels && mkdir -p .local/wheels "$ORT_DIR"
  python3 -m pip download -q --no-deps --only-binary=:all: -d .local/wheels "onnxruntime==$ORT_VERSION"
  python3 scripts/ort-lib-from-wheel.py .local/wheels/onnxruntime-*.whl "$ORT_DIR/libonnxruntime.so"
  echo "$ORT_VERSION" > "$ORT_DIR/VERSION"
  rm -rf .local/wheels
fi
# With --test (make test): ONNX Runtime 1.18, the oldest clefd loads (JetPack 5's newest
# GPU build), for the test that runs a model on it. PyPI's 1.18 wheel has no
# libonnxruntime.so; the npm package onnxruntime-node has one. The daemon uses the
# version above.
ORT_FLOOR_DIR=.local/onnxruntime-1.18
# Node.js also runs the Node-RED flow's functions in tests/contrib.rs.
if [ "${1:-}" = "--test" ] && ! { command -v npm && command -v node; } >/dev/null 2>&1; then
  echo "setup: installing npm and Node.js (ONNX Runtime 1.18 for the API-floor test; the Node-RED flow's test)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm nodejs >/dev/null
fi
# Headless Chromium renders the history page in tests/history.rs (its DOM and a screenshot).
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (tests/history.rs renders the history page in it)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if [ "${1:-}" = "--test" ] && [ ! -f "$ORT_FLOOR_DIR/libonnxruntime.so" ]; then
  echo "setup: fetching ONNX Runtime 1.18.0 (npm onnxruntime-node) into $ORT_FLOOR_DIR"
  rm -rf .local/npm && mkdir -p .local/npm "$ORT_FLOOR_DIR"
  (cd .local/npm && npm pack -q onnxruntime-node@1.18.0 >/dev/null)
  case "$(uname -m)" in aarch64) npm_arch=arm64 ;; *) npm_arch=x64 ;; esac
  lib="package/bin/napi-v3/linux/$npm_arch/libonnxruntime.so.1.18.0"
  tar -xzf .local/npm/onnxruntime-node-1.18.0.tgz -C .local/npm "$lib"
  cp ".local/npm/$lib" "$ORT_FLOOR_DIR/libonnxruntime.so"
  rm -rf .local/npm
fi
# promtool (for the tests' check of /metrics), taken out of Debian's prometheus package
# without installing the package (no service, no dependencies).
if [ ! -x .local/bin/promtool ] && ! command -v promtool >/dev/null 2>&1; then
  echo "setup: extracting promtool from Debian's prometheus package into .local/bin"
  rm -rf .local/promtool && mkdir -p .local/promtool .local/bin
  (cd .local/promtool && apt-get download prometheus >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download prometheus >/dev/null; })
  dpkg-deb -x .local/promtool/prometheus_*.deb .local/promtool/root
  cp .local/promtool/root/usr/bin/promtool .local/bin/promtool
  rm -rf .local/promtool
fi
echo "setup: ok (ONNX Runtime $(cat "$ORT_DIR/VERSION") at $ORT_DIR/libonnxruntime.so)"
