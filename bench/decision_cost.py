"""Benchmark: what one evaluation of one serving costs in the decision core, fitting included, at fleet size.

N servings, each with a realistic status (verdicts learned in several batch-size buckets) and a window measured
against its baseline at a batch size of its own, judged by judgment.evaluate as the health loop does, a few cycles.
Side by side in one run: the same fleet with the fitted step cost in its verdicts (costScale, this release) and
without it (the correction of the prior, as statuses written before it read), so the ratio is fitting's own cost.
Target (issue 25): under 1 ms per serving at 5,000 servings. Results: bench/results/decision_cost.json.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from typing import Any

from harness import RESULTS, commit_of, import_from_repository, loadavg, write_json, ROOT

import_from_repository()

from specserve import api  # noqa: E402
from specserve.decision import judgment  # noqa: E402
from specserve.decision.terms import Observation  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
SPEC = {
    "target": {"model": "neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8", "quantization": "fp8"},
    "gpu": {"count": 2, "product": "H100-80GB"},
    "speculation": {"method": "draft_model", "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 2},
                    "numSpeculativeTokens": 4, "disableAboveBatchSize": 32},
}


def fleet(n: int, fitted: bool, rng: random.Random) -> list[tuple[dict[str, Any], Observation]]:
    """Bodies with four learned buckets each, and this cycle's window for each."""
    out = []
    for i in range(n):
        buckets = []
        for lo, hi in ((1, 1), (2, 3), (4, 7), (8, 15)):
            bucket = {"lo": lo, "hi": hi, "k": 4, "speedup": round(rng.uniform(0.8, 1.6), 3), "correction": round(rng.uniform(0.8, 1.2), 3),
                      "time": "2026-12-08T00:00:00Z", "windows": 3.0}
            if fitted:
                bucket["costScale"] = round(rng.uniform(0.7, 1.3), 3)
            buckets.append(bucket)
        body = {"metadata": {"name": f"s{i:05d}", "namespace": "bench", "generation": 1},
                "status": {"health": {"buckets": buckets, "lastEvaluationTime": "2026-12-08T00:00:00Z"}}}
        a = rng.uniform(0.5, 0.95)
        batch = rng.choice(BATCHES) * rng.uniform(0.9, 1.1)
        baseline = 0.02 * (1 + batch / 64)
        observation = Observation(
            acceptance_rate=a, draft_tokens=40_000, per_position_acceptance=tuple(a ** (j + 1) for j in range(4)), batch_size=batch,
            baseline_batch_size=batch, p50_tpot=baseline / rng.uniform(0.7, 1.6), baseline_p50_tpot=baseline, request_rate=5.0,
        )
        out.append((body, observation))
    return out


def cycle_seconds(spec: api.SpeculativeServingSpec, servings: list[tuple[dict[str, Any], Observation]], now: float) -> float:
    started = time.perf_counter()
    for body, observation in servings:
        judgment.evaluate(body, spec, observation, now)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servings", type=int, default=5000)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "decision_cost.json"))
    args = parser.parse_args()
    spec = api.SpeculativeServingSpec.model_validate(SPEC)
    rows: dict[str, list[float]] = {"fitted": [], "correction": []}
    fleets = {name: fleet(args.servings, name == "fitted", random.Random(7)) for name in rows}
    now = 1_765_152_000.0
    for cycle in range(args.cycles):
        for name in sorted(rows, key=lambda n: (n == "fitted") ^ (cycle % 2 == 0)):  # alternate which goes first
            rows[name].append(cycle_seconds(spec, fleets[name], now + 30 * cycle))
    per_serving = {name: statistics.median(times) / args.servings * 1000 for name, times in rows.items()}
    sha, dirty = commit_of(ROOT)
    result = {
        "servings": args.servings, "cycles": args.cycles, "commit": sha + ("+dirty" if dirty else ""), "python": platform.python_version(),
        "loadavg": loadavg(), "cycle_seconds": {n: [round(t, 3) for t in ts] for n, ts in rows.items()},
        "ms_per_serving": {n: round(v, 4) for n, v in per_serving.items()},
        "fitted_over_correction": round(per_serving["fitted"] / per_serving["correction"], 3),
        "target_ms_per_serving": 1.0, "meets_target": per_serving["fitted"] < 1.0,
    }
    write_json(__import__("pathlib").Path(args.out), result)
    print(f"{args.servings} servings: fitted {per_serving['fitted']:.3f} ms/serving, correction {per_serving['correction']:.3f} ms/serving "
          f"(ratio {result['fitted_over_correction']:.2f}); target < 1 ms: {'met' if result['meets_target'] else 'MISSED'}")


if __name__ == "__main__":
    main()
