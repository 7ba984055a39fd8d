"""`specserve replay`: one decision per observation line, as in Enforce mode; input it cannot trust is refused naming the line.

Also the example history shipped in manifests/examples/observations/ and the README command that replays it.
"""

import json
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from specserve import api
from specserve.cli import commands
from specserve.observation import replay
from tests.helpers import EXAMPLES, ROOT, minimal_spec, serving

SPEC = api.SpeculativeServingSpec.model_validate(minimal_spec())


def line(t, acceptance, drafts=20_000, **extra):
    return json.dumps({"t": t, "acceptance_rate": acceptance, "draft_tokens": drafts, "p50_tpot": None, "p99_tpot": None, "baseline_p99_tpot": None, "p99_ttft": None, "request_rate": None, "variant": None, **extra})


def test_every_line_yields_one_decision_with_the_required_keys():
    out = list(replay.replay(SPEC, [line(0, 0.8), line(30, None, None)]))
    assert [set(d) for d in out] == [{"t", "action", "reason", "speculation", "variant", "schedule", "k"}] * 2
    assert [d["action"] for d in out] == ["keep", "hold"]


def test_low_acceptance_disables_after_the_configured_breaches():
    out = list(replay.replay(SPEC, [line(30 * i, 0.3) for i in range(3)]))
    assert [d["speculation"] for d in out] == [True, True, False]


def test_variant_history_teaches_the_reference_and_triggers_a_step_up():
    spec = api.SpeculativeServingSpec.model_validate(minimal_spec(target={"model": "o/m", "variants": [{"name": "int4", "model": "o/a"}, {"name": "int8", "model": "o/b"}]}))
    lines = [line(0, 0.80, variant="int8")] + [line(30 * i, 0.70, variant="int4") for i in range(1, 4)]
    out = list(replay.replay(spec, lines))
    assert out[-1]["action"] == "switch_variant" and out[-1]["variant"] == "int8"


@pytest.mark.parametrize("bad, fragment", [("{", "not JSON"), ('{"t": "x"}', "an object with a numeric 't'"), ('{"t": 1, "acceptance_rate": "high"}', "acceptance_rate must be a number")])
def test_unreadable_lines_name_the_line(bad, fragment):
    with pytest.raises(replay.ReplayError, match=f"line 1: {fragment}"):
        list(replay.replay(SPEC, [bad]))


def test_cli_prints_json_lines(tmp_path):
    observations = tmp_path / "obs.jsonl"
    observations.write_text("\n".join(line(30 * i, 0.3) for i in range(4)) + "\n")
    result = subprocess.run([sys.executable, "-m", "specserve.cli", "replay", str(EXAMPLES[0]), "--observations", str(observations)], capture_output=True, text=True, cwd=ROOT, check=True)
    decisions = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(decisions) == 4 and "disable_speculation" in [d["action"] for d in decisions]


# ---------------------------------------------------------------- input replay refuses


def test_unknown_key_is_an_error_naming_the_key():
    with pytest.raises(replay.ReplayError) as error:
        list(replay.replay(SPEC, [line(0, 0.8), json.dumps({"t": 30, "acceptance": 0.8, "draft_tokens": 5000})]))
    assert str(error.value).startswith("line 2: unknown key 'acceptance' (did you mean 'acceptance_rate'?); the keys are t, acceptance_rate, draft_tokens,")


def test_acceptance_without_draft_tokens_says_exactly_that():
    with pytest.raises(replay.ReplayError) as error:
        list(replay.replay(SPEC, [json.dumps({"t": 0, "acceptance_rate": 0.71})]))
    message = str(error.value)
    assert message.startswith("line 1: acceptance_rate 0.71 without draft_tokens:") and "no acceptance data" not in message


def test_acceptance_with_null_draft_tokens_says_exactly_that_too():
    with pytest.raises(replay.ReplayError, match="line 1: acceptance_rate 0.71 without draft_tokens"):
        list(replay.replay(SPEC, [line(0, 0.71, None)]))


@pytest.mark.parametrize("second", [0, 29.5, 30])
def test_time_going_backwards_or_standing_still_is_an_error_naming_the_line(second):
    with pytest.raises(replay.ReplayError) as error:
        list(replay.replay(SPEC, [line(0, 0.8), line(30, 0.8), line(second, 0.8)]))
    assert str(error.value) == f"line 3: t {second:g} is not after line 2's t 30: observations must be in increasing time order"


def test_blank_lines_do_not_count_as_earlier_times():
    assert len(list(replay.replay(SPEC, [line(0, 0.8), "", line(30, 0.8)]))) == 2


def test_nan_is_no_data_as_prometheus_writes_it():
    (decision,) = replay.replay(SPEC, ['{"t": 0, "acceptance_rate": NaN, "draft_tokens": NaN}'])
    assert (decision["action"], decision["reason"]) == ("hold", "no decision: no acceptance data in the window")


@pytest.mark.parametrize("t", ["true", "Infinity", "null"])
def test_t_must_be_a_finite_number(t):
    with pytest.raises(replay.ReplayError, match="line 1: an object with a numeric 't' is required"):
        list(replay.replay(SPEC, [f'{{"t": {t}}}']))


def test_cli_refuses_bad_observations_in_one_line_exit_2(tmp_path, capsys):
    observations = tmp_path / "obs.jsonl"
    observations.write_text(line(0, 0.8) + "\n" + json.dumps({"t": 30, "p95_tpot": 0.03}) + "\n")
    assert commands.main(["replay", str(EXAMPLES[0]), "--observations", str(observations)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"specserve replay: {observations}: line 2: unknown key 'p95_tpot'") and len(err.splitlines()) == 1


def test_cli_steps_only_to_variants_whose_memory_budget_fits(tmp_path, capsys):
    """As healthloop.act_on_health: the ladder is told which variants fit (here bf16 does not, on 2 x H100)."""
    variants = [{"name": "int8", "model": "neuralmagic/Meta-Llama-3.1-70B-Instruct-quantized.w8a8"}, {"name": "bf16", "model": "meta-llama/Llama-3.1-70B-Instruct"}]
    document = serving(name="ladder", target={"model": "meta-llama/Llama-3.1-70B-Instruct", "variants": variants},
                       gpu={"count": 2, "product": "H100-80GB"}, engine={"maxModelLen": 16384},
                       speculation={"method": "draft_model", "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 2}})
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump(document))
    observations = tmp_path / "obs.jsonl"
    observations.write_text("\n".join([line(0, 0.80, variant="bf16")] + [line(30 * i, 0.60, variant="int8") for i in range(1, 5)]) + "\n")
    assert commands.main(["replay", str(path), "--observations", str(observations)]) == 0
    decisions = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "switch_variant" not in [d["action"] for d in decisions]
    assert "but bf16 does not fit the GPU memory budget" in decisions[-1]["reason"]


# ---------------------------------------------------------------- issue 11's keys: parsing


def observed(**keys):
    return replay.parse_line(json.dumps({"t": 0, **keys}), 1)[1]


def test_the_keys_are_the_first_waves_and_the_goodput_fields_in_export_order():
    assert replay.KEYS == (
        "t", "acceptance_rate", "draft_tokens", "p50_tpot", "p99_tpot", "baseline_p99_tpot", "p99_ttft", "request_rate", "variant",
        "per_position_acceptance", "k", "batch_size", "baseline_batch_size", "baseline_p50_tpot", "baseline_p99_ttft",
        "challenger_p50_tpot", "challenger_batch_size",
    )


def test_per_position_acceptance_is_read_in_position_order():
    assert observed(per_position_acceptance=[0.85, 0.6, 0.1, 0.02]).per_position_acceptance == (0.85, 0.6, 0.1, 0.02)


@pytest.mark.parametrize("keys", [{}, {"per_position_acceptance": None}, {"per_position_acceptance": []}])
def test_per_position_acceptance_null_or_absent_is_none_known(keys):
    assert observed(**keys).per_position_acceptance == ()


def test_per_position_acceptance_takes_up_to_32_positions():
    assert len(observed(per_position_acceptance=[0.5] * 32).per_position_acceptance) == 32


def test_k_is_the_k_in_effect_during_the_window():
    assert observed(k=4).k == 4 and observed(k=0).k == 0 and observed(k=3.0).k == 3


@pytest.mark.parametrize("keys", [{}, {"k": None}])
def test_k_null_or_absent_is_not_known(keys):
    assert observed(**keys).k is None


def test_batch_size_is_running_requests_per_speculative_replica():
    assert observed(batch_size=48.5).batch_size == 48.5


def test_baseline_batch_size_is_running_requests_per_baseline_replica():
    assert observed(baseline_batch_size=0).baseline_batch_size == 0


def test_baseline_p50_tpot_is_read():
    assert observed(baseline_p50_tpot=0.015).baseline_p50_tpot == 0.015


def test_baseline_p99_ttft_is_read():
    assert observed(baseline_p99_ttft=0.3).baseline_p99_ttft == 0.3


@pytest.mark.parametrize("key", ["batch_size", "baseline_batch_size", "baseline_p50_tpot", "baseline_p99_ttft"])
def test_the_new_numbers_null_nan_or_absent_are_no_data(key):
    assert getattr(observed(), key) is None and getattr(observed(**{key: None}), key) is None
    assert getattr(replay.parse_line(f'{{"t": 0, "{key}": NaN}}', 1)[1], key) is None


def test_unknown_key_near_a_new_key_suggests_it():
    with pytest.raises(replay.ReplayError, match=r"^line 1: unknown key 'batchsize' \(did you mean 'batch_size'\?\); the keys are t, .*, challenger_batch_size$"):
        observed(batchsize=8)


# ---------------------------------------------------------------- issue 11's keys: refusals


def refused(line_keys, number=3):
    with pytest.raises(replay.ReplayError) as error:
        replay.parse_line(json.dumps({"t": 0, **line_keys}), number)
    return str(error.value)


def test_k_with_a_fraction_is_refused():
    assert refused({"k": 2.5}) == "line 3: k must be a whole number >= 0 or null, got 2.5"


def test_negative_k_is_refused():
    assert refused({"k": -1}) == "line 3: k must be a whole number >= 0 or null, got -1"


@pytest.mark.parametrize("k", ["4", True])
def test_k_that_is_no_number_is_refused(k):
    assert refused({"k": k}) == f"line 3: k must be a whole number >= 0 or null, got {k!r}"


def test_per_position_acceptance_that_is_no_list_is_refused():
    assert refused({"per_position_acceptance": 0.8}).startswith("line 3: per_position_acceptance must be a list of numbers in [0, 1] (position 0 first) or null, got 0.8")


@pytest.mark.parametrize("rate", [1.2, -0.1])
def test_per_position_acceptance_outside_0_to_1_is_refused_naming_the_position(rate):
    assert refused({"per_position_acceptance": [0.8, rate]}) == f"line 3: per_position_acceptance[1] must be a number in [0, 1], got {rate!r}"


@pytest.mark.parametrize("rate", [None, "0.5", True])
def test_per_position_acceptance_with_a_non_number_is_refused_naming_the_position(rate):
    assert refused({"per_position_acceptance": [rate]}) == f"line 3: per_position_acceptance[0] must be a number in [0, 1], got {rate!r}"


def test_per_position_acceptance_over_32_positions_is_refused():
    assert refused({"per_position_acceptance": [0.5] * 33}) == "line 3: per_position_acceptance has 33 positions, more than the 32 allowed"


@pytest.mark.parametrize("key", ["batch_size", "baseline_batch_size"])
def test_a_negative_batch_size_is_refused(key):
    assert refused({key: -2}) == f"line 3: {key} must be a number >= 0 or null, got -2"


@pytest.mark.parametrize("key", ["batch_size", "baseline_batch_size"])
def test_a_batch_size_that_is_no_number_is_refused(key):
    assert refused({key: "many"}) == f"line 3: {key} must be a number >= 0 or null, got 'many'"


@pytest.mark.parametrize("key", ["baseline_p50_tpot", "baseline_p99_ttft"])
def test_a_baseline_latency_that_is_no_number_is_refused(key):
    assert refused({key: "fast"}) == f"line 3: {key} must be a number or null, got 'fast'"


# ---------------------------------------------------------------- the shipped example history

EXAMPLE_SERVING = ROOT / "manifests" / "examples" / "llama-70b-draft-h100.yaml"
EXAMPLE_HISTORY = ROOT / "manifests" / "examples" / "observations" / "llama-70b-draft-h100.jsonl"


def test_example_history_replays_every_decision_the_policy_makes():
    spec = api.SpeculativeServingSpec.model_validate(yaml.safe_load(EXAMPLE_SERVING.read_text())["spec"])
    decisions = list(replay.replay(spec, EXAMPLE_HISTORY.read_text().splitlines()))
    actions = [d["action"] for d in decisions]
    assert len(decisions) == len(EXAMPLE_HISTORY.read_text().splitlines())
    assert {"keep", "hold", "disable_speculation", "enable_speculation"} == set(actions)
    assert actions.index("disable_speculation") < actions.index("enable_speculation") < len(actions) - 1
    assert decisions[-1]["speculation"] is True and actions[-1] == "keep"


def test_example_history_has_only_keys_export_writes_in_its_order_and_all_of_the_first_waves():
    """The example predates issue 11's keys (per_position_acceptance, batch sizes, baseline P50 TPOT and P99 TTFT),
    which a line may leave out."""
    from specserve.observation import export

    for x in EXAMPLE_HISTORY.read_text().splitlines():
        keys = tuple(json.loads(x))
        assert keys == tuple(k for k in export.LINE_KEYS if k in keys) and {"t", *replay.FIELDS, "variant"} <= set(keys)


def readme_replay_section():
    text = (ROOT / "README.md").read_text()
    return text[text.index("### Trying a policy on history") :].split("\n## ", 1)[0]


def test_readme_replay_command_prints_the_decisions_the_readme_shows():
    section = readme_replay_section()
    command, shown = re.findall(r"```sh\n(.*?)```\n\n```\n(.*?)```", section, re.S)[0]
    argv = shlex.split(command.strip())
    assert argv[:2] == ["specserve", "replay"] and str(EXAMPLE_HISTORY.relative_to(ROOT)) in argv
    result = subprocess.run([sys.executable, "-m", "specserve.cli", *argv[1:]], capture_output=True, text=True, cwd=ROOT, check=True)
    not_keep = [x for x in result.stdout.splitlines() if json.loads(x)["action"] != "keep"]
    assert not_keep == shown.strip().splitlines()
