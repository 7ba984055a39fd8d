"""The simulator's argument rules agree with the real vLLM 0.33 parser and SpeculativeConfig (CPU install)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from specserve_simulator import args, speculative
from tests.support import vllm_parser

pytestmark = pytest.mark.vllm

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
DRAFT = {"method": "draft_model", "model": "meta-llama/Llama-3.2-1B-Instruct", "num_speculative_tokens": 4}
# Not here: an unknown --quantization, which vLLM's parser lets through and its engine refuses at start;
# the simulator refuses it at once (test_simulator_args).
CASES = {
    "plain": [MODEL],
    "engine flags": [MODEL, "--max-model-len", "32K", "--max-num-seqs", "64", "--dtype", "bfloat16", "--kv-cache-dtype", "fp8", "--enable-prefix-caching"],
    "disable prefix caching": [MODEL, "--disable-prefix-caching", "--enforce-eager", "--trust-remote-code"],
    "ngram": [MODEL, "--speculative-config", json.dumps(NGRAM)],
    "draft": [MODEL, "--speculative-config", json.dumps(DRAFT)],
    "schedule": [MODEL, "--speculative-config", json.dumps({**NGRAM, "num_speculative_tokens_per_batch_size": [[1, 16, 4], [17, 17, 0]]})],
    "old speculative model": [MODEL, "--speculative-model", "x"],
    "old token count": [MODEL, "--num-speculative-tokens", "4"],
    "old disable by batch size": [MODEL, "--speculative-disable-by-batch-size", "4"],
    "unknown flag": [MODEL, "--frobnicate"],
    "unknown dtype": [MODEL, "--dtype", "int3"],
    "json disable_by_batch_size": [MODEL, "--speculative-config", json.dumps({**NGRAM, "disable_by_batch_size": 4})],
    "json acceptance_method": [MODEL, "--speculative-config", json.dumps({**NGRAM, "acceptance_method": "typical_acceptance_sampler"})],
    "json tensor_parallel_size": [MODEL, "--speculative-config", json.dumps({**DRAFT, "tensor_parallel_size": 1})],
    "json medusa": [MODEL, "--speculative-config", json.dumps({**DRAFT, "method": "medusa"})],
    "zero tokens": [MODEL, "--speculative-config", json.dumps({**NGRAM, "num_speculative_tokens": 0})],
    "schedule overlapping": [MODEL, "--speculative-config", json.dumps({**NGRAM, "num_speculative_tokens_per_batch_size": [[1, 16, 4], [8, 32, 0]]})],
    "schedule not from 1": [MODEL, "--speculative-config", json.dumps({**NGRAM, "num_speculative_tokens_per_batch_size": [[2, 16, 4]]})],
    "schedule negative k": [MODEL, "--speculative-config", json.dumps({**NGRAM, "num_speculative_tokens_per_batch_size": [[1, 16, -1]]})],
}


@pytest.fixture(scope="module", autouse=True)
def vllm_installed():
    vllm_parser.require_vllm()


def real_vllm_accepts(argv: list[str]) -> bool:
    try:
        namespace = vllm_parser.parse_serve_args(argv)
        if namespace.speculative_config is not None:
            vllm_parser.validate_speculative_config(dict(namespace.speculative_config))
    except vllm_parser.Rejected:
        return False
    return True


def simulator_accepts(argv: list[str]) -> bool:
    try:
        args.parse(argv)
    except SystemExit:
        return False
    return True


@pytest.mark.parametrize("argv", list(CASES.values()), ids=list(CASES))
def test_simulator_and_vllm_agree_on_accepting(argv):
    assert simulator_accepts(argv) == real_vllm_accepts(argv)


def test_every_simulator_flag_is_a_vllm_serve_flag():
    root, _ = vllm_parser._serve_parser()
    serve = next(iter(root._subparsers._group_actions[0].choices.values()))
    real = {option for action in serve._actions for option in action.option_strings}
    ours = {option for action in args.build_parser()._actions for option in action.option_strings}
    assert {o for o in ours if not o.startswith("--sim-")} - real == set()


def test_quantization_and_kv_cache_dtype_choices_are_vllms():
    assert set(args.QUANTIZATIONS) == vllm_parser.known_quantizations()
    assert set(args.KV_CACHE_DTYPES) == vllm_parser.known_kv_cache_dtypes()


def test_every_speculative_key_the_simulator_knows_is_a_vllm_field():
    from vllm.config import SpeculativeConfig

    fields = {f.name for f in dataclasses.fields(SpeculativeConfig)}
    assert speculative.KNOWN_KEYS <= fields
