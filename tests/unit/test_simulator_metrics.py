"""The simulator's metric registry: vLLM's families from the start, and engine steps counted into them."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from specserve.engine import vllm
from specserve_simulator import args, catalog
from specserve_simulator.engine import Engine
from specserve_simulator.metrics import EngineMetrics
from specserve_simulator.workload import Workload

NGRAM = ["--speculative-config", json.dumps({"method": "ngram", "num_speculative_tokens": 5})]
BASE = {("engine", "0"), ("model_name", "m")}


def simulate(*argv: str, seconds: float = 40.0) -> tuple[Engine, dict]:
    config = args.parse(["org/model-8B", "--served-model-name", "m", *argv])
    engine = Engine(config, Workload(qps=2.0))
    metrics = EngineMetrics(config, engine.kv_capacity)
    for report in engine.run_until(seconds):
        metrics.record(report)
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(metrics.exposition().decode()) for s in f.samples}
    return engine, samples


def value(samples: dict, name: str, **extra: str) -> float:
    return samples[(name, frozenset(BASE | set(extra.items())))]


def test_catalog_holds_every_metric_specserve_reads():
    names = {family.name for family in catalog.FAMILIES}
    constants = {getattr(vllm, n) for n in dir(vllm) if isinstance(getattr(vllm, n), str) and getattr(vllm, n).startswith("vllm:")}
    assert constants <= names


def test_token_buckets_stop_at_max_model_len():
    assert catalog.token_buckets(2048) == (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)


def test_speculative_counters_equal_the_engine_totals():
    engine, samples = simulate(*NGRAM)
    totals = engine.totals
    assert value(samples, vllm.SPEC_DRAFTS) == totals.drafts > 0
    assert value(samples, vllm.SPEC_DRAFT_TOKENS) == totals.draft_tokens == 5 * totals.drafts
    assert value(samples, vllm.SPEC_ACCEPTED_TOKENS) == totals.accepted_tokens
    assert sum(value(samples, vllm.SPEC_ACCEPTED_PER_POS, position=str(p)) for p in range(5)) == totals.accepted_tokens


def test_request_and_token_counters_equal_the_engine_totals():
    engine, samples = simulate(*NGRAM)
    finished = sum(value(samples, vllm.REQUEST_SUCCESS, finished_reason=r) for r in catalog.FINISHED_REASONS)
    assert finished == engine.totals.requests_finished > 0
    assert value(samples, vllm.GENERATION_TOKENS) == engine.totals.generated_tokens
    assert value(samples, vllm.ITL_HISTOGRAM + "_count") == engine.totals.decode_steps
    assert value(samples, vllm.TPOT_HISTOGRAM + "_count") <= finished


def test_every_position_series_exists_before_any_traffic():
    _, samples = simulate(*NGRAM, seconds=0.0)
    assert [value(samples, vllm.SPEC_ACCEPTED_PER_POS, position=str(p)) for p in range(5)] == [0.0] * 5


def test_baseline_has_no_spec_decode_families():
    _, samples = simulate()
    assert not any(name.startswith("vllm:spec_decode") for name, _ in samples)
    assert value(samples, vllm.GENERATION_TOKENS) > 0
