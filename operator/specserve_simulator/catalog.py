"""vLLM's /metrics families as data: names, types, help, labels and histogram buckets, in exposition order.

Copied from the real vLLM 0.26.0 captures in tests/fixtures; the tests compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from specserve.engine import vllm

BASE_LABELS = ("model_name", "engine")

# Bucket lists exactly as in the fixtures.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TOKEN_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
TOKENS = "1-2-5 up to max_model_len"  # vLLM sizes token-count buckets to the model: 1, 2, 5, 10, ... <= max_model_len

SPEC_DRAFTS = vllm.SPEC_DRAFTS
SPEC_DRAFT_TOKENS = vllm.SPEC_DRAFT_TOKENS
SPEC_ACCEPTED_TOKENS = vllm.SPEC_ACCEPTED_TOKENS
SPEC_ACCEPTED_PER_POS = vllm.SPEC_ACCEPTED_PER_POS
REQUESTS_RUNNING = vllm.REQUESTS_RUNNING
REQUESTS_WAITING = vllm.REQUESTS_WAITING
WAITING_BY_REASON = "vllm:num_requests_waiting_by_reason"
SLEEP_STATE = "vllm:engine_sleep_state"
KV_CACHE_USAGE = vllm.KV_CACHE_USAGE
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
PROMPT_TOKENS = vllm.PROMPT_TOKENS
PROMPT_TOKENS_BY_SOURCE = "vllm:prompt_tokens_by_source_total"
GENERATION_TOKENS = vllm.GENERATION_TOKENS
REQUEST_SUCCESS = vllm.REQUEST_SUCCESS
REQUEST_PROMPT_TOKENS = "vllm:request_prompt_tokens"
REQUEST_GENERATION_TOKENS = "vllm:request_generation_tokens"
ITERATION_TOKENS = "vllm:iteration_tokens_total"
REQUEST_MAX_GENERATION_TOKENS = "vllm:request_max_num_generation_tokens"
REQUEST_PARAMS_N = "vllm:request_params_n"
REQUEST_PARAMS_MAX_TOKENS = "vllm:request_params_max_tokens"
TTFT = vllm.TTFT_HISTOGRAM
ITL = vllm.ITL_HISTOGRAM
TPOT = vllm.TPOT_HISTOGRAM
E2E = vllm.E2E_HISTOGRAM
QUEUE_TIME = "vllm:request_queue_time_seconds"
INFERENCE_TIME = "vllm:request_inference_time_seconds"
PREFILL_TIME = "vllm:request_prefill_time_seconds"
DECODE_TIME = "vllm:request_decode_time_seconds"
PREFILL_KV_TOKENS = "vllm:request_prefill_kv_computed_tokens"
CACHE_CONFIG_INFO = "vllm:cache_config_info"

FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
WAITING_REASONS = ("capacity", "deferred")
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
CACHE_CONFIG_LABELS = (
    "_block_size_resolved", "block_size", "cache_dtype", "calculate_kv_scales", "enable_prefix_caching", "engine",
    "gpu_memory_utilization", "is_attention_free", "kv_cache_dtype_skip_layers", "kv_cache_max_concurrency",
    "kv_cache_memory_bytes", "kv_cache_size_tokens", "kv_offloading_backend", "kv_offloading_size",
    "kv_sharing_fast_prefill", "mamba_block_size", "mamba_cache_dtype", "mamba_cache_mode", "mamba_page_size_padded",
    "mamba_ssm_cache_dtype", "num_cpu_blocks", "num_gpu_blocks", "num_gpu_blocks_override", "prefix_caching_hash_algo",
    "prefix_match_unit", "skip_page_size_padded", "sliding_window", "user_specified_block_size",
    "user_specified_mamba_block_size",
)


@dataclass(frozen=True)
class Family:
    """One metric family as vLLM exposes it (name as it appears, so counters end in _total)."""

    name: str
    kind: str  # counter, gauge or histogram
    documentation: str
    labels: tuple[str, ...] = BASE_LABELS
    buckets: tuple[float, ...] | str = ()
    speculative: bool = False  # exposed only when a --speculative-config is set


def _counter(name: str, documentation: str, *extra: str, speculative: bool = False) -> Family:
    return Family(name, "counter", documentation, BASE_LABELS + extra, speculative=speculative)


def _gauge(name: str, documentation: str, *extra: str) -> Family:
    return Family(name, "gauge", documentation, BASE_LABELS + extra)


def _histogram(name: str, documentation: str, buckets: tuple[float, ...] | str) -> Family:
    return Family(name, "histogram", documentation, BASE_LABELS, buckets)


FAMILIES = (
    _counter(SPEC_DRAFTS, "Number of spec decoding drafts.", speculative=True),
    _counter(SPEC_DRAFT_TOKENS, "Number of draft tokens.", speculative=True),
    _counter(SPEC_ACCEPTED_TOKENS, "Number of accepted tokens.", speculative=True),
    _counter(SPEC_ACCEPTED_PER_POS, "Accepted tokens per draft position.", "position", speculative=True),
    _counter("vllm:estimated_flops_per_gpu_total", "Estimated number of floating point operations per GPU (for Model Flops Utilization calculations)."),
    _counter("vllm:estimated_read_bytes_per_gpu_total", "Estimated number of bytes read from memory per GPU (for Model Flops Utilization calculations)."),
    _counter("vllm:estimated_write_bytes_per_gpu_total", "Estimated number of bytes written to memory per GPU (for Model Flops Utilization calculations)."),
    _gauge(REQUESTS_RUNNING, "Number of requests in model execution batches."),
    _gauge(REQUESTS_WAITING, "Number of requests waiting to be processed."),
    _gauge(
        WAITING_BY_REASON,
        "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; "
        "'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). "
        "Sum of all reasons equals vllm:num_requests_waiting.",
        "reason",
    ),
    _gauge(
        SLEEP_STATE,
        "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
        "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
        "sleep_state",
    ),
    _gauge(KV_CACHE_USAGE, "KV-cache usage. 1 means 100 percent usage."),
    _counter(PREFIX_CACHE_QUERIES, "Prefix cache queries, in terms of number of queried tokens."),
    _counter("vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens."),
    _counter("vllm:external_prefix_cache_queries_total", "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens."),
    _counter("vllm:external_prefix_cache_hits_total", "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens."),
    _counter("vllm:mm_cache_queries_total", "Multi-modal cache queries, in terms of number of queried items."),
    _counter("vllm:mm_cache_hits_total", "Multi-modal cache hits, in terms of number of cached items."),
    _counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine."),
    _counter(PROMPT_TOKENS, "Number of prefill tokens processed."),
    _counter(PROMPT_TOKENS_BY_SOURCE, "Number of prompt tokens by source.", "source"),
    _counter("vllm:prompt_tokens_cached_total", "Number of cached prompt tokens (local + external)."),
    _counter(GENERATION_TOKENS, "Number of generation tokens processed."),
    _counter(REQUEST_SUCCESS, "Count of successfully processed requests.", "finished_reason"),
    _histogram(REQUEST_PROMPT_TOKENS, "Number of prefill tokens processed.", TOKENS),
    _histogram(REQUEST_GENERATION_TOKENS, "Number of generation tokens processed.", TOKENS),
    _histogram(ITERATION_TOKENS, "Histogram of number of tokens per engine_step.", ITERATION_TOKEN_BUCKETS),
    _histogram(REQUEST_MAX_GENERATION_TOKENS, "Histogram of maximum number of requested generation tokens.", TOKENS),
    _histogram(REQUEST_PARAMS_N, "Histogram of the n request parameter.", PARAMS_N_BUCKETS),
    _histogram(REQUEST_PARAMS_MAX_TOKENS, "Histogram of the max_tokens request parameter.", TOKENS),
    _histogram(TTFT, "Histogram of time to first token in seconds.", TTFT_BUCKETS),
    _histogram(ITL, "Histogram of inter-token latency in seconds.", TOKEN_LATENCY_BUCKETS),
    _histogram(TPOT, "Histogram of time_per_output_token_seconds per request.", TOKEN_LATENCY_BUCKETS),
    _histogram(E2E, "Histogram of e2e request latency in seconds.", REQUEST_LATENCY_BUCKETS),
    _histogram(QUEUE_TIME, "Histogram of time spent in WAITING phase for request.", REQUEST_LATENCY_BUCKETS),
    _histogram(INFERENCE_TIME, "Histogram of time spent in RUNNING phase for request.", REQUEST_LATENCY_BUCKETS),
    _histogram(PREFILL_TIME, "Histogram of time spent in PREFILL phase for request.", REQUEST_LATENCY_BUCKETS),
    _histogram(DECODE_TIME, "Histogram of time spent in DECODE phase for request.", REQUEST_LATENCY_BUCKETS),
    _histogram(PREFILL_KV_TOKENS, "Histogram of new KV tokens computed during prefill (excluding cached tokens).", TOKENS),
    Family(CACHE_CONFIG_INFO, "gauge", "Information of the LLMEngine CacheConfig", CACHE_CONFIG_LABELS),
)


def token_buckets(max_model_len: int) -> tuple[float, ...]:
    """vLLM's 1-2-5 series up to max_model_len: 1, 2, 5, 10, 20, 50, ..."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_model_len:
                return tuple(buckets)
            buckets.append(float(value))
        exponent += 1


def buckets_for(family: Family, max_model_len: int) -> tuple[float, ...]:
    return token_buckets(max_model_len) if family.buckets == TOKENS else tuple(family.buckets)
