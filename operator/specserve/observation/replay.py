"""Replays exported observations through the health policy, as if in Enforce mode, one decision per line.

SREs use it to try a policy on history before switching a serving from Observe to Enforce.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from specserve import api
from specserve.decision import judgment, policy, terms

FIELDS = ("acceptance_rate", "draft_tokens", "p50_tpot", "p99_tpot", "baseline_p99_tpot", "p99_ttft", "request_rate")  # numbers or null
BATCH_SIZES = ("batch_size", "baseline_batch_size")  # running requests per replica: numbers >= 0 or null
BASELINE = ("baseline_p50_tpot", "baseline_p99_ttft")  # numbers or null
CHALLENGER = ("challenger_p50_tpot", "challenger_batch_size")  # a trial's challenger slice, in the same window: numbers or null
MAX_POSITIONS = 32  # per_position_acceptance holds at most this many draft positions
# Every key a line may have, in the order `specserve export` writes them (all but k, which Prometheus cannot know).
KEYS = ("t", *FIELDS, "variant", "per_position_acceptance", "k", *BATCH_SIZES, *BASELINE, *CHALLENGER)


class ReplayError(ValueError):
    """An observation line that cannot be read; the message names the line."""


def replay(spec: api.SpeculativeServingSpec, lines: Iterable[str], fitting: frozenset[str] | None = None) -> Iterator[dict[str, Any]]:
    variants = tuple(v.name for v in spec.target.variants)
    start = spec.target.active_variant or (variants[0] if variants else None)
    state = policy.initial_state(spec.health_policy, start)
    ladder = terms.Ladder(variants, fitting)
    previous: tuple[int, float] | None = None  # line number and t of the last observation
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        t, observation = parse_line(line, number)
        if previous is not None and t <= previous[1]:
            raise ReplayError(f"line {number}: t {t:g} is not after line {previous[0]}'s t {previous[1]:g}: observations must be in increasing time order")
        previous = (number, t)
        setup = policy.setup_for(spec, judgment.variant_model(spec, state.variant))
        decision = policy.decide(state, observation, spec.health_policy, t, ladder, setup)
        state = decision.state
        yield {
            "t": t, "action": decision.action, "reason": decision.reason, "speculation": state.speculation, "variant": state.variant,
            "schedule": [list(r) for r in setup.ranges(state)] if state.schedule else None, "k": _k_in_force(state, setup, observation),
        }
    if previous is None:
        raise ReplayError("holds no observation (no line that is not blank): nothing to replay; `specserve export` writes one JSON object per line")


def _k_in_force(state: terms.State, setup: terms.Setup, observation: terms.Observation) -> int:
    """k after the decision at the line's batch size (the largest k of the schedule when the line has none)."""
    if not state.speculation:
        return 0
    if observation.batch_size is not None:
        return setup.k_at(state, observation.batch_size)
    return max(k for _, _, k in setup.ranges(state))


def parse_line(line: str, number: int) -> tuple[float, terms.Observation]:
    """One observation line; ReplayError naming the line (and the key) for anything replay would have to guess about."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ReplayError(f"line {number}: not JSON ({error.msg})") from error
    if not isinstance(record, dict) or not _is_number(record.get("t")):
        raise ReplayError(f"line {number}: an object with a numeric 't' is required")
    _check_keys(record, number)
    values = {name: _value(record, name, number) for name in (*FIELDS, *BASELINE)}
    values.update({name: _size(record, name, number) for name in BATCH_SIZES})
    values.update({"challenger_p50_tpot": _value(record, "challenger_p50_tpot", number), "challenger_batch_size": _size(record, "challenger_batch_size", number)})
    if values["acceptance_rate"] is not None and values["draft_tokens"] is None:
        raise ReplayError(
            f"line {number}: acceptance_rate {values['acceptance_rate']:g} without draft_tokens: the policy weighs acceptance only "
            "together with its draft token count (healthPolicy.minDraftTokens); add draft_tokens, or set acceptance_rate to null"
        )
    variant = record.get("variant")
    if variant is not None and not isinstance(variant, str):
        raise ReplayError(f"line {number}: variant must be a string or null")
    positions, k = _positions(record, number), _k(record, number)
    return float(record["t"]), terms.Observation(variant=variant, per_position_acceptance=positions, k=k, **values)


def _check_keys(record: dict[str, Any], number: int) -> None:
    unknown = [key for key in record if key not in KEYS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ReplayError(f"line {number}: unknown key {key!r}{hint}; the keys are {', '.join(KEYS)}")


def _value(record: dict[str, Any], name: str, number: int) -> float | None:
    value = record.get(name)
    if isinstance(value, float) and math.isnan(value):
        return None  # NaN, as Prometheus writes 0/0, is no data
    if value is not None and not _is_number(value):
        raise ReplayError(f"line {number}: {name} must be a number or null, got {value!r}")
    return None if value is None else float(value)


def _size(record: dict[str, Any], name: str, number: int) -> float | None:
    """A batch size (running requests per replica): a number >= 0; null, NaN or absent is no data."""
    value = record.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not _is_number(value) or value < 0:
        raise ReplayError(f"line {number}: {name} must be a number >= 0 or null, got {value!r}")
    return float(value)


def _positions(record: dict[str, Any], number: int) -> tuple[float, ...]:
    """Acceptance per draft position, position 0 first; null or absent is ()."""
    value = record.get("per_position_acceptance")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ReplayError(f"line {number}: per_position_acceptance must be a list of numbers in [0, 1] (position 0 first) or null, got {value!r}")
    if len(value) > MAX_POSITIONS:
        raise ReplayError(f"line {number}: per_position_acceptance has {len(value)} positions, more than the {MAX_POSITIONS} allowed")
    for position, rate in enumerate(value):
        if not _is_number(rate) or not 0 <= rate <= 1:
            raise ReplayError(f"line {number}: per_position_acceptance[{position}] must be a number in [0, 1], got {rate!r}")
    return tuple(float(rate) for rate in value)


def _k(record: dict[str, Any], number: int) -> int | None:
    """The k in effect during the window; null or absent: not known."""
    value = record.get("k")
    if value is None:
        return None
    if not _is_number(value) or value < 0 or value != int(value):
        raise ReplayError(f"line {number}: k must be a whole number >= 0 or null, got {value!r}")
    return int(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
