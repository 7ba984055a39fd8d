"""One serving's reading of a poll: the decision core's Observation, typed and validated once, here.

Per-position acceptance is cleaned (probabilities that never rise with position) as it enters; nothing downstream cleans again.
"""

from __future__ import annotations

from specserve.decision.terms import Observation
from specserve.observation.metrics import MetricsError, Poll
from specserve.rendering import manifests


def observe(result: Poll | MetricsError, window: int, namespace: str, name: str) -> Observation:
    """The serving's speculative and baseline numbers over its window; an unreachable Prometheus is an error, not zeros."""
    if isinstance(result, MetricsError):
        return Observation(error=str(result))
    spec_role = result.role(window, namespace, name, manifests.ROLE_SPECULATIVE)
    baseline = result.role(window, namespace, name, manifests.ROLE_BASELINE)
    challenger = result.role(window, namespace, name, manifests.ROLE_CHALLENGER)
    baseline_numbers = {
        "baseline_p99_tpot": baseline.p99_tpot if baseline else None,
        "baseline_p50_tpot": baseline.p50_tpot if baseline else None,
        "baseline_p99_ttft": baseline.p99_ttft if baseline else None,
        "baseline_batch_size": baseline.running_per_replica if baseline else None,
        "challenger_p50_tpot": challenger.p50_tpot if challenger else None,
        "challenger_batch_size": challenger.running_per_replica if challenger else None,
    }
    if spec_role is None:
        return Observation(**baseline_numbers)
    positions = spec_role.per_position_acceptance
    return Observation(
        acceptance_rate=spec_role.acceptance_rate,
        draft_tokens=spec_role.draft_tokens,
        p50_tpot=spec_role.p50_tpot,
        p99_tpot=spec_role.p99_tpot,
        p99_ttft=spec_role.p99_ttft,
        request_rate=spec_role.request_rate,
        per_position_acceptance=tuple(positions[p] for p in sorted(positions)),
        batch_size=spec_role.running_per_replica,
        mean_accepted_length=spec_role.mean_accepted_length,
        p50_ttft=spec_role.p50_ttft,
        requests_running=spec_role.running,
        requests_waiting=spec_role.waiting,
        kv_cache_usage=spec_role.kv_cache_usage,
        **baseline_numbers,
    )
