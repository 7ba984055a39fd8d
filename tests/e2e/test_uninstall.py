"""Uninstalling specserve on a real API server: the documented order, no finalizer of ours on a serving, and the
documented way out for servings an earlier operator left with Kopf's finalizer.

Both delete the SpeculativeServing CRD, cluster-wide: this module sorts after the other e2e modules, and every test re-installs the CRD, Established, before it ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specserve.cluster import kube as k
from tests.e2e.cluster import create, eventually, get, status_of
from tests.e2e.conftest import new_namespace
from tests.e2e.installs import SERVING_CRD, documented_commands, existing, key, kubectl, shell, wait_established, yaml_stream
from tests.e2e.operator_process import running_operator
from tests.helpers import serving
from tests.install import tools

KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
SERVINGS = ("one", "two")


@pytest.fixture
def crd_restored(kube: k.Kube, crd_installed: dict[str, Any]) -> Iterator[None]:
    """Whatever the test did to it, the CRD is installed and Established again afterwards (the session's other tests need it)."""
    yield
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{SERVING_CRD}"
    live = get_raw(kube, crd_path)
    if live is not None and live["metadata"].get("deletionTimestamp"):
        release_every_serving(kube)  # a failed test must not leave the CRD stuck in deletion
        eventually(lambda: get_raw(kube, crd_path) is None, timeout=60)
    kubectl("apply", "--server-side", "-f", "crds/")
    wait_established(f"crd/{SERVING_CRD}")


def test_documented_kustomize_uninstall_deletes_the_servings_first_and_nothing_hangs(kube: k.Kube, crd_restored: None) -> None:
    commands = documented_commands("Uninstall", "kubectl delete -k manifests/")
    built = tools.kustomize(tools.MANIFESTS)
    before = existing(built)
    namespace = new_namespace(kube, "e2e-uninstall")
    try:
        kubectl("apply", "--server-side", "-k", "manifests/")
        # The operator as a process plays the Deployment's pod (nothing runs pods here): it stops once the Deployment is deleted.
        with running_operator("uninstall-ordered", ["--namespace", namespace]) as operator:
            servings_ready(kube, namespace)
            left_when_the_operator_stopped: list[set[str]] = []

            def operator_follows_its_deployment() -> None:
                deployment = get(kube, k.DEPLOYMENTS, tools.NAMESPACE, "specserve")
                if not left_when_the_operator_stopped and (deployment is None or deployment["metadata"].get("deletionTimestamp")):
                    left_when_the_operator_stopped.append(servings_left(kube, namespace))
                    operator.process.terminate()

            started = time.monotonic()
            shell(commands, timeout=120, meanwhile=operator_follows_its_deployment)
            took = time.monotonic() - started
        assert left_when_the_operator_stopped == [set()], "the operator went before the servings"
        assert existing(built) == set(), "kubectl delete -k manifests/ left objects behind"
        assert took < 90, f"the documented uninstall took {took:.0f}s"
        eventually(lambda: not kube._call("GET", k.DEPLOYMENTS.path(namespace))["items"], timeout=30)  # the servings' own objects, collected
    finally:
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=90s")
        if before:  # put back the install that was there before this test
            kubectl("apply", "--server-side", "-f", "-", stdin=yaml_stream([o for o in built if key(o) in before]))


def test_the_operator_leaves_no_finalizer_and_removes_the_one_an_earlier_operator_left(kube: k.Kube, crd_installed: dict[str, Any]) -> None:
    namespace = new_namespace(kube, "e2e-finalizer")
    try:
        create(kube, namespace, with_legacy_finalizer(serving(name="old", gpu={"count": 1, "product": "L40S"})))
        with running_operator("finalizer", ["--namespace", namespace]):
            servings_ready(kube, namespace)
            eventually(lambda: not get(kube, k.SERVINGS, namespace, "old")["metadata"].get("finalizers"), timeout=30)
        kube._call("DELETE", k.SERVINGS.path(namespace, "one"))  # no operator runs: nothing to wait for
        eventually(lambda: get(kube, k.SERVINGS, namespace, "one") is None, timeout=10)
    finally:
        release_every_serving(kube)
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=90s")


def test_servings_left_with_an_earlier_operators_finalizer_hang_the_crd_deletion_until_the_documented_command_releases_them(kube: k.Kube, crd_restored: None) -> None:
    commands = documented_commands("If the uninstall hangs", "finalizers")
    namespace = new_namespace(kube, "e2e-uninstall")
    try:
        with running_operator("uninstall-hang", ["--namespace", namespace]):
            servings_ready(kube, namespace)
        for name in SERVINGS:  # as an operator from before December 2026 left them
            kube._call("PATCH", k.SERVINGS.path(namespace, name), body=with_legacy_finalizer({}), content_type=k.MERGE)

        stuck = kubectl("delete", "crd", SERVING_CRD, "--timeout=5s", check=False)
        assert stuck.returncode != 0 and "timed out" in stuck.stderr, stuck.stdout + stuck.stderr
        kubectl("delete", "namespace", namespace, "--wait=false")
        crd = eventually(lambda: crd_terminating(kube), timeout=30)
        assert crd["reason"].startswith("InstanceDeletion"), crd
        eventually(lambda: namespace_condition(kube, namespace, "NamespaceFinalizersRemaining"), timeout=30)
        time.sleep(5)  # nothing moves without the operator
        assert crd_terminating(kube) and servings_left(kube, namespace) == set(SERVINGS)
        assert get_raw(kube, f"/api/v1/namespaces/{namespace}")["status"]["phase"] == "Terminating"

        shell(commands)

        eventually(lambda: get_raw(kube, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{SERVING_CRD}") is None, timeout=60)
        eventually(lambda: get_raw(kube, f"/api/v1/namespaces/{namespace}") is None, timeout=90)
        eventually(lambda: not terminating_namespaces(kube), timeout=60)
    finally:
        release_every_serving(kube)
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=90s")


def servings_ready(kube: k.Kube, namespace: str) -> None:
    for name in SERVINGS:
        create(kube, namespace, serving(name=name, gpu={"count": 1, "product": "L40S"}))
    for name in SERVINGS:
        eventually(lambda: status_of(kube, namespace, name).get("phase") == "Ready", timeout=60)
        assert not get(kube, k.SERVINGS, namespace, name)["metadata"].get("finalizers")


def with_legacy_finalizer(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "metadata": {**body.get("metadata", {}), "finalizers": [KOPF_FINALIZER]}}


def servings_left(kube: k.Kube, namespace: str) -> set[str]:
    try:
        return {s["metadata"]["name"] for s in kube._call("GET", k.SERVINGS.path(namespace))["items"]}
    except ApiException as error:
        if error.status == 404:
            return set()
        raise


def crd_terminating(kube: k.Kube) -> dict[str, Any] | None:
    crd = get_raw(kube, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{SERVING_CRD}") or {}
    return next((c for c in (crd.get("status") or {}).get("conditions") or [] if c["type"] == "Terminating" and c["status"] == "True"), None)


def namespace_condition(kube: k.Kube, namespace: str, type_: str) -> dict[str, Any] | None:
    found = get_raw(kube, f"/api/v1/namespaces/{namespace}") or {}
    return next((c for c in (found.get("status") or {}).get("conditions") or [] if c["type"] == type_ and c["status"] == "True"), None)


def terminating_namespaces(kube: k.Kube) -> list[str]:
    return [n["metadata"]["name"] for n in kube._call("GET", "/api/v1/namespaces")["items"] if n["status"].get("phase") == "Terminating"]


def get_raw(kube: k.Kube, path: str) -> dict[str, Any] | None:
    try:
        return kube._call("GET", path)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def release_every_serving(kube: k.Kube) -> None:
    """What the documented command does, through the API: no finalizer left on any serving (a failed test's safety net)."""
    for item in (json.loads(kubectl("get", "sps", "-A", "-o", "json", check=False).stdout or "{}")).get("items", []):
        meta = item["metadata"]
        if meta.get("finalizers"):
            kube._call("PATCH", k.SERVINGS.path(meta["namespace"], meta["name"]), body={"metadata": {"finalizers": None}}, content_type=k.MERGE)
