"""Goodput of speculative decoding: accepted length, step cost and speedup of k drafts at a batch size, and k schedules.

Pure: plain data in and out; the only I/O is reading the packaged GPU calibration (catalog/speculation_costs.yaml) once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Literal

import yaml

from specserve import api
from specserve import catalog

Evidence = Literal["measured", "learned", "prior"]
EVIDENCE_ORDER: tuple[Evidence, ...] = ("measured", "learned", "prior")  # strongest first

# Proposer methods (vLLM's names; specserve's API uses draft_model, eagle, eagle3, ngram, mtp and suffix).
DRAFT_METHODS = frozenset({"draft_model"})
HEAD_METHODS = frozenset({"eagle", "eagle3", "mtp"})
LOOKUP_METHODS = frozenset({"ngram", "ngram_gpu", "suffix"})
METHODS = DRAFT_METHODS | HEAD_METHODS | LOOKUP_METHODS
# Paths that ran without async scheduling in the calibration (vLLM 0.26): they pay the path overhead every step.
SYNC_METHODS = frozenset({"draft_model", "ngram", "suffix"})

# A forward pass's time as a share of the reference target's k=0 step: a third is per-layer fixed time (the 8B
# baseline step at batch 1 took 4.64 ms, reading its 14.8 GB of weights at the H200's 4.8 TB/s takes 3.1 ms),
# two thirds scale with the parameters each GPU reads.
LAYER_SHARE = 1 / 3
LAYERS_PER_PARAMETER_EXPONENT = 0.35  # layers when unknown: Llama 1.24, 8.03, 70.55, 405 B have 16, 32, 80, 126; this gives 17, 33, 71, 130
DEFAULT_HEAD = (0.05, 1)  # an EAGLE/MTP head of unknown size: 5% of the target's parameters, one layer

DEFAULT_BUCKET_STARTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_MAX_RANGES = 3
CALIBRATION_FILE = "speculation_costs.yaml"


# ---------------------------------------------------------------- acceptance


def clean_per_position(per_position: Sequence[float]) -> tuple[float, ...]:
    """Per-position rates as probabilities that never rise with position (accepting i+1 needs i accepted)."""
    cleaned: list[float] = []
    ceiling = 1.0
    for rate in per_position:
        value = min(ceiling, max(0.0, float(rate)))  # max(0.0, nan) is 0.0
        cleaned.append(value)
        ceiling = value
    return tuple(cleaned)


def extend_per_position(per_position: Sequence[float], k: int) -> tuple[float, ...]:
    """The first k per-position rates; past the measured ones each position keeps the last conditional rate."""
    rates = clean_per_position(per_position)
    if k <= len(rates):
        return rates[:k]
    if not rates:
        return (0.0,) * k
    conditional = rates[-1] / rates[-2] if len(rates) >= 2 and rates[-2] > 0 else rates[-1]
    extended = list(rates)
    while len(extended) < k:
        extended.append(extended[-1] * conditional)
    return tuple(extended)


def accepted_length(per_position: Sequence[float], k: int | None = None) -> float:
    """Mean accepted length AL(k) = 1 + sum of p_i for i < k (k defaults to the positions given)."""
    k = len(per_position) if k is None else k
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return 1.0 + sum(extend_per_position(per_position, k))


def per_position_for_token_acceptance(a: float, k: int) -> tuple[float, ...]:
    """Per-position rates [a, a^2, ..., a^k] when each draft is kept with probability a given the ones before."""
    return tuple(a ** (i + 1) for i in range(k))


def per_position_for_acceptance_rate(rate: float, k: int) -> tuple[float, ...]:
    """Per-position rates whose accepted/drafted ratio at k is vLLM's acceptance rate, with a constant conditional rate."""
    if k <= 0:
        return ()
    target = min(1.0, max(0.0, rate))
    low, high = 0.0, 1.0
    for _ in range(50):
        mid = (low + high) / 2
        if sum(mid ** (i + 1) for i in range(k)) / k < target:
            low = mid
        else:
            high = mid
    return per_position_for_token_acceptance((low + high) / 2, k)


# ---------------------------------------------------------------- proposers


@dataclass(frozen=True)
class ModelSize:
    """What the cost of one forward pass depends on: parameters, layers (estimated when unknown), GPUs sharing it."""

    parameters_billions: float
    layers: int | None = None
    tensor_parallel_size: int = 1

    def cost_index(self) -> float:
        """This model's forward-pass time as a share of the reference target's k=0 step (8B on one H200 = 1)."""
        reference = calibration().reference_target
        layers = self.layers or estimated_layers(self.parameters_billions)
        per_gpu = self.parameters_billions / max(1, self.tensor_parallel_size)
        return LAYER_SHARE * layers / reference.layers + (1 - LAYER_SHARE) * per_gpu / reference.parameters_billions


def estimated_layers(parameters_billions: float) -> int:
    """Layers of a dense model of this size when nothing says: 32 x (params / 7.38 B)^0.35, at least one."""
    reference = calibration().reference_target
    return max(1, round(reference.layers * (parameters_billions / reference.parameters_billions) ** LAYERS_PER_PARAMETER_EXPONENT))


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


# ---------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationPoint:
    """One measured load point: its configuration, batch size, accepted length and step cost c over the baseline."""

    config: str
    method: str
    k: int
    acceptance: float
    role: str
    batch_size: int
    accepted_length: float
    step_cost: float
    growth_path: str | None = None

    @property
    def speedup(self) -> float:
        """Baseline TPOT over speculative TPOT, as measured."""
        return self.accepted_length / self.step_cost


@dataclass(frozen=True)
class Calibration:
    """The step-cost model's parameters per measured batch size, derived from the GPU measurements."""

    batch_sizes: tuple[int, ...]
    path_overhead: tuple[float, ...]  # per step, sync proposer paths, in reference-step units
    verification: tuple[float, ...]  # per draft token
    drafting: Mapping[int, tuple[float, ...]]  # k -> one reference draft pass, per pass
    growth: Mapping[str, tuple[float, ...]]  # growth path -> extra cost per accepted token
    reference_target: ModelSize
    reference_draft: ModelSize
    reference_pass_cost: float
    points: tuple[CalibrationPoint, ...] = field(repr=False)
    source: str = ""


@cache
def calibration() -> Calibration:
    """The packaged calibration, read and fitted once."""
    data = yaml.safe_load(resources.files("specserve.catalog").joinpath(CALIBRATION_FILE).read_text())
    return fit_calibration(data)


def fit_calibration(data: Mapping[str, Any]) -> Calibration:
    """Derive the cost model's per-batch-size parameters from measured series (the YAML's layout).

    c = accepted length x TPOT / baseline TPOT. Path overhead O = c - 1 of the look-up that never drafted;
    verification V = (c - 1) / k of the GPU look-up with nothing accepted; a draft pass D = (c - 1 - O - k V) / k
    of the draft with nothing accepted; growth per accepted token: least-squares slope through the origin of
    c - c(acceptance 0) against accepted length - 1, per batch size and path, never below 0.
    """
    sizes = tuple(int(b) for b in data["batchSizes"])
    reference = data["reference"]
    target = ModelSize(float(reference["target"]["parametersBillions"]), int(reference["target"]["layers"]))
    draft = ModelSize(float(reference["draft"]["parametersBillions"]), int(reference["draft"]["layers"]))
    points: list[CalibrationPoint] = []
    for session in data["sessions"]:
        baseline = session["baselineTpotMs"]
        for series in session["series"]:
            for b, (tpot, length), base in zip(sizes, series["points"], baseline, strict=True):
                points.append(CalibrationPoint(
                    config=series["config"], method=series["method"], k=int(series["k"]), acceptance=float(series["acceptance"]),
                    role=series["role"], batch_size=b, accepted_length=float(length), step_cost=float(length) * float(tpot) / float(base),
                    growth_path=series.get("growthPath"),
                ))

    def measured(role: str, b: int, k: int | None = None) -> CalibrationPoint:
        found = [p for p in points if p.role == role and p.batch_size == b and (k is None or p.k == k)]
        if len(found) != 1:
            raise ValueError(f"calibration needs exactly one {role} point at batch size {b}" + (f" and k={k}" if k else ""))
        return found[0]

    overhead = tuple(measured("pathOverhead", b).step_cost - 1 for b in sizes)
    verification = tuple((measured("verification", b).step_cost - 1) / measured("verification", b).k for b in sizes)
    drafting_ks = sorted({p.k for p in points if p.role == "drafting"})
    drafting = {
        k: tuple((measured("drafting", b, k).step_cost - 1 - o - k * v) / k for b, o, v in zip(sizes, overhead, verification))
        for k in drafting_ks
    }

    def zero_acceptance_cost(point: CalibrationPoint) -> float:
        if point.growth_path == "draft":
            return measured("drafting", point.batch_size, point.k).step_cost
        return measured("verification", point.batch_size, point.k).step_cost

    growth: dict[str, tuple[float, ...]] = {}
    for path in sorted({p.growth_path for p in points if p.role == "growth" and p.growth_path}):
        slopes = []
        for b in sizes:
            pairs = [(p.accepted_length - 1, p.step_cost - zero_acceptance_cost(p)) for p in points if p.role == "growth" and p.growth_path == path and p.batch_size == b]
            denominator = sum(x * x for x, _ in pairs)
            slopes.append(max(0.0, sum(x * y for x, y in pairs) / denominator) if denominator else 0.0)
        growth[path] = tuple(slopes)
    ratio = (LAYER_SHARE * draft.layers / target.layers + (1 - LAYER_SHARE) * draft.parameters_billions / target.parameters_billions)
    source = f"vLLM {reference['vllm']} on one {reference['gpu']}, {target.parameters_billions:g}B target, {draft.parameters_billions:g}B draft"
    return Calibration(sizes, overhead, verification, drafting, growth, target, draft, ratio, tuple(points), source)


# ---------------------------------------------------------------- step cost and speedup


@dataclass(frozen=True)
class StepCost:
    """c(b, k, acceptance): a speculative step's time over a k=0 step at the same batch size, term by term."""

    batch_size: float
    k: int
    accepted_length: float
    total: float
    path_overhead: float = 0.0
    verification: float = 0.0
    drafting: float = 0.0
    growth: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def zero_acceptance(self) -> float:
        """The textbook cost: what the step costs when nothing is accepted."""
        return self.total - self.growth

    def numbers(self) -> dict[str, float]:
        return {
            "total": round(self.total, 4), "path_overhead": round(self.path_overhead, 4), "verification": round(self.verification, 4),
            "drafting": round(self.drafting, 4), "growth": round(self.growth, 4),
        }


def step_cost(batch_size: float, k: int, accepted_length: float, proposer: Proposer) -> StepCost:
    """c(b, k, AL) = 1 + path overhead / target scale + k (verification + pass cost share x reference draft pass) + growth x (AL - 1).

    All terms are interpolated linearly in log batch size between the measured 1, 8, 32 and 128 and held beyond;
    a draft pass between the measured k = 2 and 4 is interpolated in k and held outside.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0:
        return StepCost(batch_size, 0, 1.0, 1.0)
    model = calibration()
    notes = []
    b = max(1.0, float(batch_size))
    if b > model.batch_sizes[-1]:
        notes.append(f"batch size {b:g} beyond the measured {model.batch_sizes[-1]}: costs held at {model.batch_sizes[-1]}")
    overhead = _at(model.path_overhead, b) / proposer.target_scale if proposer.method in SYNC_METHODS else 0.0
    verification = k * _at(model.verification, b)
    drafting = 0.0
    if proposer.kind != "lookup":
        ks = sorted(model.drafting)
        per_pass = _interpolate([float(x) for x in ks], [_at(model.drafting[x], b) for x in ks], float(k))
        if not ks[0] <= k <= ks[-1]:
            notes.append(f"k={k} outside the measured {ks[0]}-{ks[-1]}: draft pass cost held")
        drafting = k * per_pass * proposer.pass_cost / model.reference_pass_cost
    if not proposer.is_reference:
        notes.append(f"not a measured configuration: {proposer.basis}")
    length = max(1.0, accepted_length)
    growth = _at(model.growth[proposer.growth_path], b) * (length - 1)
    total = 1.0 + overhead + verification + drafting + growth
    return StepCost(float(batch_size), k, length, total, overhead, verification, drafting, growth, tuple(notes))


@dataclass(frozen=True)
class Estimate:
    """A predicted (or measured) speedup S(b, k) = baseline TPOT / speculative TPOT, with the evidence behind it."""

    batch_size: float
    k: int
    speedup: float
    evidence: Evidence
    accepted_length: float = 1.0
    cost: StepCost | None = None
    basis: str = ""
    notes: tuple[str, ...] = ()

    def numbers(self) -> dict[str, Any]:
        """Every number the estimate used, for status and events."""
        result: dict[str, Any] = {
            "batch_size": round(self.batch_size, 3), "k": self.k, "speedup": round(self.speedup, 4), "evidence": self.evidence,
            "accepted_length": round(self.accepted_length, 4),
        }
        if self.cost is not None:
            result["step_cost"] = self.cost.numbers()
        if self.basis:
            result["basis"] = self.basis
        if self.notes:
            result["notes"] = list(self.notes)
        return result

    def explain(self) -> str:
        """One line: 'b=8 k=2: AL 2.42 / c 2.56 (overhead 0.39 + verification 0.42 + drafting 0.31 + growth 0.45) = 0.94x [prior]'."""
        head = f"b={self.batch_size:g} k={self.k}"
        if self.k == 0:
            return f"{head}: no speculation, 1.00x [{self.evidence}]"
        if self.cost is None:
            return f"{head}: {self.speedup:.2f}x [{self.evidence}]" + (f" ({self.basis})" if self.basis else "")
        c = self.cost
        terms = f"overhead {c.path_overhead:.2f} + verification {c.verification:.2f} + drafting {c.drafting:.2f} + growth {c.growth:.2f}"
        return f"{head}: AL {self.accepted_length:.2f} / c {c.total:.2f} (1 + {terms}) = {self.speedup:.2f}x [{self.evidence}]"


def speedup(batch_size: float, k: int, per_position: Sequence[float], proposer: Proposer) -> Estimate:
    """The prior S(b, k) = AL(k) / c(b, k, AL(k)); S(b, 0) = 1."""
    if k == 0:
        return Estimate(float(batch_size), 0, 1.0, "prior", basis="no speculation")
    length = accepted_length(per_position, k)
    notes: tuple[str, ...] = ()
    if k > len(per_position):
        notes = (f"positions {len(per_position) + 1}-{k} extrapolated from the last conditional rate",)
    cost = step_cost(batch_size, k, length, proposer)
    basis = f"GPU calibration ({calibration().source}), {proposer.method}"
    return Estimate(float(batch_size), k, length / cost.total, "prior", length, cost, basis, notes + cost.notes)


def break_even_acceptance(batch_size: float, k: int, proposer: Proposer) -> float:
    """The acceptance rate (vLLM's accepted over drafted at k) at which the prior predicts no gain, S(b, k) = 1."""
    def gain(rate: float) -> float:
        return speedup(batch_size, k, per_position_for_acceptance_rate(rate, k), proposer).speedup - 1.0

    if k <= 0 or gain(1.0) <= 0:
        return 1.0
    if gain(0.0) >= 0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if gain(mid) < 0 else (low, mid)
    return (low + high) / 2


Estimator = Callable[[float, int], Estimate]


def prior_estimator(per_position: Sequence[float], proposer: Proposer) -> Estimator:
    """S(b, k) from the priors for fixed per-position acceptance: the estimator build_schedule takes. Rates are
    rounded to 0.01 (they only rank k), so a fleet's evaluations share the cached estimates."""
    rates = tuple(round(rate, 2) for rate in clean_per_position(per_position))
    return lambda batch_size, k: _cached_speedup(float(batch_size), k, rates, proposer)


@lru_cache(maxsize=65536)
def _cached_speedup(batch_size: float, k: int, rates: tuple[float, ...], proposer: Proposer) -> Estimate:
    return speedup(batch_size, k, rates, proposer)


def best_k(estimate: Estimator, batch_size: float, max_k: int, min_gain: float = 0.0) -> Estimate:
    """The k in 0..max_k with the highest speedup; k > 0 only if it beats 1 + min_gain; ties go to the smaller k."""
    best = estimate(batch_size, 0)
    for k in range(1, max(0, max_k) + 1):
        candidate = estimate(batch_size, k)
        if candidate.speedup > max(best.speedup, 1.0 + min_gain) + 1e-9:
            best = candidate
    return best


# ---------------------------------------------------------------- schedules


Range = tuple[int, int, int]


def k_for_batch(ranges: Sequence[Sequence[int]], batch_size: int, cap: int) -> int:
    """vLLM's lookup: the range holding the batch size, else the last range below it; never above cap."""
    k = cap
    for start, end, range_k in sorted(tuple(r) for r in ranges):
        if start > batch_size:
            break
        k = min(cap, range_k)
        if batch_size <= end:
            break
    return k


@dataclass(frozen=True)
class Bucket:
    """Batch sizes lo..hi (hi None: lo and every larger one), judged at one representative batch size."""

    lo: int
    hi: int | None

    @property
    def representative(self) -> float:
        """The geometric middle of the bucket; the open last bucket is judged at its start."""
        return float(self.lo) if self.hi is None else math.sqrt(self.lo * self.hi)

    def __str__(self) -> str:
        return f"{self.lo}+" if self.hi is None else f"{self.lo}-{self.hi}"


def buckets(starts: Sequence[int] = DEFAULT_BUCKET_STARTS, split_after: int | None = None) -> tuple[Bucket, ...]:
    """Buckets from their first batch sizes (the first must be 1); split_after also starts one at split_after + 1."""
    edges = sorted(set(starts) | ({split_after + 1} if split_after is not None else set()))
    if not edges or edges[0] != 1:
        raise ValueError("bucket starts must begin at batch size 1")
    return tuple(Bucket(lo, edges[i + 1] - 1 if i + 1 < len(edges) else None) for i, lo in enumerate(edges))


@dataclass(frozen=True)
class Schedule:
    """A k per batch-size range, in vLLM's num_speculative_tokens_per_batch_size form, with the estimates behind it.

    ranges: [lo, hi, k] covering 1 upwards; the last is written [lo, lo, k] and vLLM carries its k to every larger
    batch. choices: per bucket, the estimate of the k its range ended up with.
    """

    ranges: tuple[Range, ...]
    cap: int
    choices: tuple[tuple[Bucket, Estimate], ...] = ()

    def as_vllm(self) -> list[list[int]]:
        return [list(r) for r in self.ranges]

    def k_for(self, batch_size: int) -> int:
        return k_for_batch(self.ranges, batch_size, self.cap)

    def short(self) -> str:
        """The schedule in a few characters, e.g. 'k4<=8,0' or 'k4<=3,k2<=15,0'."""
        parts = [f"k{k}<={hi}" if k else f"0<={hi}" for _, hi, k in self.ranges[:-1]]
        last_k = self.ranges[-1][2]
        parts.append(f"k{last_k}" if last_k else "0")
        return ",".join(parts)

    def explain(self) -> list[str]:
        return [f"{bucket}: {estimate.explain()}" for bucket, estimate in self.choices]


def build_schedule(
    estimate: Estimator,
    max_k: int,
    *,
    bucket_starts: Sequence[int] = DEFAULT_BUCKET_STARTS,
    disable_above_batch_size: int | None = None,
    max_ranges: int = DEFAULT_MAX_RANGES,
    min_gain: float = 0.0,
    weights: Mapping[int, float] | None = None,
) -> Schedule:
    """The best k per batch-size bucket, merged into at most max_ranges ranges, never above max_k.

    Buckets above disable_above_batch_size get k = 0. Ranges are merged greedily where merging loses the least
    predicted speedup (summed over buckets, weighted by `weights` keyed by bucket start, default 1 each); a merged
    range takes the k with the highest weighted speedup over its buckets among those no bucket predicts slower than k = 0.
    """
    if max_k < 0 or max_ranges < 1:
        raise ValueError("max_k must be >= 0 and max_ranges >= 1")
    table = buckets(bucket_starts, disable_above_batch_size)
    weight = [float((weights or {}).get(bucket.lo, 1.0)) for bucket in table]
    allowed = [0 if disable_above_batch_size is not None and bucket.lo > disable_above_batch_size else max_k for bucket in table]
    estimates = [{k: estimate(bucket.representative, k) for k in range(0, cap + 1)} for bucket, cap in zip(table, allowed)]
    chosen = [best_k(lambda _b, k, e=e: e[k], bucket.representative, cap, min_gain).k for bucket, cap, e in zip(table, allowed, estimates)]

    groups: list[list[int]] = []  # bucket indices per range
    for index, k in enumerate(chosen):
        if groups and chosen[groups[-1][0]] == k:
            groups[-1].append(index)
        else:
            groups.append([index])
    group_k = [chosen[g[0]] for g in groups]

    def merged_k(indices: list[int]) -> tuple[int, float]:
        """The k a merged range takes and the weighted speedup it keeps."""
        cap = min(allowed[i] for i in indices)
        # a k predicted slower than none in any of the buckets is no option: merging never buys a slowdown
        fitting = [k for k in range(0, cap + 1) if k == 0 or all(estimates[i][k].speedup >= 1.0 for i in indices)]
        options = [(sum(weight[i] * estimates[i][k].speedup for i in indices), -k) for k in fitting]
        kept, negative_k = max(options)
        return -negative_k, kept

    while len(groups) > max_ranges:
        best: tuple[float, int, int] | None = None
        for left in range(len(groups) - 1):
            indices = groups[left] + groups[left + 1]
            k, kept = merged_k(indices)
            before = sum(weight[i] * estimates[i][group_k[j]].speedup for j in (left, left + 1) for i in groups[j])
            loss = before - kept
            if best is None or loss < best[0] - 1e-12:
                best = (loss, left, k)
        assert best is not None
        _, left, k = best
        groups[left: left + 2] = [groups[left] + groups[left + 1]]
        group_k[left: left + 2] = [k]
        # neighbours that now share a k become one range
        index = 0
        while index < len(groups) - 1:
            if group_k[index] == group_k[index + 1]:
                groups[index: index + 2] = [groups[index] + groups[index + 1]]
                group_k[index: index + 2] = [group_k[index]]
            else:
                index += 1

    ranges: list[Range] = []
    for position, (indices, k) in enumerate(zip(groups, group_k)):
        lo = table[indices[0]].lo
        hi = table[indices[-1]].hi
        last = position == len(groups) - 1
        ranges.append((lo, lo if last or hi is None else hi, k))
    choices = tuple((table[i], estimates[i][k]) for indices, k in zip(groups, group_k) for i in indices)
    return Schedule(tuple(ranges), max_k, choices)


def prior_schedule(per_position: Sequence[float], proposer: Proposer, max_k: int, **options: Any) -> Schedule:
    """build_schedule on the priors alone: what the GPU measurements say for this acceptance and proposer."""
    return build_schedule(prior_estimator(per_position, proposer), max_k, **options)


# ---------------------------------------------------------------- interpolation


def _at(values: Sequence[float], batch_size: float) -> float:
    """A per-batch-size parameter, linear in log batch size between the measured sizes and held outside them."""
    index, fraction = _position(float(batch_size))
    return values[index] if fraction == 0.0 else values[index] + fraction * (values[index + 1] - values[index])


@lru_cache(maxsize=4096)
def _position(batch_size: float) -> tuple[int, float]:
    """Where a batch size falls among the measured ones: (index, fraction towards the next); the policy asks for the
    same few bucket sizes for every serving, so this is computed once per size."""
    xs = [math.log(b) for b in calibration().batch_sizes]
    x = math.log(max(batch_size, 1.0))
    if x <= xs[0]:
        return 0, 0.0
    if x >= xs[-1]:
        return len(xs) - 1, 0.0
    index = next(i for i in range(len(xs) - 1) if x <= xs[i + 1])
    return index, (x - xs[index]) / (xs[index + 1] - xs[index])


def _interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise linear through (xs, ys), held constant outside."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]
