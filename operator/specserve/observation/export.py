"""Exports one serving's history from Prometheus as the JSON Lines `specserve replay` reads, one line per step.

It runs the poller's own queries (metrics.queries, same window and labels) as range queries, so replay sees what the health loop saw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from specserve.observation import metrics, replay
from specserve.rendering import manifests

# Observation fields filled from the speculative role's series of the poller's query of the same name.
EXPORTED = ("acceptance_rate", "draft_tokens", "p50_tpot", "p99_tpot", "p99_ttft", "request_rate")
BASELINE = {"p50_tpot": "baseline_p50_tpot", "p99_tpot": "baseline_p99_tpot", "p99_ttft": "baseline_p99_ttft"}  # query -> key, baseline role
BATCH_SIZE = {manifests.ROLE_SPECULATIVE: "batch_size", manifests.ROLE_BASELINE: "baseline_batch_size"}  # role -> key, the running query's mean per replica
QUERIED = (*EXPORTED, "per_position_acceptance", "running")  # the poller's queries export runs
# What a replay line may hold, in its order; k (in effect during the window) is not in Prometheus, and a line without it means "not known".
LINE_KEYS = tuple(key for key in replay.KEYS if key != "k")
MAX_POINTS = 10_000  # per range query; Prometheus refuses more than 11,000 points per series
DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TIME_FORMS = "Unix seconds, RFC 3339 (2026-01-01T09:00:00Z), now, or now-DURATION (now-6h)"


@dataclass(frozen=True)
class TimeRange:
    """Evaluation times start, start+step, ... up to end, in whole Unix seconds (Prometheus's own grid)."""

    start: int
    end: int
    step: int

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ValueError(f"--step {self.step}s: the step must be at least 1s")
        if self.end < self.start:
            raise ValueError(f"--end {_iso(self.end)} is before --start {_iso(self.start)}")

    @property
    def points(self) -> int:
        return (self.end - self.start) // self.step + 1

    def times(self) -> list[int]:
        return [self.start + k * self.step for k in range(self.points)]

    def chunks(self) -> Iterator[TimeRange]:
        """Consecutive sub-ranges of at most MAX_POINTS points on the same grid."""
        for first in range(0, self.points, MAX_POINTS):
            last = min(self.points, first + MAX_POINTS) - 1
            yield TimeRange(self.start + first * self.step, self.start + last * self.step, self.step)


@dataclass(frozen=True)
class Serving:
    """Whose series to keep, and the rate window its health policy uses."""

    namespace: str
    name: str
    window_seconds: int


def export(query_range: metrics.QueryRange, serving: Serving, span: TimeRange, labels: metrics.Labels = metrics.Labels()) -> list[dict[str, Any]]:
    """One replay line per step of `span` (null where Prometheus had no data); a failing query is a MetricsError."""
    lines = [_blank(t) for t in span.times()]
    promql = metrics.queries(serving.window_seconds, labels)
    positions: list[dict[int, float]] = [{} for _ in lines]  # per line: acceptance per draft position
    for field in QUERIED:
        for chunk in span.chunks():
            for series in _run(query_range, promql[field], chunk):
                if field == "per_position_acceptance":
                    _fill_positions(positions, span, serving, series, labels)
                else:
                    _fill(lines, span, serving, field, series, labels)
    for line, found in zip(lines, positions):
        line["per_position_acceptance"] = _in_order(found)
    return lines


def has_data(lines: list[dict[str, Any]]) -> bool:
    return any(line[key] is not None for line in lines for key in LINE_KEYS if key not in ("t", "variant"))


def _blank(t: int) -> dict[str, Any]:
    return {key: t if key == "t" else None for key in LINE_KEYS}


def _run(query_range: metrics.QueryRange, promql: str, chunk: TimeRange) -> list[dict[str, Any]]:
    try:
        return query_range(promql, chunk.start, chunk.end, chunk.step)
    except Exception as error:  # noqa: BLE001 - the client raises requests, urllib3 and its own errors
        raise metrics.MetricsError(metrics.problem(error)) from error


def _ours(series: dict[str, Any], serving: Serving, labels: metrics.Labels) -> bool:
    metric = series.get("metric", {})
    return (metric.get(labels.namespace), metric.get(labels.serving)) == (serving.namespace, serving.name)


def _points(series: dict[str, Any], span: TimeRange, count: int) -> Iterator[tuple[int, float | None]]:
    """(line index, value) of each sample of a range answer on the span's grid."""
    for timestamp, text in series.get("values", []):
        index = round((float(timestamp) - span.start) / span.step)
        if 0 <= index < count:
            yield index, metrics.number(text)


def _key(field: str, metric: dict[str, str], labels: metrics.Labels) -> str | None:
    """The line key a series of one of the poller's queries fills, None when it fills none."""
    role = metric.get(labels.role)
    if field == "running":  # the mean per replica is the batch size; the sum is no line key
        return BATCH_SIZE.get(role) if metric.get("stat") == "mean" else None
    if role == manifests.ROLE_SPECULATIVE:
        return field
    return BASELINE.get(field) if role == manifests.ROLE_BASELINE else None


def _fill(lines: list[dict[str, Any]], span: TimeRange, serving: Serving, field: str, series: dict[str, Any], labels: metrics.Labels) -> None:
    key = _key(field, series.get("metric", {}), labels) if _ours(series, serving, labels) else None
    if key is None:
        return
    for index, value in _points(series, span, len(lines)):
        lines[index][key] = value


def _fill_positions(positions: list[dict[int, float]], span: TimeRange, serving: Serving, series: dict[str, Any], labels: metrics.Labels) -> None:
    metric = series.get("metric", {})
    if not _ours(series, serving, labels) or metric.get(labels.role) != manifests.ROLE_SPECULATIVE or not str(metric.get("position", "")).isdigit():
        return
    for index, value in _points(series, span, len(positions)):
        if value is not None:
            positions[index][int(metric["position"])] = value


def _in_order(found: dict[int, float]) -> list[float] | None:
    """Acceptance per position as replay reads it: positions 0, 1, ... up to the first without data; null when
    position 0 has none. A ratio of two rates can round a hair above 1: it is written as 1."""
    rates: list[float] = []
    while len(rates) in found and len(rates) < replay.MAX_POSITIONS:
        rates.append(min(1.0, max(0.0, found[len(rates)])))
    return rates or None


# ---------------------------------------------------------------- command-line values


def parse_time(text: str, now: float) -> int:
    """Unix seconds of a --start/--end value; ValueError saying which forms are understood."""
    value = text.strip()
    try:
        if value == "now" or value.startswith("now-"):
            return math.floor(now - (parse_duration(value[4:]) if value != "now" else 0))
        if re.fullmatch(r"\d+(\.\d*)?", value):
            return math.floor(float(value))
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give {TIME_FORMS}") from None
    return math.floor((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp())


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration (30s, 5m, 1h30m) or a plain number of seconds."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"{text!r} is not a duration: give seconds or a Prometheus duration such as 30s, 5m or 1h30m")
    return sum(int(n) * UNIT_SECONDS[u] for n, u in parts)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")
