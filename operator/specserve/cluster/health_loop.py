"""The health loop: one task judges every serving this replica is active for, once per Prometheus poll.

Members are the servings in the operator's cache (indexes.Cache); a replica that peering has paused judges none
(Kopf stops its watches, so the cache goes stale). No per-serving daemon: no task, body or finalizer per serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import kopf
import pydantic

from specserve import api
from specserve.api.conditions import merge_conditions
from specserve.cluster import applying, availability, indexes, intents, kube, reconcile, servings
from specserve.decision import judgment
from specserve.observation import metrics, readings
from specserve.observation.poller import Poller, PollResult
from specserve.rendering import manifests, planner
from specserve.telemetry import TELEMETRY

LOG = logging.getLogger("specserve.health")
CONCURRENT_WRITES = 16  # status writes and applies in flight at once, so one slow call does not stall the cycle


class HealthLoop:
    """Judges every registered serving after each poll; writes status only when something worth saying changed."""

    def __init__(self, poller: Poller, memo: kopf.Memo) -> None:
        self.poller, self.memo = poller, memo
        self.evaluated: dict[indexes.ServingKey, float] = {}  # when each was last judged, whether or not written
        self.cache: indexes.Cache | None = None
        self.task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        """Start the loop if it is not running. Called from a Kopf handler, so that the task inherits the
        context kopf.event() needs (Kopf sets it for handlers, not for start-up activities)."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.run(), name="specserve-health-loop")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def members(self) -> list[indexes.ServingKey]:
        """The servings this replica judges now: all it watches, none while peering pauses it."""
        if self.cache is None or indexes.operator_paused():
            return []
        return sorted(self.cache.servings)

    async def run(self) -> None:
        while True:
            self.subscribe_members()  # a serving accepted since the last poll is queried from the next one on
            try:
                result = await asyncio.wait_for(self.poller.results.get(), timeout=self.poller.interval)
            except asyncio.TimeoutError:
                continue
            await self.cycle(result)

    async def cycle(self, result: PollResult) -> None:
        """Judge every member against one poll: a few judges take the members in turn (not a task each)."""
        members = iter(self.members())

        async def judge_in_turn() -> None:
            for key in members:
                await self.judge(key, result)

        await asyncio.gather(*(judge_in_turn() for _ in range(CONCURRENT_WRITES)))

    def subscribe_members(self) -> None:
        """Subscribe every accepted member at its window; forget servings that are gone or no longer ours."""
        members = self.members()
        for key in members:
            self._subscribe(key)
        for key in set(self.poller.subscribers).difference(members):
            self.poller.unsubscribe(*key)
        for key in set(self.evaluated).difference(members):
            del self.evaluated[key]

    async def judge(self, key: indexes.ServingKey, result: PollResult) -> None:
        snapshot = self.cache.serving(*key) if self.cache is not None else None
        spec = _spec_of(snapshot)
        if snapshot is None or spec is None or not servings.accepted_as_is(snapshot):
            return
        if isinstance(result, metrics.Poll) and spec.health_policy.window_seconds not in result.by_window:
            return  # joined after this poll was asked for: judged from the next one, which includes its window
        status = snapshot.get("status") or {}
        now = time.time()
        try:
            phase = await self._follow_availability(snapshot, spec)
            if key in self.memo.get("unapplied", {}):
                await apply_decision(snapshot, spec, servings.decision_state(spec, status), self.memo, "an earlier decision was recorded")
            if phase != "Ready" and never_judged(status) and key not in self.evaluated:
                return  # a new serving whose pods are still starting: nothing serves, so nothing to judge or to say
            if judgment.due(status, spec, now, self.evaluated.get(key)):
                self.evaluated[key] = now
                await act_on_health(snapshot, spec, result, self.memo, LOG)
        except applying.API_UNREACHABLE as error:
            if getattr(error, "status", None) == 404 and self.cache is not None:
                # Deleted while this replica was paused by peering (a resumed watch lists what is, it does not
                # report what went): forget it.
                self.cache.servings.drop(key, key[1])
                return
            # An API server outage is expected, not a crash: the decision is judged again at the next poll.
            LOG.warning("health %s/%s: the API server did not take the decision (%s); judging again at the next poll", *key, applying.short_error(error))
        except Exception:  # noqa: BLE001 - one serving's surprise must not stop the loop for all the others
            LOG.exception("health %s/%s: evaluation failed; judging again at the next poll", *key)

    async def _follow_availability(self, snapshot: dict[str, Any], spec: api.SpeculativeServingSpec) -> str:
        """A safety net under the Deployment event handler: if an availability change was lost (its status
        write kept conflicting, say), the phase the watched Deployments give is written at the next poll.
        Returns that phase."""
        meta = snapshot["metadata"]
        assert self.cache is not None
        phase = availability.assess(self.cache.deployments_of(meta["namespace"], meta["name"], meta.get("uid"))).phase
        if (snapshot.get("status") or {}).get("phase") not in (phase, "Invalid") and "follow_availability" in self.memo:
            await self.memo["follow_availability"](snapshot, spec)
        return phase

    def _subscribe(self, key: indexes.ServingKey) -> None:
        snapshot = self.cache.serving(*key) if self.cache is not None else None
        spec = _spec_of(snapshot)
        if snapshot is not None and spec is not None and servings.accepted_as_is(snapshot):
            self.poller.subscribe(*key, spec.health_policy.window_seconds)
        else:
            self.poller.unsubscribe(*key)  # nothing to judge until the spec is accepted


def never_judged(status: dict[str, Any]) -> bool:
    return not (status.get("health") or {}).get("lastEvaluationTime")


def _spec_of(snapshot: dict[str, Any] | None) -> api.SpeculativeServingSpec | None:
    if snapshot is None:
        return None
    try:
        return api.SpeculativeServingSpec.model_validate(snapshot.get("spec") or {})
    except pydantic.ValidationError:
        return None


async def act_on_health(body: dict[str, Any], spec: api.SpeculativeServingSpec, result: PollResult, memo: kopf.Memo, logger: logging.Logger) -> None:
    """Record the decision in status first, then re-render: a restart in between resumes from status.
    A judgement that changes nothing worth saying (a hold, the same verdict on similar numbers) is not written."""
    meta = body["metadata"]
    client: kube.Kube = memo["kube"]
    fitting = frozenset(planner.fitting_variants(spec)) if spec.target.variants else None
    now = time.time()
    reading = readings.observe(result, spec.health_policy.window_seconds, meta["namespace"], meta["name"])
    outcome = judgment.evaluate(body, spec, reading, now, fitting)
    TELEMETRY.record_decision(meta["namespace"], meta["name"], outcome.decision.action)
    available = next((c["status"] == "True" for c in outcome.status["conditions"] if c["type"] == "MetricsAvailable"), None)
    effective = outcome.status.get("speculation", (body.get("status") or {}).get("speculation", "On"))
    TELEMETRY.set_serving(meta["namespace"], meta["name"], speculation=effective != "Off", metrics_available=available)
    TELEMETRY.set_estimated_speedup(meta["namespace"], meta["name"], judgment.estimated_speedup(outcome))
    if not judgment.worth_writing(body.get("status") or {}, outcome, now, spec):
        return

    def build(latest: dict[str, Any]) -> dict[str, Any]:
        return {**outcome.status, "conditions": merge_conditions(latest.get("conditions") or [], outcome.status["conditions"])}

    applies = outcome.render_state is not None
    with acting(memo, (meta["namespace"], meta["name"])) if applies else contextlib.nullcontext():
        await client.update_serving_status(meta["namespace"], meta["name"], build, known=body)
        if outcome.event is not None:
            type_, reason, message = outcome.event
            kopf.event(body, type=type_, reason=reason, message=message[:1024])
        if outcome.decision.action != "keep":
            logger.info("health %s/%s: %s (%s)", meta["namespace"], meta["name"], outcome.decision.action, outcome.decision.reason)
        if applies and outcome.render_state is not None:
            await apply_decision(body, spec, outcome.render_state, memo, f"decision {outcome.decision.action} recorded")


@contextlib.contextmanager
def acting(memo: kopf.Memo, key: indexes.ServingKey) -> Iterator[None]:
    """Between a decision's status write and its apply, a Deployment event is not drift: see owned_object_changed."""
    active: set[indexes.ServingKey] = memo.setdefault("acting", set())
    active.add(key)
    try:
        yield
    finally:
        active.discard(key)


async def apply_decision(body: dict[str, Any], spec: api.SpeculativeServingSpec, state: manifests.DecisionState, memo: kopf.Memo, what: str) -> None:
    """Apply what a recorded decision renders. If the API server does not take it, say so once per cause and
    leave the serving in memo["unapplied"]: the health loop tries again at each poll until it goes in."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    unapplied: dict[indexes.ServingKey, str] = memo.setdefault("unapplied", {})
    options = intents.options_of(memo)
    with acting(memo, key):
        try:
            objects = manifests.render(servings.owner_of(body), spec, state, options)
            await applying.apply_all(memo["kube"], objects, applying.ledger_of(memo))
            if memo.get("cache") is not None:  # a trial's challenger slice goes once its verdict is recorded
                await reconcile.prune(memo["kube"], body, objects, applying.ledger_of(memo), memo["cache"], memo.get("pod_monitor_api", False))
        except (applying.ApplyFailed, manifests.RenderError) as failure:
            cause = str(failure)
            if unapplied.get(key) != cause:
                progress = failure.progress() if isinstance(failure, applying.ApplyFailed) else "nothing applied"
                message = f"{what} but not applied: {cause}; {progress}; trying again at each poll"
                kopf.event(body, type="Warning", reason="ApplyFailed", message=message[:1024])
            unapplied[key] = cause
            return
    unapplied.pop(key, None)
