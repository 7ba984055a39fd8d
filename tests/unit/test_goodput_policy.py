"""The goodput policy: replayed verdicts on the cases the framework is about, then properties over random evidence.

Traces are what `specserve replay` reads; the swinging-load case runs closed-loop (each window measures what the
policy's own schedule gave), since only a closed loop shows how many rewrites a policy makes.
"""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from specserve import api
from specserve.decision import evidence, goodput, policy, proposers, schedules, terms
from specserve.decision.acceptance import per_position_for_token_acceptance
from specserve.decision.policy import decide, initial_state
from specserve.decision.terms import Observation, State
from specserve.observation import replay
from tests.helpers import minimal_spec

DRAFT = {"method": "draft_model", "numSpeculativeTokens": 4, "draft": {"model": "meta-llama/Llama-3.2-1B-Instruct"}}
STEP = 30.0


def spec(speculation=None, **policy_overrides):
    return api.SpeculativeServingSpec.model_validate(minimal_spec(speculation=speculation or {"method": "ngram"}, healthPolicy=policy_overrides))


def trace(minutes, **fields):
    """One line per 30 s for `minutes`, every line the same observation."""
    base = {"acceptance_rate": 0.8, "draft_tokens": 50_000}
    return [json.dumps({"t": 1_000 + i * STEP, **base, **fields}) for i in range(int(minutes * 60 / STEP))]


def replayed(serving, lines):
    return list(replay.replay(serving, lines))


def rewrites(decisions):
    return [d for d in decisions if d["action"] in terms.CHANGES]


def per_token(a, k=4):
    return [round(a ** (i + 1), 4) for i in range(k)]


# ---------------------------------------------------------------- verdicts


def test_sustained_saturation_turns_speculation_off_not_to_a_k_0_range_that_still_costs():
    lines = trace(20, acceptance_rate=0.76, per_position_acceptance=per_token(0.76), batch_size=120, baseline_batch_size=118,
                  p50_tpot=0.028, baseline_p50_tpot=0.020, p99_tpot=0.048, baseline_p99_tpot=0.030)
    decisions = replayed(spec(DRAFT), lines)
    assert len(rewrites(decisions)) == 1
    assert decisions[-1]["k"] == 0
    assert not decisions[-1]["speculation"]
    assert "measured 0.69x \u00b15% with k=4 at batch 120.0" in rewrites(decisions)[0]["reason"]


def test_a_cheap_proposer_measured_faster_stays_on_below_the_draft_model_threshold():
    lines = trace(60, acceptance_rate=0.42, batch_size=4, baseline_batch_size=4, p50_tpot=0.010, baseline_p50_tpot=0.016)
    decisions = replayed(spec(), lines)
    assert rewrites(decisions) == [] and all(d["speculation"] and d["k"] == 4 for d in decisions)
    assert "estimated 1.60x at batch 4.0 with k=4 [measured]" in decisions[-1]["reason"]


def test_rarely_accepted_late_positions_lower_k_instead_of_switching_off():
    positions = [0.85, 0.60, 0.10, 0.02]
    lines = trace(30, acceptance_rate=sum(positions) / 4, per_position_acceptance=positions, batch_size=4)
    decisions = replayed(spec(DRAFT), lines)
    assert [d["action"] for d in rewrites(decisions)] == ["set_schedule"]
    assert decisions[-1]["speculation"] and decisions[-1]["k"] == 2
    assert "at k=2 acceptance is 0.725" in rewrites(decisions)[0]["reason"]


def test_rarely_accepted_late_positions_measured_against_a_baseline_try_a_lower_k_and_revert_it_when_it_measures_no_better():
    """The fitted cost predicts k=2 faster, but only a measurement can say: the trial runs it, measures the same 1.12x
    (the replayed world does not change with k), restores k=4 and does not try k=2 again."""
    positions = [0.85, 0.60, 0.10, 0.02]
    lines = trace(30, acceptance_rate=sum(positions) / 4, per_position_acceptance=positions, batch_size=4, baseline_batch_size=4,
                  p50_tpot=0.0125, baseline_p50_tpot=0.0140)
    decisions = replayed(spec(DRAFT), lines)
    assert [d["action"] for d in rewrites(decisions)] == ["start_trial", "revert_trial"]
    started, reverted = rewrites(decisions)
    assert 0 < started["k"] < 4 and "worth a trial" in started["reason"]
    assert reverted["k"] == 4 and "measured 1.12x" in reverted["reason"] and "the incumbent k4 (the spec's) 1.12x" in reverted["reason"]


def test_healthy_and_faster_is_never_rewritten():
    lines = trace(120, per_position_acceptance=per_token(0.8), batch_size=1, baseline_batch_size=1, p50_tpot=0.0187, baseline_p50_tpot=0.0300)
    assert rewrites(replayed(spec(), lines)) == []


def test_a_draft_model_at_the_k_the_gpu_measurements_favour_is_not_rewritten():
    lines = trace(120, acceptance_rate=0.72, per_position_acceptance=per_token(0.8, 2), batch_size=1, baseline_batch_size=1, p50_tpot=0.0204, baseline_p50_tpot=0.0235)
    assert rewrites(replayed(spec({**DRAFT, "numSpeculativeTokens": 2}), lines)) == []


def test_a_window_that_measured_the_previous_k_is_not_judged():
    serving = spec(DRAFT)
    lines = trace(1, acceptance_rate=0.2, per_position_acceptance=per_token(0.3), batch_size=4, k=2)
    decisions = replayed(serving, lines)
    assert {d["action"] for d in decisions} == {"keep"} and "window measured k=2" in decisions[0]["reason"]


def test_medians_inside_the_first_tpot_bucket_are_no_measurement():
    lines = trace(20, acceptance_rate=0.76, batch_size=120, baseline_batch_size=120, p50_tpot=0.005, baseline_p50_tpot=0.005, p99_tpot=0.0099, baseline_p99_tpot=0.0099)
    decisions = replayed(spec(DRAFT), lines)
    assert rewrites(decisions) == [] and "[measured]" not in decisions[-1]["reason"]


def test_medians_read_at_one_value_inside_a_wider_bucket_are_no_measurement():
    lines = trace(20, acceptance_rate=0.76, batch_size=2, baseline_batch_size=2, p50_tpot=0.0175, baseline_p50_tpot=0.0175, p99_ttft=0.24, baseline_p99_ttft=0.24)
    decisions = replayed(spec(DRAFT), lines)
    assert rewrites(decisions) == [] and "[measured]" not in decisions[-1]["reason"]


def test_quantiles_in_different_buckets_are_compared():
    assert not evidence.unresolved(0.030, 0.060, (0.01, 0.025, 0.05, 0.075))
    assert evidence.unresolved(0.004, 0.009, (0.01, 0.025, 0.05, 0.075))
    assert not evidence.unresolved(0.030, 0.048, (0.01, 0.025, 0.05, 0.075))


def test_a_window_of_a_few_requests_is_no_measurement():
    lines = trace(20, acceptance_rate=0.76, batch_size=2, baseline_batch_size=2, p50_tpot=0.040, baseline_p50_tpot=0.020, request_rate=0.1)
    decisions = replayed(spec(DRAFT), lines)
    assert rewrites(decisions) == [] and "[measured]" not in decisions[-1]["reason"]


def test_a_raised_ttft_within_its_own_ratio_is_no_breach():
    lines = trace(30, per_position_acceptance=per_token(0.8), batch_size=1, baseline_batch_size=1, p50_tpot=0.0187, baseline_p50_tpot=0.0300,
                  p99_ttft=0.060, baseline_p99_ttft=0.035)
    assert rewrites(replayed(spec(), lines)) == []


def test_a_baseline_at_another_batch_size_is_no_measurement():
    lines = trace(20, acceptance_rate=0.76, batch_size=120, baseline_batch_size=20, p50_tpot=0.028, baseline_p50_tpot=0.020)
    assert rewrites(replayed(spec(DRAFT), lines)) == []


def world_speedup(setup, positions):
    """The simulated truth: the GPU prior, 5% kinder (so measurement and prior disagree a little)."""
    return lambda b, k: 1.0 if k == 0 else 1.05 * goodput.speedup(b, k, positions, setup.proposer).speedup


def swinging_load(serving, minutes=120, low=8, high=150, period=300.0):
    """Closed loop: the load swings between two batch sizes; each window's numbers come from the k the schedule gave."""
    hp = serving.health_policy
    setup = policy.setup_for(serving)
    positions = tuple(per_token(0.8))
    truth = world_speedup(setup, positions)
    state, history, decisions = initial_state(hp, None), [], []
    for i in range(int(minutes * 60 / hp.interval_seconds)):
        t = i * float(hp.interval_seconds)
        batch = low if int(t // period) % 2 == 0 else high
        history.append((t, batch, setup.k_at(state, batch) if state.speculation else 0))
        window = [h for h in history if h[0] > t - hp.window_seconds]
        base = [0.005 * (1 + b / 64) for _, b, _ in window]
        ours = [x / truth(b, k) for x, (_, b, k) in zip(base, window)]
        ks = {k for _, _, k in window}
        observation = Observation(
            acceptance_rate=0.6, draft_tokens=50_000, per_position_acceptance=positions, batch_size=sum(b for _, b, _ in window) / len(window),
            baseline_batch_size=sum(b for _, b, _ in window) / len(window), p50_tpot=sum(ours) / len(ours), baseline_p50_tpot=sum(base) / len(base),
            k=ks.pop() if len(ks) == 1 and window[0][0] <= t - hp.window_seconds + hp.interval_seconds else None,
        )
        decision = decide(state, observation, hp, t, terms.Ladder(), setup)
        decisions.append(decision)
        state = decision.state
    return setup, state, decisions


def test_load_swinging_every_five_minutes_is_judged_at_its_measured_mean_and_retried_at_doubling_delays():
    """Windows that average a load swinging between batch 8 and 150 measure a loss at the mean: speculation goes off
    (the baseline's own, measured configuration) rather than to a schedule nobody measured, and each probation that
    fails doubles the next delay, so two hours hold at most three offs."""
    setup, state, decisions = swinging_load(spec())
    changes = [d for d in decisions if d.changes]
    offs = [d for d in changes if d.action == "disable_speculation"]
    assert 1 <= len(offs) <= 3 and {d.action for d in changes} <= {"disable_speculation", "enable_speculation"}
    delays = [d.state.probation_delay for d in offs]
    assert delays == sorted(delays) and len(set(delays)) == len(delays)
    assert all("measured" in d.reason and "against the baseline" in d.reason for d in offs)


def test_observe_mode_shows_the_recommended_schedule_without_applying_it():
    lines = trace(20, acceptance_rate=0.76, per_position_acceptance=per_token(0.76), batch_size=120, baseline_batch_size=118, p50_tpot=0.028, baseline_p50_tpot=0.020)
    serving = spec(DRAFT)
    t, observation = replay.parse_line(lines[0], 1)
    decision = decide(initial_state(serving.health_policy, None), observation, serving.health_policy, t, terms.Ladder(), policy.setup_for(serving))
    assert decision.plan is not None and decision.plan.schedule.k_for(120) == 0 and decision.plan.gain > 0.1
    assert decision.plan.evidence == "measured"


# ---------------------------------------------------------------- properties

PROPOSERS = [proposers.proposer_for(m) for m in ("draft_model", "ngram", "eagle3")]
verdicts = st.lists(
    st.builds(
        lambda lo_index, k, correction, age: evidence.Verdict(
            schedules.buckets()[lo_index].lo, schedules.buckets()[lo_index].hi, k, correction, correction, -age, 1.0),
        st.integers(0, len(schedules.DEFAULT_BUCKET_STARTS) - 1), st.integers(1, 8), st.floats(0.2, 3.0), st.floats(0, 86_400),
    ),
    min_size=1, max_size=6, unique_by=lambda v: v.lo,
)


@settings(max_examples=150)
@given(verdicts, st.sampled_from(PROPOSERS), st.floats(0.05, 0.95), st.integers(1, 8))
def test_a_plan_never_gives_a_k_predicted_slower_than_none_where_speedup_was_measured(found, proposer, acceptance, max_k):
    table = schedules.buckets()
    estimate = evidence.estimator(found, table, goodput.prior_estimator(per_position_for_token_acceptance(acceptance, 8), proposer), None)
    plan = evidence.plan(estimate, evidence.spec_ranges(max_k, None), max_k, {v.lo: 1.0 for v in found}, None)
    for bucket in table:
        k = plan.schedule.k_for(int(bucket.representative))
        assert k <= max_k
        assert k == 0 or estimate(bucket.representative, k).speedup >= 1.0


acceptances = st.one_of(st.none(), st.floats(0, 1))
observations = st.builds(
    Observation,
    acceptance_rate=acceptances,
    draft_tokens=st.one_of(st.none(), st.floats(0, 100_000)),
    per_position_acceptance=st.lists(st.floats(0, 1), max_size=6).map(tuple),
    batch_size=st.one_of(st.none(), st.floats(0.5, 300)),
    baseline_batch_size=st.one_of(st.none(), st.floats(0.5, 300)),
    p50_tpot=st.one_of(st.none(), st.floats(0.001, 0.1)),
    baseline_p50_tpot=st.one_of(st.none(), st.floats(0.001, 0.1)),
    p99_tpot=st.one_of(st.none(), st.floats(0.001, 0.2)),
    baseline_p99_tpot=st.one_of(st.none(), st.floats(0.001, 0.2)),
    k=st.one_of(st.none(), st.integers(0, 6)),
)
SETUPS = [terms.Setup(4, None, proposers.proposer_for("draft_model")), terms.Setup(3, 64, proposers.proposer_for("ngram"))]
HP = api.HealthPolicy(consecutive_breaches=2, cooldown_seconds=600, probation_seconds=1800, interval_seconds=30, min_draft_tokens=1000)


def run(setup, stream, state=None):
    state = state or initial_state(HP, None)
    decisions = []
    for i, observation in enumerate(stream):
        decision = decide(state, observation, HP, i * float(HP.interval_seconds), terms.Ladder(), setup)
        decisions.append(decision)
        state = decision.state
    return decisions


@settings(max_examples=150)
@given(st.sampled_from(SETUPS), st.lists(observations, min_size=1, max_size=100))
def test_at_most_one_rewrite_per_cooldown(setup, stream):
    times = [i * HP.interval_seconds for i, d in enumerate(run(setup, stream)) if d.changes]
    assert all(b - a >= HP.cooldown_seconds for a, b in zip(times, times[1:]))


@settings(max_examples=150)
@given(st.sampled_from(SETUPS), st.lists(observations, min_size=1, max_size=100))
def test_a_schedule_never_raises_k_above_the_specs(setup, stream):
    for decision in run(setup, stream):
        ranges = setup.ranges(decision.state)
        assert all(k <= setup.max_k for _, _, k in decision.state.schedule or ())
        assert all(k == 0 for lo, _, k in ranges if setup.disable_above_batch_size is not None and lo > setup.disable_above_batch_size)


@settings(max_examples=100)
@given(st.sampled_from(SETUPS), st.lists(observations, max_size=60), observations)
def test_missing_data_never_changes_anything(setup, stream, observation):
    decisions = run(setup, stream)
    state = decisions[-1].state if decisions else initial_state(HP, None)
    if not state.speculation:
        return
    later = len(stream) * float(HP.interval_seconds)
    for missing in (Observation(error="timeout"), Observation(acceptance_rate=None, batch_size=observation.batch_size),
                    Observation(acceptance_rate=observation.acceptance_rate or 0.5, draft_tokens=10, batch_size=observation.batch_size)):
        decision = decide(state, missing, HP, later, terms.Ladder(), setup)
        assert decision.action == "hold" and decision.state == state


def test_verdicts_are_forgotten_once_their_weight_has_decayed():
    old = evidence.Verdict(8, 15, 4, 1.2, 1.1, at=0.0, windows=1.0)
    half_life = 3600.0
    assert evidence.remembered([old], 4 * half_life, half_life) == (old,)
    assert evidence.remembered([old], 5 * half_life, half_life) == ()


def test_status_round_trip_keeps_schedule_and_verdicts():
    from specserve.decision import judgment

    serving = spec(DRAFT)
    state = State(schedule=((1, 31, 4), (32, 32, 0)), verdicts=(evidence.Verdict(64, 127, 4, 0.7, 0.9, 1_000.0, 2.0),), last_action_at=1_000.0)
    status = {"schedule": [list(r) for r in state.schedule], "health": judgment.health_status(state, serving, 1_000.0)}
    back = judgment.state_from_status(serving, status)
    assert back.schedule == state.schedule and back.verdicts == state.verdicts
    assert math.isclose(back.last_action_at or 0, 1_000.0)
