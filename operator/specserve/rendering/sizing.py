"""What a serving's parts weigh on its GPUs: GPU memory, target and proposer weights at their precision, KV bytes
per token and the context length - each resolved from the spec and the catalogs, with notes on what could not be.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from specserve import api, catalog

GIB = 2**30


HEAD_LAYERS = 1  # EAGLE and EAGLE-3 heads are one decoder layer unless described otherwise


LONG_CONTEXT = 32768


FLOAT32_DTYPES = ("float", "float32")


FP8_KV_DTYPES = ("fp8", "fp8_e4m3", "fp8_e5m2")


METHODS_WITH_HEADS = (api.SpeculationMethod.EAGLE, api.SpeculationMethod.EAGLE3)


@dataclass(frozen=True)
class TargetChoice:
    name: str | None
    model: str
    quantization: str | None
    architecture: api.ModelArchitecture | None
    field: str  # where the spec describes this checkpoint, for messages


@dataclass
class Notes:
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Weights:
    """A checkpoint resolved to an architecture and a precision."""

    model: str
    architecture: catalog.Architecture
    precision: str
    bytes: float


@dataclass(frozen=True)
class ProposerWeights:
    """What speculation adds: weights, and KV layers of a given attention shape."""

    method: str
    weights: Weights | None = None
    kv_layers: int = 0
    kv_shape: catalog.Architecture | None = None


NO_PROPOSER = ProposerWeights("none")


def draft_bytes(proposer: ProposerWeights | None) -> float:
    return proposer.weights.bytes if proposer and proposer.weights else 0.0


def gpu_memory_gib(gpu: api.GpuSpec, notes: Notes) -> float | None:
    if gpu.memory_gib is not None:
        return gpu.memory_gib
    if gpu.product is None:
        notes.errors.append("GPU memory is unknown: set spec.gpu.product (a catalog product) or spec.gpu.memoryGiB")
        return None
    product = catalog.gpu_product(gpu.product)
    if product is None:
        known = ", ".join(p.name for p in catalog.gpu_products().values())
        notes.errors.append(f"spec.gpu.product {gpu.product!r} is not in the GPU catalog ({known}): set spec.gpu.memoryGiB")
        return None
    return product.memory_gib


def target_weights(spec: api.SpeculativeServingSpec, choice: TargetChoice, notes: Notes) -> Weights | None:
    architecture = _architecture(
        choice.model,
        fallbacks=[catalog.model_architecture(spec.target.model)],
        overrides=[spec.target.architecture, choice.architecture],
    )
    if not _described(architecture, choice.model, f"{choice.field}.architecture", ["parameters_billions", "layers", *_kv_fields(architecture)], notes):
        return None
    precision = _precision(choice.model, choice.quantization, spec.engine.dtype, f"{choice.field}.quantization", notes)
    return Weights(choice.model, architecture, precision, weight_bytes(architecture.parameters_billions, precision))


def _architecture(model: str, fallbacks: list[catalog.Architecture | None], overrides: list[api.ModelArchitecture | None]) -> catalog.Architecture:
    """The catalog entry of the model (else the first fallback found), with each spec description laid over it."""
    base = catalog.model_architecture(model) or next((f for f in fallbacks if f is not None), None) or catalog.Architecture(name=model)
    for override in overrides:
        if override is not None:
            base = dataclasses.replace(base, **override.model_dump(exclude_none=True))
    return base


def _kv_fields(architecture: catalog.Architecture) -> list[str]:
    return [] if architecture.latent_attention else ["kv_heads", "head_dim"]


def _described(architecture: catalog.Architecture, model: str, field_path: str, needed: list[str], notes: Notes) -> bool:
    missing = [name for name in needed if getattr(architecture, name) is None]
    if missing:
        listed = ", ".join(api.ModelArchitecture.model_fields[name].alias or name for name in missing)
        notes.errors.append(f"model {model!r} is not in the model catalog: describe it in {field_path} ({listed})")
    return not missing


def _precision(model: str, quantization: str | None, dtype: str, field_path: str, notes: Notes) -> str:
    """Precision of a checkpoint's weights, by the order stated at the top of catalog/quantization.yaml."""
    rules = catalog.quantization_rules()
    unquantized = "fp32" if dtype in FLOAT32_DTYPES else "bf16"
    if quantization is not None:
        if quantization in rules.methods:
            return rules.methods[quantization]
        if quantization in rules.by_name:
            hinted = catalog.name_precision(model)
            if hinted is None:
                notes.warnings.append(f"{field_path} {quantization!r}: the checkpoint name states no precision, assumed {rules.by_name[quantization]}")
            return hinted or rules.by_name[quantization]
        notes.warnings.append(f"{field_path} {quantization!r} is unknown to the planner: weights counted at {rules.bytes_per_parameter[unquantized]:g} bytes per parameter")
        return unquantized
    own_entry = catalog.model_architecture(model)
    return (own_entry.precision if own_entry else None) or catalog.name_precision(model) or unquantized


def weight_bytes(parameters_billions: float | None, precision: str) -> float:
    return (parameters_billions or 0.0) * 1e9 * catalog.quantization_rules().bytes_per_parameter[precision]


def proposer_weights(spec: api.SpeculativeServingSpec, target: Weights | None, notes: Notes) -> ProposerWeights | None:
    """What the spec's speculation method adds; None when its model is undescribed (an error is noted)."""
    speculation = spec.speculation
    method = speculation.method
    if method in api.METHODS_WITHOUT_DRAFT:
        return ProposerWeights(method)
    if method == api.SpeculationMethod.MTP:
        return _mtp(spec, target, notes)
    draft = speculation.draft
    assert draft is not None  # the API requires a draft for the remaining methods
    architecture = _architecture(draft.model, fallbacks=[], overrides=[draft.architecture])
    # A head's KV shape is its target's, so only a separate draft model must state its own.
    needed = ["parameters_billions", "layers", *_kv_fields(architecture)] if method == api.SpeculationMethod.DRAFT_MODEL else ["parameters_billions"]
    if not _described(architecture, draft.model, "spec.speculation.draft.architecture", needed, notes):
        return None
    precision = _precision(draft.model, draft.quantization, spec.engine.dtype, "spec.speculation.draft.quantization", notes)
    weights = Weights(draft.model, architecture, precision, weight_bytes(architecture.parameters_billions, precision))
    if method == api.SpeculationMethod.DRAFT_MODEL:
        return ProposerWeights(method, weights, architecture.layers or 0, architecture)
    # EAGLE heads attend like their target: their KV layers have the target's shape.
    return ProposerWeights(method, weights, architecture.layers or HEAD_LAYERS, target.architecture if target else None)


def _mtp(spec: api.SpeculativeServingSpec, target: Weights | None, notes: Notes) -> ProposerWeights | None:
    """The target's own multi-token-prediction module: described as the draft, else from the catalog."""
    if target is None:
        return None
    draft = spec.speculation.draft
    described = draft.architecture if draft and draft.architecture else api.ModelArchitecture()
    module = target.architecture.mtp
    parameters = described.parameters_billions or (module.parameters_billions if module else None)
    layers = described.layers or (module.layers if module else None)
    if parameters is None or layers is None:
        notes.errors.append(
            f"model {target.model!r} has no MTP module in the model catalog: describe it in spec.speculation.draft.architecture (parametersBillions, layers)"
        )
        return None
    precision = target.precision
    if draft is not None and draft.quantization is not None:
        precision = _precision(draft.model, draft.quantization, spec.engine.dtype, "spec.speculation.draft.quantization", notes)
    weights = Weights(draft.model if draft else f"{target.model} (MTP module)", target.architecture, precision, weight_bytes(parameters, precision))
    return ProposerWeights(api.SpeculationMethod.MTP, weights, layers, target.architecture)


def max_model_len(spec: api.SpeculativeServingSpec, choice: TargetChoice, target: Weights | None, notes: Notes) -> int | None:
    if spec.engine.max_model_len is not None:
        return spec.engine.max_model_len
    if target is None:
        return None
    if target.architecture.max_context is None:
        notes.errors.append(f"max model length is unknown for {choice.model!r}: set spec.engine.maxModelLen or maxContext in {choice.field}.architecture")
    return target.architecture.max_context


def kv_bytes_per_token(shape: catalog.Architecture, layers: int, gpus: int, engine: api.Engine) -> int:
    """KV cache bytes one token takes over all tensor-parallel GPUs, for `layers` layers of this attention shape.

    Standard attention: 2 (K and V) x layers x KV heads x head dim x bytes, the heads split across
    GPUs as vLLM does (max(1, heads // GPUs) each: replicated when GPUs outnumber them).
    Latent attention (MLA): layers x (kvLoraRank + ropeHeadDim) x bytes, kept whole on every GPU.
    """
    element = _kv_element_bytes(engine)
    if shape.latent_attention is not None:
        latent = shape.latent_attention
        return gpus * layers * (latent.kv_lora_rank + latent.rope_head_dim) * element
    heads_per_gpu = max(1, (shape.kv_heads or 0) // gpus)
    return gpus * 2 * layers * heads_per_gpu * (shape.head_dim or 0) * element


def _kv_element_bytes(engine: api.Engine) -> int:
    if engine.kv_cache_dtype in FP8_KV_DTYPES:
        return 1
    if engine.kv_cache_dtype == "auto" and engine.dtype in FLOAT32_DTYPES:
        return 4
    return 2
