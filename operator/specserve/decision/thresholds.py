"""The framework's acceptance thresholds: how a serving is judged where no baseline measured its speedup.

Below disableBelowAcceptance a lower k whose own acceptance clears watchBelowAcceptance is tried before speculation goes off.
"""

from __future__ import annotations

from specserve import api
from specserve.decision import evidence, goodput, schedules
from specserve.decision.terms import Observation, Setup, State


def breach(state: State, observation: Observation, policy: api.HealthPolicy, setup: Setup, k: int) -> tuple[str | None, tuple[schedules.Range, ...] | None]:
    """Without a baseline's measurement the framework's thresholds judge acceptance (a look-up proposer's are its
    prior break-even, when lower). Below them, a lower k whose own acceptance clears the watch threshold is tried
    before speculation goes off."""
    acceptance = _acceptance_at(observation, k)
    disable, note = _disable_threshold(observation, policy, setup, k)
    if acceptance >= disable:
        return None, None
    why = f"acceptance {acceptance:.3f} below {disable:.2f}{note}"
    lower = _lower_k(observation, policy, setup, k)
    if lower is None:
        return why, None
    chosen, reason = lower
    ranges = evidence.clamp(setup.ranges(state), chosen, setup.disable_above_batch_size)
    return f"{why}; {reason}", ranges


def _acceptance_at(observation: Observation, k: int) -> float:
    """vLLM's acceptance rate at k: the mean of the first k per-position rates when the window has them all (it then
    does not matter which k the window drafted with), else the rate the window measured."""
    rates = observation.per_position_acceptance
    if 0 < k <= len(rates):
        return sum(rates[:k]) / k
    return observation.acceptance_rate or 0.0


def _disable_threshold(observation: Observation, policy: api.HealthPolicy, setup: Setup, k: int) -> tuple[float, str]:
    if setup.uses_thresholds or observation.batch_size is None or k <= 0:
        return policy.disable_below_acceptance, ""
    even = goodput.break_even_acceptance(observation.batch_size, k, setup.proposer)
    if even >= policy.disable_below_acceptance:
        return policy.disable_below_acceptance, ""
    return even, f" (the prior break-even of {setup.proposer.method} at batch {observation.batch_size:.1f} and k={k}; GPU calibration)"


def _lower_k(observation: Observation, policy: api.HealthPolicy, setup: Setup, k: int) -> tuple[int, str] | None:
    """The lower k whose own acceptance (the mean of its first positions) clears the watch threshold, the one the prior
    ranks fastest at the present batch size; None without per-position data or when none clears it."""
    rates = observation.per_position_acceptance
    if len(rates) < 2 or k <= 1:
        return None
    candidates = [j for j in range(1, min(k, len(rates))) if sum(rates[:j]) / j >= policy.watch_below_acceptance]
    if not candidates:
        return None
    batch = observation.batch_size or 1.0
    ranked = {j: goodput.speedup(batch, j, rates, setup.proposer) for j in candidates}
    best = max(candidates, key=lambda j: (ranked[j].speedup, -j))
    positions = ", ".join(f"{r:.2f}" for r in rates[:k])
    return best, (f"per position {positions}: at k={best} acceptance is {sum(rates[:best]) / best:.3f} (watch threshold {policy.watch_below_acceptance:.2f}), "
                  f"prior {ranked[best].speedup:.2f}x at batch {batch:.1f} [prior ranks k only]")
