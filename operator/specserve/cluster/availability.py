"""A serving's phase and its Ready/Progressing conditions, read from its Deployments' own status (pure).

A rollout in progress is Progressing however long pods take to load; Degraded means a Deployment exceeded its
progress deadline, could not create pods, or lost available replicas outside a rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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
