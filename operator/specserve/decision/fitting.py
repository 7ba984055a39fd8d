"""The step cost fitted to one serving: a speedup measured against the baseline at k and a known accepted length says
what a step costs there (c = AL / speedup); the other k and batch sizes follow from that cost, with an uncertainty.

One parameter per fit: the share of the prior's speculative cost (c - 1) this serving actually pays. How far such a
fit carries to another k or batch size was measured on the GPU (the calibration's own points): that spread is the
uncertainty of a fitted prediction, on top of the measurement's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property

from specserve.decision import goodput
from specserve.decision.acceptance import per_position_for_token_acceptance
from specserve.decision.calibration import calibration
from specserve.decision.proposers import Proposer, proposer_for

# A prior alone, for a configuration nothing measured: on the H200 the textbook prediction was off by up to 2x at
# batch 8 and above (tests/fixtures/README.md); it ranks k, it is never a reason by itself.
PRIOR_SPREAD = 0.30
MIN_SCALE = 0.05  # a measurement faster than the prior allows (speedup > AL / (1 + 5% of c - 1)) is noise, not a free step


@dataclass(frozen=True)
class Fit:
    """This serving's speculative cost as a share of the prior's, from one measured point."""

    cost_scale: float  # c_measured - 1 over c_prior - 1
    k: int
    batch_size: float
    uncertainty: float  # relative 1-sigma of the speedup it was fitted to

    @cached_property
    def explained(self) -> str:
        return f"step cost fitted at k={self.k}, batch {self.batch_size:.1f}: {self.cost_scale:.2f}x the prior's extra cost"


def fit(measured_speedup: float, k: int, batch_size: float, per_position: Sequence[float], proposer: Proposer, uncertainty: float) -> Fit | None:
    """The cost scale that makes the prior reproduce the measured speedup at k; None at k=0 (nothing to fit)."""
    if k <= 0 or measured_speedup <= 0:
        return None
    prior = goodput.speedup(batch_size, k, per_position, proposer)
    assert prior.cost is not None
    extra = prior.cost.total - 1.0
    measured_cost = prior.accepted_length / measured_speedup
    scale = max(MIN_SCALE, (measured_cost - 1.0) / extra) if extra > 0 else 1.0
    return Fit(scale, k, float(batch_size), uncertainty)


def predict(found: Fit, batch_size: float, k: int, per_position: Sequence[float], proposer: Proposer) -> goodput.Estimate:
    """S(b, k) from the fitted cost: AL(k) / (1 + scale x (c_prior(b, k) - 1)); k=0 is 1 with no doubt."""
    return from_prior(found, goodput.speedup(batch_size, k, per_position, proposer))


def from_prior(found: Fit, prior: goodput.Estimate) -> goodput.Estimate:
    """predict() from the prior's own estimate at (b, k), which callers may have cached."""
    batch_size, k = prior.batch_size, prior.k
    if k == 0 or prior.cost is None:
        return prior.revised(prior.speedup, uncertainty=0.0)
    cost = 1.0 + found.cost_scale * (prior.cost.total - 1.0)
    same = k == found.k and _octaves(batch_size, found.batch_size) < 0.5
    spread = found.uncertainty if same else math.hypot(found.uncertainty, transfer_spread(abs(k - found.k), _octaves(batch_size, found.batch_size)))
    basis = f"{found.explained}; c {cost:.2f} (prior c {prior.cost.total:.2f})"
    return goodput.Estimate(batch_size, k, prior.accepted_length / cost, "learned" if same else "fitted", prior.accepted_length, prior.cost, basis, prior.notes, spread)


def transfer_spread(k_steps: int, octaves: float) -> float:
    """Relative 1-sigma of a fitted prediction `k_steps` away in k and `octaves` away in batch size (log2)."""
    per_k, per_octave = measured_transfer()
    return math.hypot(per_k * math.sqrt(k_steps), per_octave * math.sqrt(octaves) if octaves >= 0.5 else 0.0)


@cache
def measured_transfer() -> tuple[float, float]:
    """How far a fit carries, measured on the GPU: fit each forced-acceptance point of the calibration, predict its
    neighbours at another k (same batch size) or another batch size (same k), and take the RMS relative error per k
    step and per octave of batch size."""
    draft = proposer_for("draft_model")
    points = [p for p in calibration().points if p.role == "growth" and p.method == "draft_model"]
    across_k: list[float] = []
    across_b: list[float] = []
    for p in points:
        for q in points:
            if q is p or q.acceptance != p.acceptance or (q.k != p.k and q.batch_size != p.batch_size):
                continue
            rates = per_position_for_token_acceptance(p.acceptance, max(p.k, q.k))
            found = fit(p.speedup, p.k, p.batch_size, rates, draft, 0.0)
            assert found is not None
            prior = goodput.speedup(q.batch_size, q.k, rates, draft)
            assert prior.cost is not None
            error = prior.accepted_length / (1.0 + found.cost_scale * (prior.cost.total - 1.0)) / q.speedup - 1.0
            if q.k != p.k:
                across_k.append(error * error / abs(q.k - p.k))
            else:
                across_b.append(error * error / abs(math.log2(q.batch_size / p.batch_size)))
    return math.sqrt(sum(across_k) / len(across_k)), math.sqrt(sum(across_b) / len(across_b))


def _octaves(a: float, b: float) -> float:
    return abs(math.log2(max(a, 1.0) / max(b, 1.0)))
