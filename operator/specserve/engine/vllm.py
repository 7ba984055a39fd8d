"""What specserve knows about today's vLLM: the serve command line, speculative-config JSON and metric names.

Checked against the vllm 0.33.0 wheel's own parser (tests/unit/test_vllm_parser.py) and real /metrics captures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from specserve import api

PORT = 8000
COMMAND = ["vllm", "serve"]

# Flags and JSON keys that today's vLLM rejects (argparse exit 2 or a ValidationError at start).
OBSOLETE_FLAGS = frozenset(
    {
        "--speculative-model",
        "--num-speculative-tokens",
        "--speculative-model-quantization",
        "--speculative-draft-tensor-parallel-size",
        "--speculative-disable-by-batch-size",
        "--spec-decoding-acceptance-method",
        "--ngram-prompt-lookup-max",
        "--ngram-prompt-lookup-min",
        "--typical-acceptance-sampler-posterior-threshold",
        "--typical-acceptance-sampler-posterior-alpha",
        "--use-v2-block-manager",
    }
)

# Flags the operator renders itself; setting them again in extraArgs would fight the spec.
MANAGED_FLAGS = frozenset(
    {
        "--model",
        "--served-model-name",
        "--revision",
        "--tensor-parallel-size",
        "-tp",
        "--gpu-memory-utilization",
        "--max-model-len",
        "--max-num-seqs",
        "--dtype",
        "--kv-cache-dtype",
        "--quantization",
        "-q",
        "--port",
        "--host",
        "--speculative-config",
        "-sc",
        "--spec-method",
        "--spec-model",
        "--spec-tokens",
    }
)

# Metric names exposed by vLLM's /metrics (see the real captures in tests/fixtures).
SPEC_DRAFTS = "vllm:spec_decode_num_drafts_total"
SPEC_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
SPEC_ACCEPTED_TOKENS = "vllm:spec_decode_num_accepted_tokens_total"
SPEC_ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
TPOT_HISTOGRAM = "vllm:request_time_per_output_token_seconds"
TTFT_HISTOGRAM = "vllm:time_to_first_token_seconds"
ITL_HISTOGRAM = "vllm:inter_token_latency_seconds"
# Upper bounds of those histograms' buckets as vLLM exports them by default (tests/fixtures captures): two quantiles
# in one bucket are interpolated from ranks, so their ratio says nothing about the latencies.
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
E2E_HISTOGRAM = "vllm:e2e_request_latency_seconds"
REQUESTS_RUNNING = "vllm:num_requests_running"
REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
REQUEST_SUCCESS = "vllm:request_success_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"


class ExtraArgsError(ValueError):
    """engine.extraArgs cannot be used as given."""


def model_reference(ref: str) -> str:
    """What vLLM gets for a model reference: hf:// is dropped, pvc://claim/path becomes a mounted path."""
    if ref.startswith("hf://"):
        return ref.removeprefix("hf://")
    if ref.startswith("pvc://"):
        claim, _, path = ref.removeprefix("pvc://").partition("/")
        return f"{pvc_mount_path(claim)}/{path}".rstrip("/")
    return ref


def pvc_mount_path(claim: str) -> str:
    return f"/models/{claim}"


def speculative_config(speculation: api.Speculation, schedule: Sequence[Sequence[int]]) -> dict[str, Any]:
    """The --speculative-config JSON object for a proposer; schedule: [first, last, k] ranges from batch size 1,
    the last carried to every larger batch (one range: the same k everywhere)."""
    config: dict[str, Any] = {"method": speculation.method, "num_speculative_tokens": max(int(r[2]) for r in schedule)}
    draft = speculation.draft
    if draft is not None:
        config["model"] = model_reference(draft.model)
        if draft.revision:
            config["revision"] = draft.revision
        if draft.quantization:
            config["quantization"] = draft.quantization
        if draft.tensor_parallel_size:
            config["draft_tensor_parallel_size"] = draft.tensor_parallel_size
    if speculation.method == api.SpeculationMethod.NGRAM:
        ngram = speculation.ngram or api.NgramSettings()
        config["prompt_lookup_min"] = ngram.prompt_lookup_min
        config["prompt_lookup_max"] = ngram.prompt_lookup_max
    if len(schedule) > 1:
        config["num_speculative_tokens_per_batch_size"] = [[int(x) for x in r] for r in schedule]
    return config


def check_extra_args(args: list[str]) -> None:
    """Reject extra args that are obsolete, fight a managed flag, or do not start with a flag."""
    if args and not args[0].startswith("-"):
        raise ExtraArgsError(f"engine.extraArgs must start with a flag, got {args[0]!r}")
    for arg in args:
        if any(c in arg for c in "\n\r\0"):
            raise ExtraArgsError(f"engine.extraArgs item {arg!r} contains a control character")
        if not arg.startswith("-"):
            continue
        flag = arg.split("=", 1)[0]
        if flag in OBSOLETE_FLAGS:
            raise ExtraArgsError(f"engine.extraArgs: {flag} was removed from vLLM; use spec.speculation instead")
        if flag in MANAGED_FLAGS:
            raise ExtraArgsError(f"engine.extraArgs: {flag} is set by specserve from the spec; set the spec field instead")
        if flag.startswith("--") and (len(flag) < 3 or " " in flag):
            raise ExtraArgsError(f"engine.extraArgs: {arg!r} is not a flag")


def serve_args(
    *,
    model: str,
    served_model_name: str,
    revision: str | None,
    quantization: str | None,
    tensor_parallel_size: int,
    engine: api.Engine,
    speculative: dict[str, Any] | None,
) -> list[str]:
    """Arguments after `vllm serve`: positional model first, then flags."""
    args = [model_reference(model), "--served-model-name", served_model_name]
    if revision:
        args += ["--revision", revision]
    if quantization:
        args += ["--quantization", quantization]
    args += ["--tensor-parallel-size", str(tensor_parallel_size)]
    args += ["--gpu-memory-utilization", _number(engine.gpu_memory_utilization)]
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    if engine.max_num_seqs is not None:
        args += ["--max-num-seqs", str(engine.max_num_seqs)]
    if engine.dtype != "auto":
        args += ["--dtype", engine.dtype]
    if engine.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", engine.kv_cache_dtype]
    args += ["--host", "0.0.0.0", "--port", str(PORT)]
    if speculative is not None:
        args += ["--speculative-config", json.dumps(speculative, separators=(",", ":"), sort_keys=True)]
    return args + list(engine.extra_args)


def _number(value: float) -> str:
    return format(value, "g")
