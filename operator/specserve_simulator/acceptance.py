"""Draft acceptance: the share of proposed tokens the target keeps, by proposer, temperature, content and precision.

Pure functions over a seeded random.Random; the curves are FRAMEWORK.md's sweep and the fixtures' n-gram runs.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from functools import lru_cache

from specserve_simulator import sizing
from specserve_simulator.args import ServeConfig

# Accepted / draft tokens at k = REFERENCE_K, at these temperatures; linear in between.
TEMPERATURES = (0.0, 0.4, 0.8, 1.0)
CURVES = {
    "draft": (0.81, 0.71, 0.52, 0.38),  # FRAMEWORK.md's sweep for a well-matched draft model
    "head": (0.86, 0.77, 0.59, 0.45),  # EAGLE/MTP heads are trained on the target: a few points better
    "ngram_chat": (0.30, 0.20, 0.13, 0.10),  # output that does not repeat the prompt (fixture shape, lower)
    "ngram_echo": (0.62, 0.54, 0.42, 0.34),  # summarization/RAG: output copies the prompt
}
REFERENCE_K = 4
# Beta concentration of per-request acceptance around the mean: n-gram depends on each request's content.
CONCENTRATION = {"draft": 40.0, "head": 60.0, "ngram": 8.0}
DECAY_ABOVE_T1 = 1.5  # beyond T=1 acceptance keeps falling, exponentially
FLOOR, CEILING = 0.02, 0.98
# Acceptance points lost per quantized model, times (1 + T): sampling loses more than greedy decoding.
TARGET_PENALTY = {"int4": 0.07, "int8": 0.03, "bf16": 0.0, "fp32": 0.0}
DRAFT_PENALTY = {"int4": 0.03, "int8": 0.01, "bf16": 0.0, "fp32": 0.0}
SWEET_SPOT_RATIO = 1 / 12  # draft:target; smaller drafts guess worse
SMALL_DRAFT_PENALTY_PER_HALVING, SMALL_DRAFT_PENALTY_CAP = 0.04, 0.15


@dataclass(frozen=True)
class AcceptanceModel:
    """How well one proposer guesses one target."""

    proposer: str  # ngram, head or draft
    target_precision: str = "bf16"
    draft_precision: str = "bf16"
    draft_ratio: float | None = None

    @classmethod
    def for_config(cls, config: ServeConfig) -> AcceptanceModel | None:
        spec = config.speculation
        if spec is None:
            return None
        target_params = sizing.params_billions(config.model)
        ratio = sizing.params_billions(spec.model, target_params / 10) / target_params if spec.proposer == "draft" else None
        return cls(
            proposer=spec.proposer,
            target_precision=sizing.precision(config.quantization, config.model, config.dtype),
            draft_precision=sizing.precision(spec.quantization, spec.model, config.dtype),
            draft_ratio=ratio,
        )

    def mean(self, temperature: float, echo: float = 0.0, override: float | None = None) -> float:
        """Expected accepted / draft tokens at k=4 for requests at this temperature."""
        if override is not None:
            return _clamp(override)
        if self.proposer == "ngram":
            chat, copy = _curve("ngram_chat", temperature), _curve("ngram_echo", temperature)
            return _clamp(chat + (copy - chat) * echo)
        loss = TARGET_PENALTY[self.target_precision] * (1 + temperature)
        if self.proposer == "draft":
            loss += DRAFT_PENALTY[self.draft_precision] * (1 + temperature) + self._small_draft_penalty()
        return _clamp(_curve(self.proposer, temperature) - loss)

    def draw_request_rate(self, rng: random.Random, temperature: float, echo: float = 0.0, override: float | None = None) -> float:
        """One request's per-position (conditional) acceptance: its k=4 acceptance is Beta around the mean."""
        mean = self.mean(temperature, echo, override)
        kappa = CONCENTRATION[self.proposer]
        acceptance = _clamp(rng.betavariate(mean * kappa, (1 - mean) * kappa))
        return conditional_rate(round(acceptance, 3))

    def _small_draft_penalty(self) -> float:
        if self.draft_ratio is None or self.draft_ratio >= SWEET_SPOT_RATIO:
            return 0.0
        halvings = math.log2(SWEET_SPOT_RATIO / self.draft_ratio)
        return min(SMALL_DRAFT_PENALTY_CAP, SMALL_DRAFT_PENALTY_PER_HALVING * halvings)


@lru_cache(maxsize=1024)
def conditional_rate(acceptance: float, k: int = REFERENCE_K) -> float:
    """The c with (c + c^2 + ... + c^k) / k = acceptance: draft i survives with c^(i+1), so acceptance decays by position."""
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        if sum(mid**i for i in range(1, k + 1)) / k < acceptance:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def expected_acceptance(c: float, k: int) -> float:
    """Accepted / draft tokens for a conditional rate c and k drafts per step."""
    return sum(c**i for i in range(1, k + 1)) / k


def draw_accepted(rng: random.Random, c: float, k: int) -> int:
    """Leading drafts the target keeps in one step: the first rejection ends the run."""
    accepted = 0
    while accepted < k and rng.random() < c:
        accepted += 1
    return accepted


def _curve(name: str, temperature: float) -> float:
    values = CURVES[name]
    if temperature >= TEMPERATURES[-1]:
        return values[-1] * math.exp(-DECAY_ABOVE_T1 * (temperature - TEMPERATURES[-1]))
    upper = max(1, bisect.bisect_left(TEMPERATURES, temperature))
    t0, t1, v0, v1 = TEMPERATURES[upper - 1], TEMPERATURES[upper], values[upper - 1], values[upper]
    return v0 + (v1 - v0) * (temperature - t0) / (t1 - t0)


def _clamp(value: float) -> float:
    return min(CEILING, max(FLOOR, value))
