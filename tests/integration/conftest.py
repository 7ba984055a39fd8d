"""Integration fixtures: kmock's Kubernetes emulator in pytest's loop, the real specserve operator beside it.

The operator logs in the production way (a kubeconfig) and runs in its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import kubernetes
import pytest
import yaml

import specserve.cluster.lifecycle  # noqa: F401  (registers the handlers in Kopf's default registry)
from specserve import api
from specserve.settings import OperatorSettings
from tests.integration.emulator import SpecServeEmulator

SERVINGS = f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
EVENTS = "v1/events"
NAMESPACE = "default"


def declare_resources(emulator: SpecServeEmulator) -> None:
    """The built-in kinds plus SpeculativeServing with its status subresource (kmock learns kinds only this way)."""
    emulator.resources.load_bundled()
    emulator.resources[SERVINGS] = kmock.ResourceInfo(
        kind=api.KIND, singular=api.SINGULAR, namespaced=True, shortnames=set(api.SHORT_NAMES),
        subresources={"status"}, verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )


@pytest.fixture()
async def kube() -> AsyncIterator[SpecServeEmulator]:
    async with SpecServeEmulator() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        yield emulator
        crashes = [e for e in emulator.errors if getattr(e, "status", 500) >= 500]
        assert not crashes, crashes


def write_kubeconfig(url: str, path: Path) -> Path:
    """A kubeconfig for the emulator, without credentials, the way the operator logs in in production."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": url.rstrip("/")}}],
        "users": [{"name": "test", "user": {}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": NAMESPACE}}],
        "current-context": "kmock",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def kubeconfig(kube, tmp_path, monkeypatch) -> None:
    """Point the operator's login (Kopf's and the kubernetes client's) at the emulator, as a kubeconfig would."""
    path = write_kubeconfig(str(kube.url), tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    # The kubernetes client reads KUBECONFIG once, at import; a real process sets it before that.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def quick_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.watching.reconnect_backoff = 0.05
    settings.networking.error_backoffs = [0.1, 0.2, 0.5]
    settings.posting.default_backoffs = [0.1, 0.2]
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 0.5
    return settings


@contextlib.asynccontextmanager
async def running_operator(kube: SpecServeEmulator, settings: OperatorSettings | None = None) -> AsyncIterator[None]:
    """kopf.operator() in its own thread: in pytest's loop it would cancel kmock's server tasks on exit."""
    stop_flag, ready_flag = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    memo = kopf.Memo(settings=settings or OperatorSettings(namespaces=[NAMESPACE], pod_monitor_api="auto", prometheus_url="http://127.0.0.1:9", metrics_port=0))

    def target() -> None:
        try:
            asyncio.run(kopf.operator(
                registry=kopf.get_default_registry(), settings=quick_settings(), standalone=True,
                namespaces=[NAMESPACE], memo=memo, stop_flag=stop_flag, ready_flag=ready_flag,
            ))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test
            errors.append(error)

    thread = threading.Thread(target=target, name="specserve-operator", daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(ready_flag.wait, 15), "the operator did not start"
        await watching(kube, [SERVINGS, DEPLOYMENTS, SERVICES])
        yield
    finally:
        stop_flag.set()
        await asyncio.to_thread(thread.join, 20)
        assert not thread.is_alive(), "the operator did not stop"
        if errors:
            raise errors[0]


@pytest.fixture()
async def operator(kube, kubeconfig) -> AsyncIterator[None]:
    async with running_operator(kube):
        yield


async def watching(kube: SpecServeEmulator, resources: list[str], timeout: float = 10) -> None:
    wanted = {kmock.resource(r) for r in resources}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= {r.resource for r in list(kube) if r.action == kmock.action.WATCH}:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the operator did not start watching {resources}")


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll without blocking the loop that serves the emulator."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if isinstance(last, Awaitable):
                last = await last
            if last:
                return last
        except (AssertionError, KeyError, ValueError, TypeError, IndexError) as error:
            last = error
        await asyncio.sleep(0.05)
    raise AssertionError(f"not met within {timeout}s; last: {last!r}")


def live(kube: SpecServeEmulator, resource: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
    key = (kmock.resource(resource), namespace, name)
    if key not in kube.objects or kube.objects[key].deleted:
        return None
    return kube.objects[key].raw


def events_for(kube: SpecServeEmulator, name: str) -> list[dict[str, Any]]:
    return [
        obj.raw for (resource, _, _), obj in list(kube.objects.items())
        if resource == kmock.resource(EVENTS) and not obj.deleted and obj.raw.get("involvedObject", {}).get("name") == name
    ]


async def mark_available(kube: SpecServeEmulator, name: str, namespace: str = NAMESPACE) -> None:
    """What the Deployment controller does once the pods are ready (the emulator runs no controllers): the
    Deployment reports its replica updated and available, at its current generation."""
    deployment = await eventually(lambda: live(kube, DEPLOYMENTS, name, namespace))
    status = {
        "observedGeneration": deployment["metadata"].get("generation", 1), "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
    }
    response = await kube.patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status", json={"status": status}, headers={"Content-Type": "application/merge-patch+json"})
    assert response.status == 200, await response.text()
