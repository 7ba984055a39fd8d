"""Goodput of speculative decoding: the step cost and speedup of k drafts at a batch size, from the GPU calibration.

Pure: proposer, acceptance and batch size in, estimates out; best_k ranks k for one batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from specserve.decision.acceptance import accepted_length, per_position_for_acceptance_rate
from specserve.decision.calibration import calibration
from specserve.decision.proposers import SYNC_METHODS, Proposer

# measured: this window against the baseline; learned: an earlier window at the same k and bucket; fitted: another
# k or bucket predicted from the step cost fitted to those windows; prior: the GPU calibration alone.
Evidence = Literal["measured", "learned", "fitted", "prior"]
EVIDENCE_ORDER: tuple[Evidence, ...] = ("measured", "learned", "fitted", "prior")  # strongest first


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
    uncertainty: float | None = None  # relative 1-sigma of the speedup; None: not known (a prior)

    def revised(self, speedup: float, evidence: Evidence | None = None, basis: str | None = None, uncertainty: float | None | Literal["same"] = "same") -> Estimate:
        """This estimate with another speedup (and what else is given): dataclasses.replace, at a fraction of its cost on
        the path a plan takes thousands of times."""
        return Estimate(
            self.batch_size, self.k, speedup, evidence or self.evidence, self.accepted_length, self.cost,
            self.basis if basis is None else basis, self.notes, self.uncertainty if uncertainty == "same" else uncertainty,
        )

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
        if self.uncertainty is not None:
            result["uncertainty"] = round(self.uncertainty, 4)
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


def drafter_pass_at_k0(batch_size: float, proposer: Proposer) -> float:
    """What a k=0 step of a speculative server costs over a plain one: a draft model's or head's one forward pass to
    keep its KV cache in sync, plus a synchronous path's overhead; nothing for a look-up."""
    if proposer.kind == "lookup":
        return 0.0
    model = calibration()
    b = max(1.0, float(batch_size))
    overhead = _at(model.path_overhead, b) / proposer.target_scale if proposer.method in SYNC_METHODS else 0.0
    one_pass = _at(model.drafting[min(model.drafting)], b) * proposer.pass_cost / model.reference_pass_cost
    return overhead + one_pass


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
    rates = tuple(round(rate, 2) for rate in per_position)
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
