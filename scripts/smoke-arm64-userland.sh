#!/usr/bin/env bash
# Runs the arm64 clefd (scripts/build-arm64.sh) under qemu in a newer Debian arm64 userland
# than the sysroot it was linked with: forward compatibility shown, not assumed. Debian's
# archive gives the runtime libraries of SUITE (default trixie: glibc 2.41, GStreamer 1.26,
# the t64 libraries), fetched with a private apt configuration into a folder (nothing is
# installed on this machine), unpacked with dpkg-deb -x. Then `clefd --help` and
# `clefd doctor` (a test:// camera, a mosquitto on a free loopback port, PyPI's aarch64
# ONNX Runtime) run there. Usage: scripts/smoke-arm64-userland.sh [SUITE] [WORK_DIR]
# Needs qemu-user-static, mosquitto and Debian's archive keyring (debian-archive-keyring;
# DEBIAN_KEYRING names another file).
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${1:-trixie}
WORK=$(realpath -m "${2:-.local/arm64/userland-$SUITE}")
BIN=$PWD/target/aarch64-unknown-linux-gnu/release/clefd
ORT=$PWD/.local/arm64/onnxruntime/libonnxruntime.so
[ -x "$BIN" ] || { echo "smoke: $BIN is missing: run 'make build ARCH=arm64'" >&2; exit 1; }
[ -f "$ORT" ] || { echo "smoke: $ORT is missing: run scripts/setup-arm64.sh" >&2; exit 1; }
command -v qemu-aarch64-static >/dev/null || { echo "smoke: qemu-aarch64-static is missing (scripts/setup-arm64.sh)" >&2; exit 1; }
command -v mosquitto >/dev/null || { echo "smoke: mosquitto is missing: apt-get install mosquitto" >&2; exit 1; }
KEYRING=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
[ -f "$KEYRING" ] || { echo "smoke: $KEYRING is missing: apt-get install debian-archive-keyring, or set DEBIAN_KEYRING" >&2; exit 1; }
# Seconds since $1 (date +%s.%N), without bc (not on a fresh Debian 12).
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }

mkdir -p "$WORK"/{etc/sources.list.d,etc/preferences.d,lists/partial,cache/archives/partial,state,debs}
: > "$WORK/state/status"
echo "deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian $SUITE main" \
  > "$WORK/etc/sources.list"
cat > "$WORK/apt.conf" <<CONF
Dir::Etc::SourceList "$WORK/etc/sources.list";
Dir::Etc::SourceParts "$WORK/etc/sources.list.d";
Dir::Etc::Preferences "$WORK/etc/preferences";
Dir::Etc::PreferencesParts "$WORK/etc/preferences.d";
Dir::State::Lists "$WORK/lists";
Dir::State::status "$WORK/state/status";
Dir::Cache "$WORK/cache";
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
CONF
export APT_CONFIG=$WORK/apt.conf
# What the binary and its test camera load, with their dependencies (no fonts or installer
# tools: nothing here draws text or configures packages).
WANTED="libc6 libgcc-s1 libstdc++6 libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 gstreamer1.0-plugins-base"
LEFT_OUT='^(fonts-|xfonts-|cdebconf|debconf|lsb-base|sysvinit-utils|x11-common|libdebian-installer|libnewt|libslang|libtextwrap)'
# The unpacked userland is reused only for the same request and the same package list.
request=$(printf '%s\n' "$SUITE" "$WANTED" "$LEFT_OUT" | sha256sum | cut -d' ' -f1)
done_key() { echo "$request $(sha256sum < "$WORK/packages.txt" | cut -d' ' -f1)"; }
if [ ! -f "$WORK/root/.done" ] || [ ! -f "$WORK/packages.txt" ] || [ "$(cat "$WORK/root/.done")" != "$(done_key)" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086 # WANTED is a list of names
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
      --no-enhances --no-pre-depends $WANTED 2>/dev/null \
    | grep -v '^[ <]' | sort -u | grep -v -E "$LEFT_OUT" > "$WORK/packages.txt"
  # Only this list's packages: an older run's would give a name two versions.
  rm -f "$WORK"/debs/*.deb
  (cd "$WORK/debs" && apt-get download -qq $(cat "$WORK/packages.txt"))
  rm -rf "$WORK/root" && mkdir -p "$WORK/root/proc"
  for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/root"; done
  # Merged /usr, as base-files would lay it out; an ARM /proc/cpuinfo for ONNX Runtime.
  for d in lib bin sbin; do [ -e "$WORK/root/$d" ] || ln -s "usr/$d" "$WORK/root/$d"; done
  cp .local/arm64/sysroot/proc/cpuinfo "$WORK/root/proc/cpuinfo"
  done_key > "$WORK/root/.done"
fi
ROOT=$WORK/root
version() { set -- "$WORK"/debs/"$1"_*.deb; dpkg-deb -f "$1" Version; }
echo "userland: Debian $SUITE arm64: libc6 $(version libc6), libgstreamer1.0-0 $(version libgstreamer1.0-0), $(ls "$WORK"/debs | wc -l) packages"
# qemu's -L sends the userland's own paths (its GStreamer plugins) to ROOT; plugins are
# scanned in process (no arm64 scanner to fork), into a registry of this run's own.
unset GST_PLUGIN_PATH GST_PLUGIN_SYSTEM_PATH GST_PLUGIN_SCANNER ORT_DYLIB_PATH RUST_LOG
export GST_REGISTRY_FORK=no GST_REGISTRY=$WORK/registry.arm64.bin
run() { qemu-aarch64-static -L "$ROOT" "$BIN" "$@"; }

start=$(date +%s.%N)
run --help > "$WORK/help.txt"
echo "clefd --help: exit 0 in $(since "$start") s, $(wc -l < "$WORK/help.txt") lines"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" > "$WORK/mosquitto.log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null || true' EXIT
mkdir -p "$WORK/clefd-state"
cat > "$WORK/clefd.toml" <<TOML
state_dir = "$WORK/clefd-state"
[engine]
bundle = "$PWD/engines/face-fer2013"
onnxruntime = "$ORT"
[mqtt]
url = "mqtt://127.0.0.1:$port"
[http]
listen = "127.0.0.1:$http"
[cameras.pattern]
uri = "test://ball"
TOML
start=$(date +%s.%N)
set +e
run doctor --cameras --config "$WORK/clefd.toml" > "$WORK/doctor.txt" 2>&1
code=$?
set -e
cat "$WORK/doctor.txt"
echo "clefd doctor --cameras: exit $code in $(since "$start") s"
exit "$code"
