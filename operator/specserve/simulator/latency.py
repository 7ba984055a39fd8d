"""Engine step time on a roofline: memory-bound for small batches, compute-bound when saturated, plus the proposer.

Calibrated to FRAMEWORK.md's shape: speculation is 1.5-3x faster at low load and 1.4-1.8x slower at saturation.
"""

from __future__ import annotations

from dataclasses import dataclass

from specserve.simulator import sizing
from specserve.simulator.args import ServeConfig

HEAD_PARAMS_SHARE, HEAD_PARAMS_FIXED_B = 0.02, 0.3  # an EAGLE/MTP head: about one decoder layer plus the LM head
HEAD_KV_SHARE = 1 / 32  # the head keeps KV for one layer
ACTIVATION_RESERVE_GIB = 2.0  # per GPU: activations and CUDA graphs


@dataclass(frozen=True)
class Hardware:
    """One simulated GPU (H100-class) and the engine's fixed costs."""

    memory_bandwidth: float = 3.0e12  # bytes/s actually sustained
    decode_compute: float = 4.0e14  # FLOP/s on decode and verification: small, ragged matmuls
    prefill_compute: float = 8.0e14  # FLOP/s on prompt chunks: large matmuls run closer to peak
    memory_gib: float = 80.0
    step_overhead: float = 2.5e-3  # scheduling, sampling and kernel launches per engine step
    token_overhead: float = 4e-6  # per token in the step: sampling and rejection
    draft_forward_overhead: float = 2.0e-3  # a separate small model cannot fill the GPU
    head_forward_overhead: float = 0.4e-3
    ngram_lookup: float = 1e-7  # per context token scanned each step, on the CPU


@dataclass(frozen=True)
class Model:
    """One model's weights and KV footprint on its share of the GPUs."""

    params_b: float
    weight_bytes: float
    kv_bytes_per_token: float
    gpus: int

    def forward(self, hardware: Hardware, decode_tokens: int, prefill_tokens: int, context_tokens: int) -> float:
        """Seconds for one forward pass: the slower of reading weights and KV, and computing on every token."""
        memory = (self.weight_bytes + self.kv_bytes_per_token * context_tokens) / (hardware.memory_bandwidth * self.gpus)
        flops_per_token = 2 * self.params_b * 1e9
        compute = flops_per_token * (decode_tokens / hardware.decode_compute + prefill_tokens / hardware.prefill_compute) / self.gpus
        return max(memory, compute)


@dataclass(frozen=True)
class StepCost:
    """Time of one engine step for a serving configuration."""

    hardware: Hardware
    target: Model
    proposer: str | None = None  # ngram, head or draft
    draft: Model | None = None  # the draft model or the EAGLE/MTP head

    @classmethod
    def for_config(cls, config: ServeConfig) -> StepCost:
        hardware = Hardware(memory_gib=config.sim.gpu_memory_gib)
        params = sizing.params_billions(config.model)
        target_precision = sizing.precision(config.quantization, config.model, config.dtype)
        target = Model(params, sizing.weight_bytes(params, target_precision), sizing.kv_bytes_per_token(params, config.kv_cache_dtype), config.tensor_parallel_size)
        spec = config.speculation
        if spec is None:
            return cls(hardware, target)
        if spec.proposer == "ngram":
            return cls(hardware, target, "ngram")
        if spec.proposer == "head":
            head_params = HEAD_PARAMS_SHARE * params + HEAD_PARAMS_FIXED_B
            head = Model(head_params, sizing.weight_bytes(head_params, target_precision), target.kv_bytes_per_token * HEAD_KV_SHARE, config.tensor_parallel_size)
            return cls(hardware, target, "head", head)
        draft_params = sizing.params_billions(spec.model, params / 10)
        draft_precision = sizing.precision(spec.quantization, spec.model, config.dtype)
        draft_gpus = spec.draft_tensor_parallel_size or config.tensor_parallel_size
        draft = Model(draft_params, sizing.weight_bytes(draft_params, draft_precision), sizing.kv_bytes_per_token(draft_params, config.kv_cache_dtype), draft_gpus)
        return cls(hardware, target, "draft", draft)

    def step_time(self, decoding: int, k: int, prefill_tokens: int, context_tokens: int) -> float:
        """One step: `decoding` sequences verify k drafts each, plus a chunk of prompt tokens, over cached context."""
        verified = decoding * (1 + k)
        hardware = self.hardware
        target = hardware.step_overhead + hardware.token_overhead * (verified + prefill_tokens)
        target += self.target.forward(hardware, verified, prefill_tokens, context_tokens)
        return target + self._proposer_time(decoding, k, prefill_tokens, context_tokens)

    def kv_capacity_tokens(self, config: ServeConfig) -> int:
        """Tokens of KV cache left after the weights, never less than one full-length request."""
        gpus = config.tensor_parallel_size
        budget = self.hardware.memory_gib * sizing.GIB * gpus * config.gpu_memory_utilization
        weights = self.target.weight_bytes + (self.draft.weight_bytes if self.draft else 0.0)
        free = budget - weights - ACTIVATION_RESERVE_GIB * sizing.GIB * gpus
        per_token = self.target.kv_bytes_per_token + (self.draft.kv_bytes_per_token if self.draft else 0.0)
        return max(config.max_model_len, int(free / per_token))

    def _proposer_time(self, decoding: int, k: int, prefill_tokens: int, context_tokens: int) -> float:
        hardware = self.hardware
        if self.proposer is None:
            return 0.0
        if self.proposer == "ngram":
            return hardware.ngram_lookup * context_tokens if k else 0.0
        assert self.draft is not None
        overhead = hardware.draft_forward_overhead if self.proposer == "draft" else hardware.head_forward_overhead
        drafting = k * (overhead + self.draft.forward(hardware, decoding, 0, context_tokens)) if k and decoding else 0.0
        # The proposer prefills the prompt too, so TTFT gets slightly worse with speculation.
        prefill = self.draft.forward(hardware, 0, prefill_tokens, 0) if prefill_tokens else 0.0
        return drafting + prefill
