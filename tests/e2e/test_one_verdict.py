"""One verdict for `specserve plan`, `specserve render` and the running operator, on a real API server.

The same documents go to the operator (created on the API server, judged by `specserve run` with an image policy) and to
both commands (as processes, with the same SPECSERVE_ALLOWED_IMAGE_PREFIXES): the reason of Accepted=False is the reason
the commands give, and a serving the operator applies is one both commands accept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from specserve.cluster import kube as k
from specserve.rendering import planner
from tests.e2e.cluster import condition_of, create, eventually
from tests.e2e.conftest import delete_servings_then_namespace, new_namespace
from tests.e2e.operator_process import running_operator
from tests.helpers import serving

IMAGE_POLICY = {"SPECSERVE_ALLOWED_IMAGE_PREFIXES": json.dumps(["vllm/vllm-openai:"])}
NO_GPU = {"resourceName": ""}  # judged as on the product named, scheduled without GPUs
H100 = {**NO_GPU, "product": "H100-80GB"}
CASES: dict[str, dict[str, Any]] = {
    "unknown-gpu": {"gpu": {**NO_GPU, "product": "RTX-4090"}},
    "unknown-gpu-lowercase": {"gpu": {**NO_GPU, "product": "h100"}},
    "removed-flag": {"gpu": H100, "engine": {"extraArgs": ["--speculative-model", "meta-llama/Llama-3.2-1B-Instruct"]}},
    "managed-flag": {"gpu": H100, "engine": {"extraArgs": ["--tensor-parallel-size", "2"]}},
    "image-not-allowed": {"gpu": H100, "engine": {"image": "docker.io/someone/vllm:latest"}},
    "does-not-fit": {
        "target": {"model": "meta-llama/Llama-3.1-70B-Instruct"}, "gpu": {**H100, "count": 2},
        "speculation": {"method": "draft_model", "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 2}},
        "engine": {"maxModelLen": 16384},
    },
    "cannot-judge": {"gpu": NO_GPU},
    "fits": {"gpu": H100, "engine": {"maxModelLen": 16384}},
}
EXPECTED = {  # what the operator is expected to say, so that a case that stopped testing anything is noticed
    "unknown-gpu": "UnknownGPUProduct", "unknown-gpu-lowercase": "UnknownGPUProduct", "removed-flag": "InvalidExtraArgs",
    "managed-flag": "InvalidExtraArgs", "image-not-allowed": "ImageNotAllowed", "does-not-fit": planner.REFUSED_REASON,
    "cannot-judge": None, "fits": None,
}


def command(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "specserve.cli", *argv], capture_output=True, text=True, timeout=120, env={**os.environ, **IMAGE_POLICY})


@pytest.fixture(scope="module")
def verdicts(kube: k.Kube, crd_installed: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """Per case: the operator's Accepted condition, and plan's and render's exit code, stdout and stderr."""
    namespace = new_namespace(kube, "specserve-verdict")
    folder = tmp_path_factory.mktemp("verdict")
    with running_operator("one-verdict", ["--namespace", namespace], env=IMAGE_POLICY):
        found: dict[str, dict[str, Any]] = {}
        for name, spec in CASES.items():
            document = serving(name=name, namespace=namespace, **spec)
            create(kube, namespace, document)
            (folder / f"{name}.yaml").write_text(yaml.safe_dump(document))
        for name in CASES:
            accepted = eventually(lambda name=name: condition_of(kube, namespace, name, "Accepted"), timeout=60)
            path = str(folder / f"{name}.yaml")
            found[name] = {"accepted": accepted, "plan": command("plan", path), "render": command("render", path)}
        yield found
        delete_servings_then_namespace(kube, namespace)


@pytest.mark.parametrize("case", list(CASES))
def test_plan_render_and_the_operator_give_the_same_verdict(verdicts: dict[str, dict[str, Any]], case: str) -> None:
    found = verdicts[case]
    accepted, plan, render = found["accepted"], found["plan"], found["render"]
    operator_refuses = accepted["status"] == "False"
    assert (accepted["reason"] if operator_refuses else None) == EXPECTED[case], accepted
    for result in (plan, render):
        assert "Traceback" not in result.stderr
        if operator_refuses:
            assert result.returncode == (1 if accepted["reason"] == planner.REFUSED_REASON else 2), result.stderr
            (line,) = result.stderr.splitlines()
            assert f"the operator refuses it ({accepted['reason']}" in line
        else:
            assert result.returncode == 0 and result.stderr == ""
    if operator_refuses:
        assert render.stdout == ""
    else:
        assert render.stdout and plan.stdout.splitlines()[-1].endswith("the operator applies it")
