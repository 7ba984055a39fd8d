"""Kopf alone: the operator's watches, storage and queueing settings, with handlers that do nothing.

bench/scale.py restarts it over the same servings after the operator's own restart: what a start costs before any
specserve code runs (the floor under the operator's restart). Run: python bench/bare_kopf.py NAMESPACE LIVENESS_URL.
"""

from __future__ import annotations

import sys
from typing import Any

import kopf

from specserve import api
from specserve.cluster import indexes, lifecycle
from specserve.settings import OperatorSettings

# Its own registry: importing specserve.cluster.lifecycle registers the operator's real handlers in Kopf's default one.
REGISTRY = kopf.OperatorRegistry()


@kopf.on.login(registry=REGISTRY)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_via_client(**kwargs)  # as the operator logs in (Kopf's default registry does this by itself)


@kopf.on.startup(registry=REGISTRY)
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    lifecycle.configure_kopf(settings, OperatorSettings())  # the operator's own, not a copy of them


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL, registry=REGISTRY)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL, registry=REGISTRY)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, registry=REGISTRY)
def reconcile_serving(**_: Any) -> None:
    pass


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, registry=REGISTRY)
def track_serving(**_: Any) -> None:
    pass


@kopf.on.event("apps", "v1", "deployments", labels=indexes.MANAGED, registry=REGISTRY)
@kopf.on.event("", "v1", "services", labels=indexes.MANAGED, registry=REGISTRY)
def owned_object_changed(**_: Any) -> None:
    pass


if __name__ == "__main__":
    kopf.configure(verbose=False)
    kopf.run(registry=REGISTRY, namespaces=[sys.argv[1]], liveness_endpoint=sys.argv[2], standalone=True)
