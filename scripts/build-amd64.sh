#!/usr/bin/env bash
# Builds the release clefd for the amd64 package (`make deb`) with cargo-zigbuild, linked
# against glibc 2.31 whatever glibc this machine has, so the package installs on Ubuntu
# 20.04 (2.31), 22.04 (2.35) and 24.04 (2.39) and on Debian 11 on, not only on the Debian 12
# (2.36) it was built on. GStreamer and GLib come from this machine's -dev packages; their
# 1.16 API (Cargo.toml) is what 20.04 has. A full release build of its own
# (target/x86_64-unknown-linux-gnu/), so only `make deb` runs it, never `make test`.
# Output: target/x86_64-unknown-linux-gnu/release/clefd
set -euo pipefail
cd "$(dirname "$0")/.."
zig_path=$(bash scripts/setup-zig.sh --path | tail -n1)

GLIBC=2.31
PATH="$zig_path:$HOME/.cargo/bin:$PATH"
export PATH
# pkg-config leaves out the system's own library folder, where the system linker looks
# anyway and zig's does not. Name it to zig through a folder holding only the GStreamer and
# GLib libraries (the whole folder would offer this machine's glibc too).
libdir=$(pkg-config --variable=libdir gstreamer-1.0)
link=$PWD/target/x86_64-unknown-linux-gnu/gst-link
mkdir -p "$link"
for dep in gstreamer_1_0 gstreamer_base_1_0 gstreamer_app_1_0 gstreamer_video_1_0 glib_2_0 gobject_2_0 gio_2_0; do
  lib=$(echo "$dep" | sed -e 's/_1_0$/-1.0/' -e 's/_2_0$/-2.0/' -e 's/^gstreamer_\(.*\)-1.0$/gst\1-1.0/')
  ln -sfn "$libdir/lib$lib.so" "$link/lib$lib.so"
  export "SYSTEM_DEPS_${dep^^}_SEARCH_NATIVE=$link"
done
# Debug info is stripped here (the package strips it anyway): half the build's disk.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo
cargo zigbuild --release --locked --target "x86_64-unknown-linux-gnu.$GLIBC" --bin clefd
echo "target/x86_64-unknown-linux-gnu/release/clefd"
