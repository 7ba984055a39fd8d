"""The goodput model: accepted length, the GPU-calibrated step cost, speedup with its evidence, best k and k schedules.

Fit tolerances against tests/fixtures/gpu: every measured speedup within 35%, the 16 draft-model points within 17% RMS,
the GPU n-gram points within 1% (they are calibration points themselves).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from specserve import api, catalog
from specserve.decision import acceptance, calibration, goodput, proposers, schedules
from specserve.decision.calibration import ModelSize
from tests.helpers import minimal_spec
from tests.support import vllm_parser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
ZERO = json.loads((FIXTURES / "step-cost-zero-acceptance.json").read_text())
FORCED = json.loads((FIXTURES / "speedup-forced-acceptance.json").read_text())
BATCH_SIZES = (1, 8, 32, 128)
EVERY_POINT_TOLERANCE = 0.35
DRAFT_RMS_TOLERANCE = 0.17
TARGET_8B, DRAFT_1B = ModelSize(7.38, 32), ModelSize(1.07, 16)
TARGET_70B = ModelSize(70.55, 80, 4)

DRAFT = proposers.proposer_for("draft_model")
NGRAM_GPU = proposers.proposer_for("ngram_gpu")
EAGLE3_8B = proposers.proposer_for("eagle3", ModelSize(8.03, 32), ModelSize(0.42, 1))
PROPOSERS = [DRAFT, NGRAM_GPU, EAGLE3_8B, proposers.proposer_for("ngram"), proposers.proposer_for("suffix"), proposers.proposer_for("mtp"),
             proposers.proposer_for("draft_model", TARGET_70B, ModelSize(8.03, 32, 4)), proposers.proposer_for("eagle", TARGET_70B)]

rates = st.lists(st.floats(0, 1), min_size=1, max_size=8).map(acceptance.clean_per_position)  # as an Observation holds them
batch_sizes = st.floats(0.5, 512)
any_proposer = st.sampled_from(PROPOSERS)


def forced_points():
    """Every forced-acceptance load point: (id, proposer, batch size, per-position rates, measured speedup)."""
    baseline = {p["b"]: p["tpot_mean_ms"] for p in FORCED["baseline"]["points"].values()}
    for config, series in FORCED.items():
        if config == "baseline":
            continue
        proposer = NGRAM_GPU if config.startswith("ngram_gpu") else DRAFT
        for key, point in series["points"].items():
            per_position = [point["per_pos_accepted"][str(i)] / point["drafts"] for i in range(len(point["per_pos_accepted"]))]
            yield f"{config}@b{key}", proposer, point["b"], per_position, baseline[point["b"]] / point["tpot_mean_ms"]


FORCED_POINTS = list(forced_points())


def predicted(proposer: proposers.Proposer, b: int, per_position: list[float]) -> float:
    return goodput.speedup(b, len(per_position), per_position, proposer).speedup


def measured(config: str, key: str) -> float:
    baseline = {p["b"]: p["tpot_mean_ms"] for p in FORCED["baseline"]["points"].values()}
    point = FORCED[config]["points"][key]
    return baseline[point["b"]] / point["tpot_mean_ms"]


# ---------------------------------------------------------------- accepted length


def test_accepted_length_is_one_plus_the_per_position_rates_below_k():
    assert acceptance.accepted_length([0.8, 0.6, 0.3], 2) == pytest.approx(2.4)


def test_accepted_length_without_drafts_is_one():
    assert acceptance.accepted_length([0.9, 0.8], 0) == 1.0


def test_positions_past_the_measured_ones_keep_the_last_conditional_rate():
    assert acceptance.extend_per_position([0.8, 0.4], 4) == pytest.approx((0.8, 0.4, 0.2, 0.1))


def test_per_position_rates_cannot_rise_with_position():
    assert acceptance.clean_per_position([0.5, 0.7, 1.3, -0.2]) == (0.5, 0.5, 0.5, 0.0)


@given(rates, st.integers(0, 12))
def test_accepted_length_never_falls_as_k_grows(per_position, k):
    assert acceptance.accepted_length(per_position, k + 1) >= acceptance.accepted_length(per_position, k)


@given(st.floats(0.01, 0.99), st.integers(1, 8))
def test_per_position_rates_for_an_acceptance_rate_reproduce_it(rate, k):
    rates_ = acceptance.per_position_for_acceptance_rate(rate, k)
    assert sum(rates_) / k == pytest.approx(rate, abs=1e-6)


# ---------------------------------------------------------------- calibration data


def test_calibration_data_is_what_the_gpu_fixtures_measured():
    data = yaml.safe_load((Path(catalog.__file__).parent / calibration.CALIBRATION_FILE).read_text())
    files = {"step-cost-zero-acceptance.json": ZERO, "speedup-forced-acceptance.json": FORCED}
    assert tuple(data["batchSizes"]) == BATCH_SIZES
    for session in data["sessions"]:
        measured_file = files[session["file"]]
        baseline = {p["b"]: p["tpot_mean_ms"] for p in measured_file["baseline"]["points"].values()}
        assert session["baselineTpotMs"] == [baseline[b] for b in BATCH_SIZES]
        for series in session["series"]:
            points = {p["b"]: p for key, p in measured_file[series["config"]]["points"].items()
                      if "@" not in key or float(key.split("@")[1]) == series["acceptance"]}
            assert series["points"] == [[points[b]["tpot_mean_ms"], points[b]["mean_accept_len"] or 1.0] for b in BATCH_SIZES]


def test_zero_acceptance_step_costs_are_reproduced_exactly():
    baseline = {p["b"]: p["tpot_mean_ms"] for p in ZERO["baseline"]["points"].values()}
    for k in (2, 4):
        for point in ZERO[f"draft_k{k}"]["points"].values():
            b = point["b"]
            assert goodput.step_cost(b, k, 1.0, DRAFT).total == pytest.approx(point["tpot_mean_ms"] / baseline[b], rel=1e-9)


# ---------------------------------------------------------------- fit against the measurements


@pytest.mark.parametrize(("proposer", "b", "per_position", "speedup"), [p[1:] for p in FORCED_POINTS], ids=[p[0] for p in FORCED_POINTS])
def test_every_measured_speedup_is_reproduced_within_35_percent(proposer, b, per_position, speedup):
    assert predicted(proposer, b, per_position) == pytest.approx(speedup, rel=EVERY_POINT_TOLERANCE)


def test_draft_model_speedups_are_reproduced_within_17_percent_rms():
    errors = [predicted(p, b, pp) / s - 1 for _, p, b, pp, s in FORCED_POINTS if p is DRAFT]
    assert len(errors) == 16
    assert math.sqrt(sum(e * e for e in errors) / len(errors)) <= DRAFT_RMS_TOLERANCE


def test_gpu_ngram_speedups_are_reproduced_within_1_percent():
    for _, proposer, b, per_position, speedup in FORCED_POINTS:
        if proposer is NGRAM_GPU:
            assert predicted(proposer, b, per_position) == pytest.approx(speedup, rel=0.01)


def test_a_draft_model_at_acceptance_08_is_about_even_at_batch_1_and_175x_slower_at_128():
    # measured 1.14x and 0.57x; the prior says 0.98x (the b=1 points of this draft scatter +-15% around any one cost)
    per_position = acceptance.per_position_for_token_acceptance(0.8, 2)
    assert goodput.speedup(1, 2, per_position, DRAFT).speedup == pytest.approx(measured("draft_k2", "1@0.8"), rel=0.15)
    assert goodput.speedup(128, 2, per_position, DRAFT).speedup == pytest.approx(measured("draft_k2", "128@0.8"), rel=0.10)


def test_gpu_ngram_at_accepted_length_3_is_16x_faster_at_batch_1_and_126x_slower_at_128():
    per_position = [0.71, 0.53, 0.42, 0.33]
    assert goodput.speedup(1, 4, per_position, NGRAM_GPU).speedup == pytest.approx(1.61, rel=0.02)
    assert 1 / goodput.speedup(128, 4, per_position, NGRAM_GPU).speedup == pytest.approx(1.26, rel=0.03)


def test_the_textbook_cost_at_zero_acceptance_over_predicts_from_batch_8():
    over = []
    for _, proposer, b, per_position, speedup in FORCED_POINTS:
        k = len(per_position)
        textbook = acceptance.accepted_length(per_position) / goodput.step_cost(b, k, 1.0, proposer).total
        if b >= 8 and acceptance.accepted_length(per_position) > 1:
            over.append(textbook / speedup)
    assert max(over) > 1.6 and min(over) > 0.95


@pytest.mark.parametrize("proposer", [DRAFT, NGRAM_GPU], ids=["draft", "ngram_gpu"])
@pytest.mark.parametrize("b", [8, 32, 128])
def test_step_cost_grows_with_acceptance_from_batch_8(proposer, b):
    assert goodput.step_cost(b, 4, 3.0, proposer).total > goodput.step_cost(b, 4, 2.0, proposer).total > goodput.step_cost(b, 4, 1.0, proposer).total


def test_gpu_ngram_crosses_over_between_batch_8_and_32_as_measured():
    per_position = [0.71, 0.53, 0.42, 0.33]
    assert goodput.speedup(8, 4, per_position, NGRAM_GPU).speedup > 1 > goodput.speedup(32, 4, per_position, NGRAM_GPU).speedup


# ---------------------------------------------------------------- proposers


def test_the_measured_draft_pair_is_the_reference_configuration():
    proposer = proposers.proposer_for("draft_model", TARGET_8B, DRAFT_1B)
    assert proposer.is_reference and proposer.pass_cost == pytest.approx(calibration.calibration().reference_pass_cost)


def test_a_bigger_target_makes_the_same_proposer_relatively_cheaper():
    small, large = proposers.proposer_for("draft_model", TARGET_8B, DRAFT_1B), proposers.proposer_for("draft_model", TARGET_70B, DRAFT_1B)
    assert goodput.step_cost(1, 2, 1.0, large).total < goodput.step_cost(1, 2, 1.0, small).total


def test_a_head_drafts_for_less_than_a_draft_model_and_a_lookup_for_nothing():
    costs = [goodput.step_cost(8, 4, 1.0, p).drafting for p in (DRAFT, EAGLE3_8B, NGRAM_GPU)]
    assert costs[0] > costs[1] > costs[2] == 0


def test_only_paths_without_async_scheduling_pay_the_path_overhead():
    paying = {p.method for p in PROPOSERS if goodput.step_cost(8, 4, 1.0, p).path_overhead > 0}
    assert paying == {"draft_model", "ngram", "suffix"}


def test_a_serving_is_sized_from_the_model_catalog():
    spec = api.SpeculativeServingSpec.model_validate(minimal_spec(speculation={"method": "eagle3", "draft": {"model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"}}))
    proposer = proposers.proposer_for_spec(spec)
    assert proposer.pass_cost == pytest.approx(ModelSize(0.42, 1).cost_index() / ModelSize(8.03, 32).cost_index())
    assert proposer.target_scale == pytest.approx(ModelSize(8.03, 32).cost_index())


def test_a_serving_with_a_draft_the_catalog_lacks_uses_its_described_architecture():
    draft = {"model": "org/tiny-draft", "architecture": {"parametersBillions": 1.07, "layers": 16}}
    spec = api.SpeculativeServingSpec.model_validate(minimal_spec(
        target={"model": "org/target", "architecture": {"parametersBillions": 7.38, "layers": 32}},
        speculation={"method": "draft_model", "draft": draft}))
    assert proposers.proposer_for_spec(spec).is_reference


def test_an_mtp_serving_drafts_with_the_catalogued_module():
    spec = api.SpeculativeServingSpec.model_validate(minimal_spec(target={"model": "deepseek-ai/DeepSeek-V3"}, gpu={"count": 8}, speculation={"method": "mtp"}))
    assert "head of 14B" in proposers.proposer_for_spec(spec).basis


def test_an_unknown_proposer_method_is_refused():
    with pytest.raises(ValueError, match="medusa"):
        proposers.proposer_for("medusa")


# ---------------------------------------------------------------- speedup and its evidence


@given(batch_sizes, rates, any_proposer)
def test_no_speculation_is_exactly_as_fast_as_the_baseline(b, per_position, proposer):
    assert goodput.speedup(b, 0, per_position, proposer).speedup == 1.0


@given(batch_sizes, st.integers(1, 8), rates, any_proposer)
def test_an_estimate_quotes_the_numbers_it_used(b, k, per_position, proposer):
    estimate = goodput.speedup(b, k, per_position, proposer)
    numbers = estimate.numbers()
    cost = estimate.cost
    assert estimate.evidence == "prior" and numbers["evidence"] == "prior"
    assert cost is not None and cost.total == pytest.approx(1 + cost.path_overhead + cost.verification + cost.drafting + cost.growth)
    assert estimate.speedup == pytest.approx(estimate.accepted_length / cost.total)
    assert set(numbers["step_cost"]) == {"total", "path_overhead", "verification", "drafting", "growth"}


@given(batch_sizes, st.integers(1, 8), st.floats(0, 0.95), st.floats(0.01, 0.04), any_proposer)
def test_speedup_rises_with_acceptance(b, k, a, step, proposer):
    low = goodput.speedup(b, k, acceptance.per_position_for_token_acceptance(a, k), proposer).speedup
    high = goodput.speedup(b, k, acceptance.per_position_for_token_acceptance(a + step, k), proposer).speedup
    assert high > low


def test_an_estimate_says_what_it_extrapolated():
    notes = goodput.speedup(256, 6, [0.8, 0.6], EAGLE3_8B).notes
    assert any("positions 3-6" in n for n in notes)
    assert any("beyond the measured 128" in n for n in notes)
    assert any("outside the measured 2-4" in n for n in notes)
    assert any("not a measured configuration" in n for n in notes)


def test_an_estimate_explains_itself_in_one_line():
    line = goodput.speedup(8, 2, [0.8, 0.64], DRAFT).explain()
    assert line.startswith("b=8 k=2: AL 2.44 / c ") and line.endswith("[prior]") and "growth" in line


# ---------------------------------------------------------------- best k


@given(batch_sizes, rates, any_proposer, st.integers(0, 8))
def test_best_k_never_exceeds_the_cap(b, per_position, proposer, cap):
    assert goodput.best_k(goodput.prior_estimator(per_position, proposer), b, cap).k <= cap


@given(batch_sizes, rates, any_proposer, st.integers(0, 8))
def test_best_k_is_never_predicted_slower_than_no_speculation(b, per_position, proposer, cap):
    assert goodput.best_k(goodput.prior_estimator(per_position, proposer), b, cap).speedup >= 1.0


def test_best_k_is_zero_when_no_k_beats_the_baseline():
    assert goodput.best_k(goodput.prior_estimator([0.3, 0.1], DRAFT), 128, 4).k == 0


def test_best_k_lowers_k_when_late_positions_are_rarely_accepted():
    best = goodput.best_k(goodput.prior_estimator([0.85, 0.60, 0.10, 0.02], NGRAM_GPU), 1, 4)
    assert best.k == 2 and best.speedup > 1


def test_best_k_takes_a_k_only_when_it_beats_the_minimum_gain():
    estimator = goodput.prior_estimator([0.71, 0.53, 0.42, 0.33], NGRAM_GPU)  # 1.25x at b=8
    assert goodput.best_k(estimator, 8, 4, min_gain=0.1).k > 0
    assert goodput.best_k(estimator, 8, 4, min_gain=0.3).k == 0


def test_best_k_prefers_the_smaller_k_on_a_tie():
    def flat(b, k):
        return goodput.Estimate(b, k, 1.0 if k == 0 else 1.5, "measured")

    assert goodput.best_k(flat, 8, 4).k == 1


# ---------------------------------------------------------------- schedules


def measured_like(table: dict[int, list[float]]):
    """An estimator from a table of speedups per bucket start and k, as learned or measured evidence would give."""
    def estimate(b, k):
        start = max(s for s in table if s <= b)
        return goodput.Estimate(b, k, 1.0 if k == 0 else table[start][k - 1], "measured")
    return estimate


@settings(max_examples=60)
@given(rates, any_proposer, st.integers(0, 8), st.one_of(st.none(), st.integers(1, 300)), st.integers(1, 5))
def test_a_schedule_never_raises_k_above_the_cap_nor_speculates_above_the_cutoff(per_position, proposer, cap, cutoff, max_ranges):
    schedule = schedules.prior_schedule(per_position, proposer, cap, disable_above_batch_size=cutoff, max_ranges=max_ranges)
    assert all(k <= cap for _, _, k in schedule.ranges)
    assert len(schedule.ranges) <= max_ranges
    if cutoff is not None:
        assert all(schedule.k_for(b) == 0 for b in (cutoff + 1, cutoff + 50, 10_000))


@settings(max_examples=60)
@given(rates, any_proposer, st.integers(1, 8))
def test_a_schedule_starts_at_batch_1_with_contiguous_ranges(per_position, proposer, cap):
    ranges = schedules.prior_schedule(per_position, proposer, cap).ranges
    assert ranges[0][0] == 1
    assert all(hi >= lo for lo, hi, _ in ranges)
    assert all(next_lo == hi + 1 for (_, hi, _), (next_lo, _, _) in zip(ranges, ranges[1:]))
    assert all(a[2] != b[2] for a, b in zip(ranges, ranges[1:]))


def test_a_schedule_turns_speculation_off_where_the_gpu_ngram_stops_paying():
    schedule = schedules.prior_schedule([0.71, 0.53, 0.42, 0.33], NGRAM_GPU, 4)
    assert schedule.k_for(1) > 0 and schedule.k_for(8) > 0
    assert schedule.k_for(32) == schedule.k_for(150) == 0


def test_a_schedule_for_load_swinging_between_8_and_150_is_on_at_8_and_off_at_150():
    schedule = schedules.prior_schedule(acceptance.per_position_for_token_acceptance(0.8, 4), EAGLE3_8B, 4)
    assert schedule.k_for(8) > 0 and schedule.k_for(150) == 0


def test_a_schedule_keeps_the_cutoff_of_the_spec():
    schedule = schedules.build_schedule(measured_like({1: [1.5, 1.6]}), 2, disable_above_batch_size=20)
    assert schedule.as_vllm() == [[1, 20, 2], [21, 21, 0]]


def test_a_schedule_merges_the_ranges_that_lose_least():
    table = {1: [1.6, 1.8, 1.7], 2: [1.5, 1.7, 1.75], 4: [1.4, 1.3, 1.2], 8: [0.9, 0.8, 0.7], 16: [0.8, 0.7, 0.6]}
    estimate = measured_like(table)
    assert schedules.build_schedule(estimate, 3, bucket_starts=(1, 2, 4, 8, 16), max_ranges=4).as_vllm() == [[1, 1, 2], [2, 3, 3], [4, 7, 1], [8, 8, 0]]
    assert schedules.build_schedule(estimate, 3, bucket_starts=(1, 2, 4, 8, 16), max_ranges=2).as_vllm() == [[1, 7, 2], [8, 8, 0]]


def test_a_schedule_carries_the_evidence_of_its_estimates():
    schedule = schedules.build_schedule(measured_like({1: [1.5], 8: [0.9]}), 1, bucket_starts=(1, 8))
    assert schedule.as_vllm() == [[1, 7, 1], [8, 8, 0]]
    assert [estimate.evidence for _, estimate in schedule.choices] == ["measured", "measured"]
    assert schedule.explain()[0].startswith("1-7: b=")


@pytest.mark.parametrize(("ranges", "short"), [
    ([[1, 8, 4], [9, 9, 0]], "k4<=8,0"),
    ([[1, 3, 4], [4, 15, 2], [16, 16, 0]], "k4<=3,k2<=15,0"),
    ([[1, 1, 3]], "k3"),
    ([[1, 1, 0]], "0"),
])
def test_a_schedule_reads_in_short_form(ranges, short):
    assert schedules.Schedule(tuple(tuple(r) for r in ranges), 4).short() == short


@pytest.fixture(scope="module")
def vllm_schedules():
    """vLLM's own schedule validation and lookup (vllm/v1/spec_decode/dynamic/utils.py)."""
    vllm_parser.require_vllm()
    from vllm.v1.spec_decode.dynamic import utils

    return utils


@pytest.mark.vllm
@settings(max_examples=80, deadline=None)
@given(spans=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 6)), min_size=1, max_size=4), cap=st.integers(1, 6))
def test_k_for_batch_is_vllms_own_lookup(vllm_schedules, spans, cap):
    ranges, start = [], 1
    for gap, k in spans:  # contiguous or with gaps, as vLLM allows
        ranges.append([start, start + gap, k])
        start += gap + 1 + (gap % 3)
    dense = vllm_schedules.build_dynamic_sd_schedule_lookup(ranges, vllm_max_batch_size=200, vllm_num_speculative_tokens=cap)
    assert [schedules.k_for_batch(ranges, b, cap) for b in range(1, 201)] == dense[1:]


@pytest.mark.vllm
@settings(max_examples=40, deadline=None)
@given(per_position=rates, proposer=any_proposer, cap=st.integers(1, 8), cutoff=st.one_of(st.none(), st.integers(1, 300)))
def test_vllm_accepts_every_schedule(vllm_schedules, per_position, proposer, cap, cutoff):
    schedule = schedules.prior_schedule(per_position, proposer, cap, disable_above_batch_size=cutoff)
    assert vllm_schedules.validate_and_normalize_dynamic_sd_schedule(schedule.as_vllm()) == [tuple(r) for r in schedule.ranges]
