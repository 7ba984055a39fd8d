"""The SpeculativeServing CRD missing at start-up and deleted under a running operator, on a private control plane.

Both are states, not crashes: one line naming the CRD and the install command, /readyz 503 while /healthz stays 200,
serving within seconds once the CRD appears, no traceback and no restart. One story in a module fixture; each test asserts one outcome.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from specserve.cluster import installation
from specserve.cluster import kube as k
from tests.e2e.cluster import condition_of, create, eventually
from tests.e2e.conftest import ROOT, apply_crd, new_namespace
from tests.e2e.installs import kubectl
from tests.e2e.operator_process import OperatorProcess, running_operator
from tests.support import private_cluster

EXAMPLE = ROOT / "manifests" / "examples" / "simulator-no-gpu.yaml"  # GPU-free: the fake kubelet makes its pods Ready
CRD = yaml.safe_load((ROOT / "crds" / "specserve.dev_speculativeservings.yaml").read_text())
SERVING_SECONDS = 15.0  # from the CRD Established to a new serving Accepted: Kopf's CRD watch starts the serving watch at once; a 404 the
# API server answers for a moment after a CRD appears costs one reconcile retry (SPECSERVE_RETRY_FIRST_SECONDS, 10 s)
READY_SECONDS = installation.CHECK_SECONDS_MISSING + 3  # from the CRD Established to /readyz 200
NOT_READY_SECONDS = installation.CHECK_SECONDS_INSTALLED + 5  # from the CRD gone to /readyz 503
QUICK_CYCLES = 3  # CRD deleted right after a serving was reconciled: before the fix, the first such cycle ended the operator (exit 1)
TROUBLE = re.compile(r"Traceback|failed with an exception|has failed|[Uu]nhandled exception|exception was never retrieved")


@pytest.fixture(scope="module", autouse=True)
def real_cluster_required() -> None:
    """Overrides the e2e one: this module brings its own cluster (it deletes the CRD), but needs ../shared/k8s."""
    private_cluster.require()


@dataclass
class Story:
    operator: OperatorProcess
    pid: int
    before: dict[str, tuple[int, str]] = field(default_factory=dict)  # probes before the CRD exists
    log_before: str = ""
    ready_seconds: float | None = None
    serving_seconds: float | None = None
    after_delete: dict[str, tuple[int, str]] = field(default_factory=dict)  # probes after `kubectl delete -k manifests/`
    cycles_served: int = 0
    served_again: bool = False


def serving(name: str) -> dict[str, Any]:
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"] = {"name": name}
    return obj


def accepted(kube: k.Kube, namespace: str, name: str) -> bool:
    condition = condition_of(kube, namespace, name, "Accepted")
    return condition is not None and condition["status"] == "True"


def established(kube: k.Kube) -> None:
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{installation.CRD_NAME}"

    def done() -> bool:
        try:
            live = kube._call("GET", path)
        except Exception:  # noqa: BLE001 - not there yet
            return False
        return any(c["type"] == "Established" and c["status"] == "True" for c in (live.get("status") or {}).get("conditions") or [])

    eventually(done, timeout=60, interval=0.1)


def gone(kube: k.Kube) -> None:
    def absent() -> bool:
        try:
            kube._call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{installation.CRD_NAME}")
        except Exception:  # noqa: BLE001 - 404: gone
            return True
        return False

    eventually(absent, timeout=90, interval=0.2)


def seconds_until(check: Any, timeout: float) -> float | None:
    started = time.monotonic()
    try:
        eventually(check, timeout=timeout, interval=0.1)
    except AssertionError:
        return None
    return time.monotonic() - started


@pytest.fixture(scope="module")
def story() -> Iterator[Story]:
    with private_cluster.running() as cluster:
        kube = cluster.kube()
        namespace = new_namespace(kube, "specserve-crd")
        with running_operator("missing-crd", ["--all-namespaces"], env=cluster.operator_env) as operator:
            told = Story(operator, operator.process.pid)
            time.sleep(1)
            told.before = {path: operator.probe(path) for path in ("/healthz", "/readyz")}
            told.log_before = operator.text()

            # Installed as the README says, and the first serving created once the CRD is Established.
            kubectl("apply", "--server-side", "-k", "manifests/", kubeconfig=cluster.kubeconfig)
            established(kube)
            established_at = time.monotonic()
            create(kube, namespace, serving("first"))
            told.serving_seconds = seconds_until(lambda: accepted(kube, namespace, "first"), SERVING_SECONDS * 3)
            told.serving_seconds = None if told.serving_seconds is None else time.monotonic() - established_at
            told.ready_seconds = seconds_until(lambda: operator.probe("/readyz")[0] == 200, READY_SECONDS * 3)

            # The step: the whole kustomize install deleted under a running operator (CRDs, peering CRDs, RBAC).
            kubectl("delete", "-k", "manifests/", "--timeout=90s", kubeconfig=cluster.kubeconfig)
            seconds_until(lambda: operator.probe("/readyz")[0] == 503, NOT_READY_SECONDS)
            told.after_delete = {path: operator.probe(path) for path in ("/healthz", "/readyz")}

            # The race that ended the operator: the CRD deleted right after a serving was reconciled, again and again.
            for cycle in range(QUICK_CYCLES):
                apply_crd(kube, CRD)
                name = f"cycle-{cycle}"
                eventually(lambda name=name: _created(kube, namespace, name), timeout=30)
                if seconds_until(lambda name=name: accepted(kube, namespace, name), SERVING_SECONDS * 3) is not None:
                    told.cycles_served += 1
                kubectl("delete", "crd", installation.CRD_NAME, "--timeout=90s", kubeconfig=cluster.kubeconfig)
                gone(kube)

            apply_crd(kube, CRD)
            eventually(lambda: _created(kube, namespace, "last"), timeout=30)
            told.served_again = seconds_until(lambda: accepted(kube, namespace, "last"), SERVING_SECONDS * 3) is not None
            yield told


def _created(kube: k.Kube, namespace: str, name: str) -> bool:
    """Create a serving; False while the API server does not serve the freshly applied CRD yet (404 for a moment)."""
    try:
        create(kube, namespace, serving(name))
    except Exception as error:  # noqa: BLE001
        if getattr(error, "status", None) in (404, 503):
            return False
        raise
    return True


def test_an_operator_started_before_its_crd_is_alive_but_not_ready(story: Story) -> None:
    assert story.before["/healthz"][0] == 200
    status, body = story.before["/readyz"]
    assert status == 503 and installation.CRD_NAME in body and installation.INSTALL_COMMAND in body


def test_the_missing_crd_is_one_line_naming_it_and_the_install_command(story: Story) -> None:
    lines = [line for line in story.log_before.splitlines() if installation.CRD_NAME in line or "Unresolved resources" in line]
    assert len(lines) == 1, lines
    assert "is not installed" in lines[0] and f"`{installation.INSTALL_COMMAND}`" in lines[0]


def test_the_operator_serves_within_seconds_once_the_crd_appears(story: Story) -> None:
    assert story.serving_seconds is not None and story.serving_seconds <= SERVING_SECONDS, story.operator.text()[-3000:]
    assert story.ready_seconds is not None and story.ready_seconds <= READY_SECONDS


def test_a_deleted_install_leaves_the_operator_alive_and_not_ready(story: Story) -> None:
    assert story.after_delete["/healthz"][0] == 200
    status, body = story.after_delete["/readyz"]
    assert status == 503 and installation.INSTALL_COMMAND in body
    deleted = [line for line in story.operator.text().splitlines() if f"{installation.CRD_NAME} was deleted" in line]
    assert deleted and f"`{installation.INSTALL_COMMAND}`" in deleted[0]


def test_a_crd_deleted_right_after_a_reconcile_never_ends_the_operator(story: Story) -> None:
    assert story.cycles_served == QUICK_CYCLES
    assert story.served_again
    assert story.operator.process.poll() is None and story.operator.process.pid == story.pid, story.operator.text()[-3000:]


def test_no_traceback_in_the_whole_story(story: Story) -> None:
    lines = story.operator.text().splitlines()
    trouble = [i for i, line in enumerate(lines) if TROUBLE.search(line)]
    excerpt = "\n".join("\n".join(lines[max(0, i - 2):i + 8]) for i in trouble[:3])
    assert not trouble, f"{len(trouble)} log lines of unhandled exceptions, e.g.:\n{excerpt}"
