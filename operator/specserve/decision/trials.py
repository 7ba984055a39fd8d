"""Trials: a change the goodput model predicts but nothing measured for this serving is tried before it sticks.

With a challenger slice the candidate runs on trials.replicas replicas beside the incumbent, both measured against the
baseline in the same windows; with one replica it replaces the incumbent and is compared with the window that started
it. After trials.windows windows it is promoted when the measured gain clears minPredictedGain and even its
pessimistic end is a gain; otherwise the incumbent's exact configuration comes back and the candidate is not tried
again until its evidence decays. Pure: state and observation in, Decision out.
"""

from __future__ import annotations

import math
from dataclasses import replace

from specserve import api
from specserve.decision import evidence, schedules
from specserve.decision.terms import Decision, Observation, Rejected, Setup, State, Trial
from specserve.engine import vllm

EARLY_VERDICT_WINDOWS = 2  # windows after which a candidate already certainly worse is reverted without waiting


def mode_for(replicas: int, trials: api.Trials) -> str:
    return "challenger" if replicas > trials.replicas else "sequential"


def blocked(state: State, candidate: str, policy: api.HealthPolicy, now: float) -> str | None:
    """Why no trial may start now, or None: one at a time, never on probation, not a candidate measured worse lately."""
    if state.trial is not None:
        return "a trial is already running"
    if state.on_probation:
        return "speculation is on probation: no trial until it has survived"
    for rejected in state.rejected:
        weight = 0.5 ** (max(0.0, now - rejected.at) / policy.learned_half_life_seconds)
        if rejected.summary == candidate and weight >= evidence.FORGET_BELOW:
            measured = f" (measured {rejected.measured_gain:+.0%})" if rejected.measured_gain is not None else ""
            return f"{candidate} was tried {now - rejected.at:.0f}s ago and measured worse{measured}: not tried again until that evidence decays"
    return None


def start(
    state: State, setup: Setup, plan: evidence.Plan, candidate: tuple[schedules.Range, ...], measurement: evidence.Measurement | None,
    policy: api.HealthPolicy, now: float, why: str,
) -> Decision:
    """Start trying `candidate` (the plan's schedule or its hypothesis); the incumbent stays recorded so a revert
    restores it exactly."""
    trials = setup.trials
    mode = mode_for(setup.replicas, trials)
    candidate = tuple(tuple(r) for r in candidate)  # type: ignore[misc]
    hypothesis = plan.hypothesis is not None and candidate == tuple(tuple(r) for r in plan.hypothesis.ranges)
    predicted = plan.hypothesis_gain if hypothesis else plan.gain
    trial = Trial(
        candidate=candidate, incumbent=state.schedule, mode=mode, started_at=now, predicted_gain=predicted, needed=trials.windows,  # type: ignore[arg-type]
        incumbent_sum=measurement.speedup if measurement is not None else 0.0, incumbent_windows=1.0 if measurement is not None else 0.0,
    )
    where = (f"on {trials.replicas} challenger replica(s) beside the incumbent" if mode == "challenger"
             else "in place of the incumbent, against the window measured before it")
    started = replace(state, trial=trial, consecutive_breaches=0, last_action_at=now)
    if mode == "sequential":
        started = replace(started, schedule=candidate, configured_at=now)
    basis = "fitted or prior" if hypothesis else plan.evidence
    reason = (f"{why}: trying {evidence.short(candidate)} against {_incumbent(setup, state)} {where}, predicted {predicted:+.0%} "
              f"[{basis}]; promoted after {trials.windows} measured window(s) only if it measures at least {policy.min_predicted_gain:+.0%} over the incumbent")
    return Decision("start_trial", reason, started, plan)


def judge(state: State, observation: Observation, measurement: evidence.Measurement | None, policy: api.HealthPolicy, setup: Setup, now: float) -> Decision:
    """One evaluation while a trial runs: count the window, then promote, revert or wait."""
    trial = state.trial
    assert trial is not None
    trial = _counted(trial, state, observation, measurement, policy, setup, now)
    state = replace(state, trial=trial)
    verdict = _verdict(trial, policy)
    if verdict is not None:
        gain, low = verdict
        if trial.windows >= trial.needed or (trial.windows >= EARLY_VERDICT_WINDOWS and _certainly_worse(gain, trial, policy)):
            return _promote(state, setup, gain, low, now) if gain >= policy.min_predicted_gain and low > 0 else _revert(state, setup, gain, low, now)
    if now - trial.started_at > setup.trials.max_seconds:
        return _revert(state, setup, None, None, now, f"not measured enough in {setup.trials.max_seconds}s ({trial.windows} of {trial.needed} windows)")
    so_far = f"candidate {trial.candidate_speedup:.2f}x, incumbent {trial.incumbent_speedup:.2f}x" if verdict is not None else "nothing measured yet"
    return Decision("keep", f"trial of {evidence.short(trial.candidate)} ({trial.mode}): window {trial.windows} of {trial.needed}, {so_far}", state)


def _counted(trial: Trial, state: State, observation: Observation, measurement: evidence.Measurement | None, policy: api.HealthPolicy, setup: Setup, now: float) -> Trial:
    """This window's measurements folded in, where the whole window ran the trial."""
    if now - trial.started_at < policy.window_seconds:
        return trial  # the window began before the candidate ran
    if trial.mode == "sequential":
        if measurement is None or measurement.k != _k(trial.candidate, setup, measurement.batch_size):
            return trial
        return replace(trial, candidate_sum=trial.candidate_sum + measurement.speedup, windows=trial.windows + 1)
    challenger = evidence.measure(
        _k(trial.candidate, setup, observation.challenger_batch_size), observation.challenger_p50_tpot, observation.baseline_p50_tpot,
        observation.challenger_batch_size, observation.baseline_batch_size, [], vllm.TPOT_BUCKETS,
    )
    if challenger is None or measurement is None:
        return trial  # a side-by-side comparison needs both in the same window
    return replace(trial, candidate_sum=trial.candidate_sum + challenger.speedup, windows=trial.windows + 1,
                   incumbent_sum=trial.incumbent_sum + measurement.speedup, incumbent_windows=trial.incumbent_windows + 1)


def _verdict(trial: Trial, policy: api.HealthPolicy) -> tuple[float, float] | None:
    """(measured gain of the candidate over the incumbent, its pessimistic end), or None before both are measured."""
    candidate, incumbent = trial.candidate_speedup, trial.incumbent_speedup
    if candidate is None or incumbent is None or incumbent <= 0:
        return None
    gain = candidate / incumbent - 1
    return gain, (1 + gain) * (1 - evidence.z_of(policy.confidence) * _spread(trial)) - 1


def _certainly_worse(gain: float, trial: Trial, policy: api.HealthPolicy) -> bool:
    return (1 + gain) * (1 + evidence.z_of(policy.confidence) * _spread(trial)) < 1


def _spread(trial: Trial) -> float:
    """Relative 1-sigma of the measured gain: each side's window noise over its number of windows."""
    return math.hypot(evidence.WINDOW_NOISE / math.sqrt(trial.windows), evidence.WINDOW_NOISE / math.sqrt(trial.incumbent_windows))


def _promote(state: State, setup: Setup, gain: float, low: float, now: float) -> Decision:
    trial = state.trial
    assert trial is not None
    promoted = replace(state, schedule=trial.candidate, trial=None, last_action_at=now, consecutive_breaches=0)
    if trial.mode == "challenger":
        promoted = replace(promoted, configured_at=now)  # the incumbent's replicas now run it too
    reason = (f"trial promoted: {evidence.short(trial.candidate)} measured {trial.candidate_speedup:.2f}x against the baseline over {trial.windows} window(s), "
              f"the incumbent {_incumbent(setup, state)} {trial.incumbent_speedup:.2f}x: {gain:+.0%} (at least {low:+.0%}; predicted {trial.predicted_gain:+.0%})")
    return Decision("promote_trial", reason, promoted)


def _revert(state: State, setup: Setup, gain: float | None, low: float | None, now: float, why: str | None = None) -> Decision:
    trial = state.trial
    assert trial is not None
    reverted = replace(state, schedule=trial.incumbent, trial=None, last_action_at=now, consecutive_breaches=0,
                       rejected=(*state.rejected[-7:], Rejected(evidence.short(trial.candidate), now, gain)))
    if trial.mode == "sequential":
        reverted = replace(reverted, configured_at=now)
    if why is None:
        why = (f"{evidence.short(trial.candidate)} measured {trial.candidate_speedup:.2f}x against the baseline over {trial.windows} window(s), "
               f"the incumbent {_incumbent(setup, state)} {trial.incumbent_speedup:.2f}x: {gain:+.0%} (at least {low:+.0%}), "
               f"short of the promised {trial.predicted_gain:+.0%}")
    return Decision("revert_trial", f"trial reverted: {why}; the incumbent's configuration restored", reverted)


def _incumbent(setup: Setup, state: State) -> str:
    trial = state.trial
    incumbent = trial.incumbent if trial is not None else state.schedule
    return evidence.short(incumbent) if incumbent else f"{evidence.short(setup.ranges(replace(state, schedule=None)))} (the spec's)"


def _k(ranges: tuple[tuple[int, int, int], ...], setup: Setup, batch_size: float | None) -> int:
    return schedules.k_for_batch(ranges, max(1, round(batch_size or 1)), setup.max_k)
