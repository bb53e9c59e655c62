#!/usr/bin/env bash
# Cross-builds the release clefd for arm64 (Jetson: JetPack 5 and 6) on this x86_64 machine:
# cargo-zigbuild links against glibc 2.31 (JetPack 5's; JetPack 6 has 2.35) whatever glibc
# this machine has, and against Debian's arm64 GStreamer from the sysroot that
# scripts/setup-arm64.sh unpacks. gstreamer-rs is built with its 1.16 API (Cargo.toml), so
# JetPack 5's GStreamer 1.16 loads it. Output: target/aarch64-unknown-linux-gnu/release/clefd
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-arm64.sh

ROOT=$PWD/.local/arm64
SYSROOT=$ROOT/sysroot
GLIBC=2.31
PATH="$(bash scripts/setup-zig.sh --path | tail -n1):$HOME/.cargo/bin:$PATH"
export PATH
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR_aarch64_unknown_linux_gnu=$SYSROOT
export PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu=$SYSROOT/usr/lib/aarch64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig
# No -rpath-link: zig (0.13) refuses it on every link, and its linker (LLD) does not need it,
# since it leaves the libraries' own dependencies (libglib's libpcre2, ...) to the loader.
# Debug info stripped here: this machine's binutils cannot strip an arm64 file.
export CARGO_PROFILE_RELEASE_STRIP=debuginfo
cargo zigbuild --release --locked --target "aarch64-unknown-linux-gnu.$GLIBC" --bin clefd
echo "target/aarch64-unknown-linux-gnu/release/clefd"
