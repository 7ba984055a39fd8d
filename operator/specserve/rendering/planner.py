"""GPU memory budget of a SpeculativeServing: weights, KV cache and concurrency for every target variant, and its verdict.

Pure: spec in, Plan out. The only data read are the packaged catalogs (specserve.catalog).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from specserve import api, catalog
from specserve.rendering.sizing import (
    GIB,
    LONG_CONTEXT,
    METHODS_WITH_HEADS,
    NO_PROPOSER,
    Notes,
    ProposerWeights,
    TargetChoice,
    Weights,
    draft_bytes,
    gpu_memory_gib,
    kv_bytes_per_token,
    max_model_len,
    proposer_weights,
    target_weights,
)

# Memory vLLM needs besides weights and KV cache, per GPU: a fixed part for the CUDA context,
# NCCL and all-reduce buffers and captured CUDA graphs, plus a share of the weights on that GPU
# for the activation peak of vLLM's profiling run (wider models have larger activations).
ALLOWANCE_GIB_PER_GPU = 1.5
ALLOWANCE_SHARE_OF_WEIGHTS = 0.05

MAX_DRAFT_SHARE_OF_VRAM = 0.15
MAX_TARGET_SHARE_WITH_DRAFT = 0.70
DRAFT_RATIO_SWEET_SPOT = (8.0, 12.0)


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class VariantPlan:
    """The budget of one target variant (name None: the plain target) with the spec's proposer."""

    name: str | None
    target_model: str
    target_precision: str | None = None
    draft_model: str | None = None
    draft_precision: str | None = None
    gpu_memory_gib: float | None = None
    target_weights_gib: float | None = None
    draft_weights_gib: float | None = None
    usable_vram_gib: float | None = None
    allowance_gib: float | None = None
    kv_cache_gib: float | None = None
    kv_bytes_per_token: int | None = None
    kv_cache_tokens: int | None = None
    max_model_len: int | None = None
    max_concurrent_sequences: int | None = None
    draft_share_of_vram: float | None = None
    target_share_of_gpu_memory: float | None = None
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "targetModel": self.target_model,
            "targetPrecision": self.target_precision,
            "draftModel": self.draft_model,
            "draftPrecision": self.draft_precision,
            "targetWeightsGiB": _round(self.target_weights_gib, 3),
            "draftWeightsGiB": _round(self.draft_weights_gib, 3),
            "usableVramGiB": _round(self.usable_vram_gib, 3),
            "allowanceGiB": _round(self.allowance_gib, 3),
            "kvCacheGiB": _round(self.kv_cache_gib, 3),
            "kvBytesPerToken": self.kv_bytes_per_token,
            "kvCacheTokens": self.kv_cache_tokens,
            "maxModelLen": self.max_model_len,
            "maxConcurrentSequences": self.max_concurrent_sequences,
            "draftShareOfVram": _round(self.draft_share_of_vram, 4),
            "targetShareOfGpuMemory": _round(self.target_share_of_gpu_memory, 4),
            "fits": self.fits,
            "verdict": judge(self).reason,
            "warnings": list(self.warnings),
            "errors": list(self.errors),
        }


@dataclass(frozen=True)
class Plan:
    """Budgets of every variant; `active` is the one the spec starts on."""

    active: VariantPlan
    variants: tuple[VariantPlan, ...]

    def to_json(self) -> dict[str, Any]:
        return {**self.active.to_json(), "activeVariant": self.active.name, "variants": [v.to_json() for v in self.variants]}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------- entry points


def plan(spec: api.SpeculativeServingSpec, speculation: bool = True) -> Plan:
    """The memory budget of every target variant; speculation=False plans without the proposer."""
    choices = _target_choices(spec)
    plans = tuple(_plan_variant(spec, choice, speculation) for choice in choices)
    active_name = spec.target.active_variant or choices[0].name
    active = next(p for p in plans if p.name == active_name)
    return Plan(active=active, variants=plans if spec.target.variants else ())


def fitting_variants(spec: api.SpeculativeServingSpec) -> set[str]:
    """Names of the declared variants whose budget fits, speculation on."""
    return {v.name for v in plan(spec).variants if v.fits and v.name is not None}


def _target_choices(spec: api.SpeculativeServingSpec) -> list[TargetChoice]:
    target = spec.target
    if not target.variants:
        return [TargetChoice(None, target.model, target.quantization, None, "spec.target")]
    return [TargetChoice(v.name, v.model, v.quantization, v.architecture, f"spec.target.variants[{i}]") for i, v in enumerate(target.variants)]


def _plan_variant(spec: api.SpeculativeServingSpec, choice: TargetChoice, speculation: bool) -> VariantPlan:
    notes = Notes()
    gpu_gib = gpu_memory_gib(spec.gpu, notes)
    target = target_weights(spec, choice, notes)
    proposer = proposer_weights(spec, target, notes) if speculation else NO_PROPOSER
    max_len = max_model_len(spec, choice, target, notes)
    result = VariantPlan(
        name=choice.name,
        target_model=choice.model,
        target_precision=target.precision if target else None,
        draft_model=proposer.weights.model if proposer and proposer.weights else None,
        draft_precision=proposer.weights.precision if proposer and proposer.weights else None,
        gpu_memory_gib=gpu_gib,
        target_weights_gib=target.bytes / GIB if target else None,
        draft_weights_gib=draft_bytes(proposer) / GIB if proposer else None,
        max_model_len=max_len,
    )
    if gpu_gib is not None and target is not None and proposer is not None:
        result = _budget(result, spec, target, proposer, gpu_gib)
        _judge(result, spec, target, proposer, notes)
    return dataclasses.replace(result, warnings=tuple(notes.warnings), errors=tuple(notes.errors))


# ---------------------------------------------------------------- the budget


def _budget(result: VariantPlan, spec: api.SpeculativeServingSpec, target: Weights, proposer: ProposerWeights, gpu_gib: float) -> VariantPlan:
    """Usable VRAM, what the weights and the allowance leave of it for KV cache, and what that cache holds.

    Weights and KV cache are summed over all GPUs: vLLM shards the draft with the target's tensor
    parallelism (0.33 refuses any other draft TP for draft_model), so no GPU holds more than its share.
    """
    gpus = spec.gpu.count
    gpu_bytes = gpus * gpu_gib * GIB
    usable = gpu_bytes * spec.engine.gpu_memory_utilization
    weights = target.bytes + draft_bytes(proposer)
    allowance = activation_allowance(gpus, weights)
    kv_cache = usable - weights - allowance
    per_token = kv_bytes_per_token(target.architecture, target.architecture.layers or 0, gpus, spec.engine)
    if proposer.kv_shape is not None:
        per_token += kv_bytes_per_token(proposer.kv_shape, proposer.kv_layers, gpus, spec.engine)
    tokens = max(0, math.floor(kv_cache / per_token)) if per_token else 0
    return dataclasses.replace(
        result,
        usable_vram_gib=usable / GIB,
        allowance_gib=allowance / GIB,
        kv_cache_gib=max(0.0, kv_cache) / GIB,
        kv_bytes_per_token=per_token,
        kv_cache_tokens=tokens,
        max_concurrent_sequences=tokens // result.max_model_len if result.max_model_len else None,
        draft_share_of_vram=draft_bytes(proposer) / usable,
        target_share_of_gpu_memory=target.bytes / gpu_bytes,
    )


def activation_allowance(gpus: int, weight_bytes: float) -> float:
    """Bytes reserved for activations, CUDA graphs and runtime buffers: ALLOWANCE_GIB_PER_GPU per GPU plus ALLOWANCE_SHARE_OF_WEIGHTS of the weights."""
    return gpus * ALLOWANCE_GIB_PER_GPU * GIB + ALLOWANCE_SHARE_OF_WEIGHTS * weight_bytes


# ---------------------------------------------------------------- verdicts


def _judge(result: VariantPlan, spec: api.SpeculativeServingSpec, target: Weights, proposer: ProposerWeights, notes: Notes) -> None:
    """The framework's memory rules, as errors (nothing may be applied) and warnings."""
    assert result.usable_vram_gib is not None and result.allowance_gib is not None
    weights_gib = (result.target_weights_gib or 0.0) + (result.draft_weights_gib or 0.0)
    short = weights_gib + result.allowance_gib - result.usable_vram_gib
    if short >= 0:
        notes.errors.append(
            f"does not fit: weights {weights_gib:.1f} GiB plus the {result.allowance_gib:.1f} GiB activation allowance exceed the usable "
            f"{result.usable_vram_gib:.1f} GiB ({spec.gpu.count} x {result.gpu_memory_gib:g} GiB x {spec.engine.gpu_memory_utilization:g}) by {short:.1f} GiB"
        )
    elif result.max_model_len is not None and (result.kv_cache_tokens or 0) < result.max_model_len:
        notes.errors.append(
            f"the KV cache ({result.kv_cache_gib:.1f} GiB) holds {result.kv_cache_tokens:,} tokens, fewer than one sequence of max model length "
            f"{result.max_model_len:,}: lower spec.engine.maxModelLen, quantize, or add GPUs"
        )
    if proposer.weights is None:
        return
    _judge_shares(result, notes)
    _judge_pairing(target, proposer, notes)


def _judge_shares(result: VariantPlan, notes: Notes) -> None:
    draft_share = result.draft_share_of_vram or 0.0
    target_share = result.target_share_of_gpu_memory or 0.0
    if draft_share > MAX_DRAFT_SHARE_OF_VRAM:
        notes.warnings.append(
            f"the draft takes {draft_share:.0%} of usable VRAM (more than {MAX_DRAFT_SHARE_OF_VRAM:.0%}): every byte of draft weights is a byte less of KV cache"
        )
    if target_share > MAX_TARGET_SHARE_WITH_DRAFT:
        longer = " at long contexts even more so" if (result.max_model_len or 0) >= LONG_CONTEXT else ""
        notes.warnings.append(
            f"the target alone takes {target_share:.0%} of GPU memory (more than {MAX_TARGET_SHARE_WITH_DRAFT:.0%}) while a draft is configured: "
            f"the draft will cut concurrency{longer}; measure under load first"
        )


def _judge_pairing(target: Weights, proposer: ProposerWeights, notes: Notes) -> None:
    draft = proposer.weights
    assert draft is not None
    if proposer.method == api.SpeculationMethod.DRAFT_MODEL:
        ratio = (target.architecture.parameters_billions or 0.0) / (draft.architecture.parameters_billions or 1.0)
        low, high = DRAFT_RATIO_SWEET_SPOT
        if not low <= ratio <= high:
            notes.warnings.append(
                f"draft:target size ratio is 1:{ratio:.{1 if ratio < 20 else 0}f} ({draft.architecture.parameters_billions:g}B for "
                f"{target.architecture.parameters_billions:g}B); 1:{low:g} to 1:{high:g} is the sweet spot: a much smaller draft guesses poorly, a larger one costs too much"
            )
    families = (draft.architecture.tokenizer_family, target.architecture.tokenizer_family)
    if None not in families and families[0] != families[1]:
        notes.warnings.append(f"the draft's tokenizer family {families[0]!r} differs from the target's {families[1]!r}: acceptance will suffer or vLLM will refuse the pair")
    trained_for = draft.architecture.trained_for
    if proposer.method in METHODS_WITH_HEADS and trained_for and catalog.model_architectures().get(trained_for) and trained_for != target.architecture.name:
        notes.warnings.append(f"the {proposer.method} head {draft.model!r} was trained for {trained_for}, the target is {target.architecture.name}")


VERDICTS = ("Fits", "FitsWithWarnings", "CannotJudge", "DoesNotFit")  # the MemoryBudget condition's reasons
REFUSED_REASON = "MemoryBudgetExceeded"  # Accepted=False reason when a verdict blocks (reconcile.reconcile)


@dataclass(frozen=True)
class Verdict:
    """The MemoryBudget condition for the active variant, and whether nothing may be applied."""

    status: str  # "True", "False" or "Unknown"
    reason: str  # one of VERDICTS
    message: str
    blocking: bool


def verdict(budget: Plan) -> Verdict:
    """The one rule for a whole serving: the operator refuses to apply it, and `specserve plan` and `render` exit 1, exactly when `blocking`."""
    return judge(budget.active)


def judge(variant: VariantPlan) -> Verdict:
    """The verdict on one variant: DoesNotFit blocks; CannotJudge (something unknown) and FitsWithWarnings do not."""
    judged = None not in (variant.usable_vram_gib, variant.target_weights_gib, variant.kv_cache_gib, variant.max_concurrent_sequences)
    summary = _summary(variant) if judged else ""
    if variant.errors and judged:
        return Verdict("False", "DoesNotFit", "; ".join(variant.errors) + summary, blocking=True)
    if variant.errors:
        return Verdict("Unknown", "CannotJudge", "; ".join(variant.errors), blocking=False)
    if variant.warnings:
        return Verdict("True", "FitsWithWarnings", "; ".join(variant.warnings) + summary, blocking=False)
    return Verdict("True", "Fits", summary.lstrip("; "), blocking=False)


def _summary(variant: VariantPlan) -> str:
    return (
        f"; weights {variant.target_weights_gib or 0:.1f} GiB target + {variant.draft_weights_gib or 0:.1f} GiB draft of {variant.usable_vram_gib:.1f} GiB usable,"
        f" KV cache {variant.kv_cache_gib:.1f} GiB = {variant.max_concurrent_sequences} sequences at {variant.max_model_len} tokens"
    )
