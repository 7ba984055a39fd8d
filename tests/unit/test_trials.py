"""Trials: a predicted change runs beside (or after) the incumbent, is measured against the baseline, then promoted or
reverted - with what each measured in the reason, the incumbent's exact objects back on a revert, one trial at a time."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from specserve import api
from specserve.decision import judgment, policy, terms
from specserve.decision.terms import Observation
from specserve.rendering import manifests
from tests.helpers import minimal_spec

POSITIONS = (0.85, 0.60, 0.10, 0.02)  # late positions rarely accepted: the fitted cost predicts k=2 faster than k=4
DRAFT = {"method": "draft_model", "numSpeculativeTokens": 4, "draft": {"model": "meta-llama/Llama-3.2-1B-Instruct"}}
STEP = 30.0
OWNER = manifests.Owner("demo", "llm", "uid-1")


def spec(replicas: int = 3, trials: dict | None = None, **policy) -> api.SpeculativeServingSpec:
    return api.SpeculativeServingSpec.model_validate(minimal_spec(speculation=DRAFT, replicas=replicas, healthPolicy=policy, trials=trials or {}))


def window(incumbent: float = 1.12, challenger: float | None = None) -> Observation:
    """One window at batch 4 on every role: TPOT 14 ms on the baseline; the incumbent's and the challenger's speedups."""
    return Observation(
        acceptance_rate=sum(POSITIONS) / 4, draft_tokens=50_000, per_position_acceptance=POSITIONS, batch_size=4, baseline_batch_size=4,
        p50_tpot=0.014 / incumbent, baseline_p50_tpot=0.014, request_rate=5.0,
        challenger_p50_tpot=0.014 / challenger if challenger else None, challenger_batch_size=4 if challenger else None,
    )


def run(serving: api.SpeculativeServingSpec, windows: list[Observation]) -> list[terms.Decision]:
    hp, setup = serving.health_policy, policy.setup_for(serving)
    state, found = policy.initial_state(hp, None), []
    for i, observation in enumerate(windows):
        decision = policy.decide(state, observation, hp, 1_000.0 + i * STEP, terms.Ladder(), setup)
        found.append(decision)
        state = decision.state
    return found


def changes(decisions: list[terms.Decision]) -> list[terms.Decision]:
    return [d for d in decisions if d.changes]


def trial_of(candidate: float, after: int = 16) -> list[terms.Decision]:
    """Three windows that start a challenger trial of k=2, then windows where the challenger measures `candidate`."""
    return run(spec(), [window()] * 3 + [window(1.12, candidate)] * after)


def test_a_better_candidate_on_a_challenger_slice_is_promoted_with_both_measurements_quoted():
    decisions = trial_of(1.45)
    started, promoted = changes(decisions)[:2]
    assert started.action == "start_trial" and started.state.trial is not None and started.state.trial.mode == "challenger"
    assert started.state.schedule is None, "a challenger trial leaves the incumbent as it is"
    assert promoted.action == "promote_trial"
    assert "k2 measured 1.45x" in promoted.reason and "the incumbent k4 (the spec's) 1.12x" in promoted.reason
    assert promoted.state.trial is None and promoted.state.schedule == started.state.trial.candidate


def test_a_worse_candidate_is_reverted_and_not_tried_again_while_its_evidence_lasts():
    decisions = trial_of(0.90, after=60)
    found = changes(decisions)
    assert [d.action for d in found] == ["start_trial", "revert_trial"]
    reverted = found[1]
    assert "k2 measured 0.90x" in reverted.reason and "1.12x" in reverted.reason
    assert reverted.state.schedule is None and reverted.state.rejected[-1].summary == "k2"
    assert any("not tried again" in d.reason for d in decisions[decisions.index(reverted) + 1:])


def test_a_candidate_certainly_worse_is_reverted_before_all_its_windows():
    serving = spec(trials={"windows": 10})
    decisions = run(serving, [window()] * 3 + [window(1.12, 0.6)] * 16)
    reverted = next(d for d in decisions if d.action == "revert_trial")
    assert "over 2 window(s)" in reverted.reason


def test_one_replica_tries_the_candidate_in_place_and_compares_it_with_the_window_before():
    decisions = run(spec(replicas=1), [window()] * 3 + [window(1.45)] * 16)
    started, promoted = changes(decisions)[:2]
    assert started.state.trial is not None and started.state.trial.mode == "sequential"
    assert started.state.schedule == started.state.trial.candidate
    assert promoted.action == "promote_trial" and "1.45x" in promoted.reason and "1.12x" in promoted.reason


def test_no_trial_runs_while_speculation_is_on_probation():
    hp, setup = spec().health_policy, policy.setup_for(spec())
    state = replace(policy.initial_state(hp, None), on_probation=True, last_action_at=4_400.0)  # past its cooldown, not yet survived
    decisions = []
    for i in range(3):
        decisions.append(policy.decide(state, window(), hp, 5_000.0 + i * STEP, terms.Ladder(), setup))
        state = decisions[-1].state
    assert not changes(decisions)
    assert "on probation" in decisions[-1].reason


def test_trials_off_only_recommend_the_uncertain_change():
    decisions = run(spec(trials={"enabled": False}), [window()] * 8)
    assert not changes(decisions)
    assert decisions[-1].plan is not None and decisions[-1].plan.hypothesis is not None


def test_observe_mode_recommends_a_trial_and_runs_none():
    serving = spec(mode="Observe")
    body = {"metadata": {"name": "demo", "namespace": "llm", "generation": 1}, "status": {}}
    outcomes = []
    for i in range(4):
        outcome = judgment.evaluate(body, serving, window(), 1_000.0 + i * STEP)
        outcomes.append(outcome)
        body = {**body, "status": {**body["status"], **outcome.status}}
    started = [o for o in outcomes if o.decision.action == "start_trial"]
    assert started and started[0].event is not None and started[0].event[2].startswith("Observe mode, not applied")
    assert all(o.render_state is None for o in outcomes) and body["status"].get("trial") is None


def test_a_challenger_trial_renders_its_slice_and_the_incumbent_gives_up_its_replicas():
    serving = spec(replicas=3)
    candidate = ((1, 1, 2),)
    state = manifests.DecisionState(challenger=candidate, challenger_replicas=1)
    objects = {(o["kind"], o["metadata"]["name"]): o for o in manifests.render(OWNER, serving, state)}
    challenger, incumbent = objects[("Deployment", "demo-challenger")], objects[("Deployment", "demo")]
    assert challenger["spec"]["replicas"] == 1 and incumbent["spec"]["replicas"] == 2
    assert challenger["spec"]["template"]["metadata"]["labels"][manifests.ROLE_LABEL] == manifests.ROLE_CHALLENGER
    args = challenger["spec"]["template"]["spec"]["containers"][0]["args"]
    assert '"num_speculative_tokens":2' in args[args.index("--speculative-config") + 1]
    assert manifests.ROLE_LABEL not in objects[("Service", "demo")]["spec"]["selector"], "the Service sends traffic to the challenger too"


def test_a_reverted_trial_renders_the_incumbents_exact_objects_again():
    serving = spec(replicas=3)
    decisions = trial_of(0.90)
    started = changes(decisions)[0]
    before = manifests.render(OWNER, serving, judgment.render_state_of(replace(started.state, trial=None, schedule=None), serving.trials))
    during = manifests.render(OWNER, serving, judgment.render_state_of(started.state, serving.trials))
    reverted = next(d for d in decisions if d.action == "revert_trial")
    after = manifests.render(OWNER, serving, judgment.render_state_of(reverted.state, serving.trials))
    assert during != before and after == before


def test_a_trial_survives_the_round_trip_through_status():
    started = changes(trial_of(1.45))[0]
    serving = spec()
    setup = policy.setup_for(serving)
    status = {"trial": judgment.trial_status(started.state, setup), "schedule": None, "health": judgment.health_status(started.state, serving, 2_000.0)}
    back = judgment.state_from_status(serving, status)
    assert back.trial is not None and back.trial.candidate == started.state.trial.candidate and back.trial.mode == "challenger"
    assert back.trial.incumbent_speedup == started.state.trial.incumbent_speedup


speedups = st.floats(0.5, 2.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(speedups, st.one_of(st.none(), speedups)), min_size=4, max_size=30))
def test_never_two_trials_at_once_and_no_rewrite_without_a_measured_or_fitted_gain_above_the_margin(windows):
    serving = spec()
    decisions = run(serving, [window(a, b) for a, b in windows])
    running = False
    for decision in decisions:
        if decision.action == "start_trial":
            assert not running, "a trial started while another ran"
            running = True
        elif decision.action in ("promote_trial", "revert_trial"):
            running = False
        if decision.action == "set_schedule":
            assert decision.plan is not None and decision.plan.gain >= serving.health_policy.min_predicted_gain
        if decision.action == "promote_trial":
            assert decision.state.trial is None and "measured" in decision.reason
