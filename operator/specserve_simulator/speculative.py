"""The --speculative-config JSON as vLLM 0.33 judges it: known keys, methods and per-batch-size schedules.

Anything vLLM refuses raises SpeculativeConfigError with a message naming the key; the result is a Speculation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

NGRAM_METHODS = frozenset({"ngram", "ngram_gpu", "suffix"})
HEAD_METHODS = frozenset({"eagle", "eagle3", "mtp", "dflash", "dspark", "extract_hidden_states"})
DRAFT_METHODS = frozenset({"draft_model", "custom_class"})
METHODS = NGRAM_METHODS | HEAD_METHODS | DRAFT_METHODS
METHODS_NEEDING_MODEL = frozenset({"draft_model", "eagle", "eagle3", "dflash", "dspark"})
REMOVED_METHODS = {"medusa": "Medusa heads are no longer supported", "mlp_speculator": "MLP speculators are no longer supported"}
DEFAULT_TOKENS = {"mtp": 1, "suffix": 24}  # vLLM takes these from the checkpoint or the suffix tree depth
REJECTION_SAMPLE_METHODS = frozenset({"standard", "synthetic", "block", "fly"})

REMOVED_KEYS = {
    "disable_by_batch_size": "use num_speculative_tokens_per_batch_size, e.g. [[1, 32, 4], [33, 33, 0]]",
    "acceptance_method": "the typical acceptance sampler is gone; see rejection_sample_method",
    "posterior_threshold": "the typical acceptance sampler is gone",
    "posterior_alpha": "the typical acceptance sampler is gone",
    "tensor_parallel_size": "use draft_tensor_parallel_size",
}
KNOWN_KEYS = frozenset(
    {
        "method",
        "model",
        "num_speculative_tokens",
        "draft_tensor_parallel_size",
        "quantization",
        "max_model_len",
        "revision",
        "code_revision",
        "prompt_lookup_min",
        "prompt_lookup_max",
        "rejection_sample_method",
        "num_speculative_tokens_per_batch_size",
        "enforce_eager",
        "disable_padded_drafter_batch",
        "kv_cache_dtype",
        "attention_backend",
        "moe_backend",
        "parallel_drafting",
        "draft_sample_method",
        "synthetic_acceptance_rates",
        "synthetic_acceptance_length",
        "use_local_argmax_reduction",
        "disable_eagle_block_drop",
        "use_heterogeneous_vocab",
        "draft_load_config",
        "suffix_decoding_max_tree_depth",
        "suffix_decoding_max_cached_requests",
        "suffix_decoding_max_spec_factor",
        "suffix_decoding_min_token_prob",
    }
)


class SpeculativeConfigError(ValueError):
    """vLLM would refuse this speculative configuration."""


@dataclass(frozen=True)
class Speculation:
    """A validated speculative configuration, reduced to what the simulator models."""

    method: str
    num_speculative_tokens: int
    model: str | None = None
    quantization: str | None = None
    draft_tensor_parallel_size: int | None = None
    per_batch_size: tuple[tuple[int, int, int], ...] = ()

    @property
    def proposer(self) -> str:
        """ngram (prompt lookup, no weights), head (EAGLE/MTP trained on the target) or draft (a separate model)."""
        if self.method in NGRAM_METHODS:
            return "ngram"
        if self.method in HEAD_METHODS:
            return "head"
        return "draft"

    def tokens_for_batch(self, batch_size: int) -> int:
        """k at this batch size: the range holding it, else the last range before it (vLLM's dense lookup)."""
        k = self.num_speculative_tokens
        for start, end, range_k in self.per_batch_size:
            if start > batch_size:
                break
            k = min(self.num_speculative_tokens, range_k)
            if batch_size <= end:
                break
        return k


def parse(text: str, target_tensor_parallel_size: int = 1) -> Speculation:
    """Parse and validate --speculative-config's JSON; keys may use - or _."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpeculativeConfigError(f"--speculative-config is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise SpeculativeConfigError("--speculative-config must be a JSON object")
    return from_dict(raw, target_tensor_parallel_size)


def from_dict(raw: dict[str, Any], target_tensor_parallel_size: int = 1) -> Speculation:
    config = {str(key).replace("-", "_"): value for key, value in raw.items()}
    _check_keys(config)
    method = _method(config)
    _check_lookup_and_sampler(config, method)
    return Speculation(
        method=method,
        num_speculative_tokens=_num_speculative_tokens(config, method),
        model=_optional_str(config, "model"),
        quantization=_optional_str(config, "quantization"),
        draft_tensor_parallel_size=_draft_tensor_parallel_size(config, target_tensor_parallel_size),
        per_batch_size=_per_batch_size(config.get("num_speculative_tokens_per_batch_size")),
    )


def _check_keys(config: dict[str, Any]) -> None:
    for key in config:
        if key in REMOVED_KEYS:
            raise SpeculativeConfigError(f"speculative config key {key!r} was removed from vLLM: {REMOVED_KEYS[key]}")
    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        raise SpeculativeConfigError(f"unknown speculative config key(s) {', '.join(map(repr, unknown))} (extra inputs are not permitted)")


def _method(config: dict[str, Any]) -> str:
    method = config.get("method")
    model = config.get("model")
    if method is None:
        if not model:
            raise SpeculativeConfigError("speculative config needs a 'method' when it names no 'model'")
        name = str(model).lower()
        return "eagle3" if "eagle3" in name else "eagle" if "eagle" in name else "draft_model"
    if not isinstance(method, str):
        raise SpeculativeConfigError(f"speculative config 'method' must be a string, got {method!r}")
    if method in REMOVED_METHODS:
        raise SpeculativeConfigError(f"speculative method {method!r} was removed from vLLM: {REMOVED_METHODS[method]}")
    if method.endswith("_mtp"):  # model-specific MTP names (deepseek_mtp, ...) are aliases of mtp
        return "mtp"
    if method not in METHODS:
        raise SpeculativeConfigError(f"unknown speculative method {method!r}; expected one of {', '.join(sorted(METHODS))}")
    if method in METHODS_NEEDING_MODEL and not model:
        raise SpeculativeConfigError(f"speculative method {method!r} needs a 'model'")
    return method


def _num_speculative_tokens(config: dict[str, Any], method: str) -> int:
    k = config.get("num_speculative_tokens")
    if k is None:
        if method in DEFAULT_TOKENS:
            return DEFAULT_TOKENS[method]
        raise SpeculativeConfigError(f"speculative method {method!r} needs 'num_speculative_tokens'")
    if not _is_int(k) or k <= 0:
        raise SpeculativeConfigError(f"'num_speculative_tokens' must be an integer greater than 0, got {k!r}")
    return k


def _check_lookup_and_sampler(config: dict[str, Any], method: str) -> None:
    for key in ("max_model_len", "prompt_lookup_min", "prompt_lookup_max"):
        value = config.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            raise SpeculativeConfigError(f"{key!r} must be an integer of at least 1, got {value!r}")
    low, high = config.get("prompt_lookup_min"), config.get("prompt_lookup_max")
    if method in ("ngram", "ngram_gpu") and low is not None and high is not None and low > high:
        raise SpeculativeConfigError(f"'prompt_lookup_min' ({low}) must not exceed 'prompt_lookup_max' ({high})")
    sampler = config.get("rejection_sample_method", "standard")
    if sampler not in REJECTION_SAMPLE_METHODS:
        raise SpeculativeConfigError(f"'rejection_sample_method' must be one of {', '.join(sorted(REJECTION_SAMPLE_METHODS))}, got {sampler!r}")


def _draft_tensor_parallel_size(config: dict[str, Any], target: int) -> int | None:
    value = config.get("draft_tensor_parallel_size")
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise SpeculativeConfigError(f"'draft_tensor_parallel_size' must be an integer of at least 1, got {value!r}")
    if value not in (1, target):
        raise SpeculativeConfigError(f"'draft_tensor_parallel_size' must be 1 or the target's tensor parallel size ({target}), got {value}")
    return value


def _per_batch_size(schedule: Any) -> tuple[tuple[int, int, int], ...]:
    """vLLM's rules: [start, end, k] entries, inclusive, positive, sorted without overlap, first at 1, k >= 0."""
    if schedule is None:
        return ()
    name = "'num_speculative_tokens_per_batch_size'"
    if not isinstance(schedule, list) or not schedule:
        raise SpeculativeConfigError(f"{name} must be a non-empty list of [start, end, k] entries")
    entries = []
    for entry in schedule:
        if not isinstance(entry, list | tuple) or len(entry) != 3 or not all(_is_int(v) for v in entry):
            raise SpeculativeConfigError(f"{name}: each entry must be [start, end, k] integers, got {entry!r}")
        start, end, k = entry
        if start <= 0 or end <= 0:
            raise SpeculativeConfigError(f"{name}: batch-size range ({start}, {end}) must be positive")
        if start > end:
            raise SpeculativeConfigError(f"{name}: batch-size range start must be <= end in {list(entry)}")
        if k < 0:
            raise SpeculativeConfigError(f"{name}: k must be >= 0 in {list(entry)}")
        entries.append((start, end, k))
    entries.sort()
    previous_end = 0
    for start, end, _ in entries:
        if start <= previous_end:
            raise SpeculativeConfigError(f"{name}: batch-size ranges must not overlap")
        previous_end = end
    if entries[0][0] != 1:
        raise SpeculativeConfigError(f"{name}: the first batch-size range must start at 1")
    return tuple(entries)


def _optional_str(config: dict[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is not None and not isinstance(value, str):
        raise SpeculativeConfigError(f"{key!r} must be a string, got {value!r}")
    return value or None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
