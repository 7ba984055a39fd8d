"""Pure parsing for the GPU sweeps: vLLM's /metrics text, a load point's counter deltas, the facts a
server log states (KV-cache capacity, CUDA-graph mode, model runner), and the argv rewrite that turns
the operator's rendered arguments into what the bench serves. No I/O, standard library only: the device
runs it beside bench.py, and the tests import it by path."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

SPEC_FLAG = "--speculative-config"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {name: value summed over labels}; per-position accepted counts kept apart as
    name[position]; the prometheus-client `_created` series dropped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{")[0]
        if name.endswith("_created"):
            continue
        if "per_pos" in name and 'position="' in name_labels:
            name += "[" + name_labels.split('position="')[1].split('"')[0] + "]"
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            pass
    return out


def pct(xs: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile (q in [0, 1]) of an unsorted sample; None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def point_stats(before: dict[str, float], after: dict[str, float], window_s: float,
                requests: Iterable[tuple[float, float | None, float | None, int]]) -> dict[str, Any]:
    """One load point from two /metrics scrapes `window_s` apart and the client's finished requests
    (start, first chunk, last chunk, output tokens; times in seconds, only requests whose last chunk fell
    inside the window). Server side: output tokens/s, step time, spec-decode counters; client side: TPOT
    (last - first chunk over tokens - 1) and TTFT."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    done = [r for r in requests if r[1] is not None and r[2] is not None and r[3] > 1]
    tpot = [(r[2] - r[1]) / (r[3] - 1) for r in done]  # type: ignore[operator]
    ttft = [r[1] - r[0] for r in done]  # type: ignore[operator]
    gen = d.get("vllm:generation_tokens_total", 0.0)
    steps = d.get("vllm:iteration_tokens_total_count", 0.0)
    drafted = d.get("vllm:spec_decode_num_draft_tokens_total", 0.0)
    accepted = d.get("vllm:spec_decode_num_accepted_tokens_total", 0.0)
    drafts = d.get("vllm:spec_decode_num_drafts_total", 0.0)
    req_steps = gen - accepted  # every request-step yields exactly one token that was not a draft
    return {
        "window_s": round(window_s, 2),
        "out_tok_per_s": round(gen / window_s, 1) if window_s > 0 else None,
        "requests_done": len(done),
        "tpot_mean_ms": _r(1e3 * sum(tpot) / len(tpot), 3) if tpot else None,
        "tpot_p50_ms": _r(1e3 * pct(tpot, 0.5), 3) if tpot else None,  # type: ignore[operator]
        "tpot_p99_ms": _r(1e3 * pct(tpot, 0.99), 3) if tpot else None,  # type: ignore[operator]
        "ttft_mean_ms": _r(1e3 * sum(ttft) / len(ttft), 1) if ttft else None,
        "ttft_p50_ms": _r(1e3 * pct(ttft, 0.5), 1) if ttft else None,  # type: ignore[operator]
        "ttft_p99_ms": _r(1e3 * pct(ttft, 0.99), 1) if ttft else None,  # type: ignore[operator]
        "engine_steps": steps,
        "step_ms_server": _r(1e3 * window_s / steps, 3) if steps else None,
        "gen_tokens": gen,
        "prompt_tokens": d.get("vllm:prompt_tokens_total", 0.0),
        "drafts": drafts,
        "draft_tokens": drafted,
        "accepted_tokens": accepted,
        "acceptance": _r(accepted / drafted, 4) if drafted else None,
        "mean_accept_len": _r(1 + accepted / drafts, 4) if drafts else None,
        # k in force: drafted tokens per request-step (all steps), per drafting request-step, and how
        # many request-steps drafted at all (a schedule's k=0 range shows as 0 here)
        "k_eff": _r(drafted / req_steps, 3) if req_steps > 0 else None,
        "k_per_draft": _r(drafted / drafts, 3) if drafts else 0.0,
        "drafting_share": _r(drafts / req_steps, 3) if req_steps > 0 else None,
        "decode_reqs_per_step": _r(req_steps / steps, 2) if steps else None,
        "per_pos_accepted": {k.split("[")[1][:-1]: v for k, v in d.items() if "per_pos" in k and "[" in k},
    }


# ------------------------------------------------------------------ server log

_KV = re.compile(r"GPU KV cache size: ([\d,]+) tokens")
_CONC = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_CFG_MODE = re.compile(r"'cudagraph_mode': <CUDAGraphMode\.(\w+)")
_OVERRIDE = re.compile(r"Overriding cudagraph_mode from (\w+) to (\w+)")
_CAPTURE = re.compile(r"Capturing CUDA graphs \(([\w -]+), (\w+)\)")
_GRAPH_DONE = re.compile(r"Graph capturing finished in (\d+) secs, took ([\d.]+) GiB")
_V1_FALLBACK = re.compile(r"Model Runner V2 does not yet support ([^;]+); using the V1 model runner")
_VERSION = re.compile(r"LLM engine \(v([\w.+-]+)\)")
_KV_GIB = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
_LOAD = re.compile(r"Model loading took ([\d.]+) GiB")


def log_facts(text: str) -> dict[str, Any]:
    """What a `vllm serve` log says about the engine it built: KV-cache capacity in tokens and GiB, the
    concurrency that fits at max-model-len, the CUDA-graph mode in its config and the (phase, mode) pairs
    it captured, an override of the mode (a schedule's switch to PIECEWISE), the model runner, vLLM's
    version. Missing facts are None / empty."""
    text = text.replace("\r", "\n")
    kv = _KV.search(text)
    conc = _CONC.search(text)
    modes = _CFG_MODE.findall(text)
    override = _OVERRIDE.search(text)
    captured = sorted({f"{phase}:{mode}" for phase, mode in _CAPTURE.findall(text)})
    done = _GRAPH_DONE.search(text)
    v1 = _V1_FALLBACK.search(text)
    version = _VERSION.search(text)
    kv_gib = _KV_GIB.search(text)
    load = _LOAD.search(text)
    captured_modes = sorted({c.split(":")[1] for c in captured})
    return {
        "vllm_version": version.group(1) if version else None,
        "kv_cache_tokens": int(kv.group(1).replace(",", "")) if kv else None,
        "kv_cache_gib": float(kv_gib.group(1)) if kv_gib else None,
        "max_concurrency": float(conc.group(2)) if conc else None,
        "max_concurrency_at_tokens": int(conc.group(1).replace(",", "")) if conc else None,
        "cudagraph_mode": modes[-1] if modes else None,
        "cudagraph_override": [override.group(1), override.group(2)] if override else None,
        "cudagraph_captured": captured,
        "cudagraph_captured_modes": captured_modes,
        "graph_capture_s": int(done.group(1)) if done else None,
        "graph_capture_gib": float(done.group(2)) if done else None,
        "model_load_gib": float(load.group(1)) if load else None,
        "model_runner": "V1" if v1 else ("V2" if "Model Runner V2" in text or "model_runner_v2" in text.lower() else None),
        "v1_reason": v1.group(1).strip() if v1 else None,
    }


# ------------------------------------------------------------------ argv

def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of `--flag value` or `--flag=value` in an argv; None when absent."""
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def speculative_config(argv: Sequence[str]) -> dict[str, Any] | None:
    raw = flag_value(argv, SPEC_FLAG)
    return None if raw is None else json.loads(raw)


def forced_rates(alpha: float, k: int) -> list[float]:
    """Unconditional per-position acceptance for a per-token rate alpha: [a, a^2, ..., a^k]."""
    return [round(alpha ** i, 6) for i in range(1, k + 1)]


def served_argv(rendered: Sequence[str], alpha: float | None = None, method: str | None = None,
                extra: Sequence[str] = ()) -> list[str]:
    """The operator's rendered `vllm serve` arguments with, in --speculative-config only, vLLM's synthetic
    rejection sampler forced to a per-token acceptance alpha (and optionally the method replaced); `extra`
    flags appended. Everything else is kept as rendered, in order."""
    out = list(rendered)
    spec = speculative_config(out)
    if spec is not None:
        if method:
            spec["method"] = method
        if alpha is not None:
            spec["rejection_sample_method"] = "synthetic"
            spec["synthetic_acceptance_rates"] = forced_rates(alpha, int(spec["num_speculative_tokens"]))
        i = out.index(SPEC_FLAG) if SPEC_FLAG in out else None
        if i is None:  # --speculative-config=JSON form
            j = next(n for n, a in enumerate(out) if a.startswith(SPEC_FLAG + "="))
            out[j] = SPEC_FLAG + "=" + json.dumps(spec, separators=(",", ":"), sort_keys=True)
        else:
            out[i + 1] = json.dumps(spec, separators=(",", ":"), sort_keys=True)
    return out + list(extra)


def k_at(schedule: Sequence[Sequence[int]] | None, k: int, batch: int) -> int:
    """The k vLLM 0.26 uses at a batch size under num_speculative_tokens_per_batch_size (ranges sorted,
    gaps and the tail carry the previous range's k, capped at k); the fixed k without a schedule."""
    if not schedule:
        return k
    last = None
    for lo, hi, kk in sorted((int(a), int(b), int(c)) for a, b, c in schedule):
        if batch < lo:
            break
        last = kk
        if batch <= hi:
            return min(k, kk)
    return min(k, last if last is not None else 0)
