"""The simulator's step time follows the GPU calibration: closed-loop runs of the measured shape reproduce the measured
speedups, speculation costs goodput's c(b, k, acceptance) on the decode part only, and the k schedule applies per step.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from pathlib import Path

import pytest

from specserve.decision import goodput, schedules
from specserve_simulator import args
from specserve_simulator.engine import Engine
from specserve_simulator.records import RequestSpec
from specserve_simulator.workload import Workload

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
FORCED = json.loads((FIXTURES / "speedup-forced-acceptance.json").read_text())
TARGET, DRAFT_MODEL = "x-7.38B", "y-1.07B"  # the measured shape: 7.38 B target, 1.07 B draft
SPECULATIVE = {
    "draft_k2": {"method": "draft_model", "model": DRAFT_MODEL, "num_speculative_tokens": 2},
    "draft_k4": {"method": "draft_model", "model": DRAFT_MODEL, "num_speculative_tokens": 4},
    "ngram_gpu_k4": {"method": "ngram_gpu", "num_speculative_tokens": 4},
}
# Per-token acceptance forced in each measured series; ngram_gpu's nominal 0.8 measured an accepted length of 3.0,
# which a constant conditional rate of 0.745 gives.
CONDITIONAL_RATE = {"0.8": 0.8, "0.5": 0.5, "0.0": 0.0}
NGRAM_GPU_RATE = {"0.8": 0.745, "0.0": 0.0}
POINT_TOLERANCE, RMS_TOLERANCE = 0.35, 0.17


class ForcedAcceptance:
    """Every request keeps each draft with probability `rate` given the ones before: the fixtures' synthetic sampler."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def draw_request_rate(self, rng, temperature, echo=0.0, override=None) -> float:
        return self.rate


def config(speculative: dict | None = None, *extra: str, target: str = TARGET) -> args.ServeConfig:
    argv = [target, "--max-model-len", "2048", "--max-num-seqs", "256", *extra]
    return args.parse(argv + (["--speculative-config", json.dumps(speculative)] if speculative else []))


@functools.cache
def closed_loop_tpot(series: str | None, b: int, rate: float = 0.0) -> float:
    """Mean TPOT of b clients that each send the next 256-token prompt (128 output tokens) when the last one ends."""
    engine = Engine(config(SPECULATIVE[series] if series else None))
    if series:
        engine.acceptance = ForcedAcceptance(rate)
    request = RequestSpec(prompt_tokens=256, max_tokens=128, temperature=0.0, ignore_eos=True)
    for _ in range(b):
        engine.submit(request)
    finished, tpots = 0, []
    while len(tpots) < 60 + 4 * b:
        report = engine.step()
        for done in report.finished:
            finished += 1
            if finished > 2 * b:  # after every client's first two requests
                tpots.append(done.tpot)
            engine.submit(request)
    return statistics.mean(tpots)


def measured_points():
    baseline = {p["b"]: p["tpot_mean_ms"] for p in FORCED["baseline"]["points"].values()}
    for series, data in FORCED.items():
        if series == "baseline":
            continue
        for key, point in data["points"].items():
            acceptance = key.split("@")[1]
            rate = (NGRAM_GPU_RATE if series.startswith("ngram_gpu") else CONDITIONAL_RATE)[acceptance]
            yield f"{series}@{key}", series, point["b"], rate, baseline[point["b"]] / point["tpot_mean_ms"]


POINTS = list(measured_points())


def simulated_speedup(series: str, b: int, rate: float) -> float:
    return closed_loop_tpot(None, b) / closed_loop_tpot(series, b, rate)


@pytest.mark.parametrize(("series", "b", "rate", "speedup"), [p[1:] for p in POINTS], ids=[p[0] for p in POINTS])
def test_a_closed_loop_of_the_measured_shape_reproduces_each_measured_speedup_within_35_percent(series, b, rate, speedup):
    assert simulated_speedup(series, b, rate) == pytest.approx(speedup, rel=POINT_TOLERANCE)


def test_closed_loop_speedups_are_within_17_percent_rms_of_the_measurements():
    errors = [simulated_speedup(series, b, rate) / speedup - 1 for _, series, b, rate, speedup in POINTS]
    assert math.sqrt(sum(e * e for e in errors) / len(errors)) <= RMS_TOLERANCE


def test_the_measured_draft_pair_is_simulated_as_the_reference_configuration():
    assert Engine(config(SPECULATIVE["draft_k2"])).cost.proposer.is_reference


@pytest.mark.parametrize("series", sorted(SPECULATIVE))
@pytest.mark.parametrize(("decoding", "k", "accepted_length"), [(1, 2, 2.4), (8, 4, 3.0), (32, 1, 1.5), (128, 4, 1.0)])
def test_speculation_multiplies_a_decode_step_by_goodputs_step_cost(series, decoding, k, accepted_length):
    speculative, plain = Engine(config(SPECULATIVE[series])).cost, Engine(config()).cost
    context = decoding * 300
    ratio = speculative.step_time(decoding, k, 0, context, accepted_length) / plain.step_time(decoding, 0, 0, context)
    assert ratio == pytest.approx(goodput.step_cost(decoding, k, accepted_length, speculative.proposer).total)


@pytest.mark.parametrize("prefill_tokens", [256, 2048, 8000])
def test_speculation_does_not_speed_up_or_slow_down_prefill(prefill_tokens):
    speculative, plain = Engine(config(SPECULATIVE["ngram_gpu_k4"])).cost, Engine(config()).cost

    def prefill_time(cost, k):
        return cost.step_time(16, k, prefill_tokens, 16 * 300, 2.5) - cost.step_time(16, k, 0, 16 * 300, 2.5)

    assert prefill_time(speculative, 4) == pytest.approx(prefill_time(plain, 0))


def test_a_draft_model_also_prefills_each_prompt_itself():
    cost = Engine(config(SPECULATIVE["draft_k2"])).cost
    assert cost.step_time(0, 2, 1000, 0) > Engine(config()).cost.step_time(0, 0, 1000, 0)


def test_a_step_that_only_prefills_pays_nothing_for_a_proposer_without_weights():
    assert Engine(config(SPECULATIVE["ngram_gpu_k4"])).cost.step_time(0, 4, 1000, 0) == Engine(config()).cost.step_time(0, 0, 1000, 0)


def test_a_step_costs_more_when_more_drafts_are_accepted():
    cost = Engine(config(SPECULATIVE["draft_k4"])).cost
    assert cost.step_time(32, 4, 0, 9600, 3.4) > cost.step_time(32, 4, 0, 9600, 1.9) > cost.step_time(32, 4, 0, 9600, 1.0)


def test_a_range_with_k_0_costs_what_the_baseline_costs():
    cost = Engine(config(SPECULATIVE["ngram_gpu_k4"])).cost
    assert cost.step_time(64, 0, 500, 64 * 300) == Engine(config()).cost.step_time(64, 0, 500, 64 * 300)


def test_the_per_batch_size_schedule_sets_k_at_every_step():
    schedule = [[1, 4, 4], [5, 16, 2], [17, 17, 0]]
    speculative = {**SPECULATIVE["ngram_gpu_k4"], "num_speculative_tokens_per_batch_size": schedule}
    engine = Engine(config(speculative), Workload(qps=400.0, prompt_tokens=256, max_tokens=128))
    reports = list(engine.run_until(4.0))
    assert all(r.k == schedules.k_for_batch(schedule, r.batch_size, 4) for r in reports)
    assert {r.k for r in reports} == {0, 2, 4}
    assert all(r.draft_tokens == r.drafts * r.k for r in reports)
