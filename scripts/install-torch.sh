#!/usr/bin/env bash
# Install PyTorch into the virtualenv whose pip is $1: the CUDA build where an NVIDIA GPU is
# present, otherwise the CPU build (never the several-GB CUDA wheels on a CPU-only machine).
set -euo pipefail
PIP=${1:?usage: install-torch.sh PATH/TO/pip}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if "$PIP" show torch >/dev/null 2>&1; then
  echo "torch $("$PIP" show torch | awk '/^Version/{print $2}') already installed"
  exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA GPU found: installing the CUDA build of torch"
  exec "$PIP" install "torch==${TORCH_VERSION}"
fi
# A local CPU wheel (pip's find-links) is preferred; else PyTorch's CPU-only index.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if "$PIP" download --no-index --no-deps -q -d "$tmp" "torch==${TORCH_VERSION}" >/dev/null 2>&1; then
  echo "installing the local CPU wheel of torch ${TORCH_VERSION}"
  exec "$PIP" install "torch==${TORCH_VERSION}"
fi
echo "installing the CPU build of torch from download.pytorch.org"
exec "$PIP" install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
  --extra-index-url https://pypi.org/simple
