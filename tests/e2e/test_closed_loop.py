"""The closed loop in two phases on the real API server, the real Prometheus and the real operator process; only the GPU
is simulated: every pod of the serving runs as a local simulator process (tests/support/pod_runner.py), so a Deployment
rewrite is a rollout and a new process with the new args.

One SpeculativeServing - Llama-3.1-70B on 2 simulated H200s (141 GiB each, --sim-gpu-memory-gib), a 1B draft model at
k=4, one baseline replica - at temperature 0 (acceptance 0.8). Why this shape: the operator reads TPOT and TTFT from
vLLM's histograms, whose TPOT buckets are 10/25/50/75 ms, so only a difference across a bucket edge is measurable. On 2
GPUs the baseline's TPOT is ~26 ms and the draft model's ~20 ms at 0.5 QPS (offline, 120 simulated seconds: medians
26.2 / 20.1 ms, histogram_quantile 37.5 / 17.6 ms, P99 TTFT ratio 1.07 by the histogram, batch ~2); at 6 QPS the draft
model is 0.66x (P50 TPOT 52.9 against 34.8 ms, batch 58 against 38, P99 TTFT 3x). (On 4 GPUs both low-load medians sit
in the 10-25 ms bucket, read as 17.5 ms each, and the P99 TTFT ratio read through the 0.1-0.25 s bucket crossed 2.0, so
the operator turned speculation off at low load.) So: low load, speculation stays; saturation, the operator limits
speculation at the saturated batch size (k=0 there, or off); load falls, speculation is back at low batch sizes (a
schedule keeps k>0 there; off comes back after probation).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from specserve.cluster import kube as k
from specserve.decision import schedules
from specserve.rendering import manifests
from tests.e2e.cluster import create, events_of, eventually, status_of
from tests.e2e.conftest import delete_namespace, delete_servings_then_namespace, new_namespace
from tests.e2e.operator_process import running_operator
from tests.helpers import serving
from tests.support.fast_policy import EXPECTED_REACTION, POLICY
from tests.support.pod_runner import SIMULATOR_IMAGE, PodRunner, Process, get_json
from tests.support.prometheus import Prometheus

NAME = "cl"
SPEC, BASE = manifests.ROLE_SPECULATIVE, manifests.ROLE_BASELINE
K = 4
TIME_SCALE = 0.25  # wall seconds per simulated second: 4x compressed (a CPU that lags slows simulated time, not latencies)
LOAD_SECONDS = 3.0  # simulated model load before a pod turns Ready (a restart costs time, as on a GPU)
LOW, SATURATED = {"qps": 0.5}, {"qps": 6.0}  # simulated requests per second
SIM_ARGS = ["--sim-time-scale", str(TIME_SCALE), "--sim-gpu-memory-gib", "141", "--sim-temperature", "0", "--sim-acceptance", "0.8", "--sim-qps", str(LOW["qps"])]
# From the load change to the enforced decision: the fast policy's bound (the window turning over, the consecutive
# breaches, an interval and a poll of slack) plus test_health_loop's 15 s for scrapes and status writes on a loaded machine.
REACTION_BOUND = EXPECTED_REACTION + 15
SETTLE_SECONDS = 6.0  # after the rollout, for the new process to fill up to the saturated batch (24 simulated seconds)
# off: a probation (doubled if one failed while the load stayed saturated), an evaluation, a rollout
RESTORE_BOUND = POLICY["maxProbationSeconds"] + 2 * POLICY["intervalSeconds"] + 20


def closed_loop_spec(runner: PodRunner) -> dict[str, Any]:
    return {
        "target": {"model": "meta-llama/Llama-3.1-70B-Instruct"},
        "gpu": {"count": 2, "product": "H200-141GB", "resourceName": ""},
        "speculation": {"method": "draft_model", "numSpeculativeTokens": K, "draft": {"model": "meta-llama/Llama-3.2-1B-Instruct"}},
        "baseline": {"replicas": 1},
        "engine": {"image": SIMULATOR_IMAGE, "maxModelLen": 8192, "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}, **runner.placement()},
        "healthPolicy": POLICY,
    }


@dataclass
class Loop:
    kube: k.Kube
    namespace: str
    runner: PodRunner
    prometheus: Prometheus

    def status(self) -> dict[str, Any]:
        return status_of(self.kube, self.namespace, NAME)

    def decisions(self) -> list[dict[str, Any]]:
        return self.status().get("decisions") or []

    def traffic(self, **changes: Any) -> None:
        for role in (SPEC, BASE):
            self.runner.set_traffic(self.namespace, NAME, role, **changes)

    def speculative(self) -> Process:
        return self.runner.wait_for(self.namespace, NAME, SPEC, timeout=60)

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [e for e in events_of(self.kube, self.namespace, NAME) if e["reason"] == reason]


@contextlib.contextmanager
def closed_loop(kube: k.Kube, tmp_path: Path) -> Iterator[Loop]:
    namespace = new_namespace(kube, "specserve-closed-loop")
    try:
        with PodRunner(tmp_path / "runner", sim_args={SPEC: SIM_ARGS, BASE: SIM_ARGS}, load_seconds=LOAD_SECONDS) as runner:
            prometheus = Prometheus(tmp_path, [], file_sd=runner.targets_file).start()
            args = ["--namespace", namespace, "--prometheus-url", prometheus.url, "--poll-interval", "1"]
            try:
                with running_operator("closed-loop", args):
                    try:
                        create(kube, namespace, serving(name=NAME, **closed_loop_spec(runner)))
                        yield Loop(kube, namespace, runner, prometheus)
                    finally:
                        delete_servings_then_namespace(kube, namespace)
                # the runner removes the namespace's pods as a kubelet would: wait for them before it goes
                eventually(lambda: not kube._call("GET", f"/api/v1/namespaces/{namespace}/pods")["items"], timeout=60)
                crashed = [e for e in runner.errors if "exited with" in e]
                assert not crashed, crashed
            finally:
                prometheus.stop()
    finally:
        delete_namespace(kube, namespace)


def config_of(process: Process) -> dict[str, Any] | None:
    if "--speculative-config" not in process.args:
        return None
    return json.loads(process.args[process.args.index("--speculative-config") + 1])


def k_at(process: Process, batch: float) -> int:
    config = config_of(process)
    if config is None:
        return 0
    return schedules.k_for_batch(config.get("num_speculative_tokens_per_batch_size") or [[1, 100000, config["num_speculative_tokens"]]], max(1, round(batch)), config["num_speculative_tokens"])


def drafted(process: Process) -> int:
    return int(get_json(process.url, "/sim/stats")["draft_tokens"])


def limiting(decision: dict[str, Any]) -> bool:
    """Speculation limited: off, a schedule, or a schedule on trial (one replica: it runs in place of the incumbent)."""
    return decision["action"] in ("set_schedule", "disable_speculation", "start_trial")


@pytest.mark.timeout(300)
def test_speculation_is_limited_when_load_saturates_and_restored_when_it_falls(kube, crd_installed, tmp_path):
    started = time.monotonic()
    with closed_loop(kube, tmp_path) as loop:
        # Phase 1, low load: both roles answer, Prometheus sees them, the operator measures and keeps k=4.
        first = loop.speculative()
        baseline = loop.runner.wait_for(loop.namespace, NAME, BASE, timeout=60)
        assert k_at(first, 1) == K and config_of(baseline) is None
        measured = eventually(lambda: (o := loop.status().get("observation") or {}).get("baselineP50TpotSeconds") and o.get("p50TpotSeconds") and o, timeout=90)
        time.sleep(POLICY["windowSeconds"] + POLICY["intervalSeconds"])  # a full window of low load, judged
        low = loop.status()
        print(f"\nlow load after {time.monotonic() - started:.0f}s: observation {json.dumps(low.get('observation'))}\n  recommendation {low.get('recommendation')}")
        assert low["phase"] == "Ready" and low["speculation"] == "On"
        assert measured["p50TpotSeconds"] > 0.010 and measured["baselineP50TpotSeconds"] > 0.010, measured  # above the first TPOT bucket
        early = [d for d in loop.decisions() if d["action"] not in ("keep", "hold")]
        assert not early, f"the operator changed a serving whose speculation pays at low load: {early}"

        # Phase 2, saturation: the operator limits speculation at the saturated batch size.
        loop.traffic(**SATURATED)
        saturated_at = time.monotonic()
        limited = eventually(lambda: next((d for d in loop.decisions() if limiting(d) and d["enforced"]), None), timeout=REACTION_BOUND + 30)
        reaction = time.monotonic() - saturated_at
        status = loop.status()
        batch = status["observation"]["batchSize"]
        print(f"saturation: {limited['action']} after {reaction:.1f}s (bound {REACTION_BOUND}s), batch {batch:.1f}: {limited['reason']}")
        assert reaction <= REACTION_BOUND, f"took {reaction:.1f}s, bound {REACTION_BOUND}s"
        if limited["action"] in ("set_schedule", "start_trial"):
            rolled = loop.runner.wait_for(loop.namespace, NAME, SPEC, lambda p: p.pod != first.pod and k_at(p, batch) == 0, timeout=60)
            ranges = config_of(rolled)["num_speculative_tokens_per_batch_size"]
            assert ranges == status["schedule"], (ranges, status["schedule"])
            assert k_at(rolled, 1) > 0, f"the schedule {ranges} gave up speculation at batch 1 too"
        else:
            rolled = loop.runner.wait_for(loop.namespace, NAME, SPEC, lambda p: config_of(p) is None, timeout=60)
            assert status["speculation"] == "Off"
        print(f"rollout: {rolled.pod} Ready {rolled.ready - saturated_at:.1f}s after saturation, args {rolled.args[-2:]}")
        assert k_at(rolled, batch) == 0, f"k at the batch size {batch:.1f} the decision saw"
        if limited["action"] != "disable_speculation":  # off lasts a probation (20 s here): the process may be gone by then
            time.sleep(SETTLE_SECONDS)  # the new process fills up to the saturated batch
            saturated = get_json(rolled.url, "/sim/stats")
            assert saturated["running"] > 3 and k_at(rolled, saturated["running"]) == 0, saturated
            print(f"saturated: the new process runs {saturated['running']} requests ({saturated['waiting']} waiting) at k=0")
        event = {"set_schedule": "ScheduleChanged", "start_trial": "TrialStarted"}.get(limited["action"], "SpeculationDisabled")
        assert eventually(lambda: loop.events(event), timeout=10)[-1]["message"] == limited["reason"]

        # Phase 3, load falls: speculation is back at low batch sizes.
        loop.traffic(**LOW)
        fell_at = time.monotonic()
        if limited["action"] in ("set_schedule", "start_trial"):
            now = loop.speculative()
            assert now.pod == rolled.pod and k_at(now, 2) > 0
        else:
            now = loop.runner.wait_for(loop.namespace, NAME, SPEC, lambda p: k_at(p, 2) > 0, timeout=RESTORE_BOUND)
            assert any(d["action"] == "enable_speculation" for d in loop.decisions()), loop.decisions()
        before = drafted(now)
        time.sleep(5)
        stats = get_json(now.url, "/sim/stats")
        drafted_now = int(stats["draft_tokens"]) - before
        print(f"load fell: {drafted_now} draft tokens in 5s on {now.pod} ({time.monotonic() - fell_at:.1f}s after the fall), running {stats.get('running')}")
        assert drafted_now > 0, stats
        # ... and the operator sees it: a window of low load with drafts, judged without taking speculation away again.
        restored = eventually(lambda: (o := loop.status().get("observation") or {}).get("batchSize") is not None and o["batchSize"] < 4 and (o.get("draftTokens") or 0) > 0 and o,
                              timeout=POLICY["windowSeconds"] + 2 * POLICY["intervalSeconds"])
        print(f"operator sees the fall {time.monotonic() - fell_at:.1f}s after it: batch {restored['batchSize']:.1f}, {restored['draftTokens']:.0f} draft tokens, acceptance {restored['acceptanceRate']:.3f}")
        time.sleep(POLICY["intervalSeconds"] * POLICY["consecutiveBreaches"])
        assert k_at(loop.speculative(), restored["batchSize"]) > 0 and loop.status()["speculation"] == "On"
        rewrites = [d for d in loop.decisions() if d["action"] not in ("keep", "hold")]
        print(f"rewrites: {[(d['action'], d['time']) for d in rewrites]}; {len(loop.runner.history)} processes; total {time.monotonic() - started:.0f}s")
