"""The vendored real-vLLM data in tests/fixtures is in the repository and is what its README says.

A plain clone must carry everything the tests and benchmarks read; nothing may point outside the repository.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from specserve.engine import vllm
from tests.helpers import FIXTURES, ROOT

CAPTURES = ("baseline", "draft-model", "ngram")
# README.md's speedup table: (configuration, forced acceptance) -> speedup at b = 1, 8, 32, 128.
SPEEDUPS = {
    ("draft_k2", "0.8"): (1.14, 0.94, 0.65, 0.57),
    ("draft_k2", "0.5"): (0.61, 0.55, 0.62, 0.57),
    ("draft_k4", "0.8"): (0.62, 0.76, 0.63, 0.59),
    ("draft_k4", "0.5"): (0.38, 0.39, 0.37, 0.42),
    ("ngram_gpu_k4", "0.8"): (1.61, 1.22, 0.86, 0.79),
    ("ngram_gpu_k4", "0.0"): (0.65, 0.55, 0.44, 0.44),
}


def capture(name: str) -> dict[str, list]:
    text = (FIXTURES / f"vllm-0.26.0-{name}.metrics.txt").read_text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_is_a_vllm_exposition_of_the_smol_server(name: str) -> None:
    families = capture(name)
    model_names = {s.labels["model_name"] for f, samples in families.items() if f.startswith("vllm:") for s in samples if "model_name" in s.labels}
    assert model_names == {"smol"}
    assert all(f in families for f in (vllm.TPOT_HISTOGRAM, vllm.TTFT_HISTOGRAM, vllm.REQUESTS_RUNNING))


def test_only_the_speculative_captures_carry_spec_decode_series() -> None:
    has_spec = {name: any(f.startswith("vllm:spec_decode") for f in capture(name)) for name in CAPTURES}
    assert has_spec == {"baseline": False, "draft-model": True, "ngram": True}


def test_gpu_speedups_are_the_readme_table() -> None:
    measured = json.loads((FIXTURES / "gpu" / "speedup-forced-acceptance.json").read_text())
    baseline = measured["baseline"]["points"]
    for (config, acceptance), expected in SPEEDUPS.items():
        points = measured[config]["points"]
        speedups = tuple(round(baseline[b]["tpot_mean_ms"] / points[f"{b}@{acceptance}"]["tpot_mean_ms"], 2) for b in ("1", "8", "32", "128"))
        assert speedups == expected, config


def test_zero_acceptance_sweep_accepted_nothing() -> None:
    measured = json.loads((FIXTURES / "gpu" / "step-cost-zero-acceptance.json").read_text())
    assert set(measured) == {"baseline", "draft_k2", "draft_k4", "ngram_k4"}
    for config in ("draft_k2", "draft_k4", "ngram_k4"):
        assert all(point["accepted_tokens"] < 0.01 * max(point["draft_tokens"], 1) for point in measured[config]["points"].values()), config


def test_nothing_reads_fixtures_from_outside_the_repository() -> None:
    outside = re.compile(r"shared[/\"' ,]+fixtures")
    sources = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py"), *ROOT.glob("bench/**/*.md"), *ROOT.glob("operator/**/*.py"), *ROOT.glob("operator/**/*.md")]
    offenders = [str(path.relative_to(ROOT)) for path in sources if path != Path(__file__) and outside.search(path.read_text())]
    assert offenders == []
