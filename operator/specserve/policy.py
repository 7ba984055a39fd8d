"""The health policy, pure: (state, observation, settings, now) -> decision with a reason that quotes the numbers.

Encodes FRAMEWORK.md: missing data is not evidence, act only after consecutive breaches, cooldown after every
action, step up a precision rung when quantization costs acceptance, re-enable after a doubling probation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from specserve import api

Action = Literal["hold", "keep", "disable_speculation", "switch_variant", "enable_speculation"]
CHANGES: frozenset[str] = frozenset({"disable_speculation", "switch_variant", "enable_speculation"})
HEALTHY = "healthy"  # how the reason of a keep without any breach starts
REFERENCE_WEIGHT = 0.3  # weight of the newest sample in a variant's reference acceptance (EWMA)


@dataclass(frozen=True)
class Observation:
    """What Prometheus said about one serving over one window; None means no data."""

    acceptance_rate: float | None = None
    draft_tokens: float | None = None
    p50_tpot: float | None = None
    p99_tpot: float | None = None
    baseline_p99_tpot: float | None = None
    p99_ttft: float | None = None
    request_rate: float | None = None
    variant: str | None = None  # the variant that served the sample
    error: str | None = None  # Prometheus unreachable or erroring


@dataclass(frozen=True)
class State:
    """The decision state kept in status; times are seconds on the caller's clock."""

    speculation: bool = True
    variant: str | None = None
    consecutive_breaches: int = 0
    last_action_at: float | None = None
    disabled_at: float | None = None
    probation_delay: float | None = None  # current delay before re-enabling; doubles after a failed probation
    on_probation: bool = False
    references: dict[str, float] = field(default_factory=dict)  # acceptance measured per variant


@dataclass(frozen=True)
class Ladder:
    """The precision ladder (lowest memory first) and which rungs fit the GPUs."""

    variants: tuple[str, ...] = ()
    fitting: frozenset[str] | None = None  # None: unknown, every rung is allowed

    def next_up(self, current: str | None) -> str | None:
        if current not in self.variants:
            return None
        index = self.variants.index(current)
        return self.variants[index + 1] if index + 1 < len(self.variants) else None

    def fits(self, variant: str) -> bool:
        return self.fitting is None or variant in self.fitting


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    state: State

    @property
    def changes(self) -> bool:
        return self.action in CHANGES


def decide(state: State, observation: Observation, policy: api.HealthPolicy, now: float, ladder: Ladder = Ladder()) -> Decision:
    """One evaluation of one serving."""
    missing = _missing_data(state, observation, policy)
    if missing:
        return Decision("hold", missing, state)
    if not state.speculation:
        return _while_disabled(state, policy, now)
    state = _learn_reference(state, observation)
    state = _end_probation_if_survived(state, policy, now)
    breach = _breach(observation, policy)
    step_up, blocked = _step_up(state, observation, policy, ladder)
    problem = step_up or breach
    if problem is None:
        return Decision("keep", f"{HEALTHY}: {_numbers(observation)}{blocked}", replace(state, consecutive_breaches=0))
    if _cooling_down(state, policy, now):
        left = policy.cooldown_seconds - (now - (state.last_action_at or now))
        return Decision("keep", f"{problem}; in cooldown for another {left:.0f}s", state)
    breaches = state.consecutive_breaches + 1
    if breaches < policy.consecutive_breaches:
        return Decision("keep", f"{problem} (breach {breaches} of {policy.consecutive_breaches})", replace(state, consecutive_breaches=breaches))
    if step_up is not None:
        return _switch(state, observation, ladder, now, step_up)
    return _disable(state, policy, now, (breach or "") + blocked)


def initial_state(policy: api.HealthPolicy, variant: str | None) -> State:
    return State(variant=variant, probation_delay=float(policy.probation_seconds))


def _missing_data(state: State, observation: Observation, policy: api.HealthPolicy) -> str | None:
    if observation.error:
        return f"no decision: Prometheus unavailable ({observation.error})"
    if not state.speculation:
        return None  # nothing to measure while speculation is off; only the clock matters
    acceptance, drafts = observation.acceptance_rate, observation.draft_tokens
    if acceptance is None or math.isnan(acceptance) or drafts is None or math.isnan(drafts):
        return "no decision: no acceptance data in the window"
    if drafts < policy.min_draft_tokens:
        return f"no decision: {drafts:.0f} draft tokens in the window, fewer than the {policy.min_draft_tokens} needed"
    return None


def _while_disabled(state: State, policy: api.HealthPolicy, now: float) -> Decision:
    if state.disabled_at is None:  # off without a recorded time: start the probation clock now
        state = replace(state, disabled_at=now)
    delay = max(float(policy.cooldown_seconds), state.probation_delay or float(policy.probation_seconds))
    waited = now - state.disabled_at
    if waited < delay:
        return Decision("keep", f"speculation off; probation ends in {delay - waited:.0f}s", state)
    enabled = replace(state, speculation=True, consecutive_breaches=0, last_action_at=now, disabled_at=None, on_probation=True)
    return Decision("enable_speculation", f"probation of {delay:.0f}s over: speculation back on, judged afresh", enabled)


def _learn_reference(state: State, observation: Observation) -> State:
    variant = observation.variant or state.variant
    if variant is None or observation.acceptance_rate is None:
        return state
    old = state.references.get(variant)
    new = observation.acceptance_rate if old is None else (1 - REFERENCE_WEIGHT) * old + REFERENCE_WEIGHT * observation.acceptance_rate
    return replace(state, references={**state.references, variant: round(new, 6)})


def _end_probation_if_survived(state: State, policy: api.HealthPolicy, now: float) -> State:
    survived = state.on_probation and state.last_action_at is not None and now - state.last_action_at >= policy.cooldown_seconds + policy.interval_seconds * policy.consecutive_breaches
    return replace(state, on_probation=False, probation_delay=float(policy.probation_seconds)) if survived else state


def _breach(observation: Observation, policy: api.HealthPolicy) -> str | None:
    acceptance = observation.acceptance_rate or 0.0
    p99, baseline = observation.p99_tpot, observation.baseline_p99_tpot
    if acceptance < policy.disable_below_acceptance:
        return f"acceptance {acceptance:.3f} below {policy.disable_below_acceptance:.2f}"
    if acceptance < policy.watch_below_acceptance and p99 is not None and baseline and p99 > baseline * policy.p99_tpot_regression_ratio:
        return (
            f"acceptance {acceptance:.3f} in the break-even band [{policy.disable_below_acceptance:.2f}, {policy.watch_below_acceptance:.2f}) "
            f"and P99 TPOT {p99 * 1000:.1f}ms is {p99 / baseline:.2f}x the baseline's {baseline * 1000:.1f}ms (limit {policy.p99_tpot_regression_ratio:.2f}x)"
        )
    if policy.max_p99_tpot_seconds is not None and p99 is not None and p99 > policy.max_p99_tpot_seconds:
        return f"P99 TPOT {p99 * 1000:.1f}ms above the limit {policy.max_p99_tpot_seconds * 1000:.1f}ms"
    ttft = observation.p99_ttft
    if policy.max_p99_ttft_seconds is not None and ttft is not None and ttft > policy.max_p99_ttft_seconds:
        return f"P99 TTFT {ttft * 1000:.1f}ms above the limit {policy.max_p99_ttft_seconds * 1000:.1f}ms"
    return None


def _step_up(state: State, observation: Observation, policy: api.HealthPolicy, ladder: Ladder) -> tuple[str | None, str]:
    """A quantization-drop problem that a step up would fix, and a note when the rung above does not fit."""
    higher = ladder.next_up(state.variant)
    reference = state.references.get(higher) if higher else None
    acceptance = observation.acceptance_rate
    served_elsewhere = observation.variant is not None and observation.variant != state.variant
    if higher is None or reference is None or acceptance is None or served_elsewhere or reference - acceptance <= policy.quantization_drop_threshold:
        return None, ""
    drop = f"acceptance {acceptance:.3f} on {state.variant} is {reference - acceptance:.3f} below the {reference:.3f} measured on {higher} (threshold {policy.quantization_drop_threshold:.2f})"
    if not ladder.fits(higher):
        return None, f" ({drop}, but {higher} does not fit the GPU memory budget)"
    return drop, ""


def _switch(state: State, observation: Observation, ladder: Ladder, now: float, why: str) -> Decision:
    higher = ladder.next_up(state.variant)
    assert higher is not None
    fits = "" if ladder.fitting is None else f"; {higher} fits the GPU memory budget"
    switched = replace(state, variant=higher, consecutive_breaches=0, last_action_at=now)
    return Decision("switch_variant", f"{why}: stepping the target up from {state.variant} to {higher}{fits}", switched)


def _disable(state: State, policy: api.HealthPolicy, now: float, why: str) -> Decision:
    delay = state.probation_delay or float(policy.probation_seconds)
    if state.on_probation:
        delay = min(delay * 2, float(policy.max_probation_seconds))
    failed = " (probation failed, next delay doubled)" if state.on_probation else ""
    disabled = replace(state, speculation=False, consecutive_breaches=0, last_action_at=now, disabled_at=now, probation_delay=delay, on_probation=False)
    reason = f"{why} for {policy.consecutive_breaches} consecutive evaluations: speculation off, retry in {max(delay, policy.cooldown_seconds):.0f}s{failed}"
    return Decision("disable_speculation", reason, disabled)


def _cooling_down(state: State, policy: api.HealthPolicy, now: float) -> bool:
    return state.last_action_at is not None and now - state.last_action_at < policy.cooldown_seconds


def _numbers(observation: Observation) -> str:
    parts = [f"acceptance {observation.acceptance_rate:.3f}"] if observation.acceptance_rate is not None else []
    if observation.p99_tpot is not None:
        parts.append(f"P99 TPOT {observation.p99_tpot * 1000:.1f}ms")
    if observation.baseline_p99_tpot is not None:
        parts.append(f"baseline P99 TPOT {observation.baseline_p99_tpot * 1000:.1f}ms")
    if observation.draft_tokens is not None:
        parts.append(f"{observation.draft_tokens:.0f} draft tokens")
    return ", ".join(parts)
