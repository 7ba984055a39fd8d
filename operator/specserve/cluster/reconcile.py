"""Reconcile: a SpeculativeServing's spec becomes its vLLM objects, applied in order, with status and events.

The operator never writes spec. Bad input becomes a condition and one Warning event, never a retry storm.
"""

from __future__ import annotations

import time
from typing import Any

import kopf
import pydantic

from specserve import api
from specserve.api.conditions import condition, merge_conditions
from specserve.api.conditions import find as _find_condition
from specserve.cluster import applying, indexes, intents, kube
from specserve.cluster.availability import serving_status, status_changed
from specserve.decision import judgment
from specserve.rendering import manifests, planner
from specserve.settings import OperatorSettings
from specserve.telemetry import TELEMETRY

MANAGED = indexes.MANAGED
API_UNREACHABLE = applying.API_UNREACHABLE


async def reconcile_marked(key: indexes.ServingKey, failures: int, memo: kopf.Memo, settings: kopf.OperatorSettings) -> None:
    """One turn of the reconcile queue for one serving; raises kopf.TemporaryError to be tried again later."""
    body = memo["cache"].serving(*key)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return  # gone, or going with its objects (owner references): nothing to reconcile
    logger = kopf.LocalObjectLogger(body=kopf.Body(body), settings=settings)
    started = time.perf_counter()
    try:
        written = await reconcile(body, memo, logger, failures, memo["cache"])
    except kopf.TemporaryError:
        TELEMETRY.record_reconcile("error", time.perf_counter() - started, reason="ApplyFailed")
        raise
    except API_UNREACHABLE as error:
        # An outage or a status write that kept conflicting: expected, so a line and a retry, not a traceback.
        TELEMETRY.record_reconcile("error", time.perf_counter() - started, reason="ApiError")
        delay = applying.retry_delay(failures, *_retry_bounds(memo))
        raise kopf.TemporaryError(f"the API server did not answer as expected: {applying.short_error(error)}; retrying in {delay:.0f} s", delay=delay) from error
    written = written or {}
    rejected = written.get("phase") == "Invalid"
    reason = next((c["reason"] for c in written.get("conditions", []) if c["type"] == "Accepted"), None) if rejected else None
    TELEMETRY.record_reconcile("rejected" if rejected else "applied", time.perf_counter() - started, reason=reason)
    speculation = written.get("speculation", (body.get("status") or {}).get("speculation", "On"))
    TELEMETRY.set_serving(*key, phase=written.get("phase"), speculation=speculation != "Off")


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def track_serving(type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Keep the cache current, and mark the serving for the reconcile queue when this process has not marked its
    generation yet: at its first listing (a start, a resume), at its creation and at each spec change. A status
    write or a label edit changes no generation and costs no reconcile.

    Only a watch handler: Kopf's create/update/resume handlers would make Kopf write its record of the handled
    spec into the serving's annotations (a write per serving and per change, racing the status writes) and hold
    each serving's events until that write came back through the watch. Nor a deletion handler: that would need a
    finalizer on every serving, and nothing here must block a deletion (the serving's objects go with it by their
    owner references). Once a serving is gone, its gauges and what was applied for it are forgotten."""
    memo["cache"].observe(type, body)
    memo["kube"].watched(namespace, name, None if type == "DELETED" else body)
    if type == "DELETED":
        forget_serving(memo, namespace, name)
    else:
        meta = body.get("metadata") or {}
        memo["reconciler"].mark_changed((namespace, name), (meta.get("uid"), meta.get("generation")))
    memo["health_loop"].ensure_running()  # from a handler: the loop's task inherits the context kopf.event() needs


def forget_serving(memo: kopf.Memo, namespace: str, name: str) -> None:
    """A serving is gone: its gauges, what was applied for it and its turn in the queue go too."""
    TELEMETRY.forget_serving(namespace, name)
    applying.ledger_of(memo).forget_serving(namespace, name)
    memo["reconciler"].forget((namespace, name))


def forget_every_serving(memo: kopf.Memo) -> None:
    """The CRD is gone, and every serving with it: the cache keeps none, whatever the watch delivered before it broke."""
    cache: indexes.Cache = memo["cache"]
    for namespace, name in list(cache.servings):
        cache.servings.drop((namespace, name), name)
        memo["kube"].watched(namespace, name, None)
        forget_serving(memo, namespace, name)


async def reconcile(body: dict[str, Any], memo: kopf.Memo, logger: kopf.Logger, retry: int, cache: indexes.Cache) -> dict[str, Any] | None:
    """Apply what the spec asks for, or explain why not; returns the status written, None when nothing changed.
    Objects already as rendered are not applied again and an unchanged status is not written, so a restart
    over servings that are as they should be costs reads from the watches and no writes."""
    meta, status = body["metadata"], body.get("status") or {}
    generation = meta.get("generation")
    client: kube.Kube = memo["kube"]
    try:
        intent = intents.renderings_of(memo).of(body, intents.options_of(memo))
    except (pydantic.ValidationError, manifests.RenderError) as error:
        reason = getattr(error, "reason", "InvalidSpec")
        return await _reject(client, body, reason, api.describe_error(error, prefix="spec."), cache=cache, logger=logger)
    spec, state, objects, budget = intent.spec, intent.state, intent.objects, intent.budget
    memory = condition("MemoryBudget", budget.status, budget.reason, budget.message, generation)
    if budget.blocking:
        return await _reject(client, body, planner.REFUSED_REASON, budget.message, [memory], cache=cache, logger=logger)
    _announce_budget(body, status, memory)
    ledger = applying.ledger_of(memo)
    try:
        done = await applying.apply_all(client, objects, ledger, cache.holds)
        await prune(client, body, objects, ledger, cache, memo.get("pod_monitor_api", False))
    except applying.ApplyFailed as failure:
        if failure.refused:
            return await _reject(client, body, "ApplyRejected", failure.cause, done=failure.progress(), cache=cache, logger=logger)
        await _record_apply_failure(client, body, failure, retry, memo, [memory], (spec, state), cache)
        raise  # unreachable: _record_apply_failure raises kopf.TemporaryError
    if done.written:
        logger.info("applied %s; already as rendered: %s", ", ".join(done.written), ", ".join(done.unchanged) or "none")
    applied = f"{len(objects)} objects applied with server-side apply"
    forgotten = forgotten_variant(spec, status)
    accepted = condition("Accepted", "True", "VariantFallback", f"{forgotten}; {applied}", generation) if forgotten else condition("Accepted", "True", "Applied", applied, generation)

    def build(latest: dict[str, Any]) -> dict[str, Any] | None:
        # Read at each attempt: after a conflict, the watch has moved on and its Deployments are newer.
        deployments = newest_deployments(cache.deployments_of(meta["namespace"], meta["name"], meta.get("uid")), done.responses)
        new = serving_status(latest, deployments, generation, [accepted, memory], state, spec)
        return new if status_changed(latest, new) else None

    written = await client.update_serving_status(meta["namespace"], meta["name"], build, known=body, required=True)
    if forgotten:
        kopf.event(body, type="Warning", reason="UnknownVariant", message=forgotten[:1024])
    if status.get("observedGeneration") != generation or (_find_condition(status, "Accepted") or {}).get("status") != "True":
        kopf.event(body, type="Normal", reason="Applied", message=f"applied {', '.join(applying.describe(o) for o in objects)}")
    if written or done.written:
        logger.info("reconciled generation %s: %s", generation, (written or {}).get("phase") or "status unchanged")
    else:  # a resume over a serving as it should be: a line per serving at each start says nothing
        logger.debug("reconciled generation %s: already as rendered, status unchanged", generation)
    return written


def newest_deployments(watched: list[dict[str, Any]], written: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Deployments as the watch has them, except where an apply just wrote a newer generation the watch
    has not delivered yet. A watched copy of the same generation is at least as new as the apply's answer."""
    newer = {d["metadata"]["name"]: d for d in written if d.get("kind") == "Deployment"}
    merged = []
    for d in watched:
        mine = newer.pop(d["metadata"]["name"], None)
        merged.append(mine if mine is not None and mine["metadata"].get("generation", 0) > d["metadata"].get("generation", 0) else d)
    return merged + list(newer.values())


def _retry_bounds(memo: kopf.Memo) -> tuple[float, float]:
    settings: OperatorSettings = memo.get("settings") or OperatorSettings()
    return settings.retry_first_seconds, settings.retry_longest_seconds


async def _record_apply_failure(
    client: kube.Kube,
    body: dict[str, Any],
    failure: applying.ApplyFailed,
    retry: int,
    memo: kopf.Memo,
    own: list[dict[str, Any]],
    intent: tuple[api.SpeculativeServingSpec, manifests.DecisionState],
    cache: indexes.Cache,
) -> None:
    """An apply the API server did not take (quota, admission webhook down, overload): say which object and why
    in Accepted, one Warning event per distinct cause, and retry with exponential backoff."""
    meta = body["metadata"]
    generation = meta.get("generation")
    delay = applying.retry_delay(retry, *_retry_bounds(memo))
    message = f"{failure.cause}; {failure.progress()}; attempt {retry + 1}, next in {delay:.0f} s"
    accepted = condition("Accepted", "False", "ApplyFailed", message, generation)
    previous: dict[str, Any] = {}
    spec, state = intent
    deployments = cache.deployments_of(meta["namespace"], meta["name"], meta.get("uid"))

    def build(latest: dict[str, Any]) -> dict[str, Any]:
        previous.update(_find_condition(latest, "Accepted") or {})
        return serving_status(latest, deployments, generation, [accepted, *own], state, spec)

    await client.update_serving_status(meta["namespace"], meta["name"], build, required=True)
    same_cause = previous.get("reason") == "ApplyFailed" and str(previous.get("message", "")).startswith(failure.cause + ";")
    if not same_cause:
        kopf.event(body, type="Warning", reason="ApplyFailed", message=message[:1024])
    raise kopf.TemporaryError(message, delay=delay)


async def _reject(
    client: kube.Kube,
    body: dict[str, Any],
    reason: str,
    problem: str,
    extra: list[dict[str, Any]] | None = None,
    done: str | None = None,
    cache: indexes.Cache | None = None,
    logger: kopf.Logger | None = None,
) -> dict[str, Any] | None:
    """Record a problem only the operator can see: a condition, one Warning event per distinct problem, and one log
    line per generation (reconcile runs once per generation and process). `done` says what went in before the
    problem was found; by default nothing did."""
    generation = body["metadata"].get("generation")
    if done is None:
        serving_before = cache is not None and cache.deployments_of(body["metadata"]["namespace"], body["metadata"]["name"], body["metadata"].get("uid"))
        done = "nothing applied" + ("; the objects applied earlier keep serving" if serving_before else "")
    message = f"{problem}; {done}"
    if logger is not None:
        logger.warning("refused generation %s (Accepted=False, %s): %s", generation, reason, message)
    accepted = condition("Accepted", "False", reason, message, generation)
    previous: dict[str, Any] = {}

    def build(latest: dict[str, Any]) -> dict[str, Any]:
        previous.update(_find_condition(latest, "Accepted") or {})
        return {"observedGeneration": generation, "phase": "Invalid", "conditions": merge_conditions(latest.get("conditions") or [], [accepted, *(extra or [])])}

    written = await client.update_serving_status(body["metadata"]["namespace"], body["metadata"]["name"], build, required=True)
    if (previous.get("reason"), previous.get("message"), previous.get("observedGeneration")) != (reason, message, generation):
        kopf.event(body, type="Warning", reason=reason, message=message[:1024])
    return written


ANNOUNCED_BUDGET_VERDICTS = ("FitsWithWarnings", "CannotJudge")  # applied, with a Warning event MemoryBudget<verdict>


def _announce_budget(body: dict[str, Any], status: dict[str, Any], memory: dict[str, Any]) -> None:
    """One Warning event per distinct memory-budget warning or doubt."""
    previous = _find_condition(status, "MemoryBudget") or {}
    if memory["reason"] in ANNOUNCED_BUDGET_VERDICTS and (previous.get("reason"), previous.get("message")) != (memory["reason"], memory["message"]):
        kopf.event(body, type="Warning", reason=f"MemoryBudget{memory['reason']}", message=memory["message"][:1024])


async def prune(client: kube.Kube, body: dict[str, Any], desired: list[dict[str, Any]], ledger: applying.Ledger, cache: indexes.Cache, pod_monitor_api: bool) -> None:
    """Delete objects this serving owns that the spec no longer asks for (baseline scaled to 0, PodMonitor off).
    Deployments come from the watch; PodMonitors are not watched, so they are listed, and only where served."""
    meta = body["metadata"]
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    owned = [(kube.DEPLOYMENTS, d) for d in cache.deployments_of(meta["namespace"], meta["name"], meta.get("uid"))]
    if pod_monitor_api and not any(o["kind"] == "PodMonitor" for o in desired):
        listed = await client.list(kube.POD_MONITORS, meta["namespace"], {manifests.SERVING_LABEL: meta["name"], **MANAGED})
        owned += [(kube.POD_MONITORS, {**m, "kind": "PodMonitor"}) for m in listed if owned_by(m, meta.get("uid"))]
    for kind, obj in owned:
        name = obj["metadata"]["name"]
        if (obj["kind"], name) in wanted:
            continue
        await client.delete(kind, meta["namespace"], name)
        ledger.forget({"kind": obj["kind"], "metadata": {"namespace": meta["namespace"], "name": name, "labels": {manifests.SERVING_LABEL: meta["name"]}}})
        kopf.event(body, type="Normal", reason="Pruned", message=f"deleted {obj['kind']}/{name}, which the spec no longer asks for")


def owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))


def forgotten_variant(spec: api.SpeculativeServingSpec, status: dict[str, Any]) -> str | None:
    """Why the variant the health loop chose is no longer served (the spec dropped it), or None."""
    chosen = status.get("activeVariant")
    declared = [v.name for v in spec.target.variants]
    if chosen is None or chosen in declared:
        return None
    instead = f"variant {judgment.intended_variant(spec)!r}" if declared else "spec.target.model"
    listed = f"spec.target.variants ({', '.join(declared)})" if declared else "spec.target.variants (now empty)"
    return f"status.activeVariant {chosen!r}, chosen earlier by the health loop, is no longer among {listed}; serving {instead} instead"


