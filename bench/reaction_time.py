"""Benchmark (a): time from acceptance breaking to the Deployment being rewritten, against its floor.

Real simulator processes and the real Prometheus (1 s scrape interval), the real operator against kmock's
emulator, 1 s poll interval; acceptance is dropped from 0.8 to 0.25 through the simulator's control endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, import_from_repository  # noqa: E402

import_from_repository()

import kmock  # noqa: E402

from specserve.settings import OperatorSettings  # noqa: E402
from tests.helpers import serving  # noqa: E402
from tests.integration import test_health_loop as scenario  # noqa: E402
from tests.integration.conftest import NAMESPACE, declare_resources, running_operator, write_kubeconfig  # noqa: E402
from tests.integration.emulator import SpecServeEmulator  # noqa: E402
from tests.integration.simulator_process import running_simulator  # noqa: E402
from tests.support.prometheus import Prometheus, Target  # noqa: E402

SCRAPE_SECONDS, POLL_SECONDS, BEFORE, AFTER = 1.0, 1.0, 0.8, 0.25
K = 4  # num_speculative_tokens of the scenario's spec (the default)


def floor_seconds(policy: dict, k: int, threshold: float = 0.5) -> float:
    """Scrape interval + window effect + the further consecutive breaches + one poll.

    The window effect is the share f of the window that new samples need before accepted/draft over the window
    crosses the threshold. Acceptance is a ratio of draft-token counts, so samples weigh by draft-token rate,
    which rises as acceptance falls: at a steady output-token rate, steps (each k draft tokens) go as 1/(1 + a*k).
    """
    before, after = 1 / (1 + BEFORE * k), 1 / (1 + AFTER * k)
    share = before * (BEFORE - threshold) / (before * (BEFORE - threshold) + after * (threshold - AFTER))
    return SCRAPE_SECONDS + share * policy["windowSeconds"] + (policy["consecutiveBreaches"] - 1) * policy["intervalSeconds"] + POLL_SECONDS


async def trial(policy: dict, kubeconfig_dir: Path) -> float:
    spec = {**scenario.SPEC, "healthPolicy": policy}
    scenario.SPEC = spec  # rendered_args reads it
    args = scenario.without_bind_flags(scenario.rendered_args("speculative"))
    async with SpecServeEmulator() as kube, kmock.Server(kube):
        declare_resources(kube)
        _point_kubeconfig_at(kube, kubeconfig_dir)
        with running_simulator(*args, "--sim-qps", "20", "--sim-acceptance", str(BEFORE)) as url, tempfile.TemporaryDirectory() as tmp:
            prometheus = Prometheus(Path(tmp), [Target(url.removeprefix("http://"), {"namespace": NAMESPACE, "serving": scenario.NAME, "role": "speculative"})], scrape_interval=f"{SCRAPE_SECONDS:g}s").start()
            settings = OperatorSettings(namespaces=[NAMESPACE], prometheus_url=prometheus.url, poll_interval_seconds=POLL_SECONDS, metrics_port=0, pod_monitor_api="false")
            try:
                async with running_operator(kube, settings):
                    await kube.post(f"/apis/specserve.dev/v1alpha1/namespaces/{NAMESPACE}/speculativeservings", json=serving(name=scenario.NAME, namespace=NAMESPACE, **spec))
                    await _until(lambda: (c := scenario.condition(kube, "SpeculationHealthy")) and c["status"] == "True", 120)
                    await asyncio.sleep(policy["windowSeconds"])  # a window full of healthy samples
                    scenario.put_traffic(url, acceptance=AFTER)
                    started = time.monotonic()
                    await _until(lambda: not scenario.speculating(kube), 300)
                    return time.monotonic() - started
            finally:
                prometheus.stop()


def _point_kubeconfig_at(kube: SpecServeEmulator, directory: Path) -> None:
    import kubernetes

    path = str(write_kubeconfig(str(kube.url), directory / "kubeconfig"))
    os.environ["KUBECONFIG"] = path
    kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path  # read once at import otherwise


async def _until(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (KeyError, TypeError):
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("condition not met")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", default="30,60")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reaction_time.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for window in (int(w) for w in args.windows.split(",")):
            policy = {**scenario.POLICY, "windowSeconds": window}
            times = [asyncio.run(trial(policy, Path(tmp))) for _ in range(args.trials)]
            floor = floor_seconds(policy, K)
            row = {"window_seconds": window, "interval_seconds": policy["intervalSeconds"], "consecutive_breaches": policy["consecutiveBreaches"],
                   "floor_seconds": round(floor, 1), "measured_seconds": [round(t, 1) for t in times],
                   "median_over_floor": round(statistics.median(times) / floor, 2)}
            results.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scrape_interval_seconds": SCRAPE_SECONDS, "poll_interval_seconds": POLL_SECONDS, "acceptance": [BEFORE, AFTER], "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
