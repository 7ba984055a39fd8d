"""What one version of a serving renders to: its parsed spec, decision state, objects and memory verdict.

Remembered for the most recent versions, because a start renders every serving once for its resume and once for
each object it owns (the drift check of Kopf's listing); the version is the resourceVersion, so any change renders anew.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from specserve import api
from specserve.cluster.servings import decision_state, owner_of
from specserve.rendering import manifests, planner
from specserve.settings import OperatorSettings

REMEMBERED = 512  # versions kept; Kopf lists servings, Deployments and Services in the same name order, so the three
# renders of one serving come close together, and 512 renderings (some 8 MB at 2 objects each) cover that distance


@dataclass(frozen=True)
class Rendering:
    """A serving version's intent. Shared between callers: read it, never change it."""

    spec: api.SpeculativeServingSpec
    state: manifests.DecisionState
    objects: list[dict[str, Any]]
    budget: planner.Verdict


def rendering(serving: Mapping[str, Any], options: manifests.RenderOptions) -> Rendering:
    """Parse, decide and render one serving; raises pydantic.ValidationError or manifests.RenderError as render does."""
    spec = api.SpeculativeServingSpec.model_validate(serving.get("spec") or {})
    state = decision_state(spec, serving.get("status") or {})
    objects = manifests.render(owner_of(serving), spec, state, options)
    return Rendering(spec, state, objects, planner.verdict(planner.plan(spec, speculation=state.speculation)))


class Renderings:
    """The renderings of the last `size` serving versions seen, oldest forgotten first. A spec that cannot be
    rendered is not remembered: its error is raised again each time (it is rare, and the caller reports it)."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[Any, ...], Rendering] = OrderedDict()
        self.hits = self.misses = 0

    def of(self, serving: Mapping[str, Any], options: manifests.RenderOptions) -> Rendering:
        meta = serving.get("metadata") or {}
        version = meta.get("resourceVersion")
        if version is None:  # an object not from the API server (a test's, a dry run's): nothing names its version
            return rendering(serving, options)
        key = (meta.get("namespace"), meta.get("name"), meta.get("uid"), version, options)
        found = self._kept.get(key)
        if found is not None:
            self.hits += 1
            self._kept.move_to_end(key)
            return found
        self.misses += 1
        found = self._kept[key] = rendering(serving, options)
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return found


def options_of(memo: Mapping[str, Any]) -> manifests.RenderOptions:
    """How this operator renders: whether the cluster serves PodMonitors (asked at start-up) and its image policy."""
    settings: OperatorSettings | None = memo.get("settings")
    prefixes = tuple(settings.allowed_image_prefixes) if settings is not None else ()
    return manifests.RenderOptions(pod_monitor_api=memo.get("pod_monitor_api", False), allowed_image_prefixes=prefixes)


def renderings_of(memo: MutableMapping[str, Any]) -> Renderings:
    """The operator's remembered renderings (configure makes them; a handler called without it gets its own)."""
    renderings = memo.get("renderings")
    if renderings is None:
        renderings = memo["renderings"] = Renderings()
    return renderings
