"""What a model reference tells the simulator: parameter count from its name, precision from --quantization or the name.

Heuristics, not facts: a name without a size (DeepSeek-V3) counts as an 8B model.
"""

from __future__ import annotations

import re

DEFAULT_PARAMS_B = 8.0
GIB = 1024**3

INT4_METHODS = frozenset(
    {"awq", "awq_marlin", "auto_awq", "cpu_awq", "gptq", "gptq_marlin", "auto_gptq", "modelopt_fp4", "mxfp4",
     "gpt_oss_mxfp4", "moe_wna16", "bitsandbytes", "gguf", "nvfp4_per_token", "humming"}
)
INT8_METHODS = frozenset(
    {"fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_mxfp8", "modelopt_mixed", "compressed-tensors",
     "experts_int8", "quark", "torchao", "inc", "deepseek_v4_fp8", "online", "fp8_per_tensor", "fp8_per_block",
     "fp8_per_channel", "int8_per_channel_weight_only", "mxfp8"}
)
BYTES_PER_PARAM = {"int4": 0.56, "int8": 1.0, "bf16": 2.0, "fp32": 4.0}  # int4 carries its scales


def params_billions(name: str | None, default: float = DEFAULT_PARAMS_B) -> float:
    """70 for meta-llama/Llama-3.1-70B-Instruct, 0.135 for SmolLM2-135M, the default when the name has no size."""
    if not name:
        return default
    base = name.rstrip("/").rsplit("/", 1)[-1]
    match = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)([BbMm])(?![a-zA-Z])", base)
    if not match:
        return default
    number, unit = float(match.group(1)), match.group(2).lower()
    return number if unit == "b" else number / 1000


def precision(quantization: str | None, name: str | None, dtype: str = "auto") -> str:
    """int4, int8 (FP8 or INT8) or unquantized bf16/fp32, from --quantization and the checkpoint name."""
    upper = (name or "").upper()
    eight_bit_name = re.search(r"INT8|FP8|W8A8|W8A16", upper) is not None
    if quantization in INT4_METHODS and not eight_bit_name:  # GPTQ/AWQ kernels also run 8-bit checkpoints
        return "int4"
    if quantization in INT8_METHODS or eight_bit_name:
        return "int8"
    if re.search(r"AWQ|GPTQ|INT4|W4A16|NVFP4|MXFP4|GGUF", upper):
        return "int4"
    return "fp32" if dtype in ("float", "float32") else "bf16"


def weight_bytes(params_b: float, precision_name: str) -> float:
    return params_b * 1e9 * BYTES_PER_PARAM[precision_name]


def kv_bytes_per_token(params_b: float, kv_cache_dtype: str = "auto") -> float:
    """About 128 KB for an 8B GQA model and 330 KB for 70B in 16 bits; half with an 8-bit KV cache."""
    full = 100e3 + 3.3e3 * params_b
    return full / 2 if kv_cache_dtype.startswith(("fp8", "int8")) else full
