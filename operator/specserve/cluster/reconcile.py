"""Kopf handlers: reconcile SpeculativeServings into vLLM objects, put back hand edits, keep status and events.

The operator never writes spec. Bad input becomes a condition and one Warning event, never a retry storm.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import kopf
import pydantic
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from specserve import api
from specserve.cluster import applying
from specserve.cluster import availability
from specserve.decision import judgment
from specserve.cluster import health_loop
from specserve.cluster import indexes
from specserve.cluster import kube
from specserve.observation import metrics
from specserve.rendering import planner
from specserve.cluster import workqueue
from specserve.rendering import manifests
from specserve.cluster import intents
from specserve.cluster.servings import decision_state, refused
from specserve.api.conditions import condition, find as _find_condition, merge_conditions
from specserve.settings import OperatorSettings
from specserve.telemetry import TELEMETRY

MANAGED = indexes.MANAGED
API_UNREACHABLE = applying.API_UNREACHABLE
AVAILABILITY_WRITERS = 16  # availability status writes in flight at once (the API pool has kube.API_THREADS threads)
WORKER_IDLE_SECONDS = 0.5  # how long a Kopf worker waits for its object's next event before it exits
RECONCILES_AT_ONCE = 64  # reconcile workers: twice the API pool, so it stays busy


# ---------------------------------------------------------------- start-up


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    operator_settings: OperatorSettings = memo.get("settings") or OperatorSettings()
    memo["settings"] = operator_settings
    configure_kopf(settings, operator_settings)
    if "kube" not in memo:
        memo["kube"] = kube.Kube(kube.new_api_client())
    memo["pod_monitor_api"] = await _pod_monitor_api(memo["kube"], operator_settings)
    logger.info("PodMonitor API %s", "available" if memo["pod_monitor_api"] else "not available")
    if "poller" not in memo:
        labels = metrics.Labels(operator_settings.namespace_label, operator_settings.serving_label, operator_settings.role_label)
        query = metrics.prometheus_query(operator_settings.prometheus_url, operator_settings.prometheus_timeout_seconds)
        memo["poller"] = judgment.Poller(query, labels, operator_settings.poll_interval_seconds)
    memo["poller_task"] = asyncio.create_task(memo["poller"].run(), name="specserve-poller")
    if "health_loop" not in memo:
        memo["health_loop"] = health_loop.HealthLoop(memo["poller"], memo)
    memo["cache"] = indexes.Cache()
    # Made here, not on first use: each object's memo is a shallow copy of this one, made later.
    memo["renderings"] = intents.Renderings()
    memo.setdefault("ledger", applying.Ledger())
    memo["reconciler"] = workqueue.ServingQueue(
        lambda key, failures: reconcile_marked(key, failures, memo, settings), RECONCILES_AT_ONCE, settings.queueing.error_delays, name="reconcile"
    )
    started = time.monotonic()
    found = await memo["cache"].fill(memo["kube"], operator_settings.namespaces, operator_settings.list_chunk_size)
    logger.info("read %s in %.1f s", ", ".join(f"{n} {plural}" for plural, n in found.items()), time.monotonic() - started)
    memo["health_loop"].cache = memo["cache"]
    if "availability" not in memo:
        memo["availability"] = AvailabilityFollower(memo["kube"], memo["cache"])
    memo["availability"].cache = memo["cache"]
    memo["follow_availability"] = lambda serving, spec: refresh_availability(
        memo["kube"], serving, spec, decision_state(spec, serving.get("status") or {}), memo["cache"]
    )
    if operator_settings.metrics_port and "metrics_server" not in memo:
        memo["metrics_server"], _ = TELEMETRY.serve(operator_settings.metrics_port)


def configure_kopf(settings: kopf.OperatorSettings, operator_settings: OperatorSettings) -> None:
    """Kopf's own settings for this operator: its queueing, posting, peering, networking and watches. No storage:
    with watch handlers only, Kopf writes nothing to the objects it watches."""
    # An idle Kopf worker keeps the last body it handled until it exits: at Kopf's 5 s, a start listing thousands
    # of objects held every body of the last 5 s (tens of MB at 2,000 servings) after it was handled.
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    quiet_watch_handlers()
    settings.posting.reporting_component = manifests.MANAGER
    # Only warnings of Kopf's object loggers become Events; the Events that explain (Applied, DriftReverted,
    # ScheduleChanged, ...) are posted on purpose. Kopf's per-handler "succeeded" lines cost an Event each.
    settings.posting.level = logging.WARNING
    settings.peering.lifetime = operator_settings.peering_lifetime_seconds
    settings.queueing.error_delays = [10, 20, 30, 60, 120, 300]
    settings.networking.error_backoffs = kube.EndlessBackoffs()
    settings.networking.enforce_retry_after = True  # a starting API server says when to come back (429, 1 s)
    # The listing at start-up comes in pages: 5,000 Deployments in one answer are some 75 MB of JSON, parsed at once.
    settings.watching.chunk_size = operator_settings.list_chunk_size or None
    managed = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    for resource in (("apps", "deployments"), ("", "services")):
        settings.watching.label_selectors[resource] = managed  # watch only what specserve manages, server-side


@kopf.on.cleanup()
async def stop_background(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("poller_task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if memo.get("health_loop") is not None:
        await memo["health_loop"].stop()
    if memo.get("availability") is not None:
        await memo["availability"].stop()
    if memo.get("reconciler") is not None:
        await memo["reconciler"].stop()
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()


class _QuietWatchHandlers(logging.Filter):
    """Drops Kopf's INFO line for each successful run of the watch handlers, which run on every event of every
    serving and managed object (tens of thousands of lines at a start with thousands of servings)."""

    LINES = frozenset({"Handler 'track_serving' succeeded.", "Handler 'owned_object_changed' succeeded."})

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in self.LINES)


def quiet_watch_handlers() -> None:
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietWatchHandlers) for f in objects.filters):
        objects.addFilter(_QuietWatchHandlers())


async def _pod_monitor_api(client: kube.Kube, settings: OperatorSettings) -> bool:
    if settings.pod_monitor_api != "auto":
        return settings.pod_monitor_api == "true"
    try:
        return await client.serves(kube.POD_MONITORS.group, kube.POD_MONITORS.version, kube.POD_MONITORS.plural)
    except ApiException:
        return False


# ---------------------------------------------------------------- SpeculativeServing


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
        TELEMETRY.forget_serving(namespace, name)
        applying.ledger_of(memo).forget_serving(namespace, name)
        memo["reconciler"].forget((namespace, name))
    else:
        meta = body.get("metadata") or {}
        memo["reconciler"].mark_changed((namespace, name), (meta.get("uid"), meta.get("generation")))
    memo["health_loop"].ensure_running()  # from a handler: the loop's task inherits the context kopf.event() needs


async def reconcile(body: dict[str, Any], memo: kopf.Memo, logger: kopf.Logger, retry: int, cache: indexes.Cache) -> dict[str, Any] | None:
    """Apply what the spec asks for, or explain why not; returns the status written, None when nothing changed.
    Objects already as rendered are not applied again and an unchanged status is not written, so a restart
    over servings that are as they should be costs reads from the watches and no writes."""
    meta, status = body["metadata"], body.get("status") or {}
    generation = meta.get("generation")
    client: kube.Kube = memo["kube"]
    try:
        intent = renderings_of(memo).of(body, memo.get("pod_monitor_api", False))
    except (pydantic.ValidationError, manifests.RenderError) as error:
        reason = getattr(error, "reason", "InvalidSpec")
        return await _reject(client, body, reason, api.describe_error(error, prefix="spec."), cache=cache)
    spec, state, objects, budget = intent.spec, intent.state, intent.objects, intent.budget
    memory = condition("MemoryBudget", budget.status, budget.reason, budget.message, generation)
    if budget.blocking:
        return await _reject(client, body, planner.REFUSED_REASON, budget.message, [memory], cache=cache)
    _announce_budget(body, status, memory)
    ledger = applying.ledger_of(memo)
    try:
        done = await applying.apply_all(client, objects, ledger, cache.holds)
        await prune(client, body, objects, ledger, cache, memo.get("pod_monitor_api", False))
    except applying.ApplyFailed as failure:
        if failure.refused:
            return await _reject(client, body, "ApplyRejected", failure.cause, done=failure.progress(), cache=cache)
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
        return new if _status_changed(latest, new) else None

    written = await client.update_serving_status(meta["namespace"], meta["name"], build, known=body)
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

    await client.update_serving_status(meta["namespace"], meta["name"], build)
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
) -> dict[str, Any] | None:
    """Record a problem only the operator can see: a condition, and one Warning event per distinct problem.
    `done` says what went in before the problem was found; by default nothing did."""
    generation = body["metadata"].get("generation")
    if done is None:
        serving_before = cache is not None and cache.deployments_of(body["metadata"]["namespace"], body["metadata"]["name"], body["metadata"].get("uid"))
        done = "nothing applied" + ("; the objects applied earlier keep serving" if serving_before else "")
    message = f"{problem}; {done}"
    accepted = condition("Accepted", "False", reason, message, generation)
    previous: dict[str, Any] = {}

    def build(latest: dict[str, Any]) -> dict[str, Any]:
        previous.update(_find_condition(latest, "Accepted") or {})
        return {"observedGeneration": generation, "phase": "Invalid", "conditions": merge_conditions(latest.get("conditions") or [], [accepted, *(extra or [])])}

    written = await client.update_serving_status(body["metadata"]["namespace"], body["metadata"]["name"], build)
    if (previous.get("reason"), previous.get("message"), previous.get("observedGeneration")) != (reason, message, generation):
        kopf.event(body, type="Warning", reason=reason, message=message[:1024])
    return written


def _announce_budget(body: dict[str, Any], status: dict[str, Any], memory: dict[str, Any]) -> None:
    """One Warning event per distinct memory-budget warning or doubt."""
    previous = _find_condition(status, "MemoryBudget") or {}
    if memory["reason"] in ("FitsWithWarnings", "CannotJudge") and (previous.get("reason"), previous.get("message")) != (memory["reason"], memory["message"]):
        kopf.event(body, type="Warning", reason=f"MemoryBudget{memory['reason']}", message=memory["message"][:1024])


async def prune(client: kube.Kube, body: dict[str, Any], desired: list[dict[str, Any]], ledger: applying.Ledger, cache: indexes.Cache, pod_monitor_api: bool) -> None:
    """Delete objects this serving owns that the spec no longer asks for (baseline scaled to 0, PodMonitor off).
    Deployments come from the watch; PodMonitors are not watched, so they are listed, and only where served."""
    meta = body["metadata"]
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    owned = [(kube.DEPLOYMENTS, d) for d in cache.deployments_of(meta["namespace"], meta["name"], meta.get("uid"))]
    if pod_monitor_api and not any(o["kind"] == "PodMonitor" for o in desired):
        listed = await client.list(kube.POD_MONITORS, meta["namespace"], {manifests.SERVING_LABEL: meta["name"], **MANAGED})
        owned += [(kube.POD_MONITORS, {**m, "kind": "PodMonitor"}) for m in listed if _owned_by(m, meta.get("uid"))]
    for kind, obj in owned:
        name = obj["metadata"]["name"]
        if (obj["kind"], name) in wanted:
            continue
        await client.delete(kind, meta["namespace"], name)
        ledger.forget({"kind": obj["kind"], "metadata": {"namespace": meta["namespace"], "name": name, "labels": {manifests.SERVING_LABEL: meta["name"]}}})
        kopf.event(body, type="Normal", reason="Pruned", message=f"deleted {obj['kind']}/{name}, which the spec no longer asks for")


def _owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))


# ---------------------------------------------------------------- owned objects: drift and availability


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
    if serving is None or serving["metadata"].get("deletionTimestamp") or not _owned_by(live, serving["metadata"].get("uid")):
        return None
    if refused(serving):
        return None  # a spec the serving's own handler refused: its previous objects are left as they are
    try:
        intent = renderings_of(memo).of(serving, memo.get("pod_monitor_api", False))
    except (pydantic.ValidationError, manifests.RenderError):
        return None
    if intent.budget.blocking:
        return None  # reconcile refuses it too, perhaps not yet recorded
    wanted = next((o for o in intent.objects if o["kind"] == live["kind"] and o["metadata"]["name"] == live["metadata"]["name"]), None)
    return None if wanted is None else (serving, intent.spec, intent.state, wanted)


def renderings_of(memo: kopf.Memo) -> intents.Renderings:
    """The operator's remembered renderings (configure makes them; a handler called without it gets its own)."""
    renderings = memo.get("renderings")
    if renderings is None:
        renderings = memo["renderings"] = intents.Renderings()
    return renderings


async def refresh_availability(client: kube.Kube, serving: dict[str, Any], spec: api.SpeculativeServingSpec, state: manifests.DecisionState, cache: indexes.Cache) -> None:
    """Follow the Deployments' availability into status; written only when something changed."""
    meta = serving["metadata"]

    def build(latest: dict[str, Any]) -> dict[str, Any] | None:
        if latest.get("phase") == "Invalid":
            return None  # refused meanwhile (this event was judged before): only the next reconcile leaves Invalid
        if latest.get("observedGeneration") is None:
            return None  # not reconciled yet: its first status, written by reconcile, says the availability too
        deployments = cache.deployments_of(meta["namespace"], meta["name"], meta.get("uid"))  # at each attempt
        new = serving_status(latest, deployments, latest.get("observedGeneration"), [], state, spec)
        return new if _status_changed(latest, new) else None

    written = await client.update_serving_status(meta["namespace"], meta["name"], build, known=serving)
    if written:
        TELEMETRY.set_serving(meta["namespace"], meta["name"], phase=written["phase"])


class AvailabilityFollower:
    """Follows Deployment availability into status beside the event handlers. A Deployment event only marks its
    serving; a few writers take the marked servings in turn (a workqueue.ServingQueue) and judge each from the
    watches as they are at that moment. A serving marked again before its turn is written once, so a burst of
    Deployment status updates (created, scaled, pods ready) costs one status write per actual change, and an event
    handler does not wait for the API server. A failure is not tried again here: the health loop writes the phase
    the watched Deployments give at its next poll (its safety net)."""

    def __init__(self, client: kube.Kube, cache: indexes.Cache, writers: int = AVAILABILITY_WRITERS) -> None:
        self.client, self.cache = client, cache
        self.queue = workqueue.ServingQueue(self._follow_once, writers, error_delays=(), name="availability")

    def mark(self, key: indexes.ServingKey) -> None:
        self.queue.mark(key)

    async def stop(self) -> None:
        await self.queue.stop()

    async def _follow_once(self, key: indexes.ServingKey, _failures: int) -> None:
        try:
            await self.follow(key)
        except API_UNREACHABLE as error:
            logging.getLogger("specserve.availability").warning("could not follow the availability of %s/%s: %s", *key, applying.short_error(error))
        except Exception:  # noqa: BLE001 - one serving's surprise must not stop following the others
            logging.getLogger("specserve.availability").exception("following the availability of %s/%s failed", *key)

    async def follow(self, key: indexes.ServingKey) -> None:
        serving = self.cache.serving(*key)
        if serving is None or serving["metadata"].get("deletionTimestamp") or refused(serving):
            return
        try:
            spec = api.SpeculativeServingSpec.model_validate(serving.get("spec") or {})
        except pydantic.ValidationError:
            return
        await refresh_availability(self.client, serving, spec, decision_state(spec, serving.get("status") or {}), self.cache)


def _status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def essence(conditions: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {(c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conditions}

    for key, value in new.items():
        if key == "conditions":
            if not essence(value) <= essence(old.get("conditions") or []):
                return True
        elif key == "health":
            if any((old.get("health") or {}).get(k) != v for k, v in value.items()):
                return True
        elif old.get(key) != value:
            return True
    return False


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


# ---------------------------------------------------------------- state and status (pure helpers)


def forgotten_variant(spec: api.SpeculativeServingSpec, status: dict[str, Any]) -> str | None:
    """Why the variant the health loop chose is no longer served (the spec dropped it), or None."""
    chosen = status.get("activeVariant")
    declared = [v.name for v in spec.target.variants]
    if chosen is None or chosen in declared:
        return None
    instead = f"variant {judgment.intended_variant(spec)!r}" if declared else "spec.target.model"
    listed = f"spec.target.variants ({', '.join(declared)})" if declared else "spec.target.variants (now empty)"
    return f"status.activeVariant {chosen!r}, chosen earlier by the health loop, is no longer among {listed}; serving {instead} instead"


def serving_status(
    status: dict[str, Any],
    deployments: list[dict[str, Any]],
    generation: int | None,
    own: list[dict[str, Any]],
    state: manifests.DecisionState,
    spec: api.SpeculativeServingSpec,
) -> dict[str, Any]:
    """Status fields derived from the Deployments' own status: Ready, Progressing, phase and the effective state."""
    found = availability.assess(deployments)
    now_conditions = [
        *own,
        condition("Ready", "True" if found.ready else "False", found.ready_reason, found.detail, generation),
        condition("Progressing", "True" if found.progressing else "False", found.progressing_reason, found.detail, generation),
    ]
    return {
        "observedGeneration": generation,
        "phase": found.phase,
        "conditions": merge_conditions(status.get("conditions") or [], now_conditions),
        "speculation": "On" if state.speculation else "Off",
        "activeVariant": manifests.resolve_target(spec, state).variant,
        "effectiveNumSpeculativeTokens": max(k for _, _, k in manifests.ranges(spec, state)) if state.speculation else 0,
        "scheduleSummary": manifests.schedule_summary(spec, state),
        "health": {"specActiveVariant": judgment.intended_variant(spec)},  # merged into status.health
    }


# ---------------------------------------------------------------- entry point


class StartupError(Exception):
    """A start-up step that cannot succeed by retrying (a busy port): said once, before Kopf starts."""


def seniority_priority(started: float, tiebreak: int) -> int:
    """A Kopf peering priority that falls with the start time: the longest-running replica acts, and one that
    joins later stands by instead of pausing it (equal priorities would pause them all)."""
    return -(int(started * 1000) * 1000 + tiebreak % 1000)


def run(settings: OperatorSettings) -> None:
    """Run the operator until it is stopped (`specserve run`); raises StartupError before anything starts."""
    memo = kopf.Memo(settings=settings)
    if settings.metrics_port:
        try:
            memo["metrics_server"], _ = TELEMETRY.serve(settings.metrics_port)
        except OSError as error:
            raise StartupError(
                f"cannot serve the operator's metrics on port {settings.metrics_port}: {error.strerror or error} "
                "(another process holds it; choose a port with --metrics-port, or 0 for none)"
            ) from None
    kopf.configure(log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN, verbose=settings.log_level == "DEBUG")
    logging.getLogger().setLevel(settings.log_level)
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        priority=seniority_priority(time.time(), random.randrange(1000)),
        memo=memo,
    )
