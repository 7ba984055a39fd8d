"""The health loop end to end: simulator processes, the real Prometheus scraping them, the operator against kmock.

Without a baseline: acceptance drops below 0.5 -> speculation off within the expected intervals; Prometheus stopped -> hold;
Prometheus back -> metrics again; probation over -> speculation back on.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest

from specserve import api
from specserve.rendering import manifests
from specserve.settings import OperatorSettings
from tests.helpers import serving
from tests.integration.conftest import DEPLOYMENTS, NAMESPACE, SERVINGS, events_for, eventually, live, mark_available, running_operator
from tests.integration.simulator_process import running_simulator
from tests.support.fast_policy import EXPECTED_REACTION, POLICY
from tests.support.prometheus import Prometheus, Target

NAME = "hl"
# No baseline: the acceptance thresholds judge (with a baseline's measurement the goodput model would; the e2e
# test_health_loop.py covers that on the real API server).
SPEC = {"gpu": {"count": 1, "product": "L40S"}, "healthPolicy": POLICY}


def rendered_args(role: str) -> list[str]:
    spec = api.SpeculativeServingSpec.model_validate(serving(name=NAME, **SPEC)["spec"])
    objects = manifests.render(manifests.Owner(NAME, NAMESPACE), spec, manifests.DecisionState())
    return next(o for o in objects if o["metadata"]["labels"][manifests.ROLE_LABEL] == role)["spec"]["template"]["spec"]["containers"][0]["args"]


def without_bind_flags(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--host", "--port"):
            skip = True
            continue
        out.append(arg)
    return out


def put_traffic(base_url: str, **changes) -> None:
    request = urllib.request.Request(f"{base_url}/sim/traffic", data=json.dumps(changes).encode(), method="PUT", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()


def speculating(kube) -> bool:
    args = live(kube, DEPLOYMENTS, NAME)["spec"]["template"]["spec"]["containers"][0]["args"]
    return "--speculative-config" in args


def condition(kube, type_):
    status = (live(kube, SERVINGS, NAME) or {}).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def reasons(kube) -> list[str]:
    return [e["reason"] for e in events_for(kube, NAME)]


@pytest.mark.timeout(400)
async def test_speculation_follows_acceptance_and_prometheus_availability(kube, kubeconfig, tmp_path):
    sim_args = ["--sim-qps", "20", "--sim-temperature", "0", "--sim-acceptance", "0.8"]
    with running_simulator(*without_bind_flags(rendered_args("speculative")), *sim_args) as speculative_url:
        prometheus = Prometheus(tmp_path, [
            Target(speculative_url.removeprefix("http://"), {"namespace": NAMESPACE, "serving": NAME, "role": "speculative"}),
        ]).start()
        settings = OperatorSettings(namespaces=[NAMESPACE], prometheus_url=prometheus.url, poll_interval_seconds=1, metrics_port=0, pod_monitor_api="false")
        try:
            async with running_operator(kube, settings):
                response = await kube.post(f"/apis/specserve.dev/v1alpha1/namespaces/{NAMESPACE}/speculativeservings", json=serving(name=NAME, namespace=NAMESPACE, **SPEC))
                assert response.status in (200, 201)
                await mark_available(kube, NAME)  # a new serving is judged once it serves
                await eventually(lambda: (c := condition(kube, "SpeculationHealthy")) and c["status"] == "True", timeout=90)
                observation = await eventually(lambda: (o := live(kube, SERVINGS, NAME)["status"]["observation"]).get("batchSize") and o, timeout=30)
                assert 0.6 < observation["acceptanceRate"] <= 1.0 and observation["batchSize"] > 0

                put_traffic(speculative_url, acceptance=0.25)
                broke = time.monotonic()
                await eventually(lambda: not speculating(kube), timeout=EXPECTED_REACTION + 30)
                reaction = time.monotonic() - broke
                assert reaction <= EXPECTED_REACTION + 15, f"took {reaction:.1f}s, bound {EXPECTED_REACTION}s"
                status = live(kube, SERVINGS, NAME)["status"]
                assert status["speculation"] == "Off" and status["decisions"][-1]["action"] == "disable_speculation"
                await eventually(lambda: "SpeculationDisabled" in reasons(kube), timeout=10)

                prometheus.stop()
                held = await eventually(lambda: (c := condition(kube, "MetricsAvailable")) and c["status"] == "False" and c, timeout=30)
                assert held["reason"] == "PrometheusUnavailable"
                await eventually(lambda: "MetricsUnavailable" in reasons(kube), timeout=10)
                await asyncio.sleep(POLICY["probationSeconds"] + 5)  # probation is over, yet nothing happens without data
                assert not speculating(kube) and live(kube, SERVINGS, NAME)["status"]["speculation"] == "Off"

                put_traffic(speculative_url, acceptance=0.8)
                prometheus.start()
                await eventually(lambda: (c := condition(kube, "MetricsAvailable")) and c["status"] == "True", timeout=30)
                await eventually(lambda: speculating(kube), timeout=30)
                await eventually(lambda: "SpeculationReenabled" in reasons(kube), timeout=10)
                assert live(kube, SERVINGS, NAME)["status"]["speculation"] == "On"
        finally:
            prometheus.stop()
