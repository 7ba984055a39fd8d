"""The simulated engine: acceptance by proposer and temperature, accepted lengths, and latency under load."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from specserve_simulator import args
from specserve_simulator.acceptance import AcceptanceModel, conditional_rate, draw_accepted, expected_acceptance
from specserve_simulator.engine import Engine
from specserve_simulator.records import RequestSpec, StepReport
from specserve_simulator.workload import Workload

TARGET = "meta-llama/Llama-3.1-70B-Instruct"
DRAFT = {"method": "draft_model", "model": "meta-llama/Llama-3.1-8B-Instruct", "num_speculative_tokens": 4}
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
EAGLE = {"method": "eagle3", "model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-70B", "num_speculative_tokens": 4}
SWEEP = [0.0, 0.4, 0.8, 1.0, 1.5]
LOW_QPS, SATURATING_QPS = 1.0, 30.0


def config(speculative: dict | None = None, *extra: str, target: str = TARGET):
    argv = [target, "--tensor-parallel-size", "4", *extra]
    return args.parse(argv + (["--speculative-config", json.dumps(speculative)] if speculative else []))


def run(engine: Engine, seconds: float) -> list[StepReport]:
    return list(engine.run_until(seconds))


def mean_tpot(speculative: dict | None, qps: float, seconds: float = 90.0, **workload) -> float:
    """Mean TPOT of the requests that finished after a warm-up quarter (chat at temperature 0.7 unless told)."""
    engine = Engine(config(speculative), Workload(qps=qps, **{"temperature": 0.7, "max_tokens": 192, **workload}))
    finished = [f for r in run(engine, seconds) if r.start > seconds / 4 for f in r.finished if f.output_tokens > 1]
    return statistics.mean(f.tpot for f in finished)


def measured_acceptance(speculative: dict, temperature: float, **workload) -> float:
    engine = Engine(config(speculative), Workload(qps=2.0, temperature=temperature, **workload))
    run(engine, 60.0)
    return engine.totals.acceptance_rate


@pytest.mark.parametrize("proposer", ["draft", "head", "ngram"])
def test_mean_acceptance_falls_with_temperature(proposer):
    model = AcceptanceModel(proposer)
    means = [model.mean(t, echo=0.5) for t in SWEEP]
    assert means == sorted(means, reverse=True) and len(set(means)) == len(means)


def test_draft_model_acceptance_follows_the_framework_sweep():
    model = AcceptanceModel("draft")
    assert [round(model.mean(t), 2) for t in (0.0, 0.4, 0.8, 1.0)] == [0.81, 0.71, 0.52, 0.38]


def test_acceptance_between_sweep_points_is_interpolated():
    assert AcceptanceModel("draft").mean(0.2) == pytest.approx((0.81 + 0.71) / 2)


def test_heads_accept_more_than_draft_models_and_ngram_less():
    for t in SWEEP:
        assert AcceptanceModel("head").mean(t) > AcceptanceModel("draft").mean(t) > AcceptanceModel("ngram").mean(t, echo=0.3)


def test_ngram_acceptance_rises_when_output_echoes_the_prompt():
    model = AcceptanceModel("ngram")
    assert model.mean(0.0, echo=1.0) > model.mean(0.0, echo=0.5) > model.mean(0.0, echo=0.0)


def test_quantized_target_accepts_less_and_int4_less_than_int8():
    at = {p: AcceptanceModel("draft", target_precision=p).mean(0.7) for p in ("bf16", "int8", "int4")}
    assert at["bf16"] > at["int8"] > at["int4"]


def test_quantization_costs_more_acceptance_under_sampling_than_greedy():
    loss = {t: AcceptanceModel("draft").mean(t) - AcceptanceModel("draft", target_precision="int4").mean(t) for t in (0.0, 1.0)}
    assert loss[1.0] > loss[0.0]


def test_far_too_small_draft_accepts_less():
    assert AcceptanceModel("draft", draft_ratio=1 / 70).mean(0.0) < AcceptanceModel("draft", draft_ratio=1 / 9).mean(0.0)


def test_acceptance_override_replaces_the_model():
    assert AcceptanceModel("head").mean(0.0, override=0.3) == 0.3


def test_conditional_rate_reproduces_the_acceptance_at_k4():
    assert expected_acceptance(conditional_rate(0.52), 4) == pytest.approx(0.52, abs=1e-6)


def test_accepted_drafts_per_step_follow_the_conditional_rate():
    rng = random.Random(1)
    draws = [draw_accepted(rng, 0.8, 4) for _ in range(20000)]
    assert statistics.mean(draws) == pytest.approx(4 * expected_acceptance(0.8, 4), rel=0.03)


@pytest.mark.parametrize("speculative", [DRAFT, EAGLE, NGRAM], ids=["draft", "eagle3", "ngram"])
def test_measured_acceptance_falls_with_temperature(speculative):
    assert measured_acceptance(speculative, 0.0) > measured_acceptance(speculative, 0.8) > measured_acceptance(speculative, 1.2)


def test_measured_draft_acceptance_is_near_the_sweep():
    assert measured_acceptance(DRAFT, 0.4) == pytest.approx(0.71, abs=0.04)


def test_acceptance_override_below_half_is_what_gets_measured():
    assert measured_acceptance(DRAFT, 0.0, acceptance=0.3) == pytest.approx(0.3, abs=0.05)


def test_mean_accepted_length_is_one_plus_accepted_per_draft():
    engine = Engine(config(DRAFT), Workload(qps=2.0, temperature=0.4, max_tokens=1024))
    reports = run(engine, 120.0)
    totals = engine.totals
    assert totals.mean_accepted_length == 1 + totals.accepted_tokens / totals.drafts
    # Tokens per speculative step; a little short of it because drafts past an answer's end are dropped.
    decode_tokens = sum(r.generated_tokens - len(r.first_token_latencies) for r in reports)
    assert decode_tokens / totals.drafts == pytest.approx(totals.mean_accepted_length, rel=0.02)


def test_acceptance_per_position_decays_with_position():
    engine = Engine(config(DRAFT), Workload(qps=2.0, temperature=0.4))
    per_position = [sum(column) for column in zip(*(r.accepted_per_position for r in run(engine, 60.0)))]
    assert per_position == sorted(per_position, reverse=True) and per_position[-1] > 0
    assert sum(per_position) == engine.totals.accepted_tokens


def test_speculation_lowers_tpot_at_low_load():
    assert mean_tpot(EAGLE, LOW_QPS) < mean_tpot(None, LOW_QPS) / 1.3
    summarization = {"temperature": 0.0, "echo": 1.0}
    assert mean_tpot(NGRAM, LOW_QPS, **summarization) < mean_tpot(None, LOW_QPS, **summarization) / 1.3


def test_ngram_on_chat_that_rarely_repeats_the_prompt_costs_more_than_it_gains():
    assert mean_tpot(NGRAM, LOW_QPS, echo=0.0) > mean_tpot(None, LOW_QPS, echo=0.0)


def test_a_draft_model_pays_at_low_load_only_with_few_drafts():
    # The GPU calibration: a draft model's passes are dear (1B draft, k = 4: 0.62x at batch 1 and acceptance 0.8).
    two_drafts = {**DRAFT, "num_speculative_tokens": 2}
    assert mean_tpot(two_drafts, LOW_QPS, temperature=0.0) < mean_tpot(None, LOW_QPS, temperature=0.0)
    assert mean_tpot(DRAFT, LOW_QPS) > mean_tpot(None, LOW_QPS)


def test_speculation_raises_tpot_at_saturation():
    baseline = mean_tpot(None, SATURATING_QPS)
    assert mean_tpot(DRAFT, SATURATING_QPS) > baseline * 1.2
    assert mean_tpot(EAGLE, SATURATING_QPS) > baseline


def test_step_time_rises_with_batch_size():
    cost = Engine(config()).cost
    assert cost.step_time(1, 0, 0, 1000) < cost.step_time(64, 0, 0, 64000) < cost.step_time(256, 0, 0, 256000)


def test_speculation_does_not_shorten_time_to_first_token():
    def ttft(speculative):
        engine = Engine(config(speculative), Workload(qps=LOW_QPS))
        return statistics.mean(latency for r in run(engine, 60.0) for latency in r.first_token_latencies)

    assert ttft(DRAFT) >= ttft(None)


def test_no_drafts_above_the_disable_batch_size():
    cutoff = {**NGRAM, "num_speculative_tokens_per_batch_size": [[1, 16, 4], [17, 17, 0]]}
    reports = run(Engine(config(cutoff), Workload(qps=SATURATING_QPS)), 30.0)
    assert all(r.drafts == 0 for r in reports if r.batch_size > 16)
    assert any(r.drafts > 0 for r in reports if r.batch_size <= 16)


def test_baseline_makes_no_drafts():
    engine = Engine(config(), Workload(qps=2.0))
    run(engine, 30.0)
    assert engine.totals.drafts == 0 and engine.totals.requests_finished > 0


def test_same_seed_gives_the_same_run():
    def trace(seed):
        engine = Engine(config(DRAFT), Workload(qps=3.0), seed=seed)
        return [(r.start, r.generated_tokens, r.accepted_tokens) for r in run(engine, 20.0)]

    assert trace(5) == trace(5) != trace(6)


def test_request_never_exceeds_max_tokens():
    engine = Engine(config(DRAFT))
    engine.submit(RequestSpec(prompt_tokens=40, max_tokens=16, temperature=0.0))
    finished = [f for r in run(engine, 10.0) for f in r.finished]
    assert len(finished) == 1 and 1 <= finished[0].output_tokens <= 16


def test_ignore_eos_runs_to_max_tokens():
    engine = Engine(config(DRAFT))
    engine.submit(RequestSpec(prompt_tokens=40, max_tokens=50, temperature=0.0, ignore_eos=True))
    finished = [f for r in run(engine, 10.0) for f in r.finished]
    assert (finished[0].output_tokens, finished[0].finish_reason) == (50, "length")


def test_waiting_requests_queue_when_seats_run_out():
    engine = Engine(config(None, "--max-num-seqs", "4"))
    for _ in range(10):
        engine.submit(RequestSpec(prompt_tokens=100, max_tokens=64, temperature=0.0, ignore_eos=True))
    report = engine.step()
    assert (report.running, report.waiting) == (4, 6)


def test_workload_change_rejects_bad_values():
    with pytest.raises(ValueError, match="acceptance"):
        Workload().changed({"acceptance": 1.5})
    with pytest.raises(ValueError, match="unknown field"):
        Workload().changed({"rps": 3})
