"""PromQL over today's vLLM metrics, and the one poll that reads them for every serving at once.

A fixed set of queries grouped by (namespace, serving, role) per distinct window: the cost does not grow with
the number of SpeculativeServings, and no object name or spec value is ever placed in a query.
"""

from __future__ import annotations

import math
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from prometheus_api_client import PrometheusConnect

from specserve.engine import vllm

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^\"')]+)")
PROMETHEUS_ERROR = re.compile(r'"error":"((?:[^"\\]|\\.)*)"')
RoleKey = tuple[str, str, str]  # namespace, serving, role


class MetricsError(RuntimeError):
    """Prometheus could not answer (unreachable, timed out, or a query error)."""


@dataclass(frozen=True)
class Labels:
    """Metric label names the scrape config gives namespace, serving and role (the PodMonitor's by default)."""

    namespace: str = "namespace"
    serving: str = "serving"
    role: str = "role"

    def __post_init__(self) -> None:
        for name in (self.namespace, self.serving, self.role):
            if not LABEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a Prometheus label name")

    @property
    def group(self) -> str:
        return f"{self.namespace}, {self.serving}, {self.role}"


@dataclass
class RoleMetrics:
    """One role (speculative or baseline) of one serving, over one window."""

    acceptance_rate: float | None = None
    mean_accepted_length: float | None = None
    draft_tokens: float | None = None
    per_position_acceptance: dict[int, float] = field(default_factory=dict)
    p50_tpot: float | None = None
    p99_tpot: float | None = None
    p50_ttft: float | None = None
    p99_ttft: float | None = None
    request_rate: float | None = None
    running: float | None = None  # running requests summed over the role's replicas, mean over the window
    running_per_replica: float | None = None  # the batch size: running requests per replica, mean over the window
    waiting: float | None = None
    kv_cache_usage: float | None = None


def queries(window_seconds: int, labels: Labels = Labels()) -> dict[str, str]:
    """Every query of one poll cycle for one window, keyed by the RoleMetrics field it fills."""
    by, w = labels.group, f"{int(window_seconds)}s"

    def rate(metric: str, extra: str = "") -> str:
        return f"sum by ({by}{extra}) (rate({metric}[{w}]))"

    def quantile(q: float, histogram: str) -> str:
        return f"histogram_quantile({q}, sum by (le, {by}) (rate({histogram}_bucket[{w}])))"

    return {
        "acceptance_rate": f"{rate(vllm.SPEC_ACCEPTED_TOKENS)} / {rate(vllm.SPEC_DRAFT_TOKENS)}",
        "mean_accepted_length": f"1 + {rate(vllm.SPEC_ACCEPTED_TOKENS)} / {rate(vllm.SPEC_DRAFTS)}",
        "draft_tokens": f"sum by ({by}) (increase({vllm.SPEC_DRAFT_TOKENS}[{w}]))",
        "per_position_acceptance": f"{rate(vllm.SPEC_ACCEPTED_PER_POS, ', position')} / ignoring(position) group_left {rate(vllm.SPEC_DRAFTS)}",
        "p50_tpot": quantile(0.5, vllm.TPOT_HISTOGRAM),
        "p99_tpot": quantile(0.99, vllm.TPOT_HISTOGRAM),
        "p50_ttft": quantile(0.5, vllm.TTFT_HISTOGRAM),
        "p99_ttft": quantile(0.99, vllm.TTFT_HISTOGRAM),
        "request_rate": rate(vllm.REQUEST_SUCCESS),
        "running": running(vllm.REQUESTS_RUNNING, by, w),
        "waiting": f"sum by ({by}) ({vllm.REQUESTS_WAITING})",
        "kv_cache_usage": f"avg by ({by}) ({vllm.KV_CACHE_USAGE})",
    }


# Queries of one poll in flight at once. At 5,000 servings Prometheus's recording rules keep it busy, and one query
# at a time waited behind them: 1.7-2.2 s a poll; two at once took 1.2 s and four no less, while the poll's peak
# memory (answers being parsed) grew from 30 MiB to 44 and 78-96 MiB (bench/README.md, section (d), round 5).
QUERIES_AT_ONCE = 2

RUNNING_STATS = {"sum": "running", "mean": "running_per_replica"}  # the `stat` label of the running query -> field


def running(metric: str, by: str, w: str) -> str:
    """One query, two results per role told apart by a `stat` label: the total running requests and the mean per
    replica, each a mean over the window. Each vLLM pod is one engine and one replica, so the mean over its
    series is the mean over replicas (data parallelism inside a pod, one series per engine, is out of scope).
    label_replace with an empty source label and regex adds the label; the two sides of `or` then never share a
    label set, so it keeps both."""
    each = f"avg_over_time({metric}[{w}])"
    return (
        f'label_replace(sum by ({by}) ({each}), "stat", "sum", "", "")'
        f' or label_replace(avg by ({by}) ({each}), "stat", "mean", "", "")'
    )


# The chart's PrometheusRule (charts/specserve/files/specserve.rules.yaml) records every field of the poll over
# [5m] by namespace, serving and role. When Prometheus has them, a 300 s window reads only recorded series: no
# query of that poll touches a raw vLLM series, so its cost is one instant read of a few series per role.
RECORDED_WINDOW_SECONDS = 300
RECORDED = {
    "acceptance_rate": "serving_role:vllm_spec_decode_acceptance:ratio_rate5m",
    "mean_accepted_length": "serving_role:vllm_spec_decode_mean_accepted_length:rate5m",
    "draft_tokens": f"serving_role:vllm_spec_decode_draft_tokens:rate5m * {RECORDED_WINDOW_SECONDS}",
    "per_position_acceptance": "serving_role_position:vllm_spec_decode_acceptance:ratio_rate5m",
    "p50_tpot": "serving_role:vllm_request_time_per_output_token_seconds:p50_rate5m",
    "p99_tpot": "serving_role:vllm_request_time_per_output_token_seconds:p99_rate5m",
    "p50_ttft": "serving_role:vllm_time_to_first_token_seconds:p50_rate5m",
    "p99_ttft": "serving_role:vllm_time_to_first_token_seconds:p99_rate5m",
    "request_rate": "serving_role:vllm_request_success:rate5m",
    "running": (
        'label_replace(serving_role:vllm_num_requests_running:avg_over_time5m, "stat", "sum", "", "")'
        ' or label_replace(serving_role:vllm_num_requests_running_per_replica:avg_over_time5m, "stat", "mean", "", "")'
    ),
    "waiting": "serving_role:vllm_num_requests_waiting:sum",
    "kv_cache_usage": "serving_role:vllm_kv_cache_usage_perc:avg",
}
# One series of each recording group, present for every role of every serving: true once each group has been
# evaluated (they have their own offsets in the interval), and false under an older chart's rules, which recorded
# the quantiles but not the load fields: the poll then stays raw rather than lose fields.
RECORDING_PROBE = " and ".join(
    f"count({series})"
    for series in ("serving_role:vllm_num_requests_running:avg_over_time5m", RECORDED["p99_tpot"], RECORDED["p99_ttft"])
)


def poll_queries(window_seconds: int, labels: Labels = Labels(), recorded: bool = False) -> dict[str, str]:
    """What one poll asks for one window: only recorded series when the chart's rules provide them (their window
    and the default labels), raw series otherwise."""
    if recorded and window_seconds == RECORDED_WINDOW_SECONDS and labels == Labels():
        return dict(RECORDED)
    return queries(window_seconds, labels)


def recording_rules_present(query: "Query") -> bool:
    """Whether Prometheus holds the chart's recorded series (any serving); unreachable counts as no."""
    try:
        return bool(query(RECORDING_PROBE))
    except Exception:  # noqa: BLE001 - the client raises requests, urllib3 and its own errors
        return False


Query = Callable[[str], list[dict[str, Any]]]
QueryRange = Callable[[str, int, int, float], list[dict[str, Any]]]  # promql, start, end (Unix seconds), step seconds


def prometheus_query(url: str, timeout_seconds: float = 10.0) -> Query:
    """A query function over prometheus-api-client's instant-query API."""
    client = _client(url, timeout_seconds)
    return lambda promql: client.custom_query(promql)


def prometheus_query_range(url: str, timeout_seconds: float = 30.0) -> QueryRange:
    """A range-query function over prometheus-api-client's query_range API: one matrix (series with `values`) per call."""
    client = _client(url, timeout_seconds)

    def query_range(promql: str, start: int, end: int, step: float) -> list[dict[str, Any]]:
        return client.custom_query_range(promql, _utc(start), _utc(end), f"{step:g}")

    return query_range


def _client(url: str, timeout_seconds: float) -> PrometheusConnect:
    return PrometheusConnect(url=url, disable_ssl=not url.startswith("https"), timeout=int(timeout_seconds))


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


@dataclass
class Poll:
    """What one cycle learned: metrics per (namespace, serving, role) per window, and what it cost."""

    by_window: dict[int, dict[RoleKey, RoleMetrics]]
    queries: int
    seconds: float
    recorded: bool = False  # the 300 s window was read from the chart's recording rules

    def role(self, window: int, namespace: str, serving: str, role: str) -> RoleMetrics | None:
        return self.by_window.get(window, {}).get((namespace, serving, role))


def poll(query: Query, windows: set[int], labels: Labels = Labels(), recorded: bool = False, at_once: int = QUERIES_AT_ONCE) -> Poll:
    """Run the fixed query set for each distinct window, `at_once` queries in flight; any failure is a MetricsError
    (never partial data). `recorded`: Prometheus has the chart's recording rules (see poll_queries)."""
    started = time.monotonic()
    asked = [(window, name, promql) for window in sorted(windows) for name, promql in poll_queries(window, labels, recorded).items()]
    by_window: dict[int, dict[RoleKey, RoleMetrics]] = {window: {} for window in sorted(windows)}
    with ThreadPoolExecutor(max_workers=max(1, at_once), thread_name_prefix="specserve-poll") as pool:
        answers: dict[int, Future[list[dict[str, Any]]]] = {n: pool.submit(query, promql) for n, (_, _, promql) in enumerate(asked)}
        for number, (window, name, _) in enumerate(asked):
            answer = answers.pop(number)  # an answer read is let go: at 5,000 servings each is tens of MB as Python objects
            try:
                samples = answer.result()
            except Exception as error:  # noqa: BLE001 - the client raises requests, urllib3 and its own errors
                pool.shutdown(wait=False, cancel_futures=True)
                raise MetricsError(problem(error)) from error
            del answer
            _fill(by_window[window], name, samples, labels)
            del samples
    return Poll(by_window, len(asked), time.monotonic() - started, recorded and RECORDED_WINDOW_SECONDS in by_window and labels == Labels())


def problem(error: Exception) -> str:
    """One line: the OS error behind a failed connection, else Prometheus's own error text, else the exception.
    The client's own text repeats the whole URL-encoded query, which is no help in a condition kept on every serving."""
    text = " ".join(str(error).split())
    refused = OS_ERROR.search(text)
    if refused:
        return f"cannot connect: {refused.group(1)}"
    said = PROMETHEUS_ERROR.search(text)
    return f"{type(error).__name__}: {said.group(1) if said else text}"


def _fill(table: dict[RoleKey, RoleMetrics], name: str, samples: list[dict[str, Any]], labels: Labels) -> None:
    """Set `name` on each sample's role; a poll at thousands of servings passes tens of thousands of samples here,
    so a role's RoleMetrics is made once (not per sample) and the field's kind is decided once per query."""
    ns_label, serving_label, role_label = labels.namespace, labels.serving, labels.role
    per_position, is_running = name == "per_position_acceptance", name == "running"
    for sample in samples:
        metric = sample.get("metric", {})
        serving = metric.get(serving_label, "")
        if not serving:
            continue  # a series without the serving label is not ours to judge
        key = (metric.get(ns_label, ""), serving, metric.get(role_label, ""))
        role = table.get(key)
        if role is None:
            role = table[key] = RoleMetrics()
        value = number(sample.get("value", (None, "NaN"))[1])
        if per_position:
            if value is not None and "position" in metric:
                role.per_position_acceptance[int(metric["position"])] = value
        elif is_running:
            stat = RUNNING_STATS.get(metric.get("stat", "sum"))
            if stat is not None:
                setattr(role, stat, value)
        else:
            setattr(role, name, value)


def number(text: Any) -> float | None:
    """A sample value as Prometheus writes it ("0.71", "NaN", "+Inf"); None when it is no finite number."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value
