"""What the operator knows from its own watches: Kopf indexes of servings and of the objects they own.

Reconcile, drift repair and the health loop read these instead of asking the API server (no LIST per event).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf

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


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def servings_index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[ServingKey, dict[str, Any]]:
    return {(namespace, name): serving_snapshot(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
def deployments_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[ServingKey, dict[str, Any]] | None:
    serving = labels.get(render.SERVING_LABEL)
    return {(namespace, serving): summary(body)} if serving else None


@kopf.index("", "v1", "services", labels=MANAGED)
def services_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[ServingKey, dict[str, Any]] | None:
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
