"""The recording rules and alerts (charts/specserve/files/specserve.rules.yaml), checked and unit-tested by the real promtool.

Also keeps the rules honest about names: every vllm: series is one vllm.py knows, every specserve_ series one telemetry.py exports.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from specserve.engine import vllm
from tests.install import tools
from tests.install.tools import CHART, MANIFESTS

RULES = CHART / "files" / "specserve.rules.yaml"
UNIT_TESTS = Path(__file__).parent / "promtool" / "specserve.rules.test.yaml"


def rules() -> list[dict[str, str]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_rule_file_passes_promtool_check() -> None:
    result = tools.run(tools.binary("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass_under_promtool() -> None:
    result = tools.run(tools.binary("promtool"), "test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomize_prometheus_rule_passes_promtool_check(tmp_path: Path) -> None:
    rule = yaml.safe_load((MANIFESTS / "monitoring" / "prometheusrule.yaml").read_text())
    extracted = tmp_path / "rules.yaml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    result = tools.run(tools.binary("promtool"), "check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr
    assert rule["spec"] == yaml.safe_load(RULES.read_text()), "stale copy: run scripts/sync-install-copies.sh"


def test_every_alert_is_unit_tested() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    tested = {case["alertname"] for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in group.get("alert_rule_test", [])}
    assert alerts == tested


def test_required_alerts_exist() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert {"SpecserveAcceptanceLow", "SpecserveSpeculationDisabled", "SpecserveMetricsUnavailable", "SpecserveTpotRegression"} <= alerts


def test_every_alert_has_severity_summary_and_description() -> None:
    for rule in (r for r in rules() if "alert" in r):
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_rules_use_only_vllm_metrics_vllm_py_knows() -> None:
    known = {value for name, value in vars(vllm).items() if name.isupper() and isinstance(value, str) and value.startswith("vllm:")}
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for r in rules() for m in re.findall(r"vllm:[a-z_]+", r["expr"])}
    assert used <= known, used - known


def test_rules_use_only_specserve_metrics_telemetry_exports() -> None:
    tools.module("prometheus_client", "prometheus-client")
    from specserve.telemetry import Telemetry

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {m.name + suffix for m in Telemetry().registry.collect() for suffix in suffixes[m.type]}
    used = {m for r in rules() for m in re.findall(r"\bspecserve_[a-z_]+", r["expr"])}
    assert used and used <= exported, used - exported


def test_every_recorded_series_is_named_in_the_operating_guide() -> None:
    guide = (CHART.parents[1] / "docs" / "operating.md").read_text()
    recorded = {r["record"] for r in rules() if "record" in r}
    assert recorded and {name for name in recorded if f"`{name}`" not in guide} == set()


def test_each_rule_reads_recorded_series_only_of_its_own_group_or_earlier_in_it() -> None:
    """A group's rules run in order at one evaluation time; a series recorded by another group would be read as of
    that group's last evaluation, not the same window."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for group in (g for g in groups if "recording" in g["name"]):
        seen: set[str] = set()
        for rule in group["rules"]:
            used = set(re.findall(r"\b[a-z_]+:[a-z_0-9]+:[a-z_0-9]+\b", rule["expr"]))
            assert used <= seen, (group["name"], rule["record"], used - seen)
            seen.add(rule["record"])
