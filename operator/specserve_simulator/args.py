"""The `vllm serve` command line as the simulator accepts it, plus its own `--sim-*` options.

Refuses what vLLM refuses (unknown or removed flags, bad values, bad --speculative-config) with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from specserve.engine import vllm
from specserve_simulator import speculative
from specserve_simulator.speculative import Speculation
from specserve_simulator.workload import Workload

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_CACHE_DTYPES = (
    "auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla", "nvfp4_ds_mla",
    "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc", "turboquant_3bit_nc", "octave_k3v4", "octave_k3v3",
    "octave_k3v3_compact", "ultraquant_4bit", "int4_per_token_head", "int8_per_token_head", "fp8_per_token_head",
    "nvfp4", "nvfp4_4over6",
)
QUANTIZATIONS = (
    "awq", "awq_marlin", "auto_awq", "gptq", "gptq_marlin", "auto_gptq", "fp8", "fbgemm_fp8", "fp_quant",
    "modelopt", "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed", "compressed-tensors", "experts_int8", "quark",
    "moe_wna16", "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online", "fp8_per_tensor",
    "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8", "humming",
)

# Other `vllm serve` 0.33 flags the simulator accepts and ignores (all spellings of each).
IGNORED_VALUE_FLAGS = (
    ("--code-revision",), ("--tokenizer",), ("--tokenizer-revision",), ("--tokenizer-mode",), ("--download-dir",),
    ("--load-format",), ("--config-format",), ("--hf-config-path",), ("--hf-overrides",), ("--seed",),
    ("--pipeline-parallel-size", "-pp"), ("--data-parallel-size", "-dp"), ("--block-size",), ("--cpu-offload-gb",),
    ("--num-gpu-blocks-override",), ("--kv-cache-memory-bytes",), ("--prefix-caching-hash-algo",),
    ("--max-logprobs",), ("--logprobs-mode",), ("--generation-config",), ("--override-generation-config",),
    ("--compilation-config", "-cc"), ("--max-cudagraph-capture-size",), ("--distributed-executor-backend",),
    ("--scheduling-policy",), ("--long-prefill-token-threshold",), ("--limit-mm-per-prompt",),
    ("--mm-processor-kwargs",), ("--max-loras",), ("--max-lora-rank",), ("--max-cpu-loras",),
    ("--kv-transfer-config",), ("--kv-events-config",), ("--structured-outputs-config",), ("--reasoning-parser",),
    ("--tool-call-parser",), ("--chat-template",), ("--chat-template-content-format",),
    ("--default-chat-template-kwargs",), ("--response-role",), ("--root-path",), ("--allowed-origins",),
    ("--allowed-methods",), ("--allowed-headers",), ("--ssl-keyfile",), ("--ssl-certfile",), ("--ssl-ca-certs",),
    ("--uvicorn-log-level",), ("--api-server-count", "-asc"), ("--otlp-traces-endpoint",), ("--runner",),
    ("--convert",), ("--max-parallel-loading-workers",), ("--mamba-ssm-cache-dtype",), ("--worker-extension-cls",),
    ("--per-request-spec-decode-metrics",),
)
IGNORED_LIST_FLAGS = (("--lora-modules",), ("--api-key",), ("--collect-detailed-traces",), ("--logits-processors",))
IGNORED_REPEATED_FLAGS = (("--middleware",),)
# On/off flags with their spellings: (on..., off). Only --enable-prefix-caching changes anything here.
SWITCHES = (
    ("--enable-prefix-caching", "--disable-prefix-caching"),
    ("--trust-remote-code", "--no-trust-remote-code"),
    ("--enable-expert-parallel", "-ep", "--disable-expert-parallel"),
    ("--enforce-eager", "--no-enforce-eager"),
    ("--enable-chunked-prefill", "--disable-chunked-prefill"),
    ("--disable-custom-all-reduce", "--enable-custom-all-reduce"),
    ("--enable-auto-tool-choice", "--disable-auto-tool-choice"),
    ("--enable-lora", "--disable-lora"),
    ("--async-scheduling", "--no-async-scheduling"),
    ("--disable-sliding-window", "--enable-sliding-window"),
    ("--enable-sleep-mode", "--disable-sleep-mode"),
    ("--enable-prompt-tokens-details", "--disable-prompt-tokens-details"),
    ("--enable-force-include-usage", "--disable-force-include-usage"),
    ("--enable-server-load-tracking", "--disable-server-load-tracking"),
    ("--enable-request-id-headers", "--disable-request-id-headers"),
    ("--disable-fastapi-docs", "--enable-fastapi-docs"),
    ("--return-tokens-as-token-ids", "--no-return-tokens-as-token-ids"),
    ("--enable-log-requests", "--disable-log-requests"),
    ("--enable-eplb", "--disable-eplb"),
    ("--skip-tokenizer-init", "--no-skip-tokenizer-init"),
    ("--disable-cascade-attn", "--enable-cascade-attn"),
    ("--enable-log-outputs", "--disable-log-outputs"),
    ("--language-model-only", "--no-language-model-only"),
)
FLAGS = ("--disable-log-stats", "--headless")

REMOVED_FLAG_HINT = "removed from vLLM; use --speculative-config"
SIM_ENV_PREFIX = "SPECSERVE_SIM_"


@dataclass(frozen=True)
class SimOptions(Workload):
    """Simulator-only knobs: the starting workload (changeable at runtime, PUT /sim/traffic) and the fixed ones."""

    seed: int = 0
    time_scale: float = 0.05
    gpu_memory_gib: float = 80.0
    speculation_cost_scale: float = 1.0  # this world's speculative step cost (c - 1) over the GPU calibration's


@dataclass(frozen=True)
class ServeConfig:
    """What `vllm serve` was asked to do, as far as the simulator models it."""

    model: str
    served_model_names: tuple[str, ...] = ()
    revision: str | None = None
    quantization: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.92
    max_model_len: int = 8192
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    host: str = "0.0.0.0"
    port: int = vllm.PORT
    enable_prefix_caching: bool = True
    speculation: Speculation | None = None
    sim: SimOptions = field(default_factory=SimOptions)

    @property
    def model_name(self) -> str:
        """The metrics' model_name label and the id /v1/models lists first."""
        return self.served_model_names[0] if self.served_model_names else self.model


class ServeArgumentParser(argparse.ArgumentParser):
    """argparse that reads vLLM's `--flag_name` spelling and names removed flags in its refusal."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> argparse.Namespace:  # type: ignore[override]
        normalized = [_normalize(arg) for arg in (sys.argv[1:] if args is None else args)]
        parsed, extras = self.parse_known_args(normalized, namespace)
        if extras:
            removed = [arg.split("=", 1)[0] for arg in extras if arg.split("=", 1)[0] in vllm.OBSOLETE_FLAGS]
            hint = f" ({', '.join(removed)}: {REMOVED_FLAG_HINT})" if removed else ""
            self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed


def parse(argv: list[str], prog: str = "vllm serve") -> ServeConfig:
    """Parse a `vllm serve` argument list; exits 2 with argparse's message on anything vLLM would refuse."""
    parser = build_parser(prog)
    ns = parser.parse_args(argv)
    model = _model(parser, ns)
    speculation = _speculation(parser, ns)
    return ServeConfig(
        model=model,
        served_model_names=tuple(ns.served_model_name or ()),
        revision=ns.revision,
        quantization=ns.quantization,
        tensor_parallel_size=ns.tensor_parallel_size,
        gpu_memory_utilization=ns.gpu_memory_utilization,
        max_model_len=ns.max_model_len or ServeConfig.max_model_len,
        max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens or ServeConfig.max_num_batched_tokens,
        dtype=ns.dtype,
        kv_cache_dtype=ns.kv_cache_dtype,
        host=ns.host,
        port=ns.port,
        enable_prefix_caching=ns.enable_prefix_caching is not False,
        speculation=speculation,
        sim=SimOptions(
            seed=ns.sim_seed, qps=ns.sim_qps, temperature=ns.sim_temperature, acceptance=ns.sim_acceptance,
            echo=ns.sim_echo, prompt_tokens=ns.sim_prompt_tokens, max_tokens=ns.sim_max_tokens,
            time_scale=ns.sim_time_scale, gpu_memory_gib=ns.sim_gpu_memory_gib, speculation_cost_scale=ns.sim_speculation_cost_scale,
        ),
    )


def build_parser(prog: str = "vllm serve") -> ServeArgumentParser:
    parser = ServeArgumentParser(prog=prog, allow_abbrev=False, description="vLLM-compatible simulator (specserve).")
    parser.add_argument("model_tag", nargs="?", metavar="MODEL", help="model to serve (positional, as in `vllm serve`)")
    parser.add_argument("--model", help="deprecated: pass the model positionally")
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--revision")
    parser.add_argument("--quantization", "-q", choices=QUANTIZATIONS, metavar="METHOD")
    parser.add_argument("--tensor-parallel-size", "-tp", type=_positive_int, default=1)
    parser.add_argument("--gpu-memory-utilization", "--device-memory-utilization", type=_fraction, default=0.92)
    parser.add_argument("--max-model-len", type=_human_int)
    parser.add_argument("--max-num-seqs", type=_positive_int, default=ServeConfig.max_num_seqs)
    parser.add_argument("--dtype", choices=DTYPES, default="auto")
    parser.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto", metavar="DTYPE")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=_port, default=vllm.PORT)
    parser.add_argument("--speculative-config", "-sc")
    parser.add_argument("--spec-method")
    parser.add_argument("--spec-model")
    parser.add_argument("--spec-tokens", type=int)
    parser.add_argument("--max-num-batched-tokens", type=_human_int, default=ServeConfig.max_num_batched_tokens)
    for names in IGNORED_VALUE_FLAGS:
        parser.add_argument(*names, help=argparse.SUPPRESS)
    for names in IGNORED_LIST_FLAGS:
        parser.add_argument(*names, nargs="+", help=argparse.SUPPRESS)
    for names in IGNORED_REPEATED_FLAGS:
        parser.add_argument(*names, action="append", help=argparse.SUPPRESS)
    for *on, off in SWITCHES:
        dest = on[0].removeprefix("--").replace("-", "_")
        parser.add_argument(*on, dest=dest, action="store_true", default=None, help=argparse.SUPPRESS)
        parser.add_argument(off, dest=dest, action="store_false", help=argparse.SUPPRESS)
    for flag in FLAGS:
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    _add_sim_options(parser.add_argument_group("simulator options (not vLLM's; also read from SPECSERVE_SIM_<NAME>)"))
    return parser


def _add_sim_options(group: argparse._ArgumentGroup) -> None:
    defaults = SimOptions()

    def option(name: str, kind: Callable[[str], Any], default: Any, help_text: str) -> None:
        env = SIM_ENV_PREFIX + name.upper().replace("-", "_")
        group.add_argument(f"--sim-{name}", type=kind, default=os.environ.get(env, default), help=f"{help_text} (${env})")

    option("seed", int, defaults.seed, "seed for every random draw")
    option("qps", _non_negative, defaults.qps, "synthetic requests per simulated second (0: none)")
    option("temperature", _non_negative, defaults.temperature, "temperature of synthetic requests")
    option("acceptance", _optional_fraction, None, "override every request's mean draft acceptance (0-1)")
    option("echo", _unit, defaults.echo, "how much output repeats the prompt (0 chat - 1 summarization); drives n-gram acceptance")
    option("prompt-tokens", _positive_int, defaults.prompt_tokens, "mean prompt length of synthetic requests")
    option("max-tokens", _positive_int, defaults.max_tokens, "max_tokens of synthetic requests")
    option("time-scale", _positive_float, defaults.time_scale, "wall seconds per simulated second")
    option("gpu-memory-gib", _positive_float, defaults.gpu_memory_gib, "memory of each simulated GPU")
    option("speculation-cost-scale", _non_negative, defaults.speculation_cost_scale,
           "what speculating costs per step here (c - 1) as a share of the GPU calibration's: a world the priors misjudge")


def _model(parser: ServeArgumentParser, ns: argparse.Namespace) -> str:
    if ns.model_tag and ns.model and ns.model_tag != ns.model:
        parser.error(f"the positional model {ns.model_tag!r} and --model {ns.model!r} disagree")
    model = ns.model_tag or ns.model
    if not model:
        parser.error("a model is required (vllm serve MODEL ...)")
    return model


def _speculation(parser: ServeArgumentParser, ns: argparse.Namespace) -> Speculation | None:
    shortcuts = {key: value for key, value in (("method", ns.spec_method), ("model", ns.spec_model), ("num_speculative_tokens", ns.spec_tokens)) if value is not None}
    if shortcuts and ns.speculative_config is not None:
        parser.error("--spec-method/--spec-model/--spec-tokens cannot be combined with --speculative-config")
    try:
        if ns.speculative_config is not None:
            return speculative.parse(ns.speculative_config, ns.tensor_parallel_size)
        if shortcuts:
            return speculative.from_dict(shortcuts, ns.tensor_parallel_size)
    except speculative.SpeculativeConfigError as error:
        parser.error(f"argument --speculative-config: {error}")
    return None


def _normalize(arg: str) -> str:
    """vLLM accepts --max_model_len for --max-model-len."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return name.replace("_", "-") + sep + value


def _human_int(text: str) -> int | None:
    """vLLM's --max-model-len: 32k is 32000, 32K is 32768; auto or -1 leaves it to the model."""
    if text in ("auto", "-1"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgtKMGT]?)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid length {text!r} (use e.g. 8192, 32k or 32K)")
    number, suffix = match.groups()
    if not suffix:
        if "." in number:
            raise argparse.ArgumentTypeError(f"invalid length {text!r}")
        return _positive_int(number)
    power = "kmgt".index(suffix.lower()) + 1
    if suffix.isupper():
        if "." in number:
            raise argparse.ArgumentTypeError(f"binary suffix {suffix} needs a whole number, got {text!r}")
        return int(number) * 1024**power
    return int(round(float(number) * 1000**power))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _unit(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _optional_fraction(text: str | None) -> float | None:
    return None if text in (None, "", "none") else _unit(text)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, got {value}")
    return value

