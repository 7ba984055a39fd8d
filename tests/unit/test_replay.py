"""`specserve replay`: one decision per observation line, as in Enforce mode."""

import json
import subprocess
import sys

import pytest

from specserve import api, replay
from tests.helpers import EXAMPLES, ROOT, minimal_spec

SPEC = api.SpeculativeServingSpec.model_validate(minimal_spec())


def line(t, acceptance, drafts=20_000, **extra):
    return json.dumps({"t": t, "acceptance_rate": acceptance, "draft_tokens": drafts, "p50_tpot": None, "p99_tpot": None, "baseline_p99_tpot": None, "p99_ttft": None, "request_rate": None, "variant": None, **extra})


def test_every_line_yields_one_decision_with_the_required_keys():
    out = list(replay.replay(SPEC, [line(0, 0.8), line(30, None, None)]))
    assert [set(d) for d in out] == [{"t", "action", "reason", "speculation", "variant"}] * 2
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
