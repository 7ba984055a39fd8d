"""One verdict per question: `specserve plan` and `render` refuse exactly the servings the running operator refuses.

The same documents go to the real operator (against kmock) and to the commands; Accepted=False must match exit code 1, serving by serving.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from specserve.cli import commands
from tests.helpers import serving
from tests.integration.conftest import DEPLOYMENTS, NAMESPACE, SERVINGS, eventually, live

SERVINGS_URL = f"/apis/specserve.dev/v1alpha1/namespaces/{NAMESPACE}/speculativeservings"
H100x2 = {"count": 2, "product": "H100-80GB"}
DRAFT_8B = {"method": "draft_model", "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 2}}
# name: (spec, MemoryBudget reason the planner gives it)
CASES = {
    "does-not-fit": ({"target": {"model": "meta-llama/Llama-3.1-70B-Instruct"}, "gpu": H100x2, "speculation": DRAFT_8B, "engine": {"maxModelLen": 16384}}, "DoesNotFit"),
    "unknown-gpu": ({}, "CannotJudge"),
    "unknown-model": ({"target": {"model": "example-org/in-house-13b"}, "gpu": H100x2}, "CannotJudge"),
    "fits": ({"target": {"model": "neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8", "quantization": "fp8"}, "gpu": H100x2, "speculation": DRAFT_8B, "engine": {"maxModelLen": 16384}}, "Fits"),
}


def accepted(kube, name: str) -> dict | None:
    status = (live(kube, SERVINGS, name) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "Accepted"), None)


def command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = commands.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_plan_and_render_refuse_exactly_what_the_operator_refuses(kube, operator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    documents = {name: serving(name=name, namespace=NAMESPACE, **spec) for name, (spec, _) in CASES.items()}
    for document in documents.values():
        response = await kube.post(SERVINGS_URL, json=document)
        assert response.status in (200, 201), await response.text()
    operator_refuses = {}
    for name in CASES:
        condition = await eventually(lambda name=name: accepted(kube, name))
        operator_refuses[name] = condition["status"] == "False"
        assert (live(kube, DEPLOYMENTS, name) is None) == operator_refuses[name]
    assert operator_refuses == {"does-not-fit": True, "unknown-gpu": False, "unknown-model": False, "fits": False}

    for name, document in documents.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document))
        plan_code, plan_out, _ = command(["plan", "-o", "json", str(path)], capsys)
        render_code, render_out, render_err = command(["render", str(path)], capsys)
        expected = commands.REFUSED if operator_refuses[name] else 0
        assert (plan_code, render_code) == (expected, expected), name
        assert json.loads(plan_out)["memoryBudget"]["reason"] == CASES[name][1]
        assert bool(render_out) != operator_refuses[name]
        if operator_refuses[name]:
            assert f"({NAMESPACE}/{name}): the operator refuses it ({accepted(kube, name)['reason']}, MemoryBudget DoesNotFit)" in render_err
