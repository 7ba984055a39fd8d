"""Drift repair: a managed Deployment or Service edited or deleted by hand is put back as rendered.

A refused or unrendered serving's objects are left alone; availability is followed from the same watch events.
"""

from __future__ import annotations

from typing import Any

import kopf
import pydantic
from kubernetes.utils import parse_quantity

from specserve import api
from specserve.cluster import applying, indexes, intents, kube
from specserve.cluster.availability import AvailabilityFollower, refresh_availability
from specserve.cluster.reconcile import owned_by
from specserve.cluster.servings import refused
from specserve.rendering import manifests

MANAGED = indexes.MANAGED
API_UNREACHABLE = applying.API_UNREACHABLE


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
async def owned_object_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """Put back hand edits and deletions of managed objects, and follow Deployment availability into status.
    The listing at start-up (type None) is checked too: what was edited while no operator ran is put back."""
    memo["cache"].observe(type, body)
    labels = body["metadata"].get("labels", {})
    owner_name = labels.get(manifests.SERVING_LABEL)
    if not owner_name:
        return
    try:
        await _keep_as_rendered(type, dict(body), memo, logger, memo["cache"])
    except API_UNREACHABLE as error:
        # An outage or a refused repair: the next event for this object, or the next reconcile, tries again.
        logger.warning("could not check or restore %s: %s", applying.describe(dict(body)), applying.short_error(error))


async def _keep_as_rendered(type: str | None, body: dict[str, Any], memo: kopf.Memo, logger: kopf.Logger, cache: indexes.Cache) -> None:
    client: kube.Kube = memo["kube"]
    ledger = applying.ledger_of(memo)
    meta = body["metadata"]
    serving = cache.serving(meta["namespace"], meta["labels"][manifests.SERVING_LABEL])
    wanted = _wanted(serving, body, memo)
    # While the health loop applies a decision it has just recorded, the difference is its apply under way,
    # not drift to revert; availability is still followed.
    acting = (meta["namespace"], meta["labels"][manifests.SERVING_LABEL]) in memo.get("acting", set())
    if wanted is not None and not acting and (type == "DELETED" or not is_subset(wanted[3], body)):
        # The watches may be behind (a stale event, a decision just recorded): judge with the serving and the
        # object as the API server holds them now. Only this rare path reads from the API server.
        serving = await client.get(kube.SERVINGS, meta["namespace"], meta["labels"][manifests.SERVING_LABEL])
        wanted = _wanted(serving, body, memo)
        if wanted is not None:
            current = await client.get(kube.Kind.of(wanted[3]), meta["namespace"], meta["name"])
            if current is None or not is_subset(wanted[3], current):
                await _restore(client, ledger, wanted, "deleted" if current is None else "edited", current, logger)
    if wanted is None:
        ledger.forget(body)  # not kept here now: whatever reconcile applies next must not be skipped
        return
    serving, spec, state, _ = wanted
    if body["kind"] == "Deployment" and type != "DELETED":
        follower: AvailabilityFollower | None = memo.get("availability")
        if follower is not None:
            follower.mark((meta["namespace"], serving["metadata"]["name"]))  # written by the follower, not in this event's turn
        else:
            await refresh_availability(client, serving, spec, state, cache)


async def _restore(
    client: kube.Kube, ledger: applying.Ledger, wanted: tuple[dict[str, Any], Any, Any, dict[str, Any]], what: str, current: dict[str, Any] | None, logger: kopf.Logger
) -> None:
    serving, obj = wanted[0], wanted[3]
    ledger.forget(obj)
    applied = await client.apply(obj)
    ledger.record(obj)
    # Server-side apply changes nothing (same resourceVersion) when only other managers' fields or
    # server-side normalisation differ; only a real restore is announced.
    if current is None or applied["metadata"].get("resourceVersion") != current["metadata"].get("resourceVersion"):
        kopf.event(serving, type="Warning", reason="DriftReverted", message=f"{applying.describe(obj)} was {what} outside specserve; restored the rendered version")
        logger.info("restored %s after it was %s", applying.describe(obj), what)


def _wanted(
    serving: dict[str, Any] | None, live: dict[str, Any], memo: kopf.Memo
) -> tuple[dict[str, Any], api.SpeculativeServingSpec, manifests.DecisionState, dict[str, Any]] | None:
    """The owning serving and what it renders for this live object, or None when specserve does not keep it
    now: the serving is gone or going, refused, or no longer asks for the object."""
    if serving is None or serving["metadata"].get("deletionTimestamp") or not owned_by(live, serving["metadata"].get("uid")):
        return None
    if refused(serving):
        return None  # a spec the serving's own handler refused: its previous objects are left as they are
    try:
        intent = intents.renderings_of(memo).of(serving, intents.options_of(memo))
    except (pydantic.ValidationError, manifests.RenderError):
        return None
    if intent.budget.blocking:
        return None  # reconcile refuses it too, perhaps not yet recorded
    wanted = next((o for o in intent.objects if o["kind"] == live["kind"] and o["metadata"]["name"] == live["metadata"]["name"]), None)
    return None if wanted is None else (serving, intent.spec, intent.state, wanted)


def is_subset(wanted: Any, live: Any) -> bool:
    """Whether every field specserve renders has the same value in the live object (servers add defaults)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(is_subset(v, live[k]) if k in live else _omitted(v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(live, list) and len(wanted) == len(live) and all(is_subset(w, x) for w, x in zip(wanted, live))
    return wanted == live or str(wanted) == str(live) or _same_quantity(wanted, live)


def _omitted(value: Any) -> bool:
    """The API server drops empty and zero values of optional fields (`resources: {}`, `readOnly: false`)."""
    return value in (None, "", False, 0) or value == {} or value == []


def _same_quantity(wanted: Any, live: Any) -> bool:
    """The API server rewrites quantities into canonical form ("16384Mi" comes back as "16Gi")."""
    if not (isinstance(wanted, str) and isinstance(live, str)):
        return False
    try:
        return parse_quantity(wanted) == parse_quantity(live)
    except ValueError:
        return False
