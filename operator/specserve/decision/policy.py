"""The health policy, pure: (state, observation, settings, now) -> decision with a reason that quotes the numbers.

Encodes FRAMEWORK.md: missing data is not evidence, act only after consecutive breaches, cooldown after every
action, step up a precision rung when quantization costs acceptance, re-enable after a doubling probation. Where
the baseline measured the speedup (now or earlier, per batch-size bucket) the goodput model decides and writes a
schedule of k by batch size; without such evidence the acceptance thresholds stay the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from specserve import api
from specserve.decision import configurations, evidence, fitting, goodput, proposers, schedules, thresholds, trials
from specserve.decision.acceptance import accepted_length, per_position_for_acceptance_rate
from specserve.decision.terms import Decision, Ladder, Observation, Setup, State
from specserve.engine import profiles, vllm

HEALTHY = "healthy"  # how the reason of a keep without any breach starts
REFERENCE_WEIGHT = 0.3  # weight of the newest sample in a variant's reference acceptance (EWMA)
DECISIVE_BREACHES = 2  # windows in a row that measured a certain loss against the baseline before acting
MIN_MEASURED_REQUESTS = 50  # requests a window must hold before its TPOT quantiles count as a measurement


def decide(state: State, observation: Observation, policy: api.HealthPolicy, now: float, ladder: Ladder = Ladder(), setup: Setup = Setup()) -> Decision:
    """One evaluation of one serving."""
    missing = _missing_data(state, observation, policy, setup)
    if missing:
        return Decision("hold", missing, state)
    if not state.speculation:
        return _while_disabled(state, policy, now)
    state = _learn_reference(state, observation)
    state = _end_probation_if_survived(state, policy, now)
    stale = _stale_window(state, observation, policy, setup, now)
    if stale:
        return Decision("keep", stale, state)
    state, measurement = _learn_speedup(state, observation, policy, setup, now)
    if state.trial is not None:
        return trials.judge(state, observation, measurement, policy, setup, now)
    if _lowered_on_probation_over(state, policy, now):
        return _restore_spec_k(state, policy, setup, now)
    plan, estimate = _plan(state, observation, policy, setup, measurement, now)
    step_up, blocked = _step_up(state, observation, policy, ladder)
    breach, remedy = _breach(state, observation, policy, setup, plan, measurement)
    problem = step_up or breach
    if problem is None:
        healthy = f"{HEALTHY}: {_numbers(observation)}{_estimated(estimate)}{blocked}"
        return Decision("keep", healthy, replace(state, consecutive_breaches=0), plan, estimate)
    if _cooling_down(state, policy, now):
        left = policy.cooldown_seconds - (now - (state.last_action_at or now))
        return Decision("keep", f"{problem}; in cooldown for another {left:.0f}s", state, plan, estimate)
    breaches = state.consecutive_breaches + 1
    needed = _breaches_needed(policy, plan, measurement, step_up)
    if breaches < needed:
        return Decision("keep", f"{problem} (breach {breaches} of {needed})", replace(state, consecutive_breaches=breaches), plan, estimate)
    if step_up is not None:
        return _switch(state, observation, ladder, now, step_up)
    if remedy is not None and _on_trial(plan, remedy, setup):
        assert plan is not None
        held = trials.blocked(state, evidence.short(remedy), policy, now)
        if held:
            return Decision("keep", f"{problem}; {held}", replace(state, consecutive_breaches=breaches), plan, estimate)
        return trials.start(state, setup, plan, remedy, measurement, policy, now, f"{problem} for {needed} consecutive evaluations")
    if remedy is not None:
        return _reschedule(state, policy, setup, now, f"{problem} for {needed} consecutive evaluations", remedy, plan, estimate)
    return _disable(state, policy, now, f"{(breach or '') + blocked} for {needed} consecutive evaluations")


def initial_state(policy: api.HealthPolicy, variant: str | None) -> State:
    return State(variant=variant, probation_delay=float(policy.probation_seconds))


def setup_for(spec: api.SpeculativeServingSpec, target_model: str | None = None) -> Setup:
    """The policy's view of a spec: its k, cut-off, proposer (sized for the checkpoint serving now) and vLLM release."""
    speculation = spec.speculation
    version = profiles.parse_version(spec.engine.vllm_version) if spec.engine.vllm_version else profiles.version_of_image(spec.engine.image)
    return Setup(
        speculation.num_speculative_tokens, speculation.disable_above_batch_size, proposers.proposer_for_spec(spec, target_model), profiles.profile_for(version),
        spec.trials, spec.replicas,
    )


def _missing_data(state: State, observation: Observation, policy: api.HealthPolicy, setup: Setup) -> str | None:
    if observation.error:
        return f"no decision: Prometheus unavailable ({observation.error})"
    if not state.speculation:
        return None  # nothing to measure while speculation is off; only the clock matters
    if _k_zero_measured(state, observation, setup):
        return None  # a k=0 range drafts nothing, yet the baseline measures what it costs
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
    enabled = replace(state, speculation=True, consecutive_breaches=0, last_action_at=now, configured_at=now, disabled_at=None, on_probation=True, schedule=None)
    return Decision("enable_speculation", f"probation of {delay:.0f}s over: speculation back on with the spec's k, judged afresh", enabled)


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


def _stale_window(state: State, observation: Observation, policy: api.HealthPolicy, setup: Setup, now: float) -> str | None:
    """A window that still measures the previous configuration is not judged: one that began before the last
    action, or one that measured another k than the configuration now gives at its batch size."""
    since = now - state.configured_at if state.configured_at is not None else None
    if observation.k is None and since is not None and since < policy.window_seconds:
        return f"the window of {policy.window_seconds}s began before the configuration changed {since:.0f}s ago: it still measures the previous one"
    if observation.k is None or observation.batch_size is None:
        return None
    now_k = setup.k_at(state, observation.batch_size)
    if observation.k == now_k:
        return None
    return (f"window measured k={observation.k} at batch {observation.batch_size:.1f}, the configuration now gives k={now_k} "
            f"({evidence.short(setup.ranges(state))}): waiting for a window of the current configuration")


def _k_zero_measured(state: State, observation: Observation, setup: Setup) -> bool:
    """Whether the window ran a k=0 range of the configuration and has the baseline's TPOT to be judged against."""
    if observation.batch_size is None or observation.p50_tpot is None or observation.baseline_p50_tpot is None:
        return False
    return (observation.k if observation.k is not None else setup.k_at(state, observation.batch_size)) == 0


def _k_in_window(state: State, observation: Observation, setup: Setup) -> int:
    if observation.k is not None:
        return observation.k
    if observation.batch_size is not None:
        return setup.k_at(state, observation.batch_size)
    return max(k for _, _, k in setup.ranges(state))


def _per_position(observation: Observation, k: int) -> tuple[float, ...]:
    if observation.per_position_acceptance:
        return observation.per_position_acceptance
    return per_position_for_acceptance_rate(observation.acceptance_rate or 0.0, max(1, k))


def _learn_speedup(state: State, observation: Observation, policy: api.HealthPolicy, setup: Setup, now: float) -> tuple[State, evidence.Measurement | None]:
    """Fold a window measured against the baseline into its bucket's verdict, and forget what aged out. A window
    that began before the last action still measures the previous configuration: it is measured, not learned."""
    half_life = float(policy.learned_half_life_seconds)
    verdicts = evidence.remembered(state.verdicts, now, half_life)
    k = _k_in_window(state, observation, setup)
    requests = observation.request_rate * policy.window_seconds if observation.request_rate is not None else None
    measurement = evidence.measure(
        k, observation.p50_tpot, observation.baseline_p50_tpot, observation.batch_size, observation.baseline_batch_size, _tails(observation, policy), vllm.TPOT_BUCKETS, requests,
    )
    if observation.request_rate is not None and observation.request_rate * policy.window_seconds < MIN_MEASURED_REQUESTS:
        measurement = None  # a median of a handful of requests read through histogram buckets is noise, not evidence
    mixed = state.configured_at is not None and now - state.configured_at < policy.window_seconds
    if measurement is not None and measurement.batch_size is not None and not mixed:
        prior = goodput.speedup(measurement.batch_size, k, _per_position(observation, k), setup.proposer).speedup if k > 0 else 1.0
        found = fitting.fit(_proposer_speedup(measurement, setup, state, _per_position(observation, k)), k, measurement.batch_size, _per_position(observation, k), setup.proposer, measurement.uncertainty)
        verdicts = evidence.learn(verdicts, setup.table, measurement, prior, now, half_life, found)
    return replace(state, verdicts=verdicts), measurement


def _proposer_speedup(measurement: evidence.Measurement, setup: Setup, state: State, per_position: Sequence[float]) -> float:
    """The measured speedup without the engine's cost of a schedule, which the window paid if one was in force: the
    speedup the proposer's own step cost is fitted to. S = AL / (c + g), so S without it is AL / (AL / S - g)."""
    if measurement.batch_size is None or not configurations.is_schedule(setup.ranges(state)):
        return measurement.speedup
    length = accepted_length(per_position, measurement.k)
    return length / max(1.0, length / measurement.speedup - setup.profile.graph_cost(measurement.batch_size))


def _plan(state: State, observation: Observation, policy: api.HealthPolicy, setup: Setup, measurement: evidence.Measurement | None, now: float) -> tuple[evidence.Plan | None, goodput.Estimate | None]:
    """The schedule the evidence recommends and the speedup estimated at the present batch size."""
    k = _k_in_window(state, observation, setup)
    per_position = _per_position(observation, k)
    prior = goodput.prior_estimator(per_position, setup.proposer)
    table = setup.table
    batch = observation.batch_size
    here = evidence.bucket_of(table, batch).lo if batch is not None else None
    measured_here = here if measurement is not None and any(v.lo == here and v.at == now for v in state.verdicts) else None  # learned from this window
    measured = (measurement.k, _proposer_speedup(measurement, setup, state, per_position), measurement.uncertainty) if measured_here is not None and measurement is not None else None
    estimate = evidence.estimator(state.verdicts, table, prior, measured_here, per_position, setup.proposer, measured)
    half_life = float(policy.learned_half_life_seconds)
    weights = {v.lo: v.weight(now, half_life) for v in state.verdicts}
    if here is not None:
        weights[here] = weights.get(here, 0.0) + 1.0
    if not weights:
        return None, None
    plan = evidence.plan(estimate, setup.ranges(state), setup.max_k, weights, setup.disable_above_batch_size, costs=setup.costs, confidence=policy.confidence)
    present = configurations.speedup_under(setup.ranges(state), batch, estimate, setup.costs, setup.max_k) if batch is not None else None
    if present is not None and measurement is not None and measurement.k == k and present.evidence == "prior":
        present = replace(present, speedup=measurement.speedup, evidence="measured", basis=measurement.explain())
    return plan, present


def _breach(
    state: State, observation: Observation, policy: api.HealthPolicy, setup: Setup, plan: evidence.Plan | None, measurement: evidence.Measurement | None,
) -> tuple[str | None, tuple[schedules.Range, ...] | None]:
    """What is wrong, if anything, and the schedule that fixes it (None: speculation off)."""
    p99, ttft = observation.p99_tpot, observation.p99_ttft
    if policy.max_p99_tpot_seconds is not None and p99 is not None and p99 > policy.max_p99_tpot_seconds:
        return f"P99 TPOT {p99 * 1000:.1f}ms above the limit {policy.max_p99_tpot_seconds * 1000:.1f}ms", None
    if policy.max_p99_ttft_seconds is not None and ttft is not None and ttft > policy.max_p99_ttft_seconds:
        return f"P99 TTFT {ttft * 1000:.1f}ms above the limit {policy.max_p99_ttft_seconds * 1000:.1f}ms", None
    if measurement is not None and measurement.k == 0:
        return _k_zero_breach(policy, setup, measurement)
    if state.verdicts and plan is not None and measurement is not None:
        return _goodput_breach(policy, plan, measurement, setup)  # the tails are part of the measurement
    tail = _tail_regression(observation, policy)
    if tail:
        return tail, None
    if state.verdicts and plan is not None:
        return _goodput_breach(policy, plan, None, setup)
    return thresholds.breach(state, observation, policy, setup, _k_in_window(state, observation, setup))


def _on_trial(plan: evidence.Plan | None, remedy: tuple[schedules.Range, ...], setup: Setup) -> bool:
    """Whether a remedy is a prediction to try before it sticks: the goodput plan's hypothesis, or its schedule resting
    on anything less than this serving's measurements (another k or bucket fitted, or a prior). Measured remedies
    apply at once."""
    if not setup.trials.enabled or plan is None:
        return False
    ranges = tuple(map(tuple, remedy))
    if plan.hypothesis is not None and ranges == tuple(map(tuple, plan.hypothesis.ranges)):
        return True
    return plan.evidence != "measured" and ranges == tuple(map(tuple, plan.schedule.ranges))


def _breaches_needed(policy: api.HealthPolicy, plan: evidence.Plan | None, measurement: evidence.Measurement | None, step_up: str | None) -> int:
    """consecutiveBreaches, except where this window measured against the baseline that the change gains more than the
    margin even at the pessimistic end of its spread: then two windows in a row are enough (a collapse is acted on
    within two evaluations; a borderline drift still waits for the full count)."""
    if step_up is not None or measurement is None:
        return policy.consecutive_breaches
    z = evidence.z_of(policy.confidence)
    if measurement.k == 0:
        decisive = 1.0 / (measurement.speedup * (1 + z * measurement.uncertainty)) - 1 >= policy.min_predicted_gain
    else:
        decisive = plan is not None and plan.changes and plan.evidence == "measured" and plan.gain_low >= policy.min_predicted_gain
    return min(policy.consecutive_breaches, DECISIVE_BREACHES) if decisive else policy.consecutive_breaches


def _goodput_breach(policy: api.HealthPolicy, plan: evidence.Plan, measurement: evidence.Measurement | None, setup: Setup) -> tuple[str | None, tuple[schedules.Range, ...] | None]:
    """With measured or learned speedup the goodput model decides: rewrite when the predicted gain clears the margin,
    or, whatever the gain, when this window's P99 TPOT or TTFT broke its allowed ratio over the baseline's while
    speculating (the mixed-workload signature) and the plan changes that."""
    tail_broken = measurement is not None and measurement.k > 0 and measurement.tail is not None and measurement.tail < 1.0
    if not plan.changes or ((plan.gain < policy.min_predicted_gain or not plan.certain) and not tail_broken):
        return _worth_a_trial(policy, plan) if setup.trials.enabled else (None, None)
    why = measurement.explain() + "; " if measurement is not None and measurement.k > 0 and (tail_broken or measurement.speedup < 1.0) else ""
    return f"{why}goodput {plan.explain()} (margin {policy.min_predicted_gain:.0%})", (None if plan.all_off else plan.schedule.ranges)


def _k_zero_breach(policy: api.HealthPolicy, setup: Setup, measurement: evidence.Measurement) -> tuple[str | None, tuple[schedules.Range, ...] | None]:
    """A k=0 range measured against the baseline: it drafts nothing but is not off. Slower than the baseline even at the
    optimistic end of the measurement's spread: speculation off, which is the baseline's own configuration."""
    z = evidence.z_of(policy.confidence)
    if measurement.speedup * (1 + z * measurement.uncertainty) >= 1.0:
        return None, None
    b = measurement.batch_size or 1.0
    costs = setup.costs
    why = (f"{measurement.explain()}: a k=0 range is not off - {setup.profile.name} runs the {setup.proposer.method} drafter's pass "
           f"(modelled {costs.k0_cost(b):.2f} of a step) and PIECEWISE CUDA graphs (modelled {costs.schedule_cost(b):.2f}) at every step")
    return why, None


def _worth_a_trial(policy: api.HealthPolicy, plan: evidence.Plan) -> tuple[str | None, tuple[schedules.Range, ...] | None]:
    """A configuration the point estimates favour by the margin though its doubt spans no gain: not a reason to
    rewrite, but a hypothesis a trial can measure (when trials are on)."""
    if plan.hypothesis is None or plan.hypothesis_gain < policy.min_predicted_gain:
        return None, None
    return (f"goodput {evidence.short(plan.current)} -> {plan.hypothesis.short()} predicted {plan.hypothesis_gain:+.0%} on fitted or prior evidence, "
            f"too uncertain to rewrite (at least {plan.gain_low:+.0%} at {plan.confidence:.0%} confidence) but worth a trial", plan.hypothesis.ranges)


def _tails(observation: Observation, policy: api.HealthPolicy) -> list[tuple[float | None, float | None, evidence.Bounds, float]]:
    """(ours, the baseline's, the histogram's bucket bounds, allowed ratio) for P99 TPOT and P99 TTFT."""
    return [
        (observation.p99_tpot, observation.baseline_p99_tpot, vllm.TPOT_BUCKETS, policy.p99_tpot_regression_ratio),
        (observation.p99_ttft, observation.baseline_p99_ttft, vllm.TTFT_BUCKETS, policy.p99_ttft_regression_ratio),
    ]


def _tail_regression(observation: Observation, policy: api.HealthPolicy) -> str | None:
    """P99 TPOT or TTFT worse than the baseline's beyond its allowed ratio: a breach at any acceptance."""
    for (ours, theirs, bounds, ratio), name in zip(_tails(observation, policy), ("TPOT", "TTFT")):
        if ours is not None and theirs and not evidence.unresolved(ours, theirs, bounds) and ours > theirs * ratio:
            acceptance = f"acceptance {observation.acceptance_rate:.3f} and " if observation.acceptance_rate is not None else ""
            return f"{acceptance}P99 {name} {ours * 1000:.1f}ms is {ours / theirs:.2f}x the baseline's {theirs * 1000:.1f}ms (limit {ratio:.2f}x)"
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
    # another checkpoint has other costs and acceptance: what was learned of the old one does not carry over
    switched = replace(state, variant=higher, consecutive_breaches=0, last_action_at=now, configured_at=now, verdicts=())
    return Decision("switch_variant", f"{why}: stepping the target up from {state.variant} to {higher}{fits}", switched)


def _lowered_on_probation_over(state: State, policy: api.HealthPolicy, now: float) -> bool:
    """A k lowered by the thresholds alone (no baseline ever measured it) gets its probation, as an off switch does."""
    if not state.schedule or state.verdicts or state.last_action_at is None:
        return False
    return now - state.last_action_at >= max(float(policy.cooldown_seconds), state.probation_delay or float(policy.probation_seconds))


def _restore_spec_k(state: State, policy: api.HealthPolicy, setup: Setup, now: float) -> Decision:
    before = evidence.short(setup.ranges(state))
    waited = now - (state.last_action_at or now)
    restored = replace(state, schedule=None, consecutive_breaches=0, last_action_at=now, configured_at=now, on_probation=True)
    after = evidence.short(setup.ranges(restored))
    reason = f"k lowered {waited:.0f}s ago on acceptance alone, with no baseline to measure it: probation over, schedule {before} -> {after} (the spec's), judged afresh"
    return Decision("set_schedule", reason, restored)


def _reschedule(
    state: State, policy: api.HealthPolicy, setup: Setup, now: float, why: str, ranges: tuple[schedules.Range, ...],
    plan: evidence.Plan | None, estimate: goodput.Estimate | None,
) -> Decision:
    before = evidence.short(setup.ranges(state))
    after = evidence.short(ranges)
    delay = state.probation_delay or float(policy.probation_seconds)
    failed = ""
    if state.on_probation and not state.verdicts:  # the spec's k came back on probation and failed again
        delay, failed = min(delay * 2, float(policy.max_probation_seconds)), f" (probation failed, next delay {min(delay * 2, float(policy.max_probation_seconds)):.0f}s)"
    rescheduled = replace(state, schedule=ranges, consecutive_breaches=0, last_action_at=now, configured_at=now, probation_delay=delay, on_probation=False)
    reason = f"{why}: schedule {before} -> {after}{failed}"
    return Decision("set_schedule", reason, rescheduled, plan, estimate)


def _disable(state: State, policy: api.HealthPolicy, now: float, why: str) -> Decision:
    delay = state.probation_delay or float(policy.probation_seconds)
    if state.on_probation:
        delay = min(delay * 2, float(policy.max_probation_seconds))
    failed = " (probation failed, next delay doubled)" if state.on_probation else ""
    disabled = replace(state, speculation=False, consecutive_breaches=0, last_action_at=now, configured_at=now, disabled_at=now, probation_delay=delay, on_probation=False, schedule=None)
    reason = f"{why}: speculation off, retry in {max(delay, policy.cooldown_seconds):.0f}s{failed}"
    return Decision("disable_speculation", reason, disabled)


def _cooling_down(state: State, policy: api.HealthPolicy, now: float) -> bool:
    return state.last_action_at is not None and now - state.last_action_at < policy.cooldown_seconds


def _estimated(estimate: goodput.Estimate | None) -> str:
    if estimate is None or estimate.k == 0:
        return ""
    return f"; estimated {estimate.speedup:.2f}x at batch {estimate.batch_size:.1f} with k={estimate.k} [{estimate.evidence}]"


def _numbers(observation: Observation) -> str:
    parts = [f"acceptance {observation.acceptance_rate:.3f}"] if observation.acceptance_rate is not None else []
    if observation.p99_tpot is not None:
        parts.append(f"P99 TPOT {observation.p99_tpot * 1000:.1f}ms")
    if observation.baseline_p99_tpot is not None:
        parts.append(f"baseline P99 TPOT {observation.baseline_p99_tpot * 1000:.1f}ms")
    if observation.draft_tokens is not None:
        parts.append(f"{observation.draft_tokens:.0f} draft tokens")
    if observation.batch_size is not None:
        parts.append(f"batch {observation.batch_size:.1f} per replica")
    return ", ".join(parts)
