"""What the operator knows from its own watches: Kopf indexes of servings and of the objects they own.

Reconcile, drift repair and the health loop read these instead of asking the API server (no LIST per event).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf
from kopf._cogs.aiokits import aiotoggles

from specserve import api, render

MANAGED = {render.MANAGED_BY_LABEL: render.MANAGER}
ServingKey = tuple[str, str]


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
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k == render.RENDERED_HASH_ANNOTATION},
            "ownerReferences": [{"uid": ref.get("uid")} for ref in meta.get("ownerReferences") or []],
        },
    }
    if body.get("kind") == "Deployment":
        kept["spec"] = {"replicas": (body.get("spec") or {}).get("replicas", 1)}
        kept["status"] = dict(body.get("status") or {})
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


# The index functions are coroutines although they never wait: Kopf runs a plain function in a thread pool,
# one hand-off per event (15,000 at a 5,000-serving start), and these take microseconds.


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
async def servings_index(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[ServingKey, dict[str, Any]]:
    loop = memo.get("health_loop")
    if loop is not None:
        loop.ensure_running()  # from a handler: the loop's task inherits the context kopf.event() needs
    return {(namespace, name): serving_snapshot(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployments_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[ServingKey, dict[str, Any]] | None:
    serving = labels.get(render.SERVING_LABEL)
    return {(namespace, serving): summary(body)} if serving else None


@kopf.index("", "v1", "services", labels=MANAGED)
async def services_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[ServingKey, dict[str, Any]] | None:
    serving = labels.get(render.SERVING_LABEL)
    return {(namespace, serving): summary(body)} if serving else None


def one(index: Mapping[ServingKey, Iterable[dict[str, Any]]], key: ServingKey) -> dict[str, Any] | None:
    """The single value indexed under a key (a serving), or None."""
    return next(iter(index[key]), None) if key in index else None


def every(index: Mapping[ServingKey, Iterable[dict[str, Any]]], key: ServingKey) -> list[dict[str, Any]]:
    return list(index[key]) if key in index else []


class Cache:
    """The three indexes together, as handlers receive them from Kopf."""

    def __init__(self, servings: Any, deployments: Any, services: Any) -> None:
        self.servings, self.deployments, self.services = servings, deployments, services

    def serving(self, namespace: str, name: str) -> dict[str, Any] | None:
        return one(self.servings, (namespace, name))

    def owned(self, namespace: str, serving: str, uid: str | None = None) -> list[dict[str, Any]]:
        """The Deployments and Services a serving owns, as last seen by the watches."""
        found = every(self.deployments, (namespace, serving)) + every(self.services, (namespace, serving))
        return [o for o in found if uid is None or any(ref.get("uid") == uid for ref in o["metadata"]["ownerReferences"])]

    def deployments_of(self, namespace: str, serving: str, uid: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.owned(namespace, serving, uid) if o["kind"] == "Deployment"]

    def holds(self, obj: dict[str, Any]) -> bool:
        """Whether the watched live object carries the hash of exactly this rendered object."""
        meta = obj["metadata"]
        wanted = (meta.get("annotations") or {}).get(render.RENDERED_HASH_ANNOTATION)
        if wanted is None:
            return False
        live = self.owned(meta["namespace"], (meta.get("labels") or {}).get(render.SERVING_LABEL, ""))
        return any(o["kind"] == obj["kind"] and o["metadata"]["name"] == meta["name"] and o["metadata"]["annotations"].get(render.RENDERED_HASH_ANNOTATION) == wanted for o in live)

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> "Cache":
        return cls(kwargs["servings_index"], kwargs["deployments_index"], kwargs["services_index"])


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

    Kopf holds every handler at start-up until every listed object has passed the index handlers: one toggle per
    object in one set, and every worker waits on the set. Kopf's own set wakes every waiting worker at each toggle
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
