"""The health loop end to end on the real API server: simulators run with the live Deployments' args, the real Prometheus.

Without a baseline, acceptance drops -> the operator process turns speculation off in the Deployment, back on after
probation; with one, a measured slowdown -> a schedule of k by batch size (or off), quoting the measurement; Observe
never changes the Deployment.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from specserve.cluster import kube as k
from specserve.decision import judgment, schedules
from specserve.rendering import manifests
from tests.e2e.cluster import condition_of, create, events_of, eventually, get, status_of
from tests.e2e.conftest import delete_namespace, delete_servings_then_namespace, new_namespace
from tests.e2e.operator_process import running_operator
from tests.helpers import serving
from tests.integration.simulator_process import request, running_simulator
from tests.support.fast_policy import EXPECTED_REACTION, POLICY
from tests.support.prometheus import Prometheus, Target

NAME = "hl"
POLL_INTERVAL_SECONDS = 1
GPU = {"count": 1, "product": "L40S"}
SPECULATIVE_CONFIG = "--speculative-config"


@dataclass
class HealthLoop:
    """One serving on the real API server, its simulators, the Prometheus scraping them and the operator judging them."""

    namespace: str
    urls: dict[str, str]  # role -> simulator base URL
    scraped_since: float  # time.monotonic() when Prometheus started scraping

    def wait_for_full_window(self) -> None:
        """Until the rate window holds nothing but scraped data, as in a steady production state."""
        time.sleep(max(0.0, self.scraped_since + POLICY["windowSeconds"] - time.monotonic()))


@contextlib.contextmanager
def running_health_loop(kube: k.Kube, tmp_path: Path, label: str, spec: dict[str, Any], sim_args: dict[str, list[str]]) -> Iterator[HealthLoop]:
    """A fresh namespace and operator; once the serving's Deployments exist, one simulator per role runs with their
    args, scraped with the labels the documented relabel rules give. Servings are deleted while the operator runs."""
    namespace = new_namespace(kube, f"specserve-{label}")
    prometheus = Prometheus(tmp_path, [])  # its port, hence the operator's --prometheus-url, is fixed before it starts
    args = ["--namespace", namespace, "--prometheus-url", prometheus.url, "--poll-interval", str(POLL_INTERVAL_SECONDS)]
    try:
        with running_operator(label, args), contextlib.ExitStack() as simulators:
            try:
                create(kube, namespace, serving(name=NAME, **spec))
                urls = {role: simulators.enter_context(running_simulator(*live_args(kube, namespace, role), *extra)) for role, extra in sim_args.items()}
                prometheus.targets = [
                    Target(url.removeprefix("http://"), {"namespace": namespace, "serving": NAME, "role": role}) for role, url in urls.items()
                ]
                prometheus.start()
                yield HealthLoop(namespace, urls, time.monotonic())
            finally:
                prometheus.stop()
                delete_servings_then_namespace(kube, namespace)
    finally:
        delete_namespace(kube, namespace)  # also when the operator never started


def live_deployment(kube: k.Kube, namespace: str, role: str) -> dict[str, Any] | None:
    return get(kube, k.DEPLOYMENTS, namespace, manifests.deployment_name(NAME, role))


def live_args(kube: k.Kube, namespace: str, role: str) -> list[str]:
    """The vLLM args of the role's Deployment as the operator applied it (its --host/--port are overridden later)."""
    deployment = eventually(lambda: live_deployment(kube, namespace, role), timeout=60)
    return container_args(deployment)


def container_args(deployment: dict[str, Any]) -> list[str]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def speculating(kube: k.Kube, namespace: str) -> bool:
    return SPECULATIVE_CONFIG in container_args(live_deployment(kube, namespace, manifests.ROLE_SPECULATIVE) or {})


def put_traffic(base_url: str, **changes: Any) -> None:
    status, body = request(base_url, "/sim/traffic", changes, method="PUT")
    assert status == 200, body


def with_reason(kube: k.Kube, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in events_of(kube, namespace, NAME) if e["reason"] == reason]


def is_true(kube: k.Kube, namespace: str, type_: str) -> bool:
    return (condition_of(kube, namespace, NAME, type_) or {}).get("status") == "True"


def ready_and_measured(kube: k.Kube, namespace: str) -> bool:
    return status_of(kube, namespace, NAME).get("phase") == "Ready" and is_true(kube, namespace, "Ready") and is_true(kube, namespace, "MetricsAvailable")


def seconds(text: str) -> float:
    value = judgment.parse_time(text)
    assert value is not None
    return value


@pytest.mark.timeout(240)
def test_live_deployment_loses_speculation_when_acceptance_drops_and_regains_it_after_probation(kube, crd_installed, tmp_path):
    spec = {"gpu": GPU, "healthPolicy": POLICY}  # no baseline: the acceptance thresholds judge
    sim_args = {manifests.ROLE_SPECULATIVE: ["--sim-qps", "10", "--sim-temperature", "0", "--sim-acceptance", "0.8"]}
    with running_health_loop(kube, tmp_path, "health-enforce", spec, sim_args) as loop:
        ns = loop.namespace
        eventually(lambda: ready_and_measured(kube, ns), timeout=90)
        assert speculating(kube, ns)
        observation = eventually(lambda: (o := status_of(kube, ns, NAME).get("observation") or {}).get("batchSize") and o, timeout=30)
        assert 0.6 < observation["acceptanceRate"] <= 1.0 and observation["batchSize"] > 0
        assert status_of(kube, ns, NAME)["scheduleSummary"] == "k4"
        loop.wait_for_full_window()

        put_traffic(loop.urls[manifests.ROLE_SPECULATIVE], acceptance=0.25)
        dropped = time.monotonic()
        eventually(lambda: not speculating(kube, ns), timeout=EXPECTED_REACTION + 30)
        reaction = time.monotonic() - dropped
        assert reaction <= EXPECTED_REACTION + 15, f"took {reaction:.1f}s, bound {EXPECTED_REACTION}s"
        status = status_of(kube, ns, NAME)
        disabled = status["decisions"][-1]
        assert status["speculation"] == "Off" and status["effectiveNumSpeculativeTokens"] == 0
        assert disabled["action"] == "disable_speculation" and disabled["enforced"] is True
        announced = eventually(lambda: with_reason(kube, ns, "SpeculationDisabled"), timeout=10)
        below = re.search(r"acceptance (\d\.\d{3}) below 0\.50 for 2 consecutive evaluations", announced[0]["message"])
        assert below and float(below.group(1)) < 0.5, announced[0]["message"]
        assert status["scheduleSummary"] == "off"
        assert announced[0]["type"] == "Warning" and announced[0]["message"] == disabled["reason"]

        put_traffic(loop.urls[manifests.ROLE_SPECULATIVE], acceptance=0.8)
        eventually(lambda: speculating(kube, ns), timeout=POLICY["probationSeconds"] + 20)
        status = status_of(kube, ns, NAME)
        reenabled = status["decisions"][-1]
        assert status["speculation"] == "On" and reenabled["action"] == "enable_speculation" and reenabled["enforced"] is True
        assert seconds(reenabled["time"]) - seconds(disabled["time"]) >= POLICY["probationSeconds"]
        assert "probation of 20s over" in eventually(lambda: with_reason(kube, ns, "SpeculationReenabled"), timeout=10)[0]["message"]
        disabled_events = with_reason(kube, ns, "SpeculationDisabled")
        assert len(disabled_events) == 1 and disabled_events[0].get("count", 1) == 1
        assert not with_reason(kube, ns, "DriftReverted"), "the operator's own rewrite is not drift"


@pytest.mark.timeout(240)
def test_a_slowdown_measured_against_the_baseline_limits_speculation_at_that_batch_size(kube, crd_installed, tmp_path):
    # At 20 QPS the simulated n-gram path's P99 TTFT is 1.7-3.5x the baseline's (as on a GPU at low batch); this test
    # is about the TPOT measurement, so the TTFT guard is set out of its way.
    spec = {"gpu": GPU, "healthPolicy": {**POLICY, "p99TtftRegressionRatio": 8}, "baseline": {"replicas": 1}}
    sim_args = {
        manifests.ROLE_SPECULATIVE: ["--sim-qps", "20", "--sim-temperature", "0", "--sim-acceptance", "0.8"],
        manifests.ROLE_BASELINE: ["--sim-qps", "20"],
    }
    with running_health_loop(kube, tmp_path, "health-goodput", spec, sim_args) as loop:
        ns = loop.namespace
        eventually(lambda: ready_and_measured(kube, ns), timeout=90)
        observation = eventually(lambda: (o := status_of(kube, ns, NAME).get("observation") or {}).get("baselineP50TpotSeconds") and o, timeout=30)
        assert observation["baselineBatchSize"] > 0 and observation["batchSize"] > 0
        loop.wait_for_full_window()

        put_traffic(loop.urls[manifests.ROLE_SPECULATIVE], acceptance=0.2)
        limited = eventually(lambda: next((d for d in status_of(kube, ns, NAME).get("decisions") or [] if d["action"] in ("set_schedule", "disable_speculation")), None),
                             timeout=EXPECTED_REACTION + 60)
        assert limited["enforced"] is True and ("[measured]" in limited["reason"] or "[learned]" in limited["reason"]), limited["reason"]
        assert "goodput k4 -> " in limited["reason"], limited["reason"]
        status = status_of(kube, ns, NAME)
        assert status["recommendation"]["summary"] and status["health"]["buckets"]  # what was learned stays in status
        batch = round(status["observation"]["batchSize"])
        deployment = live_deployment(kube, ns, manifests.ROLE_SPECULATIVE)
        if limited["action"] == "set_schedule":
            config = json.loads(container_args(deployment)[container_args(deployment).index(SPECULATIVE_CONFIG) + 1])
            ranges = config["num_speculative_tokens_per_batch_size"]
            assert ranges == status["schedule"] and status["scheduleSummary"] == limited_summary(ranges)
            assert schedules.k_for_batch(ranges, batch, 4) == 0, (ranges, batch)
        else:
            assert SPECULATIVE_CONFIG not in container_args(deployment) and status["scheduleSummary"] == "off"
        event = "ScheduleChanged" if limited["action"] == "set_schedule" else "SpeculationDisabled"
        assert eventually(lambda: with_reason(kube, ns, event), timeout=10)[0]["message"] == limited["reason"]


def limited_summary(ranges: list[list[int]]) -> str:
    return schedules.Schedule(tuple(tuple(r) for r in ranges), 4).short()


@pytest.mark.timeout(180)
def test_observe_mode_records_and_announces_a_decision_but_never_changes_the_deployment(kube, crd_installed, tmp_path):
    spec = {"gpu": GPU, "healthPolicy": {**POLICY, "mode": "Observe"}}
    sim_args = {manifests.ROLE_SPECULATIVE: ["--sim-qps", "10", "--sim-temperature", "0", "--sim-acceptance", "0.25"]}
    with running_health_loop(kube, tmp_path, "health-observe", spec, sim_args) as loop:
        ns = loop.namespace
        eventually(lambda: status_of(kube, ns, NAME).get("phase") == "Ready", timeout=90)
        before = live_deployment(kube, ns, manifests.ROLE_SPECULATIVE)
        assert before is not None and SPECULATIVE_CONFIG in container_args(before)

        def observed_decisions() -> list[dict[str, Any]]:
            return [d for d in status_of(kube, ns, NAME).get("decisions") or [] if d["action"] == "disable_speculation"]

        first = eventually(observed_decisions, timeout=60)[0]
        assert first["enforced"] is False and first["speculation"] is False
        announced = eventually(lambda: with_reason(kube, ns, "SpeculationDisabled"), timeout=10)[0]
        assert announced["message"].startswith("Observe mode, not applied: acceptance 0.")
        eventually(lambda: len(observed_decisions()) >= 2, timeout=POLICY["cooldownSeconds"] + 4 * POLICY["intervalSeconds"])  # the loop goes on judging

        after = live_deployment(kube, ns, manifests.ROLE_SPECULATIVE)
        assert after is not None and container_args(after) == container_args(before)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert status_of(kube, ns, NAME)["speculation"] == "On"
