"""Tables from a recorded sweep (tests/fixtures/gpu/<date>-<gpu>-vllm-<version>.json), markdown on stdout.

    python3 bench/gpu/summarize.py tests/fixtures/gpu/2026-12-08-h100-vllm-0.26.0.json

Ratios are measured side by side in one session on one GPU: tok/s ratio = config / reference (> 1 faster);
TPOT ratio written reference / config (> 1 = lower TPOT = better). Standard library only."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

BASELINE, PIECEWISE = "baseline", "baseline_pw"


def points(fx: dict, config: str, acceptance: float | None = None) -> dict[int, dict]:
    """{batch: point} of one configuration at one forced acceptance (None for the baselines)."""
    c = fx.get("configs", {}).get(config) or {}
    return {int(p["b"]): p for p in c.get("points", []) if p.get("acceptance_forced") == acceptance}


def acceptances(fx: dict, config: str) -> list[float | None]:
    seen: list[float | None] = []
    for p in (fx.get("configs", {}).get(config) or {}).get("points", []):
        if p.get("acceptance_forced") not in seen:
            seen.append(p.get("acceptance_forced"))
    return seen


def ratio(a: dict | None, ref: dict | None, key: str = "out_tok_per_s") -> float | None:
    """a over ref for throughput, ref over a for latencies (> 1 always means `a` is better)."""
    if not a or not ref or not a.get(key) or not ref.get(key):
        return None
    return a[key] / ref[key] if key == "out_tok_per_s" else ref[key] / a[key]


def threshold(schedule: Sequence[Sequence[int]] | None) -> int | None:
    """The largest batch size a schedule still speculates at, when every larger one runs k = 0."""
    if not schedule:
        return None
    rs = sorted((int(a), int(b), int(k)) for a, b, k in schedule)
    if rs[-1][2] != 0:
        return None
    on = [hi for lo, hi, k in rs if k > 0]
    return max(on) if on else 0


def fixed_twin(name: str) -> str | None:
    return name[: -len("_sched")] if name.endswith("_sched") else None


def schedule_rows(fx: dict) -> list[dict[str, Any]]:
    """Per schedule config, acceptance and batch size: its throughput against the fixed-k twin (the same
    spec without disableAboveBatchSize) and against no speculation, and which of the two it should match
    (the twin at or below the threshold, the baseline above)."""
    rows = []
    for name, c in fx.get("configs", {}).items():
        twin, cut = fixed_twin(name), threshold(c.get("schedule"))
        if twin is None or cut is None:
            continue
        base, pw = points(fx, BASELINE), points(fx, PIECEWISE)
        for acc in acceptances(fx, name):
            mine, fixed = points(fx, name, acc), points(fx, twin, acc)
            for b in sorted(mine):
                expected = fixed.get(b) if b <= cut else base.get(b)
                rows.append({
                    "config": name, "twin": twin, "acceptance": acc, "b": b, "threshold": cut,
                    "should_match": twin if b <= cut else BASELINE,
                    "k_eff": mine[b].get("k_eff"),
                    "over_twin_tok": ratio(mine[b], fixed.get(b)),
                    "over_base_tok": ratio(mine[b], base.get(b)),
                    "over_pw_tok": ratio(mine[b], pw.get(b)),
                    "over_expected_tok": ratio(mine[b], expected),
                    "over_expected_tpot": ratio(mine[b], expected, "tpot_mean_ms"),
                    "over_best_tok": (min(x for x in (ratio(mine[b], fixed.get(b)), ratio(mine[b], base.get(b))) if x is not None)
                                      if fixed.get(b) or base.get(b) else None),
                })
    return rows


def speedup_rows(fx: dict) -> list[dict[str, Any]]:
    """Every speculative configuration and acceptance against no speculation, per batch size."""
    base = points(fx, BASELINE)
    rows = []
    for name in fx.get("configs", {}):
        if name in (BASELINE, PIECEWISE):
            continue
        for acc in acceptances(fx, name):
            for b, p in sorted(points(fx, name, acc).items()):
                rows.append({"config": name, "acceptance": acc, "b": b, "tok": ratio(p, base.get(b)),
                             "tpot": ratio(p, base.get(b), "tpot_mean_ms"), "k_eff": p.get("k_eff"),
                             "vllm_acceptance": p.get("acceptance")})
    return rows


def piecewise_rows(fx: dict) -> list[dict[str, Any]]:
    base, pw = points(fx, BASELINE), points(fx, PIECEWISE)
    return [{"b": b, "tok": ratio(pw[b], base.get(b)), "tpot": ratio(pw[b], base.get(b), "tpot_mean_ms"),
             "step": ratio(pw[b], base.get(b), "step_ms_server")} for b in sorted(pw)]


def f(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def main(path: str) -> None:
    fx = json.load(open(path))
    pv = fx.get("provenance", {})
    st = fx.get("settings", {})
    print(f"# {path}\n\n{pv.get('gpu')} (driver {pv.get('driver')}), vLLM {pv.get('vllm')}, torch {pv.get('torch')}; "
          f"ladder {st.get('batch_ladder')}, warm {st.get('warm_s')} s, window {st.get('window_s')} s; "
          f"run order {fx.get('run', {}).get('order')}, completed {fx.get('run', {}).get('completed')}\n")
    print("## Servers\n\n| config | up | start s | KV tokens | max conc. @2048 | cudagraph mode | captured | override | runner |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, c in fx.get("configs", {}).items():
        s = c.get("server") or {}
        print(f"| {name} | {c.get('up')} | {c.get('startup_s')} | {f(s.get('kv_cache_tokens'), ',')} | {f(s.get('max_concurrency'))} | "
              f"{s.get('cudagraph_mode') or '-'} | {', '.join(s.get('cudagraph_captured') or []) or '-'} | "
              f"{'->'.join(s.get('cudagraph_override') or []) or '-'} | {s.get('model_runner') or '-'} |")
    print("\n## Points\n\n| config | a | b | out tok/s | TPOT mean | p50 | p99 ms | TTFT ms | step ms | running | k_eff | acceptance | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in fx.get("configs", {}):
        for acc in acceptances(fx, name):
            for b, p in sorted(points(fx, name, acc).items()):
                print(f"| {name} | {f(acc, '.1f') if acc is not None else 'off'} | {b} | {f(p.get('out_tok_per_s'), '.0f')} | "
                      f"{f(p.get('tpot_mean_ms'))} | {f(p.get('tpot_p50_ms'))} | {f(p.get('tpot_p99_ms'))} | {f(p.get('ttft_mean_ms'), '.1f')} | "
                      f"{f(p.get('step_ms_server'))} | {f(p.get('mean_running'), '.1f')} | {f(p.get('k_eff'))} | {f(p.get('acceptance'), '.3f')} | {p.get('errors')} |")
    rows = speedup_rows(fx)
    if rows:
        print("\n## Against no speculation: tok/s ratio (TPOT ratio)\n")
        bs = sorted({r["b"] for r in rows})
        print("| config | a | " + " | ".join(f"b={b}" for b in bs) + " |\n|---|---|" + "---|" * len(bs))
        keys = sorted({(r["config"], r["acceptance"]) for r in rows}, key=lambda x: (list(fx["configs"]).index(x[0]), -(x[1] or 0)))
        for cfg, acc in keys:
            cell = {r["b"]: r for r in rows if r["config"] == cfg and r["acceptance"] == acc}
            print(f"| {cfg} | {acc} | " + " | ".join(f"{f(cell[b]['tok'])} ({f(cell[b]['tpot'])})" if b in cell else "-" for b in bs) + " |")
    rows = schedule_rows(fx)
    if rows:
        print("\n## Schedules: tok/s against the fixed-k twin and against no speculation\n")
        print("| config | a | b | k_eff | should match | / twin | / baseline | / baseline PIECEWISE | / expected (TPOT) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['config']} | {r['acceptance']} | {r['b']} | {f(r['k_eff'])} | {r['should_match']} | {f(r['over_twin_tok'], '.3f')} | "
                  f"{f(r['over_base_tok'], '.3f')} | {f(r['over_pw_tok'], '.3f')} | {f(r['over_expected_tok'], '.3f')} ({f(r['over_expected_tpot'], '.3f')}) |")
    rows = piecewise_rows(fx)
    if rows:
        print("\n## PIECEWISE against the default CUDA-graph mode, no speculation\n")
        print("| b | tok/s ratio | TPOT ratio | step ratio |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['b']} | {f(r['tok'], '.3f')} | {f(r['tpot'], '.3f')} | {f(r['step'], '.3f')} |")


if __name__ == "__main__":
    main(sys.argv[1])
