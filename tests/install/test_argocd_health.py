"""Argo CD's health check for SpeculativeServing (charts/specserve/argocd/health.lua), run under real Lua 5.1 via lupa.

Argo CD runs health scripts in gopher-lua (Lua 5.1) with the object as global `obj`; every branch has a sample here.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.install import tools
from tests.install.tools import CHART

SCRIPT = CHART / "argocd" / "health.lua"


def evaluate(obj: dict[str, Any]) -> tuple[str, str]:
    lua51 = tools.module("lupa.lua51", "lupa")
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(SCRIPT.read_text())
    return result["status"], result["message"]


def cond(type_: str, status: str, reason: str = "Reason", message: str = "", generation: int = 2) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "observedGeneration": generation}


def serving(status: dict[str, Any] | None = None, generation: int = 2, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "specserve.dev/v1alpha1",
        "kind": "SpeculativeServing",
        "metadata": {"name": "llama", "namespace": "team-a", "generation": generation},
        "spec": {"target": {"model": "meta-llama/Llama-3.1-8B-Instruct"}, "speculation": {"method": "ngram"}, "replicas": 1, **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


READY = {
    "observedGeneration": 2,
    "phase": "Ready",
    "speculation": "On",
    "conditions": [cond("Accepted", "True", "Applied"), cond("Ready", "True", "Available", "llama: 1/1 available"), cond("Progressing", "False", "Stable")],
}


def ready(**changes: Any) -> dict[str, Any]:
    status = copy.deepcopy(READY)
    status.update(changes)
    return status


def with_condition(status: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    status = copy.deepcopy(status)
    status["conditions"] = [c for c in status["conditions"] if c["type"] != new["type"]] + [new]
    return status


def test_no_status_yet_is_progressing() -> None:
    assert evaluate(serving()) == ("Progressing", "Waiting for the specserve operator to reconcile")


def test_unobserved_generation_is_progressing() -> None:
    assert evaluate(serving(ready(), generation=3)) == ("Progressing", "Waiting for the operator to observe generation 3")


def test_refused_spec_is_degraded_with_the_reason() -> None:
    status = with_condition(ready(phase="Invalid"), cond("Accepted", "False", "InvalidExtraArgs", "spec.engine.extraArgs: --speculative-model was removed"))
    assert evaluate(serving(status)) == ("Degraded", "InvalidExtraArgs: spec.engine.extraArgs: --speculative-model was removed")


def test_scaled_to_zero_is_suspended() -> None:
    assert evaluate(serving(ready(), replicas=0)) == ("Suspended", "Scaled to zero replicas")


def test_zero_replicas_with_a_baseline_is_not_suspended() -> None:
    assert evaluate(serving(ready(), replicas=0, baseline={"replicas": 1}))[0] == "Healthy"


def test_lost_availability_is_degraded() -> None:
    status = with_condition(ready(phase="Degraded"), cond("Ready", "False", "NotAvailable", "llama: 0/1 available"))
    assert evaluate(serving(status)) == ("Degraded", "llama: 0/1 available")


def test_not_ready_and_not_progressing_is_degraded_whatever_the_phase() -> None:
    status = with_condition(ready(), cond("Ready", "False", "NotAvailable", "llama: 0/1 available"))
    assert evaluate(serving(status))[0] == "Degraded"


def test_rollout_is_progressing() -> None:
    status = with_condition(ready(phase="Progressing"), cond("Ready", "False", "NotAvailable", "llama: 0/1 available"))
    status = with_condition(status, cond("Progressing", "True", "RollingOut", "llama: 0/1 available"))
    assert evaluate(serving(status)) == ("Progressing", "llama: 0/1 available")


def test_pending_without_deployments_is_progressing() -> None:
    status = {"observedGeneration": 2, "phase": "Pending", "conditions": [cond("Accepted", "True"), cond("Progressing", "True", "RollingOut", "no Deployments yet")]}
    assert evaluate(serving(status)) == ("Progressing", "no Deployments yet")


def test_ready_is_healthy_with_the_ready_message() -> None:
    assert evaluate(serving(ready())) == ("Healthy", "llama: 1/1 available")


def test_observe_mode_is_healthy_and_says_so() -> None:
    assert evaluate(serving(ready(), healthPolicy={"mode": "Observe"})) == ("Healthy", "Observe mode: decisions are recorded, not enforced")


def test_speculation_turned_off_is_healthy_with_the_reason() -> None:
    status = with_condition(ready(speculation="Off"), cond("SpeculationHealthy", "False", "LowAcceptance", "acceptance 0.41 < 0.50 for 3 evaluations"))
    assert evaluate(serving(status)) == ("Healthy", "speculation off: acceptance 0.41 < 0.50 for 3 evaluations")


def test_missing_metrics_are_healthy_with_a_note() -> None:
    status = with_condition(ready(), cond("MetricsAvailable", "False", "NoData", "no vLLM series for team-a/llama"))
    assert evaluate(serving(status)) == ("Healthy", "metrics unavailable: no vLLM series for team-a/llama")


def test_notes_are_joined() -> None:
    status = with_condition(ready(speculation="Off"), cond("MetricsAvailable", "False", "NoData", "no data"))
    message = evaluate(serving(status, healthPolicy={"mode": "Observe"}))[1]
    assert message == "Observe mode: decisions are recorded, not enforced; speculation off: disabled by the health policy; metrics unavailable: no data"


@pytest.mark.parametrize("phase", ["Ready", "Progressing", "Degraded", "Invalid", "Pending"])
def test_every_phase_gets_a_status_argo_cd_knows(phase: str) -> None:
    status, message = evaluate(serving(ready(phase=phase)))
    assert status in {"Healthy", "Progressing", "Degraded", "Suspended"} and message


def test_argocd_cm_snippet_in_the_docs_is_the_script() -> None:
    import re

    import yaml

    docs = (tools.ROOT / "docs" / "install.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", docs, re.S) if "argocd-cm" in b]
    config_map = yaml.safe_load(block)
    assert config_map["data"]["resource.customizations.health.specserve.dev_SpeculativeServing"] == SCRIPT.read_text()
