"""What the operator knows from its own watches: the servings, and the Deployments and Services they own.

Filled once at start-up from paged LISTs, then kept current by Kopf's watch events; reconcile, drift repair and
the health loop read it instead of asking the API server. Only summaries are kept, never a whole watched body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import kopf
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.structs import references
from kubernetes.client.exceptions import ApiException

from specserve import api
from specserve.cluster import kube
from specserve.rendering import manifests

MANAGED = {manifests.MANAGED_BY_LABEL: manifests.MANAGER}
ServingKey = tuple[str, str]
CONDITION_FIELDS = ("type", "status", "reason", "message")
LOG = logging.getLogger("specserve.cache")


def summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an owned object the operator reads: identity, the rendered hash, and what availability needs."""
    meta = body.get("metadata") or {}
    kept: dict[str, Any] = {
        "kind": body.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "generation": meta.get("generation"),
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k == manifests.RENDERED_HASH_ANNOTATION},
            "ownerReferences": [{"uid": ref.get("uid")} for ref in meta.get("ownerReferences") or []],
        },
    }
    if body.get("kind") == "Deployment":
        kept["spec"] = {"replicas": (body.get("spec") or {}).get("replicas", 1)}
        status = body.get("status") or {}
        kept["status"] = {k: v for k, v in status.items() if k != "conditions"}
        if "conditions" in status:  # availability reads a condition's type, status, reason and message, not its times
            kept["status"]["conditions"] = [{k: c[k] for k in CONDITION_FIELDS if k in c} for c in status["conditions"] or []]
    return kept


def serving_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """A serving as a plain dict, as reconcile and the health loop read it."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp") if k in meta},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def compact(snapshot: dict[str, Any]) -> bytes:
    """A serving snapshot as compact JSON: its spec with the API server's defaults and its status (conditions, the
    health record) are some 15 KB as Python objects and 3 KB as JSON; thousands are kept for as long as they exist."""
    return json.dumps(snapshot, separators=(",", ":")).encode()


class Store(Mapping[ServingKey, list[Any]]):
    """One kind of object by the serving it belongs to: store[(namespace, serving)] lists the summaries."""

    def __init__(self) -> None:
        self._by: dict[ServingKey, dict[str, Any]] = {}
        self._under: dict[tuple[str, str], ServingKey] = {}  # (namespace, object name) -> the serving it is kept under

    def put(self, key: ServingKey, name: str, value: Any) -> None:
        before = self._under.get((key[0], name))
        if before is not None and before != key:
            self.drop(before, name)  # relabelled to another serving
        self._by.setdefault(key, {})[name] = value
        self._under[(key[0], name)] = key

    def drop(self, key: ServingKey, name: str) -> None:
        values = self._by.get(key)
        if values is not None:
            values.pop(name, None)
            if not values:
                del self._by[key]
        self._under.pop((key[0], name), None)

    def forget(self, namespace: str, name: str) -> None:
        """Drop an object by its name, under whichever serving it is kept."""
        key = self._under.get((namespace, name))
        if key is not None:
            self.drop(key, name)

    def __getitem__(self, key: ServingKey) -> list[Any]:
        return list(self._by[key].values())

    def __iter__(self) -> Iterator[ServingKey]:
        return iter(list(self._by))

    def __len__(self) -> int:
        return len(self._by)


def one(index: Mapping[ServingKey, Iterable[Any]], key: ServingKey) -> Any:
    """The single value kept under a key (a serving), or None."""
    return next(iter(index[key]), None) if key in index else None


def every(index: Mapping[ServingKey, Iterable[dict[str, Any]]], key: ServingKey) -> list[dict[str, Any]]:
    return list(index[key]) if key in index else []


class Cache:
    """The servings and the Deployments and Services they own, as the watches last delivered them."""

    def __init__(self, servings: Any = None, deployments: Any = None, services: Any = None) -> None:
        self.servings = Store() if servings is None else servings
        self.deployments = Store() if deployments is None else deployments
        self.services = Store() if services is None else services

    def serving(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The serving as last watched: a fresh dict at each call, the caller's to change."""
        kept = one(self.servings, (namespace, name))
        return None if kept is None else json.loads(kept)

    def owned(self, namespace: str, serving: str, uid: str | None = None) -> list[dict[str, Any]]:
        """The Deployments and Services a serving owns, as last seen by the watches."""
        found = every(self.deployments, (namespace, serving)) + every(self.services, (namespace, serving))
        return [o for o in found if uid is None or any(ref.get("uid") == uid for ref in o["metadata"]["ownerReferences"])]

    def deployments_of(self, namespace: str, serving: str, uid: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.owned(namespace, serving, uid) if o["kind"] == "Deployment"]

    def holds(self, obj: dict[str, Any]) -> bool:
        """Whether the watched live object carries the hash of exactly this rendered object."""
        meta = obj["metadata"]
        wanted = (meta.get("annotations") or {}).get(manifests.RENDERED_HASH_ANNOTATION)
        if wanted is None:
            return False
        live = self.owned(meta["namespace"], (meta.get("labels") or {}).get(manifests.SERVING_LABEL, ""))
        return any(o["kind"] == obj["kind"] and o["metadata"]["name"] == meta["name"] and o["metadata"]["annotations"].get(manifests.RENDERED_HASH_ANNOTATION) == wanted for o in live)

    def observe(self, type: str | None, body: Mapping[str, Any]) -> None:
        """Take a watch event (type None: Kopf's own listing) of a serving or of an object specserve manages."""
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if body.get("kind") == api.KIND:
            if type == "DELETED":
                self.servings.drop((namespace, name), name)
            else:
                self.servings.put((namespace, name), name, compact(serving_snapshot(body)))
            return
        store = self.deployments if body.get("kind") == "Deployment" else self.services
        serving = (meta.get("labels") or {}).get(manifests.SERVING_LABEL)
        if type == "DELETED" or not serving:
            store.forget(namespace, name)
        else:
            store.put((namespace, serving), name, summary(body))

    async def fill(self, client: kube.Kube, patterns: list[str], chunk: int, servings: bool = True) -> dict[str, int]:
        """Read every serving and every managed Deployment and Service of the watched namespaces, a page at a
        time, before Kopf's watches start: handlers then never judge from a partial picture (and Kopf needs no
        index of its own, whose start-up wait would hold every listed body in memory until all were listed).
        servings=False (the CRD is not installed): there are none to read; a CRD deleted meanwhile (404) reads as none."""
        found = {}
        kinds = ((kube.SERVINGS, None, api.KIND), (kube.DEPLOYMENTS, MANAGED, "Deployment"), (kube.SERVICES, MANAGED, "Service"))
        for kind, labels, kind_name in kinds[0 if servings else 1 :]:
            count = 0
            for namespace in await watched_namespaces(client, patterns):
                try:
                    # A Service's summary is all metadata: its spec is not parsed (a third of the objects read here)
                    async for page in client.pages(kind, namespace, labels, chunk, metadata_only=kind_name == "Service"):
                        for item in page:
                            self.observe(None, {**item, "kind": kind_name})
                        count += len(page)
                except ApiException as error:
                    if not (error.status == 404 and kind is kube.SERVINGS):
                        raise
            found[kind.plural] = count
        return found


async def watched_namespaces(client: kube.Kube, patterns: list[str]) -> list[str | None]:
    """The namespaces to list: [None] (all at once) when cluster-wide; else the names Kopf's patterns select."""
    if not patterns:
        return [None]
    names = set(references.select_specific_namespaces(patterns))
    if any(p not in names for p in patterns):  # globs or exclusions: match the existing namespaces as Kopf does
        listed = await client.call("GET", "/api/v1/namespaces")
        names |= {n["metadata"]["name"] for n in listed.get("items") or [] if any(references.match_namespace(n["metadata"]["name"], p) for p in patterns)}
    return sorted(names)


# ---------------------------------------------------------------- Kopf's toggle sets: counted, and the pause known


class CountedToggle(aiotoggles.Toggle):
    """A toggle of a CountedToggleSet: tells its set when it flips."""

    def __init__(self, state: bool = False, *, name: str | None = None, condition: asyncio.Condition | None = None, owner: "CountedToggleSet | None" = None) -> None:
        super().__init__(state, name=name, condition=condition)
        self._owner = owner

    async def turn_to(self, state: bool) -> None:
        async with self._condition:
            if self._owner is not None and bool(state) != self._state and self in self._owner._toggles:
                self._owner._off += -1 if state else 1
            self._state = bool(state)
            self._condition.notify_all()  # as Kopf's: waiters of this very toggle share the condition


class CountedToggleSet(aiotoggles.ToggleSet):
    """Kopf's ToggleSet with a count of the toggles that are off, waking its waiters only when its state flips.

    specserve registers no Kopf index now (indexes.Cache is filled before the watches start), so Kopf makes no
    toggle per object; the class stays for the pause (`operator_paused`) and for any index added later. With Kopf
    indexes, Kopf holds every handler at start-up until every listed object has passed the index handlers: one
    toggle per object in one set, and every worker waits on the set. Kopf's own set wakes every waiting worker at each toggle
    made or dropped, and each woken worker checks every toggle again: with N objects some N x N x N steps (at
    1,000 servings, 3,000 objects, it was most of the 27 s of CPU a restart took; at 5,000 it would take hours).
    Here a toggle made or dropped costs O(1), and waiters wake once, when all are on."""

    def __init__(self, fn: Callable[[Iterable[bool]], bool]) -> None:
        super().__init__(fn)
        self._off = 0
        if fn is any:
            global _paused  # Kopf makes one set of this kind per run: the operator's pause (peering)
            _paused = weakref.ref(self)

    def is_on(self) -> bool:
        if self._fn is all:
            return self._off == 0
        if self._fn is any:
            return len(self._toggles) > self._off
        return super().is_on()

    async def make_toggle(self, __val: bool = False, *, name: str | None = None) -> aiotoggles.Toggle:
        toggle = CountedToggle(__val, name=name, condition=self._condition, owner=self)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            self._off += 0 if toggle.is_on() else 1
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self, toggle: aiotoggles.Toggle) -> None:
        await self.drop_toggles([toggle])

    async def drop_toggles(self, toggles: Iterable[aiotoggles.Toggle]) -> None:
        async with self._condition:
            before = self.is_on()
            for toggle in toggles:
                if toggle in self._toggles:
                    self._toggles.discard(toggle)
                    self._off -= 0 if toggle.is_on() else 1
            if self.is_on() != before:
                self._condition.notify_all()


_paused: "weakref.ref[CountedToggleSet] | None" = None


def operator_paused() -> bool:
    """Whether Kopf has paused this operator for a peer with a higher priority (False when not running).

    Kopf tells its own daemons (it stops them) but not other tasks; its pause is the only ToggleSet(any) it
    makes per run (running.spawn_tasks), which the counted class below records."""
    toggles = _paused() if _paused is not None else None
    return toggles is not None and toggles.is_on()


def count_kopf_readiness() -> None:
    """Make Kopf build its toggle sets (the wait for the indexes at start-up, the peering pause) as CountedToggleSets."""
    aiotoggles.ToggleSet = CountedToggleSet  # type: ignore[misc]


count_kopf_readiness()
