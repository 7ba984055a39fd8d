"""Catalogs shipped as data files: GPU products, model architectures and quantization rules.

Read once from the package's YAML files; lookups are case-insensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml


def _load(name: str) -> Any:
    return yaml.safe_load(resources.files(__package__).joinpath(name).read_text())


# ---------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class GpuProduct:
    name: str
    memory_gib: float
    gfd_product: str


@cache
def gpu_products() -> dict[str, GpuProduct]:
    return {
        entry["name"].lower(): GpuProduct(entry["name"], float(entry["memoryGiB"]), entry["gfdProduct"])
        for entry in _load("gpus.yaml")
    }


def gpu_product(name: str) -> GpuProduct | None:
    return gpu_products().get(name.lower())


# ---------------------------------------------------------------- model architectures


@dataclass(frozen=True)
class LatentAttention:
    """DeepSeek's multi-head latent attention: one compressed vector per layer and token."""

    kv_lora_rank: int
    rope_head_dim: int


@dataclass(frozen=True)
class MtpModule:
    parameters_billions: float
    layers: int


@dataclass(frozen=True)
class Architecture:
    """What the memory planner needs to know about a model; None where unknown."""

    name: str
    kind: str = "dense"
    parameters_billions: float | None = None
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    max_context: int | None = None
    tokenizer_family: str | None = None
    precision: str | None = None
    latent_attention: LatentAttention | None = None
    mtp: MtpModule | None = None
    trained_for: str | None = None
    checkpoints: tuple[str, ...] = ()


@cache
def model_architectures() -> dict[str, Architecture]:
    return {entry["name"]: _architecture(entry) for entry in _load("models.yaml")["architectures"]}


def _architecture(entry: dict[str, Any]) -> Architecture:
    latent = entry.get("latentAttention")
    mtp = entry.get("mtp")
    return Architecture(
        name=entry["name"],
        kind=entry.get("kind", "dense"),
        parameters_billions=entry.get("parametersBillions"),
        layers=entry.get("layers"),
        kv_heads=entry.get("kvHeads"),
        head_dim=entry.get("headDim"),
        max_context=entry.get("maxContext"),
        tokenizer_family=entry.get("tokenizerFamily"),
        precision=entry.get("precision"),
        latent_attention=LatentAttention(latent["kvLoraRank"], latent["ropeHeadDim"]) if latent else None,
        mtp=MtpModule(float(mtp["parametersBillions"]), mtp["layers"]) if mtp else None,
        trained_for=entry.get("trainedFor"),
        checkpoints=tuple(entry.get("checkpoints", ())),
    )


@cache
def _by_checkpoint_id() -> dict[str, Architecture]:
    return {cid.lower(): arch for arch in model_architectures().values() for cid in arch.checkpoints}


@cache
def _by_checkpoint_name() -> dict[str, Architecture]:
    return {checkpoint_name(cid): arch for arch in model_architectures().values() for cid in arch.checkpoints}


def checkpoint_name(ref: str) -> str:
    """The last path segment of a model reference, lowercased: 'hf://Qwen/Qwen2.5-7B-Instruct' -> 'qwen2.5-7b-instruct'."""
    return ref.rstrip("/").rsplit("/", 1)[-1].lower()


def model_architecture(ref: str) -> Architecture | None:
    """The catalog entry of a model reference, by the three rules stated at the top of models.yaml."""
    key = ref.removeprefix("hf://").rstrip("/").lower()
    name = checkpoint_name(key)
    return _by_checkpoint_id().get(key) or _by_checkpoint_name().get(name) or _by_checkpoint_name().get(strip_quantization_suffix(name))


def strip_quantization_suffix(name: str) -> str:
    """Drop trailing '-'-separated parts made only of quantization words: 'x-gptq-int8' -> 'x'."""
    words = quantization_rules().suffix_words
    parts = name.split("-")
    while len(parts) > 1 and all(token in words for token in _tokens(parts[-1])):
        parts.pop()
    return "-".join(parts)


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[-_./]", text.lower()) if t]


# ---------------------------------------------------------------- quantization


@dataclass(frozen=True)
class QuantizationRules:
    bytes_per_parameter: dict[str, float]
    methods: dict[str, str]
    by_name: dict[str, str]
    name_hints: tuple[tuple[str, str], ...]
    suffix_words: frozenset[str]


@cache
def quantization_rules() -> QuantizationRules:
    data = _load("quantization.yaml")
    return QuantizationRules(
        bytes_per_parameter={k: float(v) for k, v in data["bytesPerParameter"].items()},
        methods=dict(data["methods"]),
        by_name=dict(data["byName"]),
        name_hints=tuple((token, precision) for token, precision in data["nameHints"]),
        suffix_words=frozenset(data["suffixWords"]),
    )


def name_precision(ref: str) -> str | None:
    """The precision a checkpoint's name states ('...-GPTQ-Int8' -> int8), or None."""
    tokens = set(_tokens(checkpoint_name(ref)))
    return next((precision for token, precision in quantization_rules().name_hints if token in tokens), None)
