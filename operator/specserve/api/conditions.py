"""Status conditions in the Kubernetes convention: type, status, reason, message, lastTransitionTime, observedGeneration.

lastTransitionTime moves only when a condition's status value changes.
"""

from __future__ import annotations

import datetime
from typing import Any


def condition(type_: str, status: str, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message[:2048], "lastTransitionTime": now(), "observedGeneration": generation}


def merge_conditions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace conditions by type, keeping the old transition time when the status value did not change."""
    merged = {c["type"]: c for c in old}
    for cond in new:
        previous = merged.get(cond["type"])
        if previous is not None and previous.get("status") == cond["status"]:
            cond = {**cond, "lastTransitionTime": previous.get("lastTransitionTime", cond["lastTransitionTime"])}
        merged[cond["type"]] = cond
    return list(merged.values())


def find(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
