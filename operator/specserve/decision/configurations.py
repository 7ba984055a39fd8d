"""What a whole configuration gives at a batch size: off, one fixed k, or a schedule of k by batch size.

Off (no --speculative-config) is the baseline, 1x with no doubt. A fixed k is its estimate. A schedule makes the
engine pay its mechanisms at every batch size (the profile's CUDA-graph cost), and a k=0 range of it still runs the
drafter's pass: a k=0 range is not off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from specserve.decision import goodput, schedules
from specserve.decision.proposers import Proposer
from specserve.engine.profiles import EngineProfile, profile_for

OFF: tuple[schedules.Range, ...] = ()


@dataclass(frozen=True)
class Costs:
    """The engine and proposer a configuration runs on."""

    proposer: Proposer
    profile: EngineProfile = profile_for(None)

    def schedule_cost(self, batch_size: float) -> float:
        return self.profile.graph_cost(batch_size)

    def k0_cost(self, batch_size: float) -> float:
        return goodput.drafter_pass_at_k0(batch_size, self.proposer) if self.profile.drafter_runs_at_k0 else 0.0


def is_schedule(ranges: Sequence[Sequence[int]]) -> bool:
    """Whether vLLM is given num_speculative_tokens_per_batch_size (more than one range), not one fixed k."""
    return len(ranges) > 1


def speedup_under(ranges: Sequence[Sequence[int]], batch_size: float, estimate: goodput.Estimator, costs: Costs, cap: int) -> goodput.Estimate:
    """S(b) under a configuration; `ranges` empty is speculation off."""
    if not ranges:
        return goodput.Estimate(float(batch_size), 0, 1.0, "measured", basis="speculation off: the baseline", uncertainty=0.0)
    k = schedules.k_for_batch(ranges, max(1, round(batch_size)), cap)
    return in_schedule(estimate(batch_size, k), costs) if is_schedule(ranges) else estimate(batch_size, k)


def in_schedule(estimate: goodput.Estimate, costs: Costs) -> goodput.Estimate:
    """An estimate of k at b when a schedule is in force: the graph cost on every step, the drafter's pass at k=0."""
    b = estimate.batch_size
    graphs = costs.schedule_cost(b)
    if estimate.k == 0:
        extra = graphs + costs.k0_cost(b)
        basis = f"k=0 range of a schedule: drafter pass {costs.k0_cost(b):.2f} + graph cost {graphs:.2f} of a step ({costs.profile.name})"
        return estimate.revised(1.0 / (1.0 + extra), basis=basis)
    step = estimate.accepted_length / estimate.speedup if estimate.speedup > 0 else float("inf")
    return estimate.revised(estimate.accepted_length / (step + graphs))  # the plan's lines say that a schedule pays its graphs


def schedule_estimator(estimate: goodput.Estimator, costs: Costs) -> goodput.Estimator:
    """The estimator build_schedule ranks k with, for k written into a schedule."""
    return lambda batch_size, k: in_schedule(estimate(batch_size, k), costs)
