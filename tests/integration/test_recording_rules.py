"""The poll reads the chart's recording rules when Prometheus has them, and gets the same numbers as from raw series.

The real prometheus binary evaluates the rules of manifests/monitoring/prometheusrule.yaml over a synthetic
fleet built from real vLLM captures (bench/fleet_exporter.py), two pods per role so that sums over replicas,
means per replica and bucket sums are really aggregated.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from specserve.observation import metrics
from tests.support.prometheus import Prometheus, Target, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = yaml.safe_load((ROOT / "manifests" / "monitoring" / "prometheusrule.yaml").read_text())["spec"]["groups"]
WINDOW = metrics.RECORDED_WINDOW_SECONDS
FIELDS = (
    "acceptance_rate", "mean_accepted_length", "draft_tokens", "p50_tpot", "p99_tpot", "p50_ttft", "p99_ttft",
    "request_rate", "running", "running_per_replica", "waiting", "kv_cache_usage",
)
RECORDED_NAME = re.compile(r"\b[a-z_]+:[a-z_0-9]+:[a-z_0-9]+\b")


def fleet(tmp_path: Path, rule_groups: list[dict]):
    port = free_port()
    exporter = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fleet_exporter.py"), "--servings", "3", "--replicas", "2", "--port", str(port)])
    prometheus = Prometheus(tmp_path, [Target(f"127.0.0.1:{port}", {})], scrape_interval="1s", rule_groups=rule_groups).start()
    return exporter, prometheus


@pytest.fixture(scope="module")
def with_rules(tmp_path_factory):
    exporter, prometheus = fleet(tmp_path_factory.mktemp("rules"), RULES)
    try:
        prometheus.wait_for(metrics.RECORDING_PROBE, timeout=60)
        for series in {name for promql in metrics.RECORDED.values() for name in RECORDED_NAME.findall(promql)}:
            prometheus.wait_for(f"count({series})", timeout=60)  # every group evaluated once (each has its own offset)
        time.sleep(3)
        yield prometheus
    finally:
        prometheus.stop()
        exporter.terminate()
        exporter.wait()


def test_the_recording_rules_are_found_when_prometheus_evaluates_them(with_rules):
    assert metrics.recording_rules_present(metrics.prometheus_query(with_rules.url))


def test_the_recording_rules_are_not_found_without_them(tmp_path):
    exporter, prometheus = fleet(tmp_path, [])
    try:
        prometheus.wait_for('count(vllm:spec_decode_num_draft_tokens_total{serving!=""})', timeout=60)
        assert not metrics.recording_rules_present(metrics.prometheus_query(prometheus.url))
    finally:
        prometheus.stop()
        exporter.terminate()
        exporter.wait()


def _at(prometheus: Prometheus, promql: str, at: float | None = None) -> dict[tuple[str, str, str, str], tuple[float, float]]:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode(params), timeout=10) as response:
        found = json.load(response)["data"]["result"]
    key = lambda m: (m["serving"], m["role"], m.get("position", ""), m.get("stat", ""))  # noqa: E731
    return {key(s["metric"]): (float(s["value"][0]), float(s["value"][1])) for s in found}


def _evaluated_at(prometheus: Prometheus, series: str) -> float:
    """When the group recording `series` was last evaluated: the time of its samples (one per group evaluation)."""
    return max(stamp for _, stamp in _at(prometheus, f"timestamp({series})").values())


@pytest.mark.parametrize("field", [*metrics.RECORDED])
def test_each_recorded_series_is_the_raw_query_at_the_rules_evaluation_time(with_rules, field):
    evaluated_at = _evaluated_at(with_rules, RECORDED_NAME.findall(metrics.RECORDED[field])[0])
    recorded = _at(with_rules, metrics.RECORDED[field], at=evaluated_at)
    raw = _at(with_rules, metrics.queries(WINDOW)[field], at=evaluated_at)
    assert recorded.keys() == raw.keys() and recorded, field
    for key, (_, value) in recorded.items():
        assert math.isclose(value, raw[key][1], rel_tol=1e-9), (field, key, value, raw[key][1])


def test_running_is_summed_over_the_two_replicas_and_averaged_per_replica(with_rules):
    result = metrics.poll(metrics.prometheus_query(with_rules.url), {WINDOW}, recorded=True)
    role = result.role(WINDOW, "bench", "s0001", "baseline")
    assert role.running_per_replica and math.isclose(role.running, 2 * role.running_per_replica, rel_tol=1e-9)


def test_a_poll_over_recorded_series_fills_every_field(with_rules):
    result = metrics.poll(metrics.prometheus_query(with_rules.url), {WINDOW}, recorded=True)
    assert result.recorded and result.queries == len(metrics.queries(WINDOW))
    role = result.role(WINDOW, "bench", "s0002", "speculative")
    assert all(getattr(role, field) is not None for field in FIELDS) and role.per_position_acceptance


@pytest.mark.parametrize("group", [g["name"] for g in RULES if "recording" in g["name"]])
def test_a_recorded_poll_gives_what_a_raw_poll_gives_at_its_groups_evaluation_time(with_rules, group):
    """Both polls read at one group's evaluation time (a query function pinned to it): every field that group
    records must come out of the recorded poll as out of the raw one."""
    from prometheus_api_client import PrometheusConnect

    records = [rule["record"] for g in RULES if g["name"] == group for rule in g["rules"]]
    names = set(records)
    fields = {field for field, promql in metrics.RECORDED.items() if set(RECORDED_NAME.findall(promql)) <= names}
    fields |= {"running_per_replica"} if "running" in fields else set()
    assert fields, group
    evaluated_at = _evaluated_at(with_rules, records[0])  # a level 1 series, by namespace, serving and role
    client = PrometheusConnect(url=with_rules.url, disable_ssl=True)
    pinned = lambda promql: client.custom_query(promql, params={"time": f"{evaluated_at:.3f}"})  # noqa: E731
    recorded = metrics.poll(pinned, {WINDOW}, recorded=True).by_window[WINDOW]
    raw = metrics.poll(pinned, {WINDOW}).by_window[WINDOW]
    assert len(raw) == 6 and recorded.keys() == raw.keys()
    for key, role in recorded.items():
        for name in fields:
            value, expected = getattr(role, name), getattr(raw[key], name)
            if isinstance(value, dict):
                assert value.keys() == expected.keys() and all(math.isclose(v, expected[p], rel_tol=1e-9) for p, v in value.items()), (key, name)
            else:
                assert (value is None) == (expected is None) and (value is None or math.isclose(value, expected, rel_tol=1e-9)), (key, name, value, expected)


def test_an_older_charts_rules_without_the_load_fields_leave_the_poll_raw(tmp_path):
    """Rules that record the quantiles but not the load fields (the chart before they were recorded) are not taken as present."""
    older = [{"name": "specserve.recording", "interval": "1s", "rules": [
        {"record": metrics.RECORDED["p99_tpot"], "expr": metrics.queries(WINDOW)["p99_tpot"].replace(f"[{WINDOW}s]", "[5m]")},
    ]}]
    exporter, prometheus = fleet(tmp_path, older)
    try:
        prometheus.wait_for(f"count({metrics.RECORDED['p99_tpot']})", timeout=60)
        assert not metrics.recording_rules_present(metrics.prometheus_query(prometheus.url))
    finally:
        prometheus.stop()
        exporter.terminate()
        exporter.wait()
