"""Kopf handlers: reconcile SpeculativeServings into vLLM objects, put back hand edits, keep status and events.

The operator never writes spec. Bad input becomes a condition and one Warning event, never a retry storm.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import kopf
import pydantic
from kubernetes.client.exceptions import ApiException

from specserve import api, health, kube, metrics, planner, render
from specserve.conditions import condition, find as _find_condition, merge_conditions
from specserve.settings import OperatorSettings
from specserve.telemetry import TELEMETRY

LOG = logging.getLogger("specserve")
MANAGED = {render.MANAGED_BY_LABEL: render.MANAGER}
TRANSIENT_STATUSES = {408, 409, 429}
RETRY_DELAY_SECONDS = 30


# ---------------------------------------------------------------- start-up


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    operator_settings: OperatorSettings = memo.get("settings") or OperatorSettings()
    memo["settings"] = operator_settings
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=api.GROUP, key="last-handled-configuration")
    settings.posting.reporting_component = render.MANAGER
    settings.posting.level = logging.INFO
    settings.queueing.error_delays = [10, 20, 30, 60, 120, 300]
    if "kube" not in memo:
        memo["kube"] = kube.Kube(kube.new_api_client())
    memo["pod_monitor_api"] = await _pod_monitor_api(memo["kube"], operator_settings)
    logger.info("PodMonitor API %s", "available" if memo["pod_monitor_api"] else "not available")
    if "poller" not in memo:
        labels = metrics.Labels(operator_settings.namespace_label, operator_settings.serving_label, operator_settings.role_label)
        query = metrics.prometheus_query(operator_settings.prometheus_url, operator_settings.prometheus_timeout_seconds)
        memo["poller"] = health.Poller(query, labels, operator_settings.poll_interval_seconds)
    memo["poller_task"] = asyncio.create_task(memo["poller"].run(), name="specserve-poller")
    if operator_settings.metrics_port:
        memo["metrics_server"], _ = TELEMETRY.serve(operator_settings.metrics_port)


@kopf.on.cleanup()
async def stop_background(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("poller_task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()


async def _pod_monitor_api(client: kube.Kube, settings: OperatorSettings) -> bool:
    if settings.pod_monitor_api != "auto":
        return settings.pod_monitor_api == "true"
    try:
        return await client.serves(kube.POD_MONITORS.group, kube.POD_MONITORS.version, kube.POD_MONITORS.plural)
    except ApiException:
        return False


# ---------------------------------------------------------------- SpeculativeServing


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL)
async def reconcile_serving(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    started = time.perf_counter()
    try:
        await reconcile(dict(body), patch.status, memo, logger)
    except kopf.TemporaryError:
        TELEMETRY.record_reconcile("error", time.perf_counter() - started, reason="ApiError")
        raise
    rejected = patch.status.get("phase") == "Invalid"
    reason = next((c["reason"] for c in patch.status.get("conditions", []) if c["type"] == "Accepted"), None) if rejected else None
    TELEMETRY.record_reconcile("rejected" if rejected else "applied", time.perf_counter() - started, reason=reason)
    speculation = patch.status.get("speculation", (body.get("status") or {}).get("speculation", "On"))
    TELEMETRY.set_serving(body["metadata"]["namespace"], body["metadata"]["name"], phase=patch.status.get("phase"), speculation=speculation != "Off")


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL, optional=True)
async def forget_serving(namespace: str, name: str, **_: Any) -> None:
    TELEMETRY.forget_serving(namespace, name)


async def reconcile(body: dict[str, Any], status_patch: Any, memo: kopf.Memo, logger: kopf.Logger) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    generation = meta.get("generation")
    try:
        spec = api.SpeculativeServingSpec.model_validate(body.get("spec") or {})
        state = decision_state(spec, status)
        objects = render.render(owner_of(body), spec, state, render.RenderOptions(pod_monitor_api=memo.get("pod_monitor_api", False)))
    except (pydantic.ValidationError, render.RenderError) as error:
        reason = getattr(error, "reason", "InvalidSpec")
        _reject(body, status, status_patch, reason, f"{api.describe_error(error, prefix='spec.')}; the previous objects keep serving")
        return
    budget = planner.verdict(planner.plan(spec, speculation=state.speculation))
    memory = condition("MemoryBudget", budget.status, budget.reason, budget.message, generation)
    if budget.blocking:
        _reject(body, status, status_patch, "MemoryBudgetExceeded", f"{budget.message}; nothing applied, the previous objects keep serving", [memory])
        return
    _announce_budget(body, status, memory)
    client: kube.Kube = memo["kube"]
    try:
        for obj in objects:
            await client.apply(obj)
        await prune(client, body, objects)
    except ApiException as error:
        if error.status is not None and 400 <= error.status < 500 and error.status not in TRANSIENT_STATUSES:
            _reject(body, status, status_patch, "ApplyRejected", f"the API server rejected the rendered objects: {_api_message(error)}")
            return
        raise kopf.TemporaryError(f"applying objects failed ({error.status}): {_api_message(error)}", delay=RETRY_DELAY_SECONDS) from error
    deployments = await client.list(kube.DEPLOYMENTS, meta["namespace"], {render.SERVING_LABEL: meta["name"], **MANAGED})
    accepted = condition("Accepted", "True", "Applied", f"{len(objects)} objects applied with server-side apply", generation)
    new_status = serving_status(status, deployments, generation, accepted, state, spec)
    new_status["conditions"] = merge_conditions(new_status["conditions"], [memory])
    status_patch.update(new_status)
    if status.get("observedGeneration") != generation or (_find_condition(status, "Accepted") or {}).get("status") != "True":
        kopf.event(body, type="Normal", reason="Applied", message=f"applied {', '.join(_describe(o) for o in objects)}")
    logger.info("reconciled generation %s: %s", generation, new_status["phase"])


def _reject(body: dict[str, Any], status: dict[str, Any], status_patch: Any, reason: str, message: str, extra: list[dict[str, Any]] | None = None) -> None:
    """Record a problem only the operator can see: a condition, and one Warning event per distinct problem."""
    generation = body["metadata"].get("generation")
    previous = _find_condition(status, "Accepted") or {}
    accepted = condition("Accepted", "False", reason, message, generation)
    conditions = merge_conditions(status.get("conditions", []), [accepted, *(extra or [])])
    status_patch.update({"observedGeneration": generation, "phase": "Invalid", "conditions": conditions})
    if (previous.get("reason"), previous.get("message"), previous.get("observedGeneration")) != (reason, message, generation):
        kopf.event(body, type="Warning", reason=reason, message=message[:1024])


def _announce_budget(body: dict[str, Any], status: dict[str, Any], memory: dict[str, Any]) -> None:
    """One Warning event per distinct memory-budget warning or doubt."""
    previous = _find_condition(status, "MemoryBudget") or {}
    if memory["reason"] in ("FitsWithWarnings", "CannotJudge") and (previous.get("reason"), previous.get("message")) != (memory["reason"], memory["message"]):
        kopf.event(body, type="Warning", reason=f"MemoryBudget{memory['reason']}", message=memory["message"][:1024])


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body).get("message", error.reason))
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


def _describe(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


async def prune(client: kube.Kube, body: dict[str, Any], desired: list[dict[str, Any]]) -> None:
    """Delete objects this serving owns that the spec no longer asks for (baseline scaled to 0, PodMonitor off)."""
    meta = body["metadata"]
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    kinds = [("Deployment", kube.DEPLOYMENTS)]
    if not any(o["kind"] == "PodMonitor" for o in desired):
        kinds.append(("PodMonitor", kube.POD_MONITORS))
    for kind_name, kind in kinds:
        try:
            live = await client.list(kind, meta["namespace"], {render.SERVING_LABEL: meta["name"], **MANAGED})
        except ApiException as error:
            if error.status == 404:  # the PodMonitor API is not served here
                continue
            raise
        for obj in live:
            if (kind_name, obj["metadata"]["name"]) not in wanted and _owned_by(obj, meta.get("uid")):
                await client.delete(kind, meta["namespace"], obj["metadata"]["name"])
                kopf.event(body, type="Normal", reason="Pruned", message=f"deleted {kind_name}/{obj['metadata']['name']}, which the spec no longer asks for")


def _owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))


# ---------------------------------------------------------------- health loop


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=10)
async def health_loop(stopped: kopf.DaemonStopped, namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Evaluates one serving on every poll of the shared poller; Kopf stops it when a peer takes over."""
    poller: health.Poller = memo["poller"]
    try:
        while not stopped:
            snapshot = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
            try:
                spec = api.SpeculativeServingSpec.model_validate(snapshot["spec"])
            except pydantic.ValidationError:
                poller.unsubscribe(namespace, name)  # the reconcile handler reports it; nothing to judge
                await stopped.wait(poller.interval)
                continue
            queue = poller.subscribe(namespace, name, spec.health_policy.window_seconds)
            try:
                result = await asyncio.wait_for(queue.get(), timeout=max(1.0, poller.interval))
            except asyncio.TimeoutError:
                continue
            snapshot["status"] = dict(body.status)
            if health.due(snapshot["status"], spec, time.time()):
                await act_on_health(snapshot, spec, result, memo, logger)
    finally:
        poller.unsubscribe(namespace, name)


async def act_on_health(body: dict[str, Any], spec: api.SpeculativeServingSpec, result: health.PollResult, memo: kopf.Memo, logger: kopf.Logger) -> None:
    """Record the decision in status first, then re-render: a restart in between resumes from status."""
    meta = body["metadata"]
    client: kube.Kube = memo["kube"]
    fitting = frozenset(planner.fitting_variants(spec)) if spec.target.variants else None
    outcome = health.evaluate(body, spec, result, time.time(), fitting)
    TELEMETRY.record_decision(meta["namespace"], meta["name"], outcome.decision.action)
    available = next((c["status"] == "True" for c in outcome.status["conditions"] if c["type"] == "MetricsAvailable"), None)
    effective = outcome.status.get("speculation", (body.get("status") or {}).get("speculation", "On"))
    TELEMETRY.set_serving(meta["namespace"], meta["name"], speculation=effective != "Off", metrics_available=available)
    await client.patch_serving_status(meta["namespace"], meta["name"], outcome.status)
    if outcome.event is not None:
        type_, reason, message = outcome.event
        kopf.event(body, type=type_, reason=reason, message=message[:1024])
    if outcome.decision.action != "keep":
        logger.info("health: %s (%s)", outcome.decision.action, outcome.decision.reason)
    if outcome.render_state is None:
        return
    options = render.RenderOptions(pod_monitor_api=memo.get("pod_monitor_api", False))
    try:
        for obj in render.render(owner_of(body), spec, outcome.render_state, options):
            await client.apply(obj)
    except (render.RenderError, ApiException) as error:
        kopf.event(body, type="Warning", reason="ApplyFailed", message=f"decision {outcome.decision.action} recorded but not yet applied: {error}"[:1024])
        raise


# ---------------------------------------------------------------- owned objects: drift and availability


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
async def owned_object_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Put back hand edits and deletions of managed objects, and follow Deployment availability into status."""
    labels = body["metadata"].get("labels", {})
    owner_name = labels.get(render.SERVING_LABEL)
    if not owner_name or type is None:
        return
    namespace = body["metadata"]["namespace"]
    client: kube.Kube = memo["kube"]
    serving = await client.get(kube.SERVINGS, namespace, owner_name)
    if serving is None or serving["metadata"].get("deletionTimestamp") or not _owned_by(dict(body), serving["metadata"].get("uid")):
        return
    status = serving.get("status") or {}
    try:
        spec = api.SpeculativeServingSpec.model_validate(serving.get("spec") or {})
        state = decision_state(spec, status)
        desired = render.render(owner_of(serving), spec, state, render.RenderOptions(pod_monitor_api=memo.get("pod_monitor_api", False)))
    except (pydantic.ValidationError, render.RenderError):
        return  # the serving's own handler reports this; its previous objects are left as they are
    wanted = next((o for o in desired if o["kind"] == body["kind"] and o["metadata"]["name"] == body["metadata"]["name"]), None)
    if wanted is None:
        return
    if type == "DELETED" or not is_subset(wanted, dict(body)):
        await client.apply(wanted)
        what = "deleted" if type == "DELETED" else "edited"
        kopf.event(serving, type="Warning", reason="DriftReverted", message=f"{_describe(wanted)} was {what} outside specserve; restored the rendered version")
        logger.info("restored %s after it was %s", _describe(wanted), what)
    if body["kind"] == "Deployment" and type != "DELETED":
        await refresh_availability(client, serving, spec, state)


async def refresh_availability(client: kube.Kube, serving: dict[str, Any], spec: api.SpeculativeServingSpec, state: render.DecisionState) -> None:
    meta, status = serving["metadata"], serving.get("status") or {}
    accepted = _find_condition(status, "Accepted")
    if accepted is None or accepted.get("status") != "True":
        return
    deployments = await client.list(kube.DEPLOYMENTS, meta["namespace"], {render.SERVING_LABEL: meta["name"], **MANAGED})
    new_status = serving_status(status, deployments, status.get("observedGeneration"), None, state, spec)
    if _status_changed(status, new_status):
        await client.patch_serving_status(meta["namespace"], meta["name"], new_status)
        TELEMETRY.set_serving(meta["namespace"], meta["name"], phase=new_status["phase"])


def _status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return any(old.get(key) != value for key, value in new.items())


def is_subset(wanted: Any, live: Any) -> bool:
    """Whether every field specserve renders has the same value in the live object (servers add defaults)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(live, list) and len(wanted) == len(live) and all(is_subset(w, x) for w, x in zip(wanted, live))
    return wanted == live or str(wanted) == str(live)


# ---------------------------------------------------------------- state and status (pure helpers)


def owner_of(body: dict[str, Any]) -> render.Owner:
    meta = body["metadata"]
    return render.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""))


def decision_state(spec: api.SpeculativeServingSpec, status: dict[str, Any]) -> render.DecisionState:
    """The health loop's decisions, read back from status; a variant no longer declared falls back to the spec's."""
    state = health.state_from_status(spec, status)
    return render.DecisionState(speculation=state.speculation, variant=state.variant)


def serving_status(
    status: dict[str, Any],
    deployments: list[dict[str, Any]],
    generation: int | None,
    accepted: dict[str, Any] | None,
    state: render.DecisionState,
    spec: api.SpeculativeServingSpec,
) -> dict[str, Any]:
    """Status fields derived from the Deployments' own status: Ready, Progressing, phase and the effective state."""
    ready, progressing, detail = _availability(deployments)
    now_conditions = [
        condition("Ready", "True" if ready else "False", "Available" if ready else "NotAvailable", detail, generation),
        condition("Progressing", "True" if progressing else "False", "RollingOut" if progressing else "Stable", detail, generation),
    ]
    if accepted is not None:
        now_conditions.insert(0, accepted)
    phase = "Ready" if ready else ("Progressing" if progressing else ("Pending" if not deployments else "Degraded"))
    return {
        "observedGeneration": generation,
        "phase": phase,
        "conditions": merge_conditions(status.get("conditions", []), now_conditions),
        "speculation": "On" if state.speculation else "Off",
        "activeVariant": render.resolve_target(spec, state).variant,
        "effectiveNumSpeculativeTokens": (state.num_speculative_tokens or spec.speculation.num_speculative_tokens) if state.speculation else 0,
        "health": {"specActiveVariant": health.intended_variant(spec)},  # merged into status.health
    }


def _availability(deployments: list[dict[str, Any]]) -> tuple[bool, bool, str]:
    if not deployments:
        return False, True, "no Deployments yet"
    ready, progressing, parts = True, False, []
    for dep in deployments:
        want = dep.get("spec", {}).get("replicas", 1)
        st = dep.get("status") or {}
        available, updated = st.get("availableReplicas", 0), st.get("updatedReplicas", 0)
        current = st.get("observedGeneration") == dep["metadata"].get("generation")
        if not current or updated < want or st.get("replicas", 0) > want:
            progressing = True
        if available < want or not current:
            ready = False
        parts.append(f"{dep['metadata']['name']}: {available}/{want} available")
    return ready, progressing, "; ".join(parts)


# ---------------------------------------------------------------- entry point


def run(settings: OperatorSettings) -> None:
    """Run the operator until it is stopped (`specserve run`)."""
    kopf.configure(log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN, verbose=settings.log_level == "DEBUG")
    logging.getLogger().setLevel(settings.log_level)
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        memo=kopf.Memo(settings=settings),
    )
