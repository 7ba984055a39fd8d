"""The health policy: examples of each action, then properties over random observation streams."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from specserve import api
from specserve.decision.policy import decide, initial_state
from specserve.decision.terms import CHANGES, Decision, Ladder, Observation, State

POLICY = api.HealthPolicy(consecutive_breaches=3, cooldown_seconds=600, probation_seconds=1800, max_probation_seconds=7200, interval_seconds=30, min_draft_tokens=1000)
LADDER = Ladder(("int4", "int8", "bf16"))


def healthy(acceptance=0.8, **kw):
    return Observation(acceptance_rate=acceptance, draft_tokens=50_000, p99_tpot=0.030, baseline_p99_tpot=0.035, **kw)


def run(state, observations, policy=POLICY, ladder=Ladder(), start=0.0):
    decisions = []
    for i, obs in enumerate(observations):
        decision = decide(state, obs, policy, start + i * policy.interval_seconds, ladder)
        decisions.append(decision)
        state = decision.state
    return decisions


def test_prometheus_unavailable_holds():
    d = decide(initial_state(POLICY, None), Observation(error="connection refused"), POLICY, 0)
    assert d.action == "hold" and "connection refused" in d.reason


def test_too_few_draft_tokens_holds_and_quotes_them():
    d = decide(initial_state(POLICY, None), Observation(acceptance_rate=0.2, draft_tokens=40), POLICY, 0)
    assert d.action == "hold" and "40 draft tokens" in d.reason and "1000" in d.reason


def test_nan_acceptance_holds():
    assert decide(initial_state(POLICY, None), Observation(acceptance_rate=math.nan, draft_tokens=5000), POLICY, 0).action == "hold"


def test_healthy_keeps():
    d = decide(initial_state(POLICY, None), healthy(), POLICY, 0)
    assert d.action == "keep" and "acceptance 0.800" in d.reason


def test_low_acceptance_disables_after_consecutive_breaches():
    actions = [d.action for d in run(initial_state(POLICY, None), [healthy(0.4)] * 3)]
    assert actions == ["keep", "keep", "disable_speculation"]


def test_disable_reason_quotes_the_numbers():
    d = run(initial_state(POLICY, None), [healthy(0.42)] * 3)[-1]
    assert "acceptance 0.420 below 0.50" in d.reason and "3 consecutive" in d.reason
    assert d.state.speculation is False


def test_a_healthy_sample_resets_the_breach_count():
    actions = [d.action for d in run(initial_state(POLICY, None), [healthy(0.4), healthy(0.4), healthy(0.8), healthy(0.4), healthy(0.4)])]
    assert "disable_speculation" not in actions


def test_watch_band_with_p99_regression_disables():
    regressing = Observation(acceptance_rate=0.6, draft_tokens=50_000, p99_tpot=0.050, baseline_p99_tpot=0.040)
    d = run(initial_state(POLICY, None), [regressing] * 3)[-1]
    assert d.action == "disable_speculation" and "1.25x the baseline" in d.reason


def test_watch_band_without_regression_keeps():
    fine = Observation(acceptance_rate=0.6, draft_tokens=50_000, p99_tpot=0.041, baseline_p99_tpot=0.040)
    assert {d.action for d in run(initial_state(POLICY, None), [fine] * 5)} == {"keep"}


def test_absolute_p99_limit_disables():
    policy = POLICY.model_copy(update={"max_p99_tpot_seconds": 0.05})
    slow = Observation(acceptance_rate=0.9, draft_tokens=50_000, p99_tpot=0.08)
    assert run(initial_state(policy, None), [slow] * 3, policy)[-1].action == "disable_speculation"


def test_reenables_after_probation_and_doubles_after_a_failed_probation():
    state = run(initial_state(POLICY, None), [healthy(0.4)] * 3)[-1].state
    decisions = run(state, [Observation()] * 70, start=90.0)
    enabled = [i for i, d in enumerate(decisions) if d.action == "enable_speculation"]
    assert enabled and 90 + enabled[0] * 30 >= 60 + 1800
    state = decisions[enabled[0]].state
    after = run(state, [healthy(0.4)] * 30, start=90 + enabled[0] * 30 + 30)
    failed = next(d for d in after if d.action == "disable_speculation")
    assert "probation failed" in failed.reason and failed.state.probation_delay == 3600


def test_quantization_drop_steps_up_one_rung():
    state = State(variant="int4", references={"int8": 0.80}, probation_delay=1800)
    d = run(state, [healthy(0.70, variant="int4")] * 3, ladder=LADDER)[-1]
    assert d.action == "switch_variant" and d.state.variant == "int8"
    assert "stepping the target up from int4 to int8" in d.reason and "0.800" in d.reason


def test_no_step_up_to_a_rung_that_does_not_fit():
    state = State(variant="int4", references={"int8": 0.80}, probation_delay=1800)
    decisions = run(state, [healthy(0.70, variant="int4")] * 4, ladder=Ladder(("int4", "int8", "bf16"), frozenset({"int4"})))
    assert {d.action for d in decisions} == {"keep"}
    assert "int8 does not fit" in decisions[-1].reason


def test_reference_acceptance_is_learned_per_variant():
    d = decide(State(variant="int8"), healthy(0.77, variant="int8"), POLICY, 0, LADDER)
    assert d.state.references == {"int8": 0.77}


def test_cooldown_blocks_a_second_action():
    state = State(speculation=True, last_action_at=0.0, probation_delay=1800)
    decisions = run(state, [healthy(0.3)] * 5, start=330.0)
    assert {d.action for d in decisions} == {"keep"} and "cooldown" in decisions[-1].reason


# ---------------------------------------------------------------- properties

acceptances = st.one_of(st.none(), st.just(math.nan), st.floats(0, 1))
observations = st.builds(
    Observation,
    acceptance_rate=acceptances,
    draft_tokens=st.one_of(st.none(), st.floats(0, 100_000)),
    p99_tpot=st.one_of(st.none(), st.floats(0.001, 1)),
    baseline_p99_tpot=st.one_of(st.none(), st.floats(0.001, 1)),
    p99_ttft=st.one_of(st.none(), st.floats(0.001, 10)),
    variant=st.sampled_from([None, "int4", "int8", "bf16"]),
    error=st.one_of(st.none(), st.just("timeout")),
)
states = st.builds(
    State,
    speculation=st.booleans(),
    variant=st.sampled_from(["int4", "int8", "bf16"]),
    consecutive_breaches=st.integers(0, 5),
    last_action_at=st.one_of(st.none(), st.floats(-5000, 0)),
    disabled_at=st.one_of(st.none(), st.floats(-5000, 0)),
    probation_delay=st.sampled_from([1800.0, 3600.0, 7200.0]),
    on_probation=st.booleans(),
    references=st.dictionaries(st.sampled_from(["int4", "int8", "bf16"]), st.floats(0, 1), max_size=3),
)


def missing(obs: Observation) -> Observation:
    return Observation(error=obs.error or "timeout") if obs.acceptance_rate is not None else obs


@given(states, observations)
def test_missing_or_insufficient_data_never_changes_anything(state, obs):
    speculating = State(**{**state.__dict__, "speculation": True})
    for candidate in (Observation(error="connection refused"), Observation(acceptance_rate=None, draft_tokens=10), Observation(acceptance_rate=0.1, draft_tokens=999)):
        d = decide(speculating, candidate, POLICY, 0.0, LADDER)
        assert d.action == "hold" and d.state == speculating


@settings(max_examples=200)
@given(states, st.lists(observations, min_size=1, max_size=120))
def test_at_most_one_action_per_cooldown(state, stream):
    times = [i * POLICY.interval_seconds for i, d in enumerate(run(state, stream, ladder=LADDER)) if d.changes]
    assert all(b - a >= POLICY.cooldown_seconds for a, b in zip(times, times[1:]))


@settings(max_examples=100)
@given(st.floats(0.3, 0.7), st.floats(0.01, 0.2), st.integers(1, 6))
def test_oscillating_acceptance_flips_at_most_once_per_cooldown_plus_probation(center, amplitude, period):
    stream = [healthy(center + (amplitude if (i // period) % 2 else -amplitude)) for i in range(400)]
    times = [i * POLICY.interval_seconds for i, d in enumerate(run(initial_state(POLICY, None), stream)) if d.action == "disable_speculation"]
    assert all(b - a >= POLICY.cooldown_seconds + POLICY.probation_seconds for a, b in zip(times, times[1:]))


@settings(max_examples=100)
@given(states, st.lists(observations, max_size=40))
def test_every_disable_can_be_followed_by_a_reenable(state, stream):
    decisions = run(state, stream, ladder=LADDER)
    final = decisions[-1].state if decisions else state
    if final.speculation:
        return
    start = len(stream) * POLICY.interval_seconds
    quiet = run(final, [Observation()] * int(POLICY.max_probation_seconds / POLICY.interval_seconds + 30), start=start)
    assert any(d.action == "enable_speculation" for d in quiet)


def test_decision_changes_flag():
    assert Decision("switch_variant", "", State()).changes and not Decision("keep", "", State()).changes
    assert CHANGES == {"disable_speculation", "switch_variant", "enable_speculation", "set_schedule", "start_trial", "promote_trial", "revert_trial"}
