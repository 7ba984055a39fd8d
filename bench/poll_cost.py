"""Benchmark (b): poll-cycle cost at 10, 100 and 1,000 SpeculativeServings against a real Prometheus.

Per size: queries per cycle, poll wall time, evaluation time for every serving, and the RSS of an operator-like
process (specserve.controller imported, N serving bodies held) measured beside an idle one in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WINDOW = 60


def measure(prometheus_url: str, servings: int, cycles: int) -> dict:
    """Runs in a fresh process so its RSS is its own."""
    import specserve.controller  # noqa: F401  (what the operator process holds)
    from specserve import api, health, metrics

    spec = api.SpeculativeServingSpec.model_validate({"target": {"model": "o/m"}, "speculation": {"method": "ngram"}, "healthPolicy": {"windowSeconds": WINDOW}})
    bodies = [{"metadata": {"name": f"s{i:04d}", "namespace": "bench", "generation": 1}, "status": {}} for i in range(servings)]
    query = metrics.prometheus_query(prometheus_url, timeout_seconds=60)
    polls, evaluations, found = [], [], 0
    for _ in range(cycles):
        poll = metrics.poll(query, {WINDOW}) if servings else metrics.Poll({}, 0, 0.0)
        polls.append(poll)
        started = time.perf_counter()
        outcomes = [health.evaluate(body, spec, poll, time.time()) for body in bodies]
        evaluations.append(time.perf_counter() - started)
        found = sum(1 for o in outcomes if o.decision.action != "hold")
    return {
        "servings": servings,
        "queries_per_cycle": polls[-1].queries,
        "poll_seconds_median": round(statistics.median(p.seconds for p in polls), 4),
        "evaluate_seconds_median": round(statistics.median(evaluations), 4),
        "servings_with_data": found,
        "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run(sizes: list[int], cycles: int) -> list[dict]:
    from tests.support.prometheus import Prometheus, Target, free_port

    results = []
    for servings in sizes:
        port = free_port()
        exporter = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fleet_exporter.py"), "--servings", str(servings), "--port", str(port)])
        with tempfile.TemporaryDirectory() as tmp:
            prometheus = Prometheus(Path(tmp), [Target(f"127.0.0.1:{port}", {})], scrape_interval="5s").start()
            try:
                prometheus.wait_for('count(vllm:spec_decode_num_draft_tokens_total{serving!=""})', timeout=120)
                time.sleep(12)  # at least three scrapes inside the rate window
                idle = json.loads(subprocess.check_output([sys.executable, __file__, "--child", prometheus.url, "0", str(cycles)]))
                busy = json.loads(subprocess.check_output([sys.executable, __file__, "--child", prometheus.url, str(servings), str(cycles)]))
                busy["idle_operator_rss_mib"] = idle["rss_mib"]
                results.append(busy)
                print(json.dumps(busy), flush=True)
            finally:
                prometheus.stop()
                exporter.terminate()
                exporter.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--child", nargs=3, metavar=("URL", "SERVINGS", "CYCLES"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "poll_cost.json")
    args = parser.parse_args()
    if args.child:
        url, servings, cycles = args.child
        print(json.dumps(measure(url, int(servings), int(cycles))))
        return
    results = run([int(s) for s in args.sizes.split(",")], args.cycles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"window_seconds": WINDOW, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
