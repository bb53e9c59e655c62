#!/usr/bin/env bash
# Installs cargo-zigbuild (into .local/zigbuild) and zig (PyPI `ziglang`, into
# .local/arm64/zig-venv), pinned, and
# nothing twice: the arm64 build (scripts/build-arm64.sh) and the amd64 package build
# (scripts/build-amd64.sh) link with them against an older glibc than this machine's.
set -euo pipefail
cd "$(dirname "$0")/.."

ZIG_VERSION="0.13.0"
ZIGBUILD_VERSION="0.24.1"
ROOT=.local/arm64
# cargo-zigbuild goes into a folder of the project's own (the build scripts put its bin/
# first on PATH), never over a cargo-zigbuild of the user's in ~/.cargo/bin.
ZIGBUILD_ROOT=.local/zigbuild
PATH="$HOME/.cargo/bin:$PATH"

# The pinned version, not whatever an earlier run left there.
if [ "$("$ZIGBUILD_ROOT/bin/cargo-zigbuild" --version 2>/dev/null | awk '{print $2}')" != "$ZIGBUILD_VERSION" ]; then
  echo "setup-zig: installing cargo-zigbuild $ZIGBUILD_VERSION into $ZIGBUILD_ROOT"
  cargo install --locked --quiet --force --root "$ZIGBUILD_ROOT" cargo-zigbuild --version "$ZIGBUILD_VERSION"
fi
if [ ! -x "$ROOT/zig-venv/bin/python" ] || ! "$ROOT/zig-venv/bin/python" -m ziglang version 2>/dev/null | grep -qx "$ZIG_VERSION"; then
  echo "setup-zig: installing zig $ZIG_VERSION (PyPI ziglang) into $ROOT/zig-venv"
  mkdir -p "$ROOT"
  python3 -m venv "$ROOT/zig-venv"
  "$ROOT/zig-venv/bin/python" -m pip install -q "ziglang==$ZIG_VERSION"
fi

# Where the build scripts find both: cargo-zigbuild's bin/ and the ziglang package's folder
# (the zig binary), as the venv's own python names it (a glob over python3*/ could match two).
if [ "${1:-}" = "--path" ]; then
  zig_dir=$("$ROOT/zig-venv/bin/python" -c 'import os, ziglang; print(os.path.dirname(ziglang.__file__))')
  echo "$PWD/$ZIGBUILD_ROOT/bin:$zig_dir"
fi
