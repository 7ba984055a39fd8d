"""The operator's own metrics (telemetry.py): names, labels, the servings-by-phase gauge and the /metrics server.

Each test uses a fresh Telemetry with its own registry, so nothing leaks between tests.
"""

from __future__ import annotations

import urllib.request

import pytest

from tests.install import tools

tools.module("prometheus_client", "prometheus-client")

from specserve.telemetry import PHASES, Telemetry  # noqa: E402


def value(t: Telemetry, name: str, **labels: str) -> float | None:
    return t.registry.get_sample_value(name, labels)


def test_every_metric_is_prefixed_specserve() -> None:
    names = {m.name for m in Telemetry().registry.collect()}
    assert names and all(n.startswith("specserve_") for n in names), names


def test_registries_of_two_telemetries_are_independent() -> None:
    a, b = Telemetry(), Telemetry()
    a.record_decision("ns", "s", "keep")
    assert value(b, "specserve_decisions_total", namespace="ns", serving="s", action="keep") is None


def test_reconcile_counts_result_and_duration() -> None:
    t = Telemetry()
    t.record_reconcile("applied", 0.2)
    t.record_reconcile("applied", 0.3)
    assert value(t, "specserve_reconciles_total", result="applied") == 2
    assert value(t, "specserve_reconcile_duration_seconds_count") == 2
    assert value(t, "specserve_reconcile_duration_seconds_sum") == pytest.approx(0.5)


def test_reconcile_with_a_reason_counts_an_error() -> None:
    t = Telemetry()
    t.record_reconcile("rejected", 0.01, reason="InvalidExtraArgs")
    assert value(t, "specserve_reconcile_errors_total", reason="InvalidExtraArgs") == 1
    assert value(t, "specserve_reconciles_total", result="rejected") == 1


def test_result_series_exist_before_the_first_reconcile() -> None:
    t = Telemetry()
    assert [value(t, "specserve_reconciles_total", result=r) for r in ("applied", "rejected", "error")] == [0, 0, 0]


def test_decisions_are_counted_by_serving_and_action() -> None:
    t = Telemetry()
    t.record_decision("team-a", "llama", "disable_speculation")
    assert value(t, "specserve_decisions_total", namespace="team-a", serving="llama", action="disable_speculation") == 1


def test_first_sight_of_a_serving_creates_its_decision_series_at_zero() -> None:
    t = Telemetry()
    t.set_serving("team-a", "llama", phase="Ready")
    assert value(t, "specserve_decisions_total", namespace="team-a", serving="llama", action="disable_speculation") == 0


def test_poll_timer_observes_failed_polls_too() -> None:
    t = Telemetry()
    with t.time_poll():
        pass
    with pytest.raises(RuntimeError), t.time_poll():
        raise RuntimeError("prometheus down")
    assert value(t, "specserve_poll_duration_seconds_count") == 2


def test_prometheus_query_errors_are_counted() -> None:
    t = Telemetry()
    t.record_prometheus_error()
    assert value(t, "specserve_prometheus_query_errors_total") == 1


def test_servings_gauge_counts_objects_by_phase() -> None:
    t = Telemetry()
    t.set_serving("a", "one", phase="Progressing")
    t.set_serving("a", "two", phase="Progressing")
    t.set_serving("a", "one", phase="Ready")
    counts = {p: value(t, "specserve_servings", phase=p) for p in PHASES}
    assert counts == {"Pending": 0, "Progressing": 1, "Ready": 1, "Degraded": 0, "Invalid": 0}


def test_phase_counts_follow_moves_forgets_and_returns() -> None:
    t = Telemetry()
    t.set_serving("a", "one")  # first seen without a phase: Pending
    t.set_serving("a", "two", phase="Ready")
    t.set_serving("a", "one", phase="Ready")
    t.forget_serving("a", "two")
    t.forget_serving("a", "never-seen")
    t.set_serving("a", "two", phase="Degraded")
    counts = {p: value(t, "specserve_servings", phase=p) for p in PHASES}
    assert counts == {"Pending": 0, "Progressing": 0, "Ready": 1, "Degraded": 1, "Invalid": 0}


def test_speculation_and_metrics_gauges_follow_the_serving() -> None:
    t = Telemetry()
    t.set_serving("a", "one", speculation=False, metrics_available=True)
    t.set_serving("a", "one", phase="Ready")  # None leaves the gauges as they were
    assert value(t, "specserve_speculation_enabled", namespace="a", serving="one") == 0
    assert value(t, "specserve_metrics_available", namespace="a", serving="one") == 1


def test_forgotten_serving_leaves_every_per_serving_series() -> None:
    t = Telemetry()
    t.set_serving("a", "one", phase="Ready", speculation=True, metrics_available=True)
    t.record_decision("a", "one", "keep")
    t.set_serving("a", "two", phase="Ready", speculation=True)
    t.forget_serving("a", "one")
    exposed = [s.labels for m in t.registry.collect() for s in m.samples]
    assert not [labels for labels in exposed if labels.get("serving") == "one"]
    assert value(t, "specserve_servings", phase="Ready") == 1
    assert value(t, "specserve_speculation_enabled", namespace="a", serving="two") == 1


def test_build_info_carries_the_version() -> None:
    assert value(Telemetry(version="1.2.3"), "specserve_build_info", version="1.2.3") == 1


def test_metrics_server_serves_the_exposition_format() -> None:
    t = Telemetry()
    t.record_decision("a", "one", "keep")
    server, thread = t.serve(port=0, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert 'specserve_decisions_total{action="keep",namespace="a",serving="one"} 1.0' in body


def test_decision_actions_are_the_apis() -> None:
    from typing import get_args

    from specserve import api
    from specserve.telemetry import ACTIONS

    assert set(ACTIONS) == set(get_args(api.DecisionRecord.model_fields["action"].annotation))


def test_no_speedup_for_a_forgotten_serving_brings_none_of_its_series_back() -> None:
    t = Telemetry()
    t.set_serving("a", "one", phase="Ready", speculation=True)
    t.forget_serving("a", "one")
    t.set_estimated_speedup("a", "one", None)  # a health-loop turn that was under way
    assert not [s for m in t.registry.collect() for s in m.samples if s.labels.get("serving") == "one"]


def test_the_per_serving_series_are_typed_in_the_exposition() -> None:
    from prometheus_client import generate_latest

    t = Telemetry()
    t.set_serving("a", "one", speculation=True, metrics_available=False)
    t.set_estimated_speedup("a", "one", 1.5)
    text = generate_latest(t.registry).decode()
    for line in ("# TYPE specserve_decisions_total counter", "# TYPE specserve_speculation_enabled gauge", "# TYPE specserve_estimated_speedup gauge",
                 'specserve_decisions_total{action="hold",namespace="a",serving="one"} 0.0', 'specserve_estimated_speedup{namespace="a",serving="one"} 1.5',
                 'specserve_metrics_available{namespace="a",serving="one"} 0.0'):
        assert line in text, line
