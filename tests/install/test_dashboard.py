"""The Grafana dashboard (charts/specserve/files/grafana-dashboard.json): every query parses under promtool and uses $datasource.

Grafana variables are substituted with sample values first; the panels the issue asks for are checked by what they query.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.install import tools
from tests.install.tools import CHART

DASHBOARD = CHART / "files" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SAMPLE_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h", "$namespace": "team-a|team-b", "$serving": ".*"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[str]:
    """Every PromQL expression: panel targets, annotations, and the selectors inside template label_values()."""
    found = [t["expr"] for p in panels() for t in p["targets"]]
    found += [a["expr"] for a in dashboard()["annotations"]["list"] if "expr" in a]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found.append(re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"]).group(1))
    return found


def substitute(expr: str) -> str:
    for name in sorted(SAMPLE_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, SAMPLE_VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_every_query_parses_under_promtool(tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query_{n}", "expr": substitute(q)} for n, q in enumerate(queries())]
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = tools.run(tools.binary("promtool"), "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"] and all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
    for item in dashboard()["annotations"]["list"] + [v for v in dashboard()["templating"]["list"] if v["type"] == "query"]:
        assert item["datasource"] == DATASOURCE, item["name"]


def test_datasource_variable_is_a_prometheus_picker() -> None:
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_acceptance_panel_draws_threshold_lines_at_050_and_065() -> None:
    (panel,) = [p for p in panels() if p["title"] == "Acceptance rate"]
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    assert [s["value"] for s in defaults["thresholds"]["steps"]][1:] == [0.5, 0.65]
    assert "vllm:spec_decode_num_accepted_tokens_total" in panel["targets"][0]["expr"]


def test_per_position_acceptance_is_plotted() -> None:
    assert any("vllm:spec_decode_num_accepted_tokens_per_pos_total" in q and "position" in q for q in queries())


def test_tpot_and_ttft_show_p50_and_p99_by_role() -> None:
    for metric in ("vllm:request_time_per_output_token_seconds_bucket", "vllm:time_to_first_token_seconds_bucket"):
        exprs = [t["expr"] for p in panels() for t in p["targets"] if metric in t["expr"] and "role)" in t["expr"]]
        assert any(e.startswith("histogram_quantile(0.50,") for e in exprs) and any(e.startswith("histogram_quantile(0.99,") for e in exprs), metric


def test_decisions_are_annotations() -> None:
    (annotation,) = dashboard()["annotations"]["list"]
    assert "specserve_decisions_total" in annotation["expr"] and annotation["enable"] is True
    assert "disable_speculation" in annotation["expr"] and "{{action}}" in annotation["titleFormat"]
    assert "set_schedule" in annotation["expr"]


def test_estimated_speedup_is_plotted_per_serving() -> None:
    (panel,) = [p for p in panels() if p["title"] == "Estimated speedup"]
    (target,) = panel["targets"]
    assert 'specserve_estimated_speedup{namespace=~"$namespace", serving=~"$serving"}' in target["expr"]
