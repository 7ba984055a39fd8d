"""Availability into status: a serving's phase and Ready/Progressing conditions from its Deployments' own status.

assess() and serving_status() are pure; the AvailabilityFollower writes them as Deployment events come in.
A rollout in progress is Progressing however long pods take to load; Degraded means a Deployment exceeded its
progress deadline, could not create pods, or lost available replicas outside a rollout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from specserve import api
from specserve.api.conditions import condition, merge_conditions
from specserve.cluster import applying, indexes, kube, workqueue
from specserve.cluster.servings import decision_state, refused
from specserve.decision import judgment
from specserve.rendering import manifests
from specserve.telemetry import TELEMETRY

AVAILABILITY_WRITERS = 16  # availability status writes in flight at once (the API pool has kube.API_THREADS threads)
API_UNREACHABLE = applying.API_UNREACHABLE


State = Literal["complete", "rolling-out", "failed", "lost-availability"]
COMPLETE_REASON = "NewReplicaSetAvailable"  # the Deployment controller's Progressing reason once a rollout finished


@dataclass(frozen=True)
class Rollout:
    """Where one Deployment stands."""

    name: str
    state: State
    reason: str
    detail: str


@dataclass(frozen=True)
class Assessment:
    """The serving's phase and the reasons of its Ready and Progressing conditions."""

    phase: Literal["Pending", "Progressing", "Ready", "Degraded"]
    ready_reason: str
    progressing_reason: str
    detail: str

    @property
    def ready(self) -> bool:
        return self.phase == "Ready"

    @property
    def progressing(self) -> bool:
        return self.phase in ("Pending", "Progressing")


def assess(deployments: list[dict[str, Any]]) -> Assessment:
    if not deployments:
        return Assessment("Pending", "NoDeployments", "Creating", "no Deployments yet")
    rollouts = [rollout(d) for d in sorted(deployments, key=lambda d: d["metadata"]["name"])]
    detail = "; ".join(r.detail for r in rollouts)
    broken = [r for r in rollouts if r.state in ("failed", "lost-availability")]
    if broken:
        return Assessment("Degraded", broken[0].reason, "ProgressDeadlineExceeded" if any(r.reason == "ProgressDeadlineExceeded" for r in broken) else "Stalled", detail)
    if any(r.state == "rolling-out" for r in rollouts):
        return Assessment("Progressing", "RollingOut", "RollingOut", detail)
    return Assessment("Ready", "Available", "Complete", detail)


def rollout(deployment: dict[str, Any]) -> Rollout:
    """One Deployment's state from its conditions (Progressing, Available, ReplicaFailure) and replica counts."""
    name = deployment["metadata"]["name"]
    want = (deployment.get("spec") or {}).get("replicas", 1)
    status = deployment.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    available = status.get("availableReplicas", 0)
    counts = f"{name}: {available}/{want} available"
    failure = conditions.get("ReplicaFailure") or {}
    if failure.get("status") == "True":
        return Rollout(name, "failed", failure.get("reason") or "ReplicaFailure", f"{counts}, cannot create pods: {failure.get('message', '')}")
    progressing = conditions.get("Progressing") or {}
    if progressing.get("status") == "False":
        reason = progressing.get("reason") or "ProgressDeadlineExceeded"
        return Rollout(name, "failed", reason, f"{counts}, rollout stalled ({reason}): {progressing.get('message', '')}")
    current = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    settled = all(status.get(field, 0) == want for field in ("replicas", "updatedReplicas", "availableReplicas"))
    if current and settled:
        return Rollout(name, "complete", "Available", counts)
    if not current or progressing.get("reason") != COMPLETE_REASON or available >= want:
        return Rollout(name, "rolling-out", "RollingOut", f"{counts}, rolling out ({status.get('updatedReplicas', 0)}/{want} updated)")
    return Rollout(name, "lost-availability", "LostAvailability", f"{counts}, lost availability after the rollout completed")


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
        return new if status_changed(latest, new) else None

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
            # A 404: the serving went (or its CRD did) while its Deployment changed; its own deletion event follows.
            level = logging.DEBUG if getattr(error, "status", None) == 404 else logging.WARNING
            logging.getLogger("specserve.availability").log(level, "could not follow the availability of %s/%s: %s", *key, applying.short_error(error))
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



def status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
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



def serving_status(
    status: dict[str, Any],
    deployments: list[dict[str, Any]],
    generation: int | None,
    own: list[dict[str, Any]],
    state: manifests.DecisionState,
    spec: api.SpeculativeServingSpec,
) -> dict[str, Any]:
    """Status fields derived from the Deployments' own status: Ready, Progressing, phase and the effective state."""
    found = assess(deployments)
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
