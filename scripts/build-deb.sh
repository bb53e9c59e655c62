#!/usr/bin/env bash
# Builds the clefd .deb from the release binary, the ONNX Runtime library the set-up fetched,
# the systemd unit, the default config and the demo bundle. The binary is the zig build for
# the package's architecture, linked against glibc 2.31 whatever this machine has:
# scripts/build-amd64.sh (`make deb`) or scripts/build-arm64.sh (`make deb ARCH=arm64`, the
# Jetson cross build, with PyPI's aarch64 CPU ONNX Runtime; on a Jetson, point
# engine.onnxruntime at a GPU build: README). CLEFD_BINARY packages another binary (the tests
# package target/release/clefd); its Depends then ask for the glibc that binary needs, and
# it goes to target/deb-test/, never over the package `make deb` made.
# Output: target/deb/*.deb, or $CLEFD_DEB_DIR/*.deb when that is set.
# `build-deb.sh --control` prints only the control file (tests/package.rs checks its
# Depends against each Ubuntu release's package names).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(grep -m1 '^version = ' Cargo.toml | cut -d'"' -f2)
arch=${ARCH:-$(dpkg --print-architecture)}
case "$arch" in
  amd64) zig_build=target/x86_64-unknown-linux-gnu/release/clefd ort=.local/onnxruntime ;;
  arm64) zig_build=target/aarch64-unknown-linux-gnu/release/clefd ort=.local/arm64/onnxruntime ;;
  *) echo "build-deb: cannot package for '$arch' (amd64 or arm64)" >&2; exit 1 ;;
esac
binary=${CLEFD_BINARY:-$zig_build}
# Another binary's package (the tests') goes elsewhere than `make deb`'s.
if [ -n "${CLEFD_BINARY:-}" ]; then out_dir=${CLEFD_DEB_DIR:-target/deb-test}; else out_dir=${CLEFD_DEB_DIR:-target/deb}; fi
# The glibc the zig builds link against (Ubuntu 20.04's, JetPack 5's).
floor=2.31
# The newest glibc symbol version a binary needs (objdump reads either architecture).
glibc_needed() { objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1; }
glibc=$floor
if [ "$binary" != "$zig_build" ] && [ -x "$binary" ]; then
  glibc=$(glibc_needed "$binary")
elif [ "${1:-}" != "--control" ] && [ -x "$binary" ]; then
  needed=$(glibc_needed "$binary")
  if dpkg --compare-versions "$needed" gt "$floor"; then
    echo "build-deb: $binary needs glibc $needed, newer than the $floor it was linked for" >&2
    exit 1
  fi
fi

# What the binary links (glibc, GLib, GStreamer and its app/video libraries) and the
# plugins its pipelines use. Where Ubuntu 24.04's 64-bit time_t transition renamed a
# library (libglib2.0-0 -> libglib2.0-0t64), both names, the new one first; every name
# must exist on Ubuntu 20.04, 22.04 and 24.04 (JetPack 5, 6 and 7).
control() {
  cat <<CONTROL
Package: clefd
Version: ${version}
Architecture: ${arch}
Maintainer: clefd developers <clefd@localhost>
Depends: libc6 (>= ${glibc}), libglib2.0-0t64 | libglib2.0-0, libgstreamer1.0-0, libgstreamer-plugins-base1.0-0, gstreamer1.0-plugins-base, gstreamer1.0-plugins-good, gstreamer1.0-plugins-bad, gstreamer1.0-libav
Recommends: gstreamer1.0-plugins-ugly, mosquitto
Section: video
Priority: optional
Description: debiased emotion events from camera streams (CLEF) over MQTT
 clefd decodes cameras with GStreamer, finds and classifies faces with ONNX
 Runtime (TensorRT/CUDA on Jetson), removes context bias with CLEF's
 counterfactual inference and publishes events over MQTT.
CONTROL
}
if [ "${1:-}" = "--control" ]; then control; exit 0; fi
if [ -n "${CLEFD_BINARY:-}" ] && [ ! -x "$binary" ]; then
  echo "build-deb: CLEFD_BINARY=$binary is not an executable file: point it at a clefd binary, or unset it to package the zig build" >&2
  exit 1
fi
[ -x "$binary" ] || { echo "build-deb: $binary is missing: run 'make deb ARCH=$arch'" >&2; exit 1; }
root=$out_dir/clefd_${version}_${arch}
rm -rf "$root" && mkdir -p "$root/DEBIAN"
[ -f "$ort/libonnxruntime.so" ] || { echo "build-deb: $ort/libonnxruntime.so is missing: run 'make deb ARCH=$arch'" >&2; exit 1; }

install -D -m 0755 "$binary" "$root/usr/bin/clefd"
if [ "$arch" = "$(dpkg --print-architecture)" ]; then strip --strip-debug "$root/usr/bin/clefd"; fi
install -D -m 0644 "$ort/libonnxruntime.so" "$root/usr/lib/clefd/libonnxruntime.so"
install -D -m 0644 systemd/clefd.service "$root/lib/systemd/system/clefd.service"
install -D -m 0644 systemd/jetson.conf "$root/usr/share/clefd/systemd/jetson.conf"
install -D -m 0644 systemd/clefd.sysusers "$root/usr/lib/sysusers.d/clefd.conf"
install -D -m 0644 config/clefd.toml "$root/etc/clefd/clefd.toml"
install -D -m 0644 config/cameras.d/example.toml.disabled "$root/etc/clefd/cameras.d/example.toml.disabled"
mkdir -p "$root/usr/share/clefd/engines"
cp -r engines/face-fer2013 "$root/usr/share/clefd/engines/"
# The context-bias bundles (single- and multi-label) without their evaluation slices, with
# their golden vectors (every start checks the models against them); their detectors are
# links to face-fer2013's.
for demo in context-bias-demo context-multilabel-demo; do
  mkdir -p "$root/usr/share/clefd/engines/$demo"
  cp -P engines/$demo/{manifest.toml,vanilla.onnx,context_branch.onnx,clef_fused.onnx,blazeface_full.onnx} \
    engines/$demo/golden.json engines/$demo/golden-*.npy "$root/usr/share/clefd/engines/$demo/"
done
install -D -m 0644 assets/astronaut.png "$root/usr/share/clefd/assets/astronaut.png"  # for `clefd bench`
install -D -m 0644 engines/NOTICE "$root/usr/share/doc/clefd/NOTICE"
install -D -m 0644 README.md "$root/usr/share/doc/clefd/README.md"
mkdir -p "$root/var/lib/clefd"

control > "$root/DEBIAN/control"
printf '/etc/clefd/clefd.toml\n' > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
  systemd-sysusers clefd.conf || true
fi
if ! getent passwd clefd >/dev/null; then
  adduser --system --group --home /var/lib/clefd --no-create-home clefd >/dev/null 2>&1 || true
  adduser clefd video >/dev/null 2>&1 || true
fi
chown clefd:clefd /var/lib/clefd 2>/dev/null || true
# On a Jetson, the drop-in that lets the service reach the GPU and CSI cameras. One that
# an older clefd installed (without JetPack 7's /dev/nvsciipc) is replaced, kept beside as
# jetson.conf.dpkg-old; one a person wrote is left alone.
dropin=/etc/systemd/system/clefd.service.d/jetson.conf
if [ -e /etc/nv_tegra_release ] && [ -e "$dropin" ] && ! grep -q '^DeviceAllow=/dev/nvsciipc' "$dropin" \
   && grep -q '^# clefd on a Jetson' "$dropin"; then
  mv "$dropin" "$dropin.dpkg-old"
fi
if [ -e /etc/nv_tegra_release ] && [ ! -e "$dropin" ]; then
  install -D -m 0644 /usr/share/clefd/systemd/jetson.conf "$dropin"
fi
# Where the configured ONNX Runtime has a GPU provider (a Jetson with engine.onnxruntime
# set), build the TensorRT engines now, as the service user, so no start waits for them.
if [ -e /etc/nv_tegra_release ] && command -v runuser >/dev/null 2>&1; then
  runuser -u clefd -- /usr/bin/clefd build-engines --if-gpu --config /etc/clefd/clefd.toml \
    || echo "clefd: building TensorRT engines failed (see above); the first start builds them"
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
POSTINST
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$out_dir/clefd_${version}_${arch}.deb" >/dev/null
rm -rf "$root"
echo "$out_dir/clefd_${version}_${arch}.deb"
