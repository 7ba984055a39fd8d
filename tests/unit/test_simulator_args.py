"""The simulator takes the `vllm serve` command lines specserve renders and refuses what vLLM refuses (exit 2)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from specserve import api
from specserve.cli.commands import render_document
from specserve.engine import vllm
from specserve.rendering import manifests
from specserve_simulator import args, speculative
from tests.helpers import EXAMPLES, load_example

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def rendered_args() -> list[Any]:
    """Every Deployment's args for every example, with speculation on and off (a list: parametrize needs a Collection)."""
    cases = []
    for path in EXAMPLES:
        document = load_example(path)
        serving = api.SpeculativeServing.model_validate(document)
        owner = manifests.Owner(document["metadata"]["name"], document["metadata"].get("namespace", "default"))
        for state in (manifests.DecisionState(), manifests.DecisionState(speculation=False)):
            for obj in manifests.render(owner, serving.spec, state):
                if obj["kind"] == "Deployment":
                    label = f"{path.stem}:{obj['metadata']['name']}:{'on' if state.speculation else 'off'}"
                    cases.append(pytest.param(obj["spec"]["template"]["spec"]["containers"][0]["args"], id=label))
    return cases


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        args.parse(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def spec_config(**config) -> list[str]:
    return [MODEL, "--speculative-config", json.dumps(config)]


@pytest.mark.parametrize("argv", rendered_args())
def test_every_rendered_example_is_accepted(argv):
    config = args.parse(argv)
    assert config.model == argv[0]
    assert config.port == vllm.PORT


def test_examples_render_the_speculative_config_the_simulator_reads():
    objs = render_document(load_example(next(p for p in EXAMPLES if p.stem == "ngram-summarization")), manifests.RenderOptions())
    config = args.parse(objs[0]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert config.model_name == "summarizer"
    assert config.speculation == speculative.Speculation("ngram", 5, per_batch_size=((1, 16, 5), (17, 17, 0)))


def test_speculation_off_means_no_speculation():
    assert args.parse([MODEL]).speculation is None


@pytest.mark.parametrize("flag", sorted(vllm.OBSOLETE_FLAGS))
def test_obsolete_flag_is_an_unrecognized_argument(flag, capsys):
    message = refusal([MODEL, flag, "4"], capsys)
    assert f"error: unrecognized arguments: {flag} 4" in message
    assert "removed from vLLM" in message


def test_unknown_flag_is_an_unrecognized_argument(capsys):
    assert "error: unrecognized arguments: --frobnicate" in refusal([MODEL, "--frobnicate"], capsys)


def test_abbreviated_flag_is_refused(capsys):
    assert "unrecognized arguments: --max-model" in refusal([MODEL, "--max-model", "4096"], capsys)


@pytest.mark.parametrize("key", ["disable_by_batch_size", "acceptance_method", "tensor_parallel_size"])
def test_removed_speculative_config_key_is_refused(key, capsys):
    message = refusal(spec_config(method="ngram", num_speculative_tokens=3, **{key: 2}), capsys)
    assert "argument --speculative-config" in message and key in message


def test_unknown_speculative_config_key_is_refused(capsys):
    assert "'draft_temperature'" in refusal(spec_config(method="ngram", num_speculative_tokens=3, draft_temperature=0.5), capsys)


@pytest.mark.parametrize("method", ["medusa", "mlp_speculator"])
def test_removed_method_is_refused(method, capsys):
    assert f"'{method}' was removed" in refusal(spec_config(method=method, model="x/y", num_speculative_tokens=3), capsys)


def test_unknown_method_is_refused(capsys):
    assert "unknown speculative method 'lookahead'" in refusal(spec_config(method="lookahead", num_speculative_tokens=3), capsys)


@pytest.mark.parametrize("k", [0, -1, "3", True, 2.5])
def test_num_speculative_tokens_must_be_a_positive_integer(k, capsys):
    assert "greater than 0" in refusal(spec_config(method="ngram", num_speculative_tokens=k), capsys)


def test_draft_model_needs_a_model(capsys):
    assert "needs a 'model'" in refusal(spec_config(method="draft_model", num_speculative_tokens=3), capsys)


def test_speculative_config_must_be_json(capsys):
    assert "not valid JSON" in refusal([MODEL, "--speculative-config", "{method: ngram}"], capsys)


def test_speculative_config_keys_accept_dashes():
    config = args.parse(spec_config(**{"method": "ngram", "num-speculative-tokens": 3, "prompt-lookup-max": 4}))
    assert config.speculation.num_speculative_tokens == 3


def test_mtp_defaults_to_one_speculative_token():
    assert args.parse(spec_config(method="mtp")).speculation.num_speculative_tokens == 1


def test_model_specific_mtp_method_is_mtp():
    assert args.parse(spec_config(method="deepseek_mtp", num_speculative_tokens=1)).speculation.method == "mtp"


@pytest.mark.parametrize(
    "schedule",
    [[[1, 16, 5], [17, 17, 0]], [[1, 1, 4]], [[1, 8, 4], [9, 64, 2], [65, 65, 0]], [[9, 20, 2], [1, 8, 4]]],
)
def test_valid_batch_size_schedule_is_accepted(schedule):
    config = args.parse(spec_config(method="ngram", num_speculative_tokens=5, num_speculative_tokens_per_batch_size=schedule))
    assert config.speculation.per_batch_size[0][0] == 1


@pytest.mark.parametrize(
    ("schedule", "complaint"),
    [
        ([[2, 16, 5]], "must start at 1"),
        ([[1, 16, 5], [16, 32, 0]], "must not overlap"),
        ([[1, 16, 5], [10, 12, 0]], "must not overlap"),
        ([[1, 16, -1]], "k must be >= 0"),
        ([[4, 2, 1]], "start must be <= end"),
        ([[0, 2, 1]], "must be positive"),
        ([[1, 16]], "[start, end, k]"),
        ([], "non-empty list"),
        ([[1, 16, "5"]], "[start, end, k]"),
    ],
)
def test_invalid_batch_size_schedule_is_refused(schedule, complaint, capsys):
    message = refusal(spec_config(method="ngram", num_speculative_tokens=5, num_speculative_tokens_per_batch_size=schedule), capsys)
    assert complaint in message


@pytest.mark.parametrize(("batch", "k"), [(1, 5), (16, 5), (17, 0), (500, 0)])
def test_last_range_k_carries_to_larger_batches(batch, k):
    assert speculative.Speculation("ngram", 5, per_batch_size=((1, 16, 5), (17, 17, 0))).tokens_for_batch(batch) == k


def test_gap_between_ranges_keeps_the_previous_k():
    assert speculative.Speculation("ngram", 5, per_batch_size=((1, 4, 3), (10, 12, 1))).tokens_for_batch(6) == 3


def test_schedule_k_is_capped_at_num_speculative_tokens():
    assert speculative.Speculation("ngram", 2, per_batch_size=((1, 4, 7),)).tokens_for_batch(2) == 2


def test_draft_tensor_parallel_size_is_one_or_the_targets(capsys):
    draft = {"method": "draft_model", "model": "x/draft-1B", "num_speculative_tokens": 3}
    assert args.parse([*spec_config(**draft, draft_tensor_parallel_size=2), "-tp", "2"]).speculation.draft_tensor_parallel_size == 2
    assert "must be 1 or the target's" in refusal([*spec_config(**draft, draft_tensor_parallel_size=2), "-tp", "4"], capsys)


def test_shortcut_flags_cannot_be_mixed_with_speculative_config(capsys):
    message = refusal([*spec_config(method="ngram", num_speculative_tokens=3), "--spec-tokens", "4"], capsys)
    assert "cannot be combined" in message


def test_shortcut_flags_build_a_speculative_config():
    config = args.parse([MODEL, "--spec-method", "ngram", "--spec-tokens", "4"])
    assert (config.speculation.method, config.speculation.num_speculative_tokens) == ("ngram", 4)


@pytest.mark.parametrize(("text", "tokens"), [("4096", 4096), ("32k", 32000), ("32K", 32768), ("1.5k", 1500)])
def test_max_model_len_reads_vllm_suffixes(text, tokens):
    assert args.parse([MODEL, "--max-model-len", text]).max_model_len == tokens


def test_underscore_flag_spelling_is_accepted():
    assert args.parse([MODEL, "--max_num_seqs", "7"]).max_num_seqs == 7


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_gpu_memory_utilization_must_be_a_fraction(value, capsys):
    assert "--gpu-memory-utilization" in refusal([MODEL, "--gpu-memory-utilization", value], capsys)


def test_unknown_quantization_is_refused(capsys):
    assert "--quantization" in refusal([MODEL, "--quantization", "int3"], capsys)


def test_model_is_required(capsys):
    assert "a model is required" in refusal(["--port", "8000"], capsys)


def test_disable_prefix_caching_is_read():
    assert args.parse([MODEL, "--disable-prefix-caching"]).enable_prefix_caching is False


def test_sim_options_are_parsed_separately_from_vllm_flags():
    config = args.parse([MODEL, "--sim-qps", "3", "--sim-temperature", "0.9", "--sim-acceptance", "0.4", "--sim-seed", "7"])
    assert (config.sim.qps, config.sim.temperature, config.sim.acceptance, config.sim.seed) == (3.0, 0.9, 0.4, 7)


def test_sim_options_default_from_the_environment(monkeypatch):
    monkeypatch.setenv("SPECSERVE_SIM_QPS", "2.5")
    monkeypatch.setenv("SPECSERVE_SIM_ACCEPTANCE", "0.3")
    config = args.parse([MODEL])
    assert (config.sim.qps, config.sim.acceptance) == (2.5, 0.3)


@pytest.mark.parametrize("option", [["--sim-acceptance", "1.2"], ["--sim-qps", "-1"], ["--sim-time-scale", "0"]])
def test_bad_sim_option_is_refused(option, capsys):
    assert option[0] in refusal([MODEL, *option], capsys)
