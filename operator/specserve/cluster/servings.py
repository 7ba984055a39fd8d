"""What a SpeculativeServing's own status says: the decisions in force and whether its generation was judged.

Shared by reconcile, drift repair and the health loop; pure, over plain dicts.
"""

from __future__ import annotations

from typing import Any

from specserve import api
from specserve.api.conditions import find
from specserve.decision import judgment
from specserve.rendering import manifests


def owner_of(body: dict[str, Any]) -> manifests.Owner:
    meta = body["metadata"]
    return manifests.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""))


def decision_state(spec: api.SpeculativeServingSpec, status: dict[str, Any]) -> manifests.DecisionState:
    """The health loop's decisions, read back from status; a variant no longer declared falls back to the spec's."""
    state = judgment.state_from_status(spec, status)
    return judgment.render_state_of(state, spec.trials)


def refused(serving: dict[str, Any]) -> bool:
    """Whether reconcile refused the serving's current generation. A generation it has not judged yet is not
    refused: its handler renders the same objects, so a hand edit meanwhile is still put back."""
    accepted = find(serving.get("status") or {}, "Accepted") or {}
    return accepted.get("status") == "False" and accepted.get("observedGeneration") == serving["metadata"].get("generation")


def accepted_as_is(serving: dict[str, Any]) -> bool:
    """Whether the serving's current generation was accepted: only then may anything but reconcile apply it."""
    accepted = find(serving.get("status") or {}, "Accepted") or {}
    return accepted.get("status") == "True" and accepted.get("observedGeneration") == serving["metadata"].get("generation")
