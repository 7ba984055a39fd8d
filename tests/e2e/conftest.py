"""Fixtures for the end-to-end tests: a real cluster from KUBECONFIG, the CRD, a namespace and the operator.

Under CI=true a missing cluster fails every test here; elsewhere they skip with that reason. Nothing is mocked.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.e2e.operator_process import running_operator

ROOT = Path(__file__).resolve().parents[2]
NO_CLUSTER = (
    "e2e tests need a real cluster: set KUBECONFIG, e.g. "
    "`k8s_env=$(FAKE_KUBELET=1 FAKE_KUBELET_ARGS=\"--gpus 64 --max-pods 500\" ../shared/k8s/up.sh) && eval \"$k8s_env\"` (see README, Tests)"
)


def cluster_problem() -> str | None:
    path = os.environ.get("KUBECONFIG")
    if not path:
        return NO_CLUSTER
    missing = [p for p in path.split(os.pathsep) if p and not Path(p).is_file()]
    return f"KUBECONFIG names files that do not exist: {', '.join(missing)}" if missing else None


@pytest.fixture(scope="session", autouse=True)
def real_cluster_required():
    """A test that skips in CI does not exist: there, no cluster is a failure."""
    problem = cluster_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


@pytest.fixture(scope="session")
def kube():
    from specserve.cluster import kube as kube_module

    return kube_module.Kube(kube_module.new_api_client())


def apply_crd(kube, crd: dict) -> dict:
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
    kube._call("PATCH", path, body=crd, content_type="application/apply-patch+yaml", query=[("fieldManager", "specserve-e2e"), ("force", "true")])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = kube._call("GET", path)
        if any(c["type"] == "Established" and c["status"] == "True" for c in (live.get("status") or {}).get("conditions") or []):
            return live
        time.sleep(0.5)
    pytest.fail(f"CRD {crd['metadata']['name']} did not become Established within 60s")


@pytest.fixture(scope="session")
def crd_installed(kube):
    crd = yaml.safe_load((ROOT / "crds" / "specserve.dev_speculativeservings.yaml").read_text())
    apply_crd(kube, crd)
    return crd


def new_namespace(kube, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube._call("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def delete_servings_then_namespace(kube, namespace: str) -> None:
    """Servings first, while an operator still runs (its finalizer), then the namespace."""
    servings = f"/apis/specserve.dev/v1alpha1/namespaces/{namespace}/speculativeservings"
    kube._call("DELETE", servings)
    deadline = time.monotonic() + 60
    while kube._call("GET", servings)["items"]:
        if time.monotonic() > deadline:
            pytest.fail(f"SpeculativeServings in {namespace} were not deleted within 60s (is the operator running?)")
        time.sleep(0.5)
    delete_namespace(kube, namespace)


def delete_namespace(kube, namespace: str) -> None:
    try:
        kube._call("DELETE", f"/api/v1/namespaces/{namespace}")
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture(scope="session")
def namespace(kube, crd_installed):
    name = new_namespace(kube, "specserve-e2e")
    yield name
    delete_namespace(kube, name)


@pytest.fixture(scope="session")
def operator(kube, namespace):
    with running_operator(namespace, ["--namespace", namespace]) as process:
        yield process
        delete_servings_then_namespace(kube, namespace)
