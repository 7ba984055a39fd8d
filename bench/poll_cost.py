"""Benchmark (b): poll-cycle cost at 10, 100 and 1,000 SpeculativeServings against a real Prometheus.

Per size: queries per cycle, poll wall time, evaluation time for every serving, and the RSS of an operator-like
process (specserve.controller imported, N serving bodies held) measured beside an idle one in the same run.
With --recorded, Prometheus also evaluates the chart's recording rules and the poll reads them (300 s window),
measured beside the raw poll in the same run.
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
RULES = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"


def measure(prometheus_url: str, servings: int, cycles: int, window: int = WINDOW, recorded: bool = False) -> dict:
    """Runs in a fresh process so its RSS is its own."""
    import specserve.controller  # noqa: F401  (what the operator process holds)
    from specserve import api, health, metrics

    spec = api.SpeculativeServingSpec.model_validate({"target": {"model": "o/m"}, "speculation": {"method": "ngram"}, "healthPolicy": {"windowSeconds": window}})
    bodies = [{"metadata": {"name": f"s{i:04d}", "namespace": "bench", "generation": 1}, "status": {}} for i in range(servings)]
    query = metrics.prometheus_query(prometheus_url, timeout_seconds=60)
    polls, evaluations, found = [], [], 0
    for _ in range(cycles):
        poll = metrics.poll(query, {window}, recorded=recorded) if servings else metrics.Poll({}, 0, 0.0)
        polls.append(poll)
        started = time.perf_counter()
        outcomes = [health.evaluate(body, spec, poll, time.time()) for body in bodies]
        evaluations.append(time.perf_counter() - started)
        found = sum(1 for o in outcomes if o.decision.action != "hold")
    return {
        "servings": servings,
        "window_seconds": window,
        "recorded": polls[-1].recorded,
        "queries_per_cycle": polls[-1].queries,
        "poll_seconds_median": round(statistics.median(p.seconds for p in polls), 4),
        "evaluate_seconds_median": round(statistics.median(evaluations), 4),
        "servings_with_data": found,
        "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run(sizes: list[int], cycles: int, recorded: bool = False) -> list[dict]:
    import yaml

    from specserve import metrics
    from tests.support.prometheus import Prometheus, Target, free_port

    groups = yaml.safe_load(RULES.read_text())["spec"]["groups"] if recorded else None

    results = []
    for servings in sizes:
        port = free_port()
        exporter = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fleet_exporter.py"), "--servings", str(servings), "--port", str(port)])
        with tempfile.TemporaryDirectory() as tmp:
            prometheus = Prometheus(Path(tmp), [Target(f"127.0.0.1:{port}", {})], scrape_interval="5s", rule_groups=groups).start()
            try:
                prometheus.wait_for('count(vllm:spec_decode_num_draft_tokens_total{serving!=""})', timeout=120)
                if recorded:
                    prometheus.wait_for(metrics.RECORDING_PROBE, timeout=300)
                time.sleep(12)  # at least three scrapes inside the rate window
                idle = json.loads(subprocess.check_output([sys.executable, __file__, "--child", prometheus.url, "0", str(cycles), str(WINDOW), "0"]))
                variants = [(WINDOW, False)] + ([(metrics.RECORDED_WINDOW_SECONDS, False), (metrics.RECORDED_WINDOW_SECONDS, True)] if recorded else [])
                for window, use_rules in variants:
                    busy = json.loads(subprocess.check_output([sys.executable, __file__, "--child", prometheus.url, str(servings), str(cycles), str(window), str(int(use_rules))]))
                    busy["idle_operator_rss_mib"] = idle["rss_mib"]
                    if recorded:
                        busy["rule_evaluation_seconds"] = _rule_seconds(prometheus)
                    results.append(busy)
                    print(json.dumps(busy), flush=True)
            finally:
                prometheus.stop()
                exporter.terminate()
                exporter.wait()
    return results


def _rule_seconds(prometheus) -> float:
    """How long Prometheus took for its last evaluation of the recording rules: the cost moved off the poll."""
    import urllib.request

    with urllib.request.urlopen(f"{prometheus.url}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    return round(sum(g.get("evaluationTime", 0.0) for g in groups if g["name"].endswith("recording")), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--recorded", action="store_true", help="also load the chart's recording rules and poll them (300 s window)")
    parser.add_argument("--child", nargs=5, metavar=("URL", "SERVINGS", "CYCLES", "WINDOW", "RECORDED"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "poll_cost.json")
    args = parser.parse_args()
    if args.child:
        url, servings, cycles, window, recorded = args.child
        print(json.dumps(measure(url, int(servings), int(cycles), int(window), recorded == "1")))
        return
    results = run([int(s) for s in args.sizes.split(",")], args.cycles, args.recorded)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"window_seconds": WINDOW, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
