"""Fixtures for the end-to-end tests: a real cluster from KUBECONFIG, the CRD, a namespace and the operator.

Without KUBECONFIG every test here is skipped with that reason; nothing is mocked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="e2e tests need a real cluster: set KUBECONFIG to run them")
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kube():
    from specserve import kube as kube_module

    return kube_module.Kube(kube_module.new_api_client())


@pytest.fixture(scope="session")
def crd_installed(kube):
    crd = yaml.safe_load((ROOT / "crds" / "specserve.dev_speculativeservings.yaml").read_text())
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
    kube._call("PATCH", path, body=crd, content_type="application/apply-patch+yaml", query=[("fieldManager", "specserve-e2e"), ("force", "true")])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = kube._call("GET", path)
        if any(c["type"] == "Established" and c["status"] == "True" for c in live.get("status", {}).get("conditions", [])):
            return crd
        time.sleep(1)
    pytest.fail("the SpeculativeServing CRD did not become Established within 60s")


@pytest.fixture(scope="session")
def namespace(kube, crd_installed):
    name = f"specserve-e2e-{uuid.uuid4().hex[:6]}"
    kube._call("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube._call("DELETE", f"/api/v1/namespaces/{name}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def operator(kube, namespace):
    port = _free_port()
    log = open(ROOT / "tests" / "e2e" / f"operator-{namespace}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "specserve.cli", "run", "--namespace", namespace, "--liveness", f"http://127.0.0.1:{port}/healthz", "--metrics-port", "0"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"the operator exited with {process.returncode}; see {log.name}")
            time.sleep(1)
    else:
        pytest.fail("the operator's liveness endpoint did not answer within 60s")
    yield process
    # Kopf keeps a finalizer on each SpeculativeServing (its per-object health daemon): delete them while the
    # operator still runs, or the namespace would hang in Terminating.
    servings = f"/apis/specserve.dev/v1alpha1/namespaces/{namespace}/speculativeservings"
    kube._call("DELETE", servings)
    deadline = time.monotonic() + 60
    while kube._call("GET", servings)["items"] and time.monotonic() < deadline:
        time.sleep(1)
    process.terminate()
    process.wait(timeout=30)
    log.close()
