"""Engine step time: a roofline for the step without speculation, times the GPU-measured cost of speculating on its decode part.

The speculative factor is specserve.goodput's c(b, k, accepted length), calibrated on vLLM on an H200; prefill is never sped up.
"""

from __future__ import annotations

from dataclasses import dataclass

from specserve.decision import calibration, goodput, proposers
from specserve_simulator import sizing
from specserve_simulator.args import ServeConfig

HEAD_PARAMS_SHARE, HEAD_PARAMS_FIXED_B = 0.02, 0.3  # an EAGLE/MTP head: about one decoder layer plus the LM head
HEAD_KV_SHARE = 1 / 32  # the head keeps KV for one layer
ACTIVATION_RESERVE_GIB = 2.0  # per GPU: activations and CUDA graphs
# Proposer methods of vLLM mapped to the cost model's kinds.
GOODPUT_METHOD = {"custom_class": "draft_model", "dflash": "eagle", "dspark": "eagle", "extract_hidden_states": "eagle"}


@dataclass(frozen=True)
class Hardware:
    """One simulated GPU (H100-class) and the engine's fixed costs."""

    memory_bandwidth: float = 3.0e12  # bytes/s actually sustained
    decode_compute: float = 4.0e14  # FLOP/s on decode: small, ragged matmuls
    prefill_compute: float = 8.0e14  # FLOP/s on prompt chunks: large matmuls run closer to peak
    memory_gib: float = 80.0
    step_overhead: float = 2.5e-3  # scheduling, sampling and kernel launches per engine step
    token_overhead: float = 4e-6  # per token in the step: sampling


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
    proposer: proposers.Proposer | None = None
    draft: Model | None = None  # the draft model or the EAGLE/MTP head: it prefills every prompt too
    cost_scale: float = 1.0  # --sim-speculation-cost-scale

    @classmethod
    def for_config(cls, config: ServeConfig) -> StepCost:
        hardware = Hardware(memory_gib=config.sim.gpu_memory_gib)
        scale = config.sim.speculation_cost_scale
        params = sizing.params_billions(config.model)
        target_precision = sizing.precision(config.quantization, config.model, config.dtype)
        tp = config.tensor_parallel_size
        target = Model(params, sizing.weight_bytes(params, target_precision), sizing.kv_bytes_per_token(params, config.kv_cache_dtype), tp)
        spec = config.speculation
        if spec is None:
            return cls(hardware, target, cost_scale=scale)
        method = GOODPUT_METHOD.get(spec.method, spec.method)
        target_size = calibration.ModelSize(params, tensor_parallel_size=tp)
        if spec.proposer == "ngram":
            return cls(hardware, target, proposers.proposer_for(method, target_size), cost_scale=scale)
        if spec.proposer == "head":
            head_params = HEAD_PARAMS_SHARE * params + HEAD_PARAMS_FIXED_B
            head = Model(head_params, sizing.weight_bytes(head_params, target_precision), target.kv_bytes_per_token * HEAD_KV_SHARE, tp)
            return cls(hardware, target, proposers.proposer_for(method, target_size, calibration.ModelSize(head_params, 1, tp)), head, scale)
        draft_params = sizing.params_billions(spec.model, params / 10)
        draft_precision = sizing.precision(spec.quantization, spec.model, config.dtype)
        draft_gpus = spec.draft_tensor_parallel_size or tp
        draft = Model(draft_params, sizing.weight_bytes(draft_params, draft_precision), sizing.kv_bytes_per_token(draft_params, config.kv_cache_dtype), draft_gpus)
        return cls(hardware, target, proposers.proposer_for(method, target_size, calibration.ModelSize(draft_params, tensor_parallel_size=draft_gpus)), draft, scale)

    def step_time(self, decoding: int, k: int, prefill_tokens: int, context_tokens: int, accepted_length: float = 1.0) -> float:
        """One step: `decoding` sequences verify k drafts each (accepting accepted_length - 1 on average), plus a prompt chunk.

        The step without speculation comes from the roofline; speculating multiplies its decode part (the same step
        without the prompt chunk) by goodput's c(decoding, k, accepted_length), so prefill costs what it costs anyway.
        """
        hardware = self.hardware
        plain = hardware.step_overhead + hardware.token_overhead * (decoding + prefill_tokens)
        plain += self.target.forward(hardware, decoding, prefill_tokens, context_tokens)
        return plain + self.speculation_time(decoding, k, context_tokens, accepted_length) + self._proposer_prefill(prefill_tokens)

    def speculation_time(self, decoding: int, k: int, context_tokens: int, accepted_length: float = 1.0) -> float:
        """What speculating adds to a step: (c - 1) times the decode part of the step without speculation."""
        if self.proposer is None or not k or not decoding:
            return 0.0
        hardware = self.hardware
        decode_part = hardware.step_overhead + hardware.token_overhead * decoding + self.target.forward(hardware, decoding, 0, context_tokens)
        cost = goodput.step_cost(decoding, k, accepted_length, self.proposer)
        return decode_part * (cost.total - 1) * self.cost_scale

    def kv_capacity_tokens(self, config: ServeConfig) -> int:
        """Tokens of KV cache left after the weights, never less than one full-length request."""
        gpus = config.tensor_parallel_size
        budget = self.hardware.memory_gib * sizing.GIB * gpus * config.gpu_memory_utilization
        weights = self.target.weight_bytes + (self.draft.weight_bytes if self.draft else 0.0)
        free = budget - weights - ACTIVATION_RESERVE_GIB * sizing.GIB * gpus
        per_token = self.target.kv_bytes_per_token + (self.draft.kv_bytes_per_token if self.draft else 0.0)
        return max(config.max_model_len, int(free / per_token))

    def _proposer_prefill(self, prefill_tokens: int) -> float:
        """A draft model or head prefills each prompt too, so TTFT gets slightly worse with speculation."""
        if self.draft is None or not prefill_tokens:
            return 0.0
        return self.draft.forward(self.hardware, 0, prefill_tokens, 0)
