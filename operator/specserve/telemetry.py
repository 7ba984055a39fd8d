"""The operator's own Prometheus metrics (specserve_*): reconciles, decisions, polls, query errors, servings by phase.

One Telemetry object owns its own CollectorRegistry, so tests and several operators in one process never collide.
The per-serving series are kept as plain numbers and written out at each scrape (ServingSeries).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from threading import Lock, Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Invalid")
ACTIONS = (  # api.DecisionRecord.action
    "hold", "keep", "disable_speculation", "switch_variant", "enable_speculation", "set_schedule", "start_trial", "promote_trial", "revert_trial",
)
DEFAULT_PORT = 8081
RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


SPEEDUP_HELP = (
    "Baseline TPOT over speculative TPOT at the present batch size with the k in force, as the health policy estimates it "
    "(measured against the baseline, learned per batch-size bucket, or the GPU prior); 1 while speculation is off or k is 0. "
    "A goodput signal an autoscaler can use."
)


@dataclass(slots=True)
class _Serving:
    decisions: list[float] = field(default_factory=lambda: [0.0] * len(ACTIONS))  # by ACTIONS, from 0 at first sight
    speculation: float | None = None
    metrics_available: float | None = None
    speedup: float | None = None


class ServingSeries:
    """The per-serving series (decisions by action, speculation, metrics availability, estimated speedup), kept as
    plain numbers and written out at each scrape. A labelled child of prometheus_client's Counter or Gauge is an
    object of its own with a lock and a creation time: some 5 KB per serving for these nine series, 25 MiB at 5,000
    servings (bench/telemetry_memory.py)."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], _Serving] = {}
        self._lock = Lock()

    def of(self, namespace: str, serving: str) -> _Serving:
        with self._lock:
            return self._by.setdefault((namespace, serving), _Serving())

    def knows(self, namespace: str, serving: str) -> bool:
        return (namespace, serving) in self._by

    def forget(self, namespace: str, serving: str) -> None:
        with self._lock:
            self._by.pop((namespace, serving), None)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            servings = list(self._by.items())
        decisions, speculation, available, speedup = families = self._families()
        for (namespace, name), serving in servings:
            for action, count in zip(ACTIONS, serving.decisions):
                decisions.add_metric([namespace, name, action], count)
            for family, number in ((speculation, serving.speculation), (available, serving.metrics_available), (speedup, serving.speedup)):
                if number is not None:
                    family.add_metric([namespace, name], number)
        return iter(families)

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        serving = ["namespace", "serving"]
        return (
            CounterMetricFamily("specserve_decisions_total", "Health-policy decisions by serving and action.", labels=[*serving, "action"]),
            GaugeMetricFamily("specserve_speculation_enabled", "1 while status.speculation is On, 0 while the operator keeps it Off.", labels=serving),
            GaugeMetricFamily("specserve_metrics_available", "1 while condition MetricsAvailable is True, 0 while the health loop has no usable metrics.", labels=serving),
            GaugeMetricFamily("specserve_estimated_speedup", SPEEDUP_HELP, labels=serving),
        )


class Telemetry:
    """Every specserve_* metric, with one small method per thing the operator records."""

    def __init__(self, registry: CollectorRegistry | None = None, version: str = "") -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Gauge("specserve_build_info", "Always 1; the version label says which operator runs.", ["version"], registry=r)
        self.reconciles = Counter("specserve_reconciles_total", "Reconciles of SpeculativeServings by result (applied, rejected, error).", ["result"], registry=r)
        self.reconcile_errors = Counter("specserve_reconcile_errors_total", "Reconciles that failed or were refused, by reason (InvalidSpec, ApplyRejected, ApiError, ...).", ["reason"], registry=r)
        self.reconcile_duration = Histogram("specserve_reconcile_duration_seconds", "Time one reconcile took.", buckets=RECONCILE_BUCKETS, registry=r)
        self.poll_duration = Histogram("specserve_poll_duration_seconds", "Time one batched Prometheus poll took.", buckets=POLL_BUCKETS, registry=r)
        self.prometheus_errors = Counter("specserve_prometheus_query_errors_total", "Prometheus queries that failed (unreachable, HTTP error, bad answer).", registry=r)
        self.servings = Gauge("specserve_servings", "SpeculativeServings this operator handles, by status.phase.", ["phase"], registry=r)
        self.per_serving = ServingSeries()
        r.register(self.per_serving)
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = Lock()
        self.build_info.labels(version=version).set(1)
        for phase in PHASES:
            self.servings.labels(phase=phase).set(0)
        for result in ("applied", "rejected", "error"):
            self.reconciles.labels(result=result)

    def record_reconcile(self, result: str, seconds: float, reason: str | None = None) -> None:
        """One finished reconcile; a reason (condition or event reason) also counts it as an error."""
        self.reconciles.labels(result=result).inc()
        self.reconcile_duration.observe(seconds)
        if reason is not None:
            self.reconcile_errors.labels(reason=reason).inc()

    def record_decision(self, namespace: str, serving: str, action: str) -> None:
        self.per_serving.of(namespace, serving).decisions[ACTIONS.index(action)] += 1

    @contextmanager
    def time_poll(self) -> Iterator[None]:
        """Times one poll; a failing poll is timed too and its error propagates."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.poll_duration.observe(time.monotonic() - start)

    def record_prometheus_error(self) -> None:
        self.prometheus_errors.inc()

    def set_serving(self, namespace: str, serving: str, phase: str | None = None, speculation: bool | None = None, metrics_available: bool | None = None) -> None:
        """The serving's current state; arguments left None keep what was recorded before.

        A serving seen for the first time gets every decision series at 0, so the first real decision is a visible change.
        """
        with self._lock:
            before = self._phases.get((namespace, serving))
            now = phase or before or "Pending"
            self._phases[(namespace, serving)] = now
            self._count(before, now)
        series = self.per_serving.of(namespace, serving)  # every decision series from 0 at first sight
        if speculation is not None:
            series.speculation = 1 if speculation else 0
        if metrics_available is not None:
            series.metrics_available = 1 if metrics_available else 0

    def set_estimated_speedup(self, namespace: str, serving: str, speedup: float | None) -> None:
        """The policy's speedup estimate; None (nothing measured or estimable) removes the series instead of guessing."""
        if speedup is not None or self.per_serving.knows(namespace, serving):
            self.per_serving.of(namespace, serving).speedup = speedup

    def forget_serving(self, namespace: str, serving: str) -> None:
        """A deleted serving (or one another replica now handles) leaves every per-serving series."""
        with self._lock:
            self._count(self._phases.pop((namespace, serving), None), None)
        self.per_serving.forget(namespace, serving)

    def _count(self, before: str | None, now: str | None) -> None:
        """Move one serving between the phase counts: O(1), where recounting every serving at each change made a
        start with N servings cost N x N steps."""
        if before == now:
            return
        if before is not None:
            self.servings.labels(phase=before).dec()
        if now is not None:
            self.servings.labels(phase=now).inc()

    def serve(self, port: int = DEFAULT_PORT, addr: str = "0.0.0.0") -> tuple[WSGIServer, Thread]:
        """Start the /metrics HTTP server in a daemon thread; returns (server, thread) so callers can shut it down."""
        return start_http_server(port, addr=addr, registry=self.registry)


def _version() -> str:
    try:
        return metadata.version("specserve")
    except metadata.PackageNotFoundError:
        return "unknown"


TELEMETRY = Telemetry(version=_version())
