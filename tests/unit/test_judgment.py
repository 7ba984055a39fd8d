"""evaluate(): one reading of a poll becomes a status patch, at most one event, and a render state when enforced."""

from specserve import api
from specserve.decision import judgment
from specserve.observation import metrics, readings
from tests.helpers import minimal_spec

BODY = {"metadata": {"name": "a", "namespace": "llm", "generation": 1}, "status": {}}


def spec(**overrides):
    overrides.setdefault("healthPolicy", {"consecutiveBreaches": 1, "minDraftTokens": 100})
    return api.SpeculativeServingSpec.model_validate(minimal_spec(**overrides))


def poll(acceptance, drafts=10_000, window=300, positions=None):
    if positions is None:
        positions = {1: 0.4, 0: 0.7} if acceptance >= 0.5 else {0: acceptance + 0.1, 1: acceptance, 2: acceptance, 3: acceptance - 0.1}
    role = metrics.RoleMetrics(acceptance_rate=acceptance, draft_tokens=drafts, p99_tpot=0.04, mean_accepted_length=2.1, per_position_acceptance=positions)
    return metrics.Poll({window: {("llm", "a", "speculative"): role}}, 12, 0.01)


def judge(body, spec, result, now):
    """What the health loop does with one poll: read the serving's numbers out of it, then judge them."""
    meta = body["metadata"]
    return judgment.evaluate(body, spec, readings.observe(result, spec.health_policy.window_seconds, meta["namespace"], meta["name"]), now)


def conditions(outcome):
    return {c["type"]: c for c in outcome.status["conditions"]}


def test_low_acceptance_in_enforce_mode_turns_speculation_off():
    outcome = judge(BODY, spec(), poll(0.3), 1000.0)
    assert outcome.decision.action == "disable_speculation"
    assert outcome.status["speculation"] == "Off" and outcome.render_state.speculation is False
    assert outcome.event[:2] == ("Warning", "SpeculationDisabled") and "0.300" in outcome.event[2]
    assert conditions(outcome)["SpeculationHealthy"]["status"] == "False"


def test_observe_mode_records_and_announces_but_never_renders():
    s = spec(healthPolicy={"consecutiveBreaches": 1, "minDraftTokens": 100, "mode": "Observe"})
    outcome = judge(BODY, s, poll(0.3), 1000.0)
    assert outcome.render_state is None and "speculation" not in outcome.status
    assert outcome.event[1] == "SpeculationDisabled" and outcome.event[2].startswith("Observe mode, not applied")
    assert outcome.status["decisions"][-1]["enforced"] is False


def test_prometheus_down_holds_with_one_warning_event():
    first = judge(BODY, spec(), metrics.MetricsError("ConnectionError: refused"), 1000.0)
    assert first.decision.action == "hold" and first.event[1] == "MetricsUnavailable"
    assert conditions(first)["MetricsAvailable"]["reason"] == "PrometheusUnavailable"
    again = judge({**BODY, "status": first.status}, spec(), metrics.MetricsError("refused"), 1030.0)
    assert again.event is None


def test_observation_lands_in_status():
    outcome = judge(BODY, spec(), poll(0.8), 1000.0)
    obs = outcome.status["observation"]
    assert obs["acceptanceRate"] == 0.8 and obs["p99TpotSeconds"] == 0.04 and obs["perPositionAcceptance"] == [0.7, 0.4]
    assert conditions(outcome)["SpeculationHealthy"]["status"] == "True"


def test_state_survives_a_round_trip_through_status():
    off = judge(BODY, spec(), poll(0.3), 1000.0)
    restarted = judgment.state_from_status(spec(), {**off.status})
    assert restarted.speculation is False and restarted.disabled_at == 1000.0


def test_decision_history_is_bounded():
    status = {"decisions": [{"time": "t", "action": "hold", "reason": "", "speculation": True}] * 20}
    outcome = judge({**BODY, "status": status}, spec(), poll(0.8), 1000.0)
    assert len(outcome.status["decisions"]) == judgment.MAX_DECISIONS and outcome.status["decisions"][-1]["action"] == "keep"


def test_an_evaluation_is_due_only_after_the_interval():
    s = spec()
    assert judgment.due({}, s, 1000.0)
    recent = {"health": {"lastEvaluationTime": judgment.format_time(990.0)}}
    assert not judgment.due(recent, s, 1000.0) and judgment.due(recent, s, 1020.0)
