"""Decide by what was measured: the replayed verdicts of issue 25, each on the numbers it was reported with.

A 70B target with an 8B draft (manifests/examples/llama-70b-draft-h100.yaml) at batch 4: healthy at k=4, then a
collapse of acceptance; and a serving whose schedule gives k=0 at its load, measured slower than its baseline.
"""

from __future__ import annotations

import json

from specserve import api
from specserve.decision import policy, terms
from specserve.observation import replay
from tests.helpers import EXAMPLES, load_example

HEALTHY_POSITIONS = [0.92, 0.85, 0.75, 0.66]
COLLAPSED_POSITIONS = [0.2, 0.04, 0.008, 0.002]
STEP = 30.0


def llama_70b(**policy) -> api.SpeculativeServingSpec:
    document = load_example(next(p for p in EXAMPLES if p.name == "llama-70b-draft-h100.yaml"))
    document["spec"]["healthPolicy"] = {**document["spec"].get("healthPolicy", {}), **policy}
    return api.SpeculativeServingSpec.model_validate(document["spec"])


def window(**fields) -> dict:
    """One window at batch 4 on both roles, with enough requests and draft tokens to be evidence."""
    return {"draft_tokens": 40_000, "batch_size": 4, "baseline_batch_size": 4, "request_rate": 5.0, **fields}


def healthy() -> dict:
    """k=4 measured 1.5x faster than the baseline (P50 TPOT 30 ms against 45 ms)."""
    return window(acceptance_rate=sum(HEALTHY_POSITIONS) / 4, per_position_acceptance=HEALTHY_POSITIONS,
                  p50_tpot=0.030, baseline_p50_tpot=0.045, p99_tpot=0.040, baseline_p99_tpot=0.060)


def collapsed() -> dict:
    """Acceptance 0.95 -> 0.2 at position 1: 1.33x slower than the baseline (60 ms against 45 ms)."""
    return window(acceptance_rate=sum(COLLAPSED_POSITIONS) / 4, per_position_acceptance=COLLAPSED_POSITIONS,
                  p50_tpot=0.060, baseline_p50_tpot=0.045, p99_tpot=0.080, baseline_p99_tpot=0.060)


def lines(*phases: tuple[int, dict]) -> list[str]:
    out, t = [], 1_000.0
    for count, fields in phases:
        for _ in range(count):
            out.append(json.dumps({"t": t, **fields}))
            t += STEP
    return out


def decisions(serving: api.SpeculativeServingSpec, *phases: tuple[int, dict]) -> list[dict]:
    return list(replay.replay(serving, lines(*phases)))


def rewrites(found: list[dict]) -> list[dict]:
    return [d for d in found if d["action"] in terms.CHANGES]


def test_a_healthy_k4_measured_faster_is_not_rewritten_on_a_prior():
    found = decisions(llama_70b(), (40, healthy()))
    assert rewrites(found) == []
    assert all(d["k"] == 4 for d in found)


def test_a_healthy_k4_keeps_the_fitted_alternative_as_an_uncertain_recommendation_only():
    serving = llama_70b()
    t, observation = replay.parse_line(lines((1, healthy()))[0], 1)
    decision = policy.decide(policy.initial_state(serving.health_policy, None), observation, serving.health_policy, t, terms.Ladder(), policy.setup_for(serving))
    assert decision.action == "keep"
    assert decision.plan is None or not decision.plan.changes or not decision.plan.certain


def test_a_collapse_turns_speculation_off_not_to_k1_within_two_evaluations():
    found = decisions(llama_70b(), (20, healthy()), (6, collapsed()))
    after = found[20:]
    changed = rewrites(after)
    assert changed and changed[0]["action"] == "disable_speculation"
    assert after.index(changed[0]) <= 1, "acted on the second evaluation after the collapse at the latest"
    assert "measured 0.75x" in changed[0]["reason"] and "for 2 consecutive evaluations" in changed[0]["reason"]
    assert all(d["k"] != 1 for d in found)


def test_a_drift_below_the_margin_still_waits_for_every_breach():
    drift = window(acceptance_rate=0.6, per_position_acceptance=[0.8, 0.6, 0.5, 0.4], p50_tpot=0.0475, baseline_p50_tpot=0.045)
    found = decisions(llama_70b(), (20, healthy()), (6, drift))
    changed = rewrites(found[20:])
    assert not changed or found[20:].index(changed[0]) >= 2


def test_a_serving_measured_slower_where_its_schedule_gives_k0_is_turned_off():
    saturated = {"draft_tokens": 0, "batch_size": 100, "baseline_batch_size": 100, "request_rate": 20.0,
                 "p50_tpot": 0.046, "baseline_p50_tpot": 0.040}
    found = decisions(llama_70b(), (12, saturated))
    changed = rewrites(found)
    assert [d["action"] for d in changed] == ["disable_speculation"]
    assert "with k=0 at batch 100.0" in changed[0]["reason"] and "a k=0 range is not off" in changed[0]["reason"]
    assert not any("no acceptance data" in d["reason"] for d in found)
