#!/usr/bin/env bash
# Installs cargo-zigbuild and zig (PyPI `ziglang`, into .local/arm64/zig-venv), pinned, and
# nothing twice: the arm64 build (scripts/build-arm64.sh) and the amd64 package build
# (scripts/build-amd64.sh) link with them against an older glibc than this machine's.
set -euo pipefail
cd "$(dirname "$0")/.."

ZIG_VERSION="0.13.0"
ZIGBUILD_VERSION="0.24.1"
ROOT=.local/arm64
PATH="$HOME/.cargo/bin:$PATH"

# The pinned version, not whatever an earlier run or another project left in ~/.cargo/bin.
if [ "$(cargo-zigbuild --version 2>/dev/null | awk '{print $2}')" != "$ZIGBUILD_VERSION" ]; then
  echo "setup-zig: installing cargo-zigbuild $ZIGBUILD_VERSION"
  cargo install --locked --quiet --force cargo-zigbuild --version "$ZIGBUILD_VERSION"
fi
if [ ! -x "$ROOT/zig-venv/bin/python" ] || ! "$ROOT/zig-venv/bin/python" -m ziglang version 2>/dev/null | grep -qx "$ZIG_VERSION"; then
  echo "setup-zig: installing zig $ZIG_VERSION (PyPI ziglang) into $ROOT/zig-venv"
  mkdir -p "$ROOT"
  python3 -m venv "$ROOT/zig-venv"
  "$ROOT/zig-venv/bin/python" -m pip install -q "ziglang==$ZIG_VERSION"
fi
