"""Benchmark: what the operator's per-serving metrics cost in memory and per scrape, at N servings.

Side by side in one process: prometheus_client's labelled children (one Counter/Gauge child per series, the way
telemetry.py kept them until round 6) against telemetry.ServingSeries (plain numbers written out at each scrape).
Each fills N servings the way the operator does (set_serving with phase, speculation and metrics availability,
an estimated speedup), measured with tracemalloc; then one scrape (generate_latest) of each is timed.

    python bench/telemetry_memory.py [--sizes 1000,5000] [--scrapes 5] [--out bench/results/telemetry_memory.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from harness import ROOT, import_from_repository  # noqa: E402

import_from_repository()

from specserve.telemetry import ACTIONS, Telemetry  # noqa: E402


class LabelledChildren:
    """The reference: the same nine series per serving as prometheus_client's labelled children."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        serving = ["namespace", "serving"]
        self.decisions = Counter("specserve_decisions_total", "decisions", [*serving, "action"], registry=self.registry)
        self.speculation = Gauge("specserve_speculation_enabled", "speculation", serving, registry=self.registry)
        self.available = Gauge("specserve_metrics_available", "available", serving, registry=self.registry)
        self.speedup = Gauge("specserve_estimated_speedup", "speedup", serving, registry=self.registry)

    def add(self, namespace: str, name: str) -> None:
        for action in ACTIONS:
            self.decisions.labels(namespace=namespace, serving=name, action=action)
        self.speculation.labels(namespace=namespace, serving=name).set(1)
        self.available.labels(namespace=namespace, serving=name).set(0)
        self.speedup.labels(namespace=namespace, serving=name).set(1.4)


class Collector:
    """What the operator runs now: Telemetry, whose per-serving series are a ServingSeries."""

    def __init__(self) -> None:
        self.telemetry = Telemetry()
        self.registry = self.telemetry.registry

    def add(self, namespace: str, name: str) -> None:
        self.telemetry.set_serving(namespace, name, phase="Ready", speculation=True, metrics_available=False)
        self.telemetry.set_estimated_speedup(namespace, name, 1.4)


def measure(make: Callable[[], Any], n: int, scrapes: int) -> dict[str, Any]:
    gc.collect()
    tracemalloc.start()
    made = make()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        made.add(f"team-{i % 50}", f"serving-{i}")
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    seconds, size = [], 0
    for _ in range(scrapes):
        started = time.perf_counter()
        size = len(generate_latest(made.registry))
        seconds.append(time.perf_counter() - started)
    return {"bytes_per_serving": round(held / n), "held_mib": round(held / 2**20, 2), "scrape_s_median": round(statistics.median(seconds), 4), "scrape_bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "telemetry_memory.json")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        raise SystemExit(f"--sizes: a comma-separated list of integers, not {args.sizes!r}") from None
    rows = []
    for n in sizes:
        children, collector = measure(LabelledChildren, n, args.scrapes), measure(Collector, n, args.scrapes)
        row = {"servings": n, "labelled_children": children, "serving_series": collector,
               "memory_ratio": round(children["held_mib"] / collector["held_mib"], 1), "scrape_ratio": round(children["scrape_s_median"] / collector["scrape_s_median"], 2)}
        print(json.dumps(row))
        rows.append(row)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "python": sys.version.split()[0], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
