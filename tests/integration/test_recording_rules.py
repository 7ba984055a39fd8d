"""The poll reads the chart's recording rules when Prometheus has them, and gets the same numbers as from raw series.

The real prometheus binary evaluates the rules of manifests/monitoring/prometheusrule.yaml over a synthetic
fleet built from real vLLM captures (bench/fleet_exporter.py).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from specserve import metrics
from tests.support.prometheus import Prometheus, Target, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = yaml.safe_load((ROOT / "manifests" / "monitoring" / "prometheusrule.yaml").read_text())["spec"]["groups"]
WINDOW = metrics.RECORDED_WINDOW_SECONDS
FIELDS = ("acceptance_rate", "mean_accepted_length", "draft_tokens", "p50_tpot", "p99_tpot", "p50_ttft", "p99_ttft")


def fleet(tmp_path: Path, rule_groups: list[dict]):
    port = free_port()
    exporter = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fleet_exporter.py"), "--servings", "3", "--port", str(port)])
    prometheus = Prometheus(tmp_path, [Target(f"127.0.0.1:{port}", {})], scrape_interval="1s", rule_groups=rule_groups).start()
    return exporter, prometheus


@pytest.fixture(scope="module")
def with_rules(tmp_path_factory):
    exporter, prometheus = fleet(tmp_path_factory.mktemp("rules"), RULES)
    try:
        prometheus.wait_for(metrics.RECORDING_PROBE, timeout=60)
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


def _at(prometheus: Prometheus, promql: str, at: float | None = None) -> dict[tuple[str, str], float]:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode(params), timeout=10) as response:
        found = json.load(response)["data"]["result"]
    return {(s["metric"]["serving"], s["metric"]["role"], s["metric"].get("position", "")): (float(s["value"][0]), float(s["value"][1])) for s in found}


@pytest.mark.parametrize("field", [*FIELDS, "per_position_acceptance"])
def test_each_recorded_series_is_the_raw_query_at_the_rules_evaluation_time(with_rules, field):
    series = metrics.RECORDED[field].split(" ")[0]
    stamps = _at(with_rules, f"timestamp({series})")
    key = next(k for k in stamps if k[:2] == ("s0001", "speculative"))
    evaluated_at = stamps[key][1]  # when the rule group was evaluated: the recorded sample's own time
    _, value = _at(with_rules, metrics.RECORDED[field], at=evaluated_at)[key]
    _, raw = _at(with_rules, metrics.queries(WINDOW)[field], at=evaluated_at)[key]
    assert math.isclose(value, raw, rel_tol=1e-6), (field, value, raw)


def test_a_poll_over_recorded_series_fills_every_field(with_rules):
    result = metrics.poll(metrics.prometheus_query(with_rules.url), {WINDOW}, recorded=True)
    assert result.recorded
    role = result.role(WINDOW, "bench", "s0002", "speculative")
    assert all(getattr(role, field) is not None for field in FIELDS) and role.per_position_acceptance


def test_recorded_series_replace_the_costly_queries_only_for_their_window():
    assert metrics.poll_queries(WINDOW, recorded=True)["p99_tpot"] == metrics.RECORDED["p99_tpot"]
    assert "histogram_quantile" in metrics.poll_queries(60, recorded=True)["p99_tpot"]
    assert "histogram_quantile" in metrics.poll_queries(WINDOW, metrics.Labels(serving="app"), recorded=True)["p99_tpot"]
