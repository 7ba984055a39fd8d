"""Every rendered command line is fed to the real vLLM's `vllm serve` parser and SpeculativeConfig."""

from __future__ import annotations

import json

import pytest

from specserve import api
from specserve.cli.commands import render_document
from specserve.engine import vllm
from specserve.rendering import manifests
from tests.helpers import EXAMPLES, load_example, minimal_spec
from tests.support import vllm_parser

pytestmark = pytest.mark.vllm

DRAFT = {"model": "meta-llama/Llama-3.2-1B-Instruct"}
SPECS = {
    "ngram": minimal_spec(),
    "ngram with cutoff": minimal_spec(speculation={"method": "ngram", "numSpeculativeTokens": 5, "ngram": {"promptLookupMin": 1, "promptLookupMax": 5}, "disableAboveBatchSize": 64}),
    "draft_model quantized draft": minimal_spec(gpu={"count": 2}, speculation={"method": "draft_model", "draft": {**DRAFT, "quantization": "fp8", "tensorParallelSize": 2, "revision": "main"}}),
    "eagle": minimal_spec(speculation={"method": "eagle", "draft": {"model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"}, "numSpeculativeTokens": 5}),
    "eagle3": minimal_spec(speculation={"method": "eagle3", "draft": {"model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"}}),
    "mtp": minimal_spec(speculation={"method": "mtp", "numSpeculativeTokens": 1}),
    "suffix": minimal_spec(speculation={"method": "suffix", "numSpeculativeTokens": 8}),
    "engine flags": minimal_spec(engine={"maxModelLen": 32768, "maxNumSeqs": 64, "dtype": "bfloat16", "kvCacheDtype": "fp8_e4m3", "gpuMemoryUtilization": 0.85, "extraArgs": ["--enable-prefix-caching", "--enforce-eager"]}),
    "quantized target with revision": minimal_spec(target={"model": "hf://org/model-AWQ", "quantization": "awq_marlin", "revision": "v1", "servedModelName": "m"}),
    "pvc target": minimal_spec(target={"model": "pvc://weights/llama/8b"}),
}


@pytest.fixture(scope="module", autouse=True)
def vllm_installed():
    vllm_parser.require_vllm()


def all_deployments():
    for path in EXAMPLES:
        for obj in render_document(load_example(path), manifests.RenderOptions()):
            if obj["kind"] == "Deployment":
                yield f"{path.name}:{obj['metadata']['name']}", obj
    for label, spec in SPECS.items():
        parsed = api.SpeculativeServingSpec.model_validate(spec)
        for state in (manifests.DecisionState(), manifests.DecisionState(speculation=False)):
            for obj in manifests.render(manifests.Owner("t", "default"), parsed, state):
                if obj["kind"] == "Deployment":
                    yield f"{label}:{obj['metadata']['name']}:{'on' if state.speculation else 'off'}", obj


CASES = dict(all_deployments())


def container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_vllm_parses_the_rendered_arguments(case):
    c = container(CASES[case])
    assert c["command"] == ["vllm", "serve"]
    namespace = vllm_parser.parse_serve_args(c["args"])
    assert namespace.model_tag == c["args"][0]
    assert namespace.port == 8000


@pytest.mark.parametrize("case", [c for c in CASES if "--speculative-config" in container(CASES[c])["args"]], ids=str)
def test_speculative_config_passes_vllms_own_validation(case):
    args = container(CASES[case])["args"]
    config = json.loads(args[args.index("--speculative-config") + 1])
    vllm_parser.validate_speculative_config(config)
    assert vllm_parser.parse_serve_args(args).speculative_config == config


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_quantization_and_kv_cache_dtype_are_known_to_vllm(case):
    namespace = vllm_parser.parse_serve_args(container(CASES[case])["args"])
    if namespace.quantization is not None:
        assert namespace.quantization in vllm_parser.known_quantizations()
    assert namespace.kv_cache_dtype in vllm_parser.known_kv_cache_dtypes()


@pytest.mark.parametrize("flag", sorted(vllm.OBSOLETE_FLAGS))
def test_vllm_rejects_every_flag_specserve_calls_obsolete(flag):
    with pytest.raises(vllm_parser.Rejected):
        vllm_parser.parse_serve_args(["org/model", flag, "1"])


@pytest.mark.parametrize("config", [
    {"method": "ngram", "num_speculative_tokens": 4, "disable_by_batch_size": 8},
    {"method": "ngram", "num_speculative_tokens": 4, "acceptance_method": "typical_acceptance_sampler"},
    {"method": "draft_model", "model": "o/d", "num_speculative_tokens": 4, "tensor_parallel_size": 1},
    {"method": "medusa", "model": "o/d", "num_speculative_tokens": 4},
    {"method": "ngram", "num_speculative_tokens": 0},
    {"method": "ngram", "num_speculative_tokens": 4, "num_speculative_tokens_per_batch_size": [[2, 8, 4]]},
])
def test_the_judge_rejects_what_vllm_rejects(config):
    with pytest.raises((vllm_parser.Rejected, ValueError)):
        vllm_parser.validate_speculative_config(config)
