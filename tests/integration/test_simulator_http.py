"""A real simulator process over HTTP: OpenAI endpoints, /metrics against the real vLLM captures, the control API."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from specserve.engine import vllm
from tests.helpers import FIXTURES
from tests.integration.simulator_process import environment, request, running_simulator, simulator_command

NGRAM_FIXTURE = FIXTURES / "vllm-0.26.0-ngram.metrics.txt"
BASELINE_FIXTURE = FIXTURES / "vllm-0.26.0-baseline.metrics.txt"
# The fixtures' server: SmolLM2-135M served as `smol` with --max-model-len 2048 (token-count buckets follow it).
SERVE = ["HuggingFaceTB/SmolLM2-135M-Instruct", "--served-model-name", "smol", "--max-model-len", "2048"]
NGRAM = ["--speculative-config", json.dumps({"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4})]
# Synthetic traffic that speculates well (greedy, output echoing the prompt), twenty simulated seconds per wall second.
TRAFFIC = ["--sim-qps", "4", "--sim-temperature", "0", "--sim-echo", "1", "--sim-time-scale", "0.05", "--sim-max-tokens", "128"]
REQUIRED = [
    vllm.SPEC_DRAFTS, vllm.SPEC_DRAFT_TOKENS, vllm.SPEC_ACCEPTED_TOKENS, vllm.SPEC_ACCEPTED_PER_POS,
    vllm.TPOT_HISTOGRAM, vllm.TTFT_HISTOGRAM, vllm.ITL_HISTOGRAM, vllm.E2E_HISTOGRAM, vllm.REQUESTS_RUNNING,
    vllm.REQUESTS_WAITING, vllm.KV_CACHE_USAGE, vllm.REQUEST_SUCCESS, vllm.GENERATION_TOKENS, vllm.PROMPT_TOKENS,
]


@pytest.fixture(scope="module")
def speculative_sim():
    with running_simulator(*SERVE, *NGRAM, *TRAFFIC) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def baseline_sim():
    with running_simulator(*SERVE, *TRAFFIC) as base_url:
        yield base_url


def shape(text: str) -> dict[str, tuple]:
    """Per vllm: family: (type, label names, bucket bounds, help) - what must match the real server."""
    families = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("vllm:"):
            continue
        labels = frozenset(name for sample in family.samples for name in sample.labels)
        bounds = tuple(dict.fromkeys(s.labels["le"] for s in family.samples if s.name.endswith("_bucket")))
        families[family.name] = (family.type, labels, bounds, family.documentation)
    return families


def exposition_name(family_name: str, kind: str) -> str:
    return family_name + "_total" if kind == "counter" else family_name


def scrape(base_url: str) -> str:
    status, text = request(base_url, "/metrics")
    assert status == 200
    return text


def values(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def acceptance_between(before: str, after: str) -> float:
    key = lambda name: (name, frozenset({("engine", "0"), ("model_name", "smol")}))  # noqa: E731
    earlier, later = values(before), values(after)
    accepted = later[key(vllm.SPEC_ACCEPTED_TOKENS)] - earlier[key(vllm.SPEC_ACCEPTED_TOKENS)]
    drafted = later[key(vllm.SPEC_DRAFT_TOKENS)] - earlier[key(vllm.SPEC_DRAFT_TOKENS)]
    assert drafted > 1000, "too few draft tokens to judge"
    return accepted / drafted


def chat(base_url: str, **body) -> tuple[int, dict]:
    return request(base_url, "/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": "Summarize: the cat sat on the mat."}], **body})


def test_health_answers_200(speculative_sim):
    assert request(speculative_sim, "/health")[0] == 200


def test_models_lists_the_served_name(speculative_sim):
    status, body = request(speculative_sim, "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [(m["id"], m["object"], m["max_model_len"]) for m in body["data"]] == [("smol", "model", 2048)]


def test_chat_completion_has_the_openai_shape(speculative_sim):
    status, body = chat(speculative_sim, max_tokens=12, temperature=0.2)
    assert status == 200
    assert (body["object"], body["model"]) == ("chat.completion", "smol")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_completion_honours_max_tokens(speculative_sim):
    _, body = chat(speculative_sim, max_tokens=7, ignore_eos=True)
    assert body["usage"]["completion_tokens"] == 7 and body["choices"][0]["finish_reason"] == "length"
    assert len(body["choices"][0]["message"]["content"].split()) == 7


def test_text_completion_honours_max_tokens(speculative_sim):
    status, body = request(speculative_sim, "/v1/completions", {"model": "smol", "prompt": "one two three four", "max_tokens": 5})
    assert status == 200 and body["object"] == "text_completion"
    assert body["usage"]["prompt_tokens"] == 4 and 1 <= body["usage"]["completion_tokens"] <= 5
    assert isinstance(body["choices"][0]["text"], str)


def test_unknown_model_is_404(speculative_sim):
    status, body = chat(speculative_sim, model="gpt-4")
    assert status == 404 and body["error"]["type"] == "NotFoundError"


def test_request_beyond_the_context_window_is_400(speculative_sim):
    status, body = chat(speculative_sim, max_tokens=5000)
    assert status == 400 and "maximum context length is 2048" in body["error"]["message"]


def test_streamed_chat_completion_ends_with_done(speculative_sim):
    status, text = chat(speculative_sim, max_tokens=9, stream=True, ignore_eos=True, stream_options={"include_usage": True})
    events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]).split() and chunks[-1]["usage"]["completion_tokens"] == 9


def test_metrics_exposition_parses(speculative_sim):
    names = {family.name for family in text_string_to_metric_families(scrape(speculative_sim))}
    assert {"vllm:spec_decode_num_drafts", "vllm:request_time_per_output_token_seconds"} <= names


@pytest.mark.parametrize("metric", REQUIRED)
def test_required_family_matches_the_real_ngram_server(speculative_sim, metric):
    real = {exposition_name(name, spec[0]): spec for name, spec in shape(NGRAM_FIXTURE.read_text()).items()}
    ours = {exposition_name(name, spec[0]): spec for name, spec in shape(scrape(speculative_sim)).items()}
    assert ours[metric] == real[metric]


def test_every_vllm_family_of_the_real_ngram_server_is_exposed_identically(speculative_sim):
    assert shape(scrape(speculative_sim)) == shape(NGRAM_FIXTURE.read_text())


def test_baseline_exposes_the_real_baseline_families_and_no_spec_decode_series(baseline_sim):
    text = scrape(baseline_sim)
    assert "spec_decode" not in text
    assert shape(text) == shape(BASELINE_FIXTURE.read_text())


def test_counters_carry_the_created_series(speculative_sim):
    text = scrape(speculative_sim)
    assert "# TYPE vllm:spec_decode_num_drafts_created gauge" in text
    assert 'vllm:request_success_created{engine="0",finished_reason="length",model_name="smol"}' in text


def test_synthetic_traffic_completes_requests(speculative_sim):
    before = values(scrape(speculative_sim))
    time.sleep(1.0)
    after = values(scrape(speculative_sim))
    key = (vllm.GENERATION_TOKENS, frozenset({("engine", "0"), ("model_name", "smol")}))
    assert after[key] > before[key]


def test_latency_histograms_hold_simulated_seconds(speculative_sim):
    samples = values(scrape(speculative_sim))
    labels = frozenset({("engine", "0"), ("model_name", "smol")})
    mean_e2e = samples[(vllm.E2E_HISTOGRAM + "_sum", labels)] / samples[(vllm.E2E_HISTOGRAM + "_count", labels)]
    assert mean_e2e > 0.05  # simulated seconds, not the milliseconds the process actually waited


def test_control_endpoint_drops_acceptance_below_half(speculative_sim):
    status, workload = request(speculative_sim, "/sim/traffic")
    assert status == 200 and workload["acceptance"] is None
    first = scrape(speculative_sim)
    time.sleep(1.5)
    assert acceptance_between(first, scrape(speculative_sim)) > 0.5
    status, workload = request(speculative_sim, "/sim/traffic", {"acceptance": 0.3}, method="PUT")
    assert status == 200 and workload["acceptance"] == 0.3
    try:
        time.sleep(1.0)  # requests admitted before the change keep their own acceptance
        second = scrape(speculative_sim)
        time.sleep(1.5)
        assert acceptance_between(second, scrape(speculative_sim)) < 0.5
    finally:
        request(speculative_sim, "/sim/traffic", {"acceptance": None}, method="PUT")


def test_control_endpoint_rejects_unknown_fields(speculative_sim):
    status, body = request(speculative_sim, "/sim/traffic", {"rps": 4}, method="PUT")
    assert status == 400 and "rps" in body["error"]["message"]


def test_stats_report_acceptance_and_mean_accepted_length(speculative_sim):
    status, stats = request(speculative_sim, "/sim/stats")
    assert status == 200 and stats["speculation"] == {"method": "ngram", "num_speculative_tokens": 4}
    assert stats["mean_accepted_length"] == pytest.approx(1 + stats["accepted_tokens"] / stats["drafts"])


def test_specserve_simulate_command_serves():
    with running_simulator("simulate", *SERVE, module="specserve.cli") as base_url:
        assert request(base_url, "/v1/models")[1]["data"][0]["id"] == "smol"


def test_vllm_serve_shim_command_line_serves():
    """A container's `vllm` shim runs `specserve simulate serve MODEL ...`, as Deployments say `vllm serve MODEL ...`."""
    with running_simulator("simulate", "serve", *SERVE, module="specserve.cli") as base_url:
        assert request(base_url, "/health")[0] == 200


@pytest.mark.parametrize("module", ["specserve_simulator", "specserve.cli simulate"])
def test_obsolete_flag_exits_2(module):
    name, *rest = module.split()
    command = simulator_command(*rest, "m", "--speculative-model", "x", module=name)
    result = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=60)
    assert result.returncode == 2 and "unrecognized arguments: --speculative-model x" in result.stderr
