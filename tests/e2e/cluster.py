"""Helpers for tests on a real API server: waiting, reading objects, events and phase histories.

Plain functions over specserve's own thin client (kube.Kube), so every e2e module speaks to the cluster the same way.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any, Callable

import kubernetes
from kubernetes.client.exceptions import ApiException

from specserve import api
from specserve.cluster import kube as k

SERVINGS = "/apis/specserve.dev/v1alpha1/namespaces/{ns}/speculativeservings"


def eventually(check: Callable[[], Any], timeout: float = 90.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def create(kube: k.Kube, namespace: str, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    query = [("dryRun", "All")] if dry_run else []
    return kube._call("POST", SERVINGS.format(ns=namespace), body=obj, query=query)


def get(kube: k.Kube, kind: k.Kind, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return kube._call("GET", kind.path(namespace, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def status_of(kube: k.Kube, namespace: str, name: str) -> dict[str, Any]:
    return (get(kube, k.SERVINGS, namespace, name) or {}).get("status") or {}


def condition_of(kube: k.Kube, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
    return next((c for c in status_of(kube, namespace, name).get("conditions") or [] if c["type"] == type_), None)


def events_of(kube: k.Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return kube._call("GET", f"/api/v1/namespaces/{namespace}/events", query=[("fieldSelector", f"involvedObject.name={name}")])["items"]


def warnings_of(kube: k.Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return [e for e in events_of(kube, namespace, name) if e["type"] == "Warning"]


def merge_patch(kube: k.Kube, path: str, patch: dict[str, Any]) -> dict[str, Any]:
    return kube._call("PATCH", path, body=patch, content_type=k.MERGE)


class PhaseRecorder:
    """Every phase a serving's status passes through, from a watch: no status write goes unseen."""

    def __init__(self, kube: k.Kube, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self.api = kubernetes.client.CustomObjectsApi(kube.client)
        self.phases: list[str] = []
        self.error: Exception | None = None
        self._seen: str | None = None  # resourceVersion of the newest object recorded
        self._stopping = False
        self._watch = kubernetes.watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PhaseRecorder":
        # List first, then watch from that version: nothing written after __enter__ returns is missed.
        listed = self.api.list_namespaced_custom_object(api.GROUP, api.VERSION, self.namespace, api.PLURAL, field_selector=f"metadata.name={self.name}")
        for item in listed["items"]:
            self._record(item)
        self._version = listed["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def _record(self, obj: dict[str, Any]) -> None:
        self._seen = (obj.get("metadata") or {}).get("resourceVersion")
        phase = (obj.get("status") or {}).get("phase")
        if phase and (not self.phases or self.phases[-1] != phase):
            self.phases.append(phase)

    def __exit__(self, *_: Any) -> None:
        # The watch may trail a GET that already saw the last write: wait (briefly) until it delivered that version.
        try:
            latest = self.api.get_namespaced_custom_object(api.GROUP, api.VERSION, self.namespace, api.PLURAL, self.name)["metadata"]["resourceVersion"]
        except ApiException:
            latest = None
        deadline = time.monotonic() + 10
        while latest is not None and self._seen != latest and self.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stopping = True
        self._watch.stop()
        self._thread.join(10)
        if self.error is not None:
            raise AssertionError(f"the watch of {self.namespace}/{self.name} broke off: {self.error!r}")

    def _run(self) -> None:
        stream = self._watch.stream(
            self.api.list_namespaced_custom_object, api.GROUP, api.VERSION, self.namespace, api.PLURAL,
            field_selector=f"metadata.name={self.name}", resource_version=self._version, timeout_seconds=600,
        )
        try:
            for event in stream:
                self._record(event["object"])
        except Exception as error:  # noqa: BLE001 - a broken watch fails the test in __exit__, unless it was stopped
            if not self._stopping:
                self.error = error
