"""The judgment of one serving against one reading: its status read back into the policy's state, the decision,
and the status patch, event and render state that say it.

Pure: evaluate() takes the serving's body, spec and Observation and returns an Outcome, so it can be tested,
replayed and benchmarked without a cluster or a Prometheus.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Any

from specserve import api
from specserve.api.conditions import condition
from specserve.decision import evidence, policy, terms
from specserve.rendering import manifests

MAX_DECISIONS = 20
EVENT_REASONS = {
    "disable_speculation": ("Warning", "SpeculationDisabled"),
    "enable_speculation": ("Normal", "SpeculationReenabled"),
    "switch_variant": ("Normal", "VariantSwitched"),
    "set_schedule": ("Normal", "ScheduleChanged"),
    "start_trial": ("Normal", "TrialStarted"),
    "promote_trial": ("Normal", "TrialPromoted"),
    "revert_trial": ("Normal", "TrialReverted"),
}


@dataclass(frozen=True)
class Outcome:
    decision: terms.Decision
    enforced: bool
    status: dict[str, Any]
    event: tuple[str, str, str] | None  # type, reason, message
    render_state: manifests.DecisionState | None  # set when Deployments must be re-rendered


def due(status: dict[str, Any], spec: api.SpeculativeServingSpec, now: float, evaluated: float | None = None) -> bool:
    """Whether the serving's own interval has passed since its last evaluation: `evaluated` when the loop
    remembers it (not every evaluation is written), else status.health.lastEvaluationTime."""
    last = evaluated if evaluated is not None else parse_time(((status.get("health") or {}).get("lastEvaluationTime")))
    return last is None or now - last >= spec.health_policy.interval_seconds * 0.9


# How far an observed number moves before status is rewritten for it: (absolute, relative).
MOVES = {"speedup": (0.0, 0.05), "acceptanceRate": (0.02, 0.0), "meanAcceptedLength": (0.1, 0.0), "kvCacheUsage": (0.05, 0.0), "perPositionAcceptance": (0.05, 0.0)}
DEFAULT_MOVE = (0.0, 0.1)


def worth_writing(status: dict[str, Any], outcome: Outcome, now: float, spec: api.SpeculativeServingSpec) -> bool:
    """Whether a judgement says something status does not yet say: a decision, a changed verdict or policy
    memory, numbers that moved, or the first record. A hold, or the same verdict on similar numbers, is not
    written however long ago the last write was, so a steady or idle fleet costs no writes at all (a periodic
    refresh of every record was 17 writes a second at 5,000 servings); the operator's own /metrics say the
    loop is alive."""
    if outcome.render_state is not None or outcome.event is not None or "decisions" in outcome.status:
        return True
    verdicts = {c.get("type"): (c.get("status"), c.get("reason")) for c in status.get("conditions") or []}
    if any(verdicts.get(c["type"]) != (c["status"], c["reason"]) for c in outcome.status["conditions"]):
        return True
    old, new = status.get("health") or {}, outcome.status["health"]
    if any(old.get(k) != v for k, v in new.items() if k not in ("lastEvaluationTime", "references", "buckets")):
        return True
    if _buckets_moved(old.get("buckets") or [], new.get("buckets") or []):
        return True
    if ((status.get("recommendation") or {}).get("summary")) != ((outcome.status.get("recommendation") or {}).get("summary")):
        return True
    if "trial" in outcome.status and (status.get("trial") or None) != outcome.status["trial"]:
        return True
    if _moved(old.get("references") or {}, new.get("references") or {}) or _moved(status.get("observation") or {}, outcome.status["observation"]):
        return True
    return old.get("lastEvaluationTime") is None


def _buckets_moved(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    """A bucket learned or forgotten, measured at another k, or its speedup moved by more than 5%."""
    before = {(b.get("lo"), b.get("k")): b for b in old}
    after = {(b.get("lo"), b.get("k")): b for b in new}
    if before.keys() != after.keys():
        return True
    return any(_number_moved("speedup", before[key].get("speedup"), after[key].get("speedup")) for key in after)


def _moved(old: dict[str, Any], new: dict[str, Any]) -> bool:
    for key, value in new.items():
        if key == "time":
            continue
        before = old.get(key)
        if isinstance(value, list) or isinstance(before, list):
            pairs = list(zip(before or [], value or []))
            if len(before or []) != len(value or []) or any(_number_moved(key, a, b) for a, b in pairs):
                return True
        elif _number_moved(key, before, value):
            return True
    return False


def _number_moved(key: str, before: Any, after: Any) -> bool:
    if before is None or after is None or not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return before != after
    absolute, relative = MOVES.get(key, DEFAULT_MOVE)
    return abs(after - before) > max(absolute, relative * max(abs(before), abs(after)))


def evaluate(body: dict[str, Any], spec: api.SpeculativeServingSpec, reading: terms.Observation, now: float, fitting: frozenset[str] | None = None) -> Outcome:
    """Decide for one serving on its reading (readings.observe of a poll); in Observe mode the decision is recorded
    and announced but not enforced."""
    status = body.get("status") or {}
    hp = spec.health_policy
    state = state_from_status(spec, status)
    setup = policy.setup_for(spec, variant_model(spec, state.variant))
    observation = with_k_in_force(replace(reading, variant=state.variant), state, setup, hp, now)
    ladder = terms.Ladder(tuple(v.name for v in spec.target.variants), fitting)
    decision = policy.decide(state, observation, hp, now, ladder, setup)
    enforced = hp.mode == api.HealthMode.ENFORCE
    kept = decision.state
    if decision.changes and not enforced:
        kept = replace(state, last_action_at=now, consecutive_breaches=0, references=decision.state.references, verdicts=decision.state.verdicts)
    patch: dict[str, Any] = {
        "health": health_status(kept, spec, now),
        "observation": observation_status(observation, now),
        "conditions": _conditions(decision, observation, body["metadata"].get("generation")),
    }
    if decision.plan is not None:  # while nothing is measured (a hold, speculation off) the last one stays, with its time
        patch["recommendation"] = recommendation_status(decision, now)
    if kept.trial is not None or status.get("trial") is not None:
        patch["trial"] = trial_status(kept, setup)
    record = _record(decision, kept if enforced else decision.state, enforced, now)
    decisions = list(status.get("decisions") or [])
    if decision.changes or not decisions or decisions[-1].get("action") != decision.action:
        patch["decisions"] = (decisions + [record])[-MAX_DECISIONS:]
    render_state = None
    if enforced and decision.changes:
        render_state = render_state_of(kept, spec.trials)
        patch["speculation"] = "On" if kept.speculation else "Off"
        patch["activeVariant"] = kept.variant
        patch["schedule"] = [list(r) for r in kept.schedule] if kept.schedule else None
        patch["scheduleSummary"] = manifests.schedule_summary(spec, render_state)
        patch["effectiveNumSpeculativeTokens"] = max(k for _, _, k in manifests.ranges(spec, render_state)) if kept.speculation else 0
    return Outcome(decision, enforced, patch, _event(status, decision, enforced), render_state)


def render_state_of(state: terms.State, trials: api.Trials) -> manifests.DecisionState:
    """What the decisions in force render to: a challenger trial adds its slice beside the incumbent."""
    trial = state.trial
    challenger = trial.candidate if trial is not None and trial.mode == "challenger" else None
    return manifests.DecisionState(
        speculation=state.speculation, variant=state.variant, schedule=state.schedule,
        challenger=challenger, challenger_replicas=trials.replicas if challenger else 0,
    )


def trial_status(state: terms.State, setup: terms.Setup) -> dict[str, Any] | None:
    """status.trial: the trial in progress, or None (an explicit null clears the last one)."""
    trial = state.trial
    if trial is None:
        return None
    incumbent = trial.incumbent
    return api.Trial(
        candidate=[list(r) for r in trial.candidate], candidate_summary=evidence.short(trial.candidate),
        incumbent=[list(r) for r in incumbent] if incumbent else None,
        incumbent_summary=evidence.short(incumbent) if incumbent else evidence.short(setup.ranges(replace(state, schedule=None))) + " (the spec's)",
        mode=trial.mode, started_time=format_time(trial.started_at) or "", predicted_gain=round(trial.predicted_gain, 4),
        windows=trial.windows, needed=trial.needed,
        candidate_speedup=_round(trial.candidate_speedup), incumbent_speedup=_round(trial.incumbent_speedup), incumbent_windows=trial.incumbent_windows,
    ).model_dump(by_alias=True, mode="json")


def estimated_speedup(outcome: Outcome) -> float | None:
    """What the serving gains from speculation now: 1 while it is off (or k is 0 at this batch size), the policy's
    estimate while it speculates, None when a hold left nothing to estimate from."""
    decision = outcome.decision
    if outcome.enforced and not decision.state.speculation:
        return 1.0
    if decision.action == "hold" or decision.estimate is None:
        return None
    return round(decision.estimate.speedup, 4)


def variant_model(spec: api.SpeculativeServingSpec, variant: str | None) -> str | None:
    return next((v.model for v in spec.target.variants if v.name == variant), None)


def with_k_in_force(observation: terms.Observation, state: terms.State, setup: terms.Setup, hp: api.HealthPolicy, now: float) -> terms.Observation:
    """The k the configuration gives at the window's batch size, when the whole window ran under it; unknown when
    the last action falls inside the window (the policy then measures the window but does not learn from it)."""
    if observation.batch_size is None or (state.configured_at is not None and now - state.configured_at < hp.window_seconds):
        return observation
    return replace(observation, k=setup.k_at(state, observation.batch_size))


def state_from_status(spec: api.SpeculativeServingSpec, status: dict[str, Any]) -> terms.State:
    """The policy's state as the last decision left it; a changed spec.target.activeVariant is new intent."""
    health = status.get("health") or {}
    speculation = status.get("speculation", "On") != "Off"
    variant = status.get("activeVariant")
    declared = [v.name for v in spec.target.variants]
    intent = intended_variant(spec)
    if variant not in declared or (health.get("specActiveVariant") not in (None, intent)):
        variant = intent
    return terms.State(
        speculation=speculation,
        variant=variant,
        consecutive_breaches=int(health.get("consecutiveBreaches") or 0),
        last_action_at=parse_time(health.get("lastActionTime")),
        configured_at=parse_time(health.get("configuredTime")),
        disabled_at=parse_time(health.get("disabledTime")),
        probation_delay=float(health.get("probationSeconds") or spec.health_policy.probation_seconds),
        on_probation=bool(health.get("onProbation")),
        references={k: float(v) for k, v in (health.get("references") or {}).items()},
        schedule=tuple(tuple(int(x) for x in r) for r in status["schedule"]) if status.get("schedule") else None,  # type: ignore[misc]
        verdicts=tuple(_verdict(b) for b in health.get("buckets") or []),
        trial=_trial(status.get("trial")),
        rejected=tuple(terms.Rejected(str(r["summary"]), parse_time(r.get("time")) or 0.0, r.get("measuredGain")) for r in health.get("rejected") or []),
    )


def _trial(recorded: dict[str, Any] | None) -> terms.Trial | None:
    if not recorded:
        return None
    ranges = lambda value: tuple(tuple(int(x) for x in r) for r in value) if value else None  # noqa: E731
    windows = int(recorded.get("windows") or 0)
    incumbent_windows = float(recorded.get("incumbentWindows") or 0.0)
    return terms.Trial(
        candidate=ranges(recorded["candidate"]) or (), incumbent=ranges(recorded.get("incumbent")), mode=recorded.get("mode", "sequential"),
        started_at=parse_time(recorded.get("startedTime")) or 0.0, predicted_gain=float(recorded.get("predictedGain") or 0.0),
        needed=int(recorded.get("needed") or 1), candidate_sum=float(recorded.get("candidateSpeedup") or 0.0) * windows, windows=windows,
        incumbent_sum=float(recorded.get("incumbentSpeedup") or 0.0) * incumbent_windows, incumbent_windows=incumbent_windows,
    )


def _verdict(bucket: dict[str, Any]) -> evidence.Verdict:
    return evidence.Verdict(
        lo=int(bucket["lo"]), hi=bucket.get("hi"), k=int(bucket["k"]), speedup=float(bucket["speedup"]), correction=float(bucket["correction"]),
        at=parse_time(bucket.get("time")) or 0.0, windows=float(bucket.get("windows") or 1.0),
        cost_scale=float(bucket["costScale"]) if bucket.get("costScale") is not None else None,
    )


def intended_variant(spec: api.SpeculativeServingSpec) -> str | None:
    """The variant the spec asks to start on: activeVariant, else the first (lowest-memory) rung."""
    return spec.target.active_variant or (spec.target.variants[0].name if spec.target.variants else None)


def health_status(state: terms.State, spec: api.SpeculativeServingSpec, now: float) -> dict[str, Any]:
    return api.HealthStatus(
        last_evaluation_time=format_time(now),
        consecutive_breaches=state.consecutive_breaches,
        last_action_time=format_time(state.last_action_at),
        configured_time=format_time(state.configured_at),
        disabled_time=format_time(state.disabled_at),
        probation_seconds=state.probation_delay,
        on_probation=state.on_probation,
        references=state.references,
        spec_active_variant=intended_variant(spec),
        buckets=[
            api.BucketVerdict(lo=v.lo, hi=v.hi, k=v.k, speedup=round(v.speedup, 4), correction=round(v.correction, 4), time=format_time(v.at) or "", windows=round(v.windows, 3),
                              cost_scale=round(v.cost_scale, 4) if v.cost_scale is not None else None)
            for v in state.verdicts
        ],
        rejected=[api.RejectedCandidate(summary=r.summary, time=format_time(r.at) or "", measured_gain=_round(r.measured_gain)) for r in state.rejected],
    ).model_dump(by_alias=True, mode="json")  # explicit nulls clear what no longer holds (merge patch)


def recommendation_status(decision: terms.Decision, now: float) -> dict[str, Any] | None:
    """The goodput model's recommendation, shown whether or not it is applied; None when nothing was measured."""
    plan, estimate = decision.plan, decision.estimate
    if plan is None:
        return None
    return api.Recommendation(
        schedule=plan.schedule.as_vllm(), summary="off" if plan.all_off else plan.schedule.short(), predicted_gain=round(plan.gain, 4),
        predicted_gain_low=round(plan.gain_low, 4), evidence=plan.evidence,
        estimated_speedup=round(estimate.speedup, 4) if estimate is not None else None, time=format_time(now),
    ).model_dump(by_alias=True, mode="json")


def observation_status(observation: terms.Observation, now: float) -> dict[str, Any]:
    return api.Observation(
        time=format_time(now),
        acceptance_rate=_round(observation.acceptance_rate),
        mean_accepted_length=_round(observation.mean_accepted_length),
        draft_tokens=_round(observation.draft_tokens),
        p50_tpot_seconds=_round(observation.p50_tpot),
        p99_tpot_seconds=_round(observation.p99_tpot),
        baseline_p99_tpot_seconds=_round(observation.baseline_p99_tpot),
        p50_ttft_seconds=_round(observation.p50_ttft),
        p99_ttft_seconds=_round(observation.p99_ttft),
        request_rate=_round(observation.request_rate),
        requests_running=_round(observation.requests_running),
        requests_waiting=_round(observation.requests_waiting),
        kv_cache_usage=_round(observation.kv_cache_usage),
        per_position_acceptance=[round(rate, 4) for rate in observation.per_position_acceptance][:32],
        batch_size=_round(observation.batch_size),
        baseline_batch_size=_round(observation.baseline_batch_size),
        baseline_p50_tpot_seconds=_round(observation.baseline_p50_tpot),
        baseline_p99_ttft_seconds=_round(observation.baseline_p99_ttft),
    ).model_dump(by_alias=True, mode="json")  # explicit nulls: no stale numbers beside a fresh time


def _conditions(decision: terms.Decision, observation: terms.Observation, generation: int | None) -> list[dict[str, Any]]:
    """The two conditions the health loop owns; the writer merges them into the latest status."""
    if observation.error:
        available = condition("MetricsAvailable", "False", "PrometheusUnavailable", decision.reason, generation)
    elif decision.action == "hold":
        available = condition("MetricsAvailable", "False", "InsufficientData", decision.reason, generation)
    else:
        available = condition("MetricsAvailable", "True", "Measured", "Prometheus answered for this serving", generation)
    if decision.action == "hold":
        healthy = condition("SpeculationHealthy", "Unknown", "NoData", decision.reason, generation)
    elif not decision.state.speculation or decision.action == "disable_speculation":
        healthy = condition("SpeculationHealthy", "False", "SpeculationDisabled", decision.reason, generation)
    elif decision.action == "keep" and decision.reason.startswith(policy.HEALTHY):
        healthy = condition("SpeculationHealthy", "True", "Healthy", decision.reason, generation)
    else:
        healthy = condition("SpeculationHealthy", "False", "Breaching", decision.reason, generation)
    return [available, healthy]


def _event(status: dict[str, Any], decision: terms.Decision, enforced: bool) -> tuple[str, str, str] | None:
    if decision.changes:
        type_, reason = EVENT_REASONS[decision.action]
        prefix = "" if enforced else "Observe mode, not applied: "
        return type_, reason, prefix + decision.reason
    if decision.action == "hold":
        previous = next((c for c in status.get("conditions") or [] if c.get("type") == "MetricsAvailable"), None)
        if previous is None or previous.get("status") != "False":
            return "Warning", "MetricsUnavailable", decision.reason
    return None


def _record(decision: terms.Decision, state: terms.State, enforced: bool, now: float) -> dict[str, Any]:
    return api.DecisionRecord(
        time=format_time(now) or "", action=decision.action, reason=decision.reason[:1024],
        speculation=state.speculation, variant=state.variant, enforced=enforced or not decision.changes,
        schedule=[list(r) for r in state.schedule] if state.schedule else None,
    ).wire()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def format_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
