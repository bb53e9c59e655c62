#!/usr/bin/env bash
# Installs what the arm64 (Jetson) cross build and its qemu smoke test need, on an x86_64
# Debian/Ubuntu machine, and nothing twice:
#   - Rust's aarch64-unknown-linux-gnu target, and cargo-zigbuild with zig (scripts/setup-zig.sh),
#     so the binary links against glibc 2.31 (JetPack 5) whatever glibc this machine has;
#   - a sysroot in .local/arm64/sysroot: Debian's arm64 GStreamer/GLib libraries and -dev
#     files (apt-get download + dpkg-deb -x; no arm64 package is installed on this machine),
#     with an ARM /proc/cpuinfo for ONNX Runtime under qemu;
#   - ONNX Runtime's arm64 library from PyPI's manylinux aarch64 wheel (.local/arm64/onnxruntime);
#   - qemu-user-static (apt), to run the result here.
# Run from anywhere; paths are repo-relative. Used by `make build ARCH=arm64` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION="${ORT_VERSION:-1.31.1}"
ROOT=.local/arm64
SYSROOT=$ROOT/sysroot
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PATH="$HOME/.cargo/bin:$PATH"

# What the binary links against (the -dev packages and every pkg-config file they require,
# privately too: pkgconf checks them all), and what it loads at run time under qemu.
PACKAGES=(
  libc6 libc6-dev libgcc-s1 libstdc++6 linux-libc-dev libcrypt1 libcrypt-dev
  libgstreamer1.0-0 libgstreamer1.0-dev libgstreamer-plugins-base1.0-0 libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  libglib2.0-0 libglib2.0-dev libffi8 libffi-dev libpcre2-8-0 libpcre2-dev zlib1g zlib1g-dev
  libmount1 libmount-dev libblkid1 libblkid-dev libselinux1 libselinux1-dev libsepol2 libsepol-dev
  libunwind8 libunwind-dev libdw1 libdw-dev libelf1 libelf-dev liborc-0.4-0 liborc-0.4-dev
  liblzma5 liblzma-dev libzstd1 libbz2-1.0 libpng16-16 libgudev-1.0-0 libudev1
)
# Only for stills under qemu (jpegdec); named differently on Ubuntu.
OPTIONAL=(libjpeg62-turbo libjpeg-turbo8)

if ! command -v qemu-aarch64-static >/dev/null 2>&1 || ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "setup-arm64: installing qemu-user-static, binutils and the arm64 package lists"
  $SUDO dpkg --add-architecture arm64
  # Ubuntu serves arm64 from ports.ubuntu.com, not from its amd64 mirrors.
  . /etc/os-release
  if [ "${ID:-}" = ubuntu ] && [ ! -f /etc/apt/sources.list.d/clefd-arm64.list ]; then
    for suite in "$VERSION_CODENAME" "$VERSION_CODENAME-updates" "$VERSION_CODENAME-security"; do
      echo "deb [arch=arm64] http://ports.ubuntu.com/ubuntu-ports $suite main universe"
    done | $SUDO tee /etc/apt/sources.list.d/clefd-arm64.list >/dev/null
  fi
  # On Ubuntu the amd64 mirrors answer 404 for arm64 lists; what matters is checked below.
  $SUDO apt-get update -qq || true
  if ! apt-cache show libgstreamer1.0-dev:arm64 >/dev/null 2>&1; then
    echo "setup-arm64: apt has no arm64 packages (libgstreamer1.0-dev:arm64): add an arm64 source to apt and run again" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends qemu-user-static binutils >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  echo "setup-arm64: adding Rust's aarch64-unknown-linux-gnu target"
  rustup target add aarch64-unknown-linux-gnu
fi
bash scripts/setup-zig.sh

stamp="$(printf '%s\n' "${PACKAGES[@]}" "${OPTIONAL[@]}" | sha256sum | cut -c1-16)"
if [ "$(cat "$SYSROOT/.packages" 2>/dev/null)" != "$stamp" ]; then
  echo "setup-arm64: unpacking ${#PACKAGES[@]} Debian arm64 packages into $SYSROOT"
  rm -rf "$SYSROOT" "$ROOT/debs" && mkdir -p "$SYSROOT" "$ROOT/debs" && chmod 0777 "$ROOT/debs"
  (cd "$ROOT/debs" && apt-get download -qq "${PACKAGES[@]/%/:arm64}" >/dev/null)
  for pkg in "${OPTIONAL[@]}"; do (cd "$ROOT/debs" && apt-get download -qq "$pkg:arm64" >/dev/null 2>&1) || true; done
  for deb in "$ROOT"/debs/*.deb; do dpkg-deb -x "$deb" "$SYSROOT"; done
  # Debian's symbols files say in which version each GStreamer and GLib function appeared:
  # the arm64 test checks the binary needs none newer than JetPack 5's (GStreamer 1.16).
  mkdir -p "$SYSROOT/var/lib/dpkg/symbols"
  for pkg in libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 libglib2.0-0; do
    dpkg-deb --ctrl-tarfile "$ROOT"/debs/"${pkg}"_*_arm64.deb | tar -xO ./symbols > "$SYSROOT/var/lib/dpkg/symbols/$pkg"
  done
  # Absolute symbolic links (libfoo.so -> /lib/aarch64-linux-gnu/libfoo.so.1) would point
  # into this machine's own /lib: make them relative to the sysroot.
  find "$SYSROOT" -type l -lname '/*' | while read -r link; do
    target=$(readlink "$link")
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$SYSROOT$target")" "$link"
  done
  # Debian 12 merges /lib into /usr/lib; the packages ship files in both.
  for d in lib bin sbin; do
    if [ -d "$SYSROOT/$d" ] && [ ! -L "$SYSROOT/$d" ]; then
      cp -a "$SYSROOT/$d/." "$SYSROOT/usr/$d/" && rm -rf "${SYSROOT:?}/$d"
    fi
    mkdir -p "$SYSROOT/usr/$d" && ln -sfn "usr/$d" "$SYSROOT/$d"
  done
  rm -rf "$ROOT/debs"
  echo "$stamp" > "$SYSROOT/.packages"
fi

# ONNX Runtime reads /proc/cpuinfo to pick its kernels; under qemu it would see this machine's
# x86 one and crash. qemu's -L sends /proc/cpuinfo to the sysroot's first, so give it an ARM
# one (Cortex-A78AE, as on Orin) with as many processors as the kernel says are possible
# here: one missing is a null pointer in ONNX Runtime's cpuinfo. Rewritten every run, since
# a cached sysroot may move to a machine with more cores.
mkdir -p "$SYSROOT/proc"
last_cpu=$(sed 's/.*-//' /sys/devices/system/cpu/possible 2>/dev/null || nproc --all)
for cpu in $(seq 0 "$last_cpu"); do
  printf 'processor\t: %s\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd42\nCPU revision\t: 1\n\n' "$cpu"
done > "$SYSROOT/proc/cpuinfo"

ORT_DIR=$ROOT/onnxruntime
if [ ! -f "$ORT_DIR/libonnxruntime.so" ] || [ "$(cat "$ORT_DIR/VERSION" 2>/dev/null)" != "$ORT_VERSION" ]; then
  echo "setup-arm64: fetching ONNX Runtime $ORT_VERSION for aarch64 (PyPI wheel) into $ORT_DIR"
  rm -rf "$ROOT/wheels" && mkdir -p "$ROOT/wheels" "$ORT_DIR"
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
    --platform manylinux2014_aarch64 --python-version 3.11 -d "$ROOT/wheels" "onnxruntime==$ORT_VERSION"
  python3 scripts/ort-lib-from-wheel.py "$ROOT"/wheels/onnxruntime-*aarch64.whl "$ORT_DIR/libonnxruntime.so"
  echo "$ORT_VERSION" > "$ORT_DIR/VERSION"
  rm -rf "$ROOT/wheels"
fi
echo "setup-arm64: ok (sysroot $SYSROOT, ONNX Runtime $(cat "$ORT_DIR/VERSION") for aarch64)"
