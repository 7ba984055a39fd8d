"""Proposers: what a draft model, EAGLE/MTP head or n-gram lookup costs relative to its target, by size and method.

Sizes come from the spec, the model catalog or the parameter count in a model name; vLLM's method names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from specserve import api, catalog
from specserve.decision.calibration import ModelSize, calibration

# Proposer methods (vLLM's names; specserve's API uses draft_model, eagle, eagle3, ngram, mtp and suffix).
DRAFT_METHODS = frozenset({"draft_model"})
HEAD_METHODS = frozenset({"eagle", "eagle3", "mtp"})
LOOKUP_METHODS = frozenset({"ngram", "ngram_gpu", "suffix"})
METHODS = DRAFT_METHODS | HEAD_METHODS | LOOKUP_METHODS
# Paths that ran without async scheduling in the calibration (vLLM 0.26): they pay the path overhead every step.
SYNC_METHODS = frozenset({"draft_model", "ngram", "suffix"})
DEFAULT_HEAD = (0.05, 1)  # an EAGLE/MTP head of unknown size: 5% of the target's parameters, one layer


@dataclass(frozen=True)
class Proposer:
    """A proposer as the cost model sees it.

    pass_cost: one proposer forward pass over one target step (0 for look-ups). target_scale: the target's k=0
    step over the reference target's (8B on one H200); fixed per-step costs of the proposer path shrink by it.
    """

    method: str
    pass_cost: float
    target_scale: float = 1.0
    basis: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown proposer method {self.method!r}; expected one of {', '.join(sorted(METHODS))}")
        if self.pass_cost < 0 or self.target_scale <= 0:
            raise ValueError("pass_cost must be >= 0 and target_scale > 0")

    @property
    def kind(self) -> Literal["draft", "head", "lookup"]:
        return "draft" if self.method in DRAFT_METHODS else "head" if self.method in HEAD_METHODS else "lookup"

    @property
    def growth_path(self) -> Literal["draft", "async"]:
        """Whose measured growth of step cost with acceptance applies: a draft model's or the async path's."""
        return "draft" if self.kind == "draft" else "async"

    @property
    def is_reference(self) -> bool:
        """True when this is a measured configuration: the 1B:8B draft pair or n-gram at the reference target."""
        reference = calibration().reference_pass_cost
        at_reference_target = math.isclose(self.target_scale, 1.0, rel_tol=1e-6)
        if self.kind == "draft":
            return at_reference_target and math.isclose(self.pass_cost, reference, rel_tol=1e-6)
        return at_reference_target and self.method == "ngram_gpu"


def proposer_for(method: str, target: ModelSize | None = None, proposer: ModelSize | None = None) -> Proposer:
    """The cost model's view of a proposer; sizes that are unknown fall back to the measured pair or a default head."""
    if method not in METHODS:
        raise ValueError(f"unknown proposer method {method!r}; expected one of {', '.join(sorted(METHODS))}")
    reference = calibration()
    target_index = target.cost_index() if target else 1.0
    target_note = f"target cost {target_index:.2f}x the 8B reference" if target else "target taken as the 8B reference"
    if method in LOOKUP_METHODS:
        return Proposer(method, 0.0, target_index, f"look-up proposer, no forward pass; {target_note}")
    if method in DRAFT_METHODS:
        if proposer is None:
            return Proposer(method, reference.reference_pass_cost, target_index, f"draft of unknown size: the measured 1B:8B pair's pass cost; {target_note}")
        pass_cost = proposer.cost_index() / target_index
        return Proposer(method, pass_cost, target_index, f"draft pass {pass_cost:.3f} of a target step (measured pair: {reference.reference_pass_cost:.3f}); {target_note}")
    if proposer is None:
        share, layers = DEFAULT_HEAD
        params = (target.parameters_billions if target else reference.reference_target.parameters_billions) * share
        tp = target.tensor_parallel_size if target else 1
        proposer = ModelSize(params, layers, tp)
        head_note = f"head of unknown size taken as {share:.0%} of the target, one layer"
    else:
        head_note = f"head of {proposer.parameters_billions:g}B"
    pass_cost = proposer.cost_index() / target_index
    return Proposer(method, pass_cost, target_index, f"{head_note}: pass {pass_cost:.3f} of a target step; {target_note}")


def proposer_for_spec(spec: api.SpeculativeServingSpec, target_model: str | None = None) -> Proposer:
    """The proposer of a SpeculativeServing, sized from the model catalog with the spec's architecture laid over it.

    target_model: the checkpoint serving now (a variant's); defaults to the active variant's, else spec.target.model.
    Sizes neither says fall back as in proposer_for; precision is not counted.
    """
    target_spec = spec.target
    variants = {v.model: v for v in target_spec.variants}
    if target_model is None and target_spec.variants:
        active = next((v for v in target_spec.variants if v.name == target_spec.active_variant), target_spec.variants[0])
        target_model = active.model
    target_model = target_model or target_spec.model
    variant = variants.get(target_model)
    params, layers, mtp = _described_size(target_model, [target_spec.architecture, variant.architecture if variant else None])
    target = ModelSize(params, layers, spec.gpu.count) if params else None
    speculation = spec.speculation
    method = str(speculation.method)
    draft = speculation.draft
    if method in LOOKUP_METHODS:
        return proposer_for(method, target)
    if method == "mtp":
        described = draft.architecture if draft and draft.architecture else None
        module_params = (described.parameters_billions if described else None) or (mtp.parameters_billions if mtp else None)
        module_layers = (described.layers if described else None) or (mtp.layers if mtp else 1)
        return proposer_for(method, target, ModelSize(module_params, module_layers, spec.gpu.count) if module_params else None)
    if draft is None:
        return proposer_for(method, target)
    draft_params, draft_layers, _ = _described_size(draft.model, [draft.architecture])
    tp = draft.tensor_parallel_size or spec.gpu.count
    return proposer_for(method, target, ModelSize(draft_params, draft_layers, tp) if draft_params else None)


def _described_size(model: str, overrides: Sequence[api.ModelArchitecture | None]) -> tuple[float | None, int | None, catalog.MtpModule | None]:
    """Parameters, layers and MTP module of a model: the catalog's, each set by a later override replaced."""
    entry = catalog.model_architecture(model)
    params, layers = (entry.parameters_billions, entry.layers) if entry else (None, None)
    for override in overrides:
        if override is not None:
            params = override.parameters_billions or params
            layers = override.layers or layers
    return params, layers, entry.mtp if entry else None
