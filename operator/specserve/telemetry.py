"""The operator's own Prometheus metrics (specserve_*): reconciles, decisions, polls, query errors, servings by phase.

One Telemetry object owns its own CollectorRegistry, so tests and several operators in one process never collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from threading import Lock, Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Invalid")
ACTIONS = ("hold", "keep", "disable_speculation", "switch_variant", "enable_speculation", "set_schedule")  # api.DecisionRecord.action
DEFAULT_PORT = 8081
RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Telemetry:
    """Every specserve_* metric, with one small method per thing the operator records."""

    def __init__(self, registry: CollectorRegistry | None = None, version: str = "") -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Gauge("specserve_build_info", "Always 1; the version label says which operator runs.", ["version"], registry=r)
        self.reconciles = Counter("specserve_reconciles_total", "Reconciles of SpeculativeServings by result (applied, rejected, error).", ["result"], registry=r)
        self.reconcile_errors = Counter("specserve_reconcile_errors_total", "Reconciles that failed or were refused, by reason (InvalidSpec, ApplyRejected, ApiError, ...).", ["reason"], registry=r)
        self.reconcile_duration = Histogram("specserve_reconcile_duration_seconds", "Time one reconcile took.", buckets=RECONCILE_BUCKETS, registry=r)
        self.decisions = Counter("specserve_decisions_total", "Health-policy decisions by serving and action.", ["namespace", "serving", "action"], registry=r)
        self.poll_duration = Histogram("specserve_poll_duration_seconds", "Time one batched Prometheus poll took.", buckets=POLL_BUCKETS, registry=r)
        self.prometheus_errors = Counter("specserve_prometheus_query_errors_total", "Prometheus queries that failed (unreachable, HTTP error, bad answer).", registry=r)
        self.servings = Gauge("specserve_servings", "SpeculativeServings this operator handles, by status.phase.", ["phase"], registry=r)
        self.speculation_enabled = Gauge("specserve_speculation_enabled", "1 while status.speculation is On, 0 while the operator keeps it Off.", ["namespace", "serving"], registry=r)
        self.metrics_available = Gauge("specserve_metrics_available", "1 while condition MetricsAvailable is True, 0 while the health loop has no usable metrics.", ["namespace", "serving"], registry=r)
        self.estimated_speedup = Gauge(
            "specserve_estimated_speedup",
            "Baseline TPOT over speculative TPOT at the present batch size with the k in force, as the health policy estimates it "
            "(measured against the baseline, learned per batch-size bucket, or the GPU prior); 1 while speculation is off or k is 0. "
            "A goodput signal an autoscaler can use.",
            ["namespace", "serving"], registry=r,
        )
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
        self.decisions.labels(namespace=namespace, serving=serving, action=action).inc()

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
            first_sight = before is None
            now = phase or before or "Pending"
            self._phases[(namespace, serving)] = now
            self._count(before, now)
        if first_sight:
            for action in ACTIONS:
                self.decisions.labels(namespace=namespace, serving=serving, action=action)
        if speculation is not None:
            self.speculation_enabled.labels(namespace=namespace, serving=serving).set(1 if speculation else 0)
        if metrics_available is not None:
            self.metrics_available.labels(namespace=namespace, serving=serving).set(1 if metrics_available else 0)

    def set_estimated_speedup(self, namespace: str, serving: str, speedup: float | None) -> None:
        """The policy's speedup estimate; None (nothing measured or estimable) removes the series instead of guessing."""
        if speedup is None:
            _remove(self.estimated_speedup, namespace, serving)
        else:
            self.estimated_speedup.labels(namespace=namespace, serving=serving).set(speedup)

    def forget_serving(self, namespace: str, serving: str) -> None:
        """A deleted serving (or one another replica now handles) leaves every per-serving series."""
        with self._lock:
            self._count(self._phases.pop((namespace, serving), None), None)
        for gauge in (self.speculation_enabled, self.metrics_available, self.estimated_speedup):
            _remove(gauge, namespace, serving)
        for action in ACTIONS:
            _remove(self.decisions, namespace, serving, action)

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


def _remove(metric: Any, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


def _version() -> str:
    try:
        return metadata.version("specserve")
    except metadata.PackageNotFoundError:
        return "unknown"


TELEMETRY = Telemetry(version=_version())
