"""The simulator's /metrics: vLLM's families (catalog.py) in a prometheus-client registry, fed by engine step reports.

Histograms hold simulated seconds, so latencies look like a real deployment's whatever the time scale.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, gc_collector, generate_latest, platform_collector, process_collector

from specserve_simulator import catalog
from specserve_simulator.args import ServeConfig
from specserve_simulator.records import Finished, StepReport

ENGINE = "0"
BLOCK_SIZE = 16
KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


class EngineMetrics:
    """Every vLLM metric family, labelled for one served model; record() applies one engine step."""

    def __init__(self, config: ServeConfig, kv_capacity_tokens: int, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._config = config
        self._base = {"model_name": config.model_name, "engine": ENGINE}
        for collector in (gc_collector.GCCollector, platform_collector.PlatformCollector, process_collector.ProcessCollector):
            collector(registry=self.registry)
        self._families = {f.name: self._register(f) for f in catalog.FAMILIES if config.speculation or not f.speculative}
        self._set_initial_values(kv_capacity_tokens)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def record(self, report: StepReport) -> None:
        if report.drafts:
            self._series(catalog.SPEC_DRAFTS).inc(report.drafts)
            self._series(catalog.SPEC_DRAFT_TOKENS).inc(report.draft_tokens)
            self._series(catalog.SPEC_ACCEPTED_TOKENS).inc(report.accepted_tokens)
            for position, count in enumerate(report.accepted_per_position):
                if count:
                    self._series(catalog.SPEC_ACCEPTED_PER_POS, position=str(position)).inc(count)
        if report.prompt_tokens:
            self._series(catalog.PROMPT_TOKENS).inc(report.prompt_tokens)
            self._series(catalog.PROMPT_TOKENS_BY_SOURCE, source="local_compute").inc(report.prompt_tokens)
            if self._config.enable_prefix_caching:
                self._series(catalog.PREFIX_CACHE_QUERIES).inc(report.prompt_tokens)
        self._series(catalog.GENERATION_TOKENS).inc(report.generated_tokens)
        self._series(catalog.ITERATION_TOKENS).observe(report.iteration_tokens)
        itl = self._series(catalog.ITL)
        for _ in range(report.decode_samples):  # every decoding request waited this step for its next tokens
            itl.observe(report.duration)
        ttft = self._series(catalog.TTFT)
        for latency in report.first_token_latencies:
            ttft.observe(latency)
        for finished in report.finished:
            self._record_finished(finished)
        self._series(catalog.REQUESTS_RUNNING).set(report.running)
        self._series(catalog.REQUESTS_WAITING).set(report.waiting)
        self._series(catalog.WAITING_BY_REASON, reason="capacity").set(report.waiting)
        self._series(catalog.KV_CACHE_USAGE).set(report.kv_usage)

    def _record_finished(self, request: Finished) -> None:
        self._series(catalog.REQUEST_SUCCESS, finished_reason=request.finish_reason).inc()
        observations = {
            catalog.E2E: request.e2e,
            catalog.QUEUE_TIME: request.queue_time,
            catalog.INFERENCE_TIME: request.inference_time,
            catalog.PREFILL_TIME: request.prefill_time,
            catalog.DECODE_TIME: request.decode_time,
            catalog.REQUEST_PROMPT_TOKENS: request.prompt_tokens,
            catalog.REQUEST_GENERATION_TOKENS: request.output_tokens,
            catalog.REQUEST_MAX_GENERATION_TOKENS: request.max_tokens,
            catalog.REQUEST_PARAMS_MAX_TOKENS: request.max_tokens,
            catalog.REQUEST_PARAMS_N: 1,
            catalog.PREFILL_KV_TOKENS: request.prompt_tokens,
        }
        if request.output_tokens > 1:
            observations[catalog.TPOT] = request.tpot
        for name, value in observations.items():
            self._series(name).observe(value)

    def _register(self, family: catalog.Family) -> Any:
        kwargs: dict[str, Any] = {"registry": self.registry}
        if family.kind == "histogram":
            kwargs["buckets"] = catalog.buckets_for(family, self._config.max_model_len)
        return KINDS[family.kind](family.name, family.documentation, list(family.labels), **kwargs)

    def _series(self, name: str, **extra: str) -> Any:
        family = self._families[name]
        return family.labels(**self._base, **extra)

    def _set_initial_values(self, kv_capacity_tokens: int) -> None:
        """Create every series vLLM shows from the start, zero-valued (so rate() works from the first scrape)."""
        for family in catalog.FAMILIES:
            if family.name not in self._families or family.name == catalog.CACHE_CONFIG_INFO:
                continue
            extra = set(family.labels) - set(catalog.BASE_LABELS)
            if not extra:
                self._series(family.name)
        for position in range(self._config.speculation.num_speculative_tokens if self._config.speculation else 0):
            self._series(catalog.SPEC_ACCEPTED_PER_POS, position=str(position))
        for reason in catalog.FINISHED_REASONS:
            self._series(catalog.REQUEST_SUCCESS, finished_reason=reason)
        for source in catalog.PROMPT_SOURCES:
            self._series(catalog.PROMPT_TOKENS_BY_SOURCE, source=source)
        for reason in catalog.WAITING_REASONS:
            self._series(catalog.WAITING_BY_REASON, reason=reason)
        for state in catalog.SLEEP_STATES:
            self._series(catalog.SLEEP_STATE, sleep_state=state).set(1 if state == "awake" else 0)
        self._families[catalog.CACHE_CONFIG_INFO].labels(**self._cache_config(kv_capacity_tokens)).set(1)

    def _cache_config(self, kv_capacity_tokens: int) -> dict[str, str]:
        config = self._config
        labels = {name: "None" for name in catalog.CACHE_CONFIG_LABELS}
        labels.update(
            _block_size_resolved="True", block_size=str(BLOCK_SIZE), cache_dtype=config.kv_cache_dtype,
            calculate_kv_scales="False", enable_prefix_caching=str(config.enable_prefix_caching), engine=ENGINE,
            gpu_memory_utilization=str(config.gpu_memory_utilization), is_attention_free="False",
            kv_cache_dtype_skip_layers="[]", kv_cache_max_concurrency=str(kv_capacity_tokens / config.max_model_len),
            kv_cache_size_tokens=str(kv_capacity_tokens), kv_offloading_backend="native", kv_sharing_fast_prefill="False",
            mamba_cache_dtype="auto", mamba_cache_mode="none", mamba_ssm_cache_dtype="auto",
            num_gpu_blocks=str(kv_capacity_tokens // BLOCK_SIZE), prefix_caching_hash_algo="sha256",
            user_specified_block_size="False", user_specified_mamba_block_size="False",
        )
        return labels
