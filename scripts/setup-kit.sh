#!/usr/bin/env bash
# Installs what the CLEF kit (engines/kit) needs to train, export and be tested, nothing twice:
#   - Debian's CPU-only PyTorch, NumPy and Pillow (python3-torch is ~120 MB; PyPI's torch
#     would pull ~3 GB of CUDA wheels)
#   - a virtual environment at .local/kit-venv that sees those system packages and adds
#     ONNX Runtime's Python package (for the export round-trip test and the kit's evaluation)
#     and ONNX's (clef_kit.fuse composes the fused CLEF graph with it), and SciPy's (reads
#     EMOTIC's Annotations.mat)
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION="${ORT_VERSION:-1.31.1}"
ONNX_VERSION="${ONNX_VERSION:-1.23.2}"
SCIPY_VERSION="${SCIPY_VERSION:-1.13.1}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(python3 python3-venv python3-torch python3-numpy python3-pil)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-kit: installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=.local/kit-venv
if ! "$VENV/bin/python" -c "import torch, numpy, PIL, onnxruntime, onnx, scipy.io" >/dev/null 2>&1; then
  echo "setup-kit: creating $VENV (system PyTorch + onnxruntime $ORT_VERSION + onnx $ONNX_VERSION + scipy $SCIPY_VERSION)"
  rm -rf "$VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  # numpy<2: Debian's torch 1.13 is built against NumPy 1.x.
  "$VENV/bin/pip" install -q --disable-pip-version-check "onnxruntime==$ORT_VERSION" "onnx==$ONNX_VERSION" "scipy==$SCIPY_VERSION" "numpy<2"
fi
echo "setup-kit: ok ($("$VENV/bin/python" -c 'import torch, onnxruntime; print("torch", torch.__version__, "onnxruntime", onnxruntime.__version__)'))"
