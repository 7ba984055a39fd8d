"""Replays exported observations through the health policy, as if in Enforce mode, one decision per line.

SREs use it to try a policy on history before switching a serving from Observe to Enforce.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from specserve import api, policy

FIELDS = ("acceptance_rate", "draft_tokens", "p50_tpot", "p99_tpot", "baseline_p99_tpot", "p99_ttft", "request_rate")


class ReplayError(ValueError):
    """An observation line that cannot be read; the message names the line."""


def replay(spec: api.SpeculativeServingSpec, lines: Iterable[str], fitting: frozenset[str] | None = None) -> Iterator[dict[str, Any]]:
    variants = tuple(v.name for v in spec.target.variants)
    start = spec.target.active_variant or (variants[0] if variants else None)
    state = policy.initial_state(spec.health_policy, start)
    ladder = policy.Ladder(variants, fitting)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        t, observation = parse_line(line, number)
        decision = policy.decide(state, observation, spec.health_policy, t, ladder)
        state = decision.state
        yield {"t": t, "action": decision.action, "reason": decision.reason, "speculation": state.speculation, "variant": state.variant}


def parse_line(line: str, number: int) -> tuple[float, policy.Observation]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ReplayError(f"line {number}: not JSON ({error.msg})") from error
    if not isinstance(record, dict) or not isinstance(record.get("t"), (int, float)):
        raise ReplayError(f"line {number}: an object with a numeric 't' is required")
    values: dict[str, float | None] = {}
    for name in FIELDS:
        value = record.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or math.isinf(value)):
            raise ReplayError(f"line {number}: {name} must be a number or null, got {value!r}")
        values[name] = None if value is None else float(value)
    variant = record.get("variant")
    if variant is not None and not isinstance(variant, str):
        raise ReplayError(f"line {number}: variant must be a string or null")
    return float(record["t"]), policy.Observation(variant=variant, **values)
