"""High availability on a real API server: two operator processes in one Kopf peering, one acting at a time.

The longer-running replica acts, a joining one stands by without pausing it, and a killed leader is replaced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest

from specserve.cluster import kube as k
from tests.e2e.cluster import create, eventually, status_of
from tests.e2e.conftest import delete_namespace, delete_servings_then_namespace, new_namespace
from tests.e2e.installs import kubectl, wait_established
from tests.e2e.operator_process import OperatorProcess, running_operator
from tests.helpers import serving

PEERING = "specserve"
TAKEOVER_GOAL_SECONDS = 30
L40S = {"count": 1, "product": "L40S"}


@pytest.fixture
def peered_namespace(kube: k.Kube, crd_installed: dict) -> Iterator[str]:
    kubectl("apply", "--server-side", "-f", "charts/specserve/crds/kopf.dev_peerings.yaml")
    wait_established("crd/kopfpeerings.kopf.dev", "crd/clusterkopfpeerings.kopf.dev")
    namespace = new_namespace(kube, "specserve-ha")
    kube._call("POST", f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings", body={"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}})
    yield namespace
    delete_namespace(kube, namespace)


def peers(kube: k.Kube, namespace: str) -> dict:
    """The live entries of the peering: one per operator process, with its priority."""
    return kube._call("GET", f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{PEERING}").get("status") or {}


def reconciled(kube: k.Kube, namespace: str, name: str) -> bool:
    return status_of(kube, namespace, name).get("observedGeneration") == 1


def operator(label: str, namespace: str) -> AbstractContextManager[OperatorProcess]:
    return running_operator(label, ["--namespace", namespace, "--peering", PEERING])


@pytest.mark.timeout(240)
def test_one_replica_acts_a_joining_one_stands_by_and_takes_over_when_the_leader_is_killed(kube: k.Kube, peered_namespace: str) -> None:
    namespace = peered_namespace
    with operator("ha-first", namespace) as first:
        create(kube, namespace, serving(name="before", gpu=L40S))
        eventually(lambda: reconciled(kube, namespace, "before"), timeout=60)
        with operator("ha-second", namespace) as second:
            eventually(lambda: len(peers(kube, namespace)) == 2, timeout=30)  # the second has joined, and stands by
            create(kube, namespace, serving(name="joined", gpu=L40S))
            eventually(lambda: reconciled(kube, namespace, "joined"), timeout=30)
            assert "Pausing" not in first.text() and "reconciled generation" not in second.text()
            assert "Resuming operations" not in second.text()

            first.process.kill()  # SIGKILL: no goodbye in the peering, the entry has to expire
            killed = time.monotonic()
            create(kube, namespace, serving(name="after", gpu=L40S))
            eventually(lambda: reconciled(kube, namespace, "after"), timeout=TAKEOVER_GOAL_SECONDS + 30)
            takeover = time.monotonic() - killed
            assert takeover < TAKEOVER_GOAL_SECONDS, f"the standby took {takeover:.1f}s to take over"
            assert "Resuming operations" in second.text()
            delete_servings_then_namespace(kube, namespace)
