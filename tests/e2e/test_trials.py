"""Trials end to end on the real API server: a predicted change runs on a challenger Deployment beside the incumbent.

The simulators play a world whose speculative step costs less than the GPU calibration says (--sim-speculation-cost-
scale) and whose late drafts are rarely accepted, so the step cost fitted to the measured k=8 predicts a lower k faster,
too uncertain to rewrite: the operator starts a trial on a challenger slice and measures it beside the incumbent against
the baseline. The challenger's simulator then plays a world that decides the verdict (nearly free and well accepted:
promoted; full price and never accepted: reverted). Either way the challenger Deployment goes, the incumbent gets its
replicas back, and the events quote both measurements.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from specserve.cluster import kube as k
from specserve.rendering import manifests
from tests.e2e.cluster import create, events_of, eventually, get, status_of
from tests.e2e.conftest import delete_namespace, delete_servings_then_namespace, new_namespace
from tests.e2e.operator_process import running_operator
from tests.helpers import serving
from tests.integration.simulator_process import running_simulator
from tests.support.fast_policy import POLICY
from tests.support.prometheus import Prometheus

NAME = "trial"
SPEC: dict[str, Any] = {
    "target": {"model": "meta-llama/Llama-3.1-70B-Instruct"},
    "gpu": {"count": 4, "product": "H100-80GB"},
    "replicas": 2,
    "speculation": {"method": "draft_model", "numSpeculativeTokens": 8, "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 4}},
    "baseline": {"replicas": 1},
    "trials": {"replicas": 1, "windows": 2, "maxSeconds": 600},
    # TTFT is not what this is about (a draft model prefills too); the cooldown after the trial's start is short
    "healthPolicy": {**POLICY, "p99TtftRegressionRatio": 8, "p99TpotRegressionRatio": 3, "minPredictedGain": 0.05},
}
# A world where drafts past the first few are rarely accepted and speculating costs a tenth of what the GPU calibration
# says: k=8 measures faster than the baseline, and the step cost fitted to it predicts a lower k faster still.
WORLD = ["--sim-qps", "6", "--sim-temperature", "0", "--sim-acceptance", "0.3", "--sim-speculation-cost-scale", "0.1"]
# The challenger's world decides the verdict, whatever the candidate: cheap and well accepted, or dear and never accepted.
# Both stay within 2x of the baseline's batch size (open-loop traffic: a config twice as fast runs half the batch), or
# the comparison would not count.
BETTER_WORLD = ["--sim-qps", "6", "--sim-temperature", "0", "--sim-acceptance", "0.5", "--sim-speculation-cost-scale", "0.1"]
WORSE_WORLD = ["--sim-qps", "6", "--sim-temperature", "0", "--sim-acceptance", "0.0", "--sim-speculation-cost-scale", "0.5"]
SPECULATIVE_CONFIG = "--speculative-config"


def deployment(kube: k.Kube, namespace: str, role: str) -> dict[str, Any] | None:
    return get(kube, k.DEPLOYMENTS, namespace, manifests.deployment_name(NAME, role))


def args_of(found: dict[str, Any]) -> list[str]:
    return found["spec"]["template"]["spec"]["containers"][0]["args"]


def k_of(found: dict[str, Any]) -> int:
    args = args_of(found)
    return json.loads(args[args.index(SPECULATIVE_CONFIG) + 1])["num_speculative_tokens"]


def events(kube: k.Kube, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in events_of(kube, namespace, NAME) if e["reason"] == reason]


class Scraped:
    """Prometheus scraping each role's simulator, with targets added as their Deployments appear (file_sd)."""

    def __init__(self, tmp_path: Path, namespace: str) -> None:
        self.namespace, self.file = namespace, tmp_path / "targets.json"
        self.file.write_text("[]")
        self.targets: list[dict[str, Any]] = []
        self.prometheus = Prometheus(tmp_path, [], file_sd=self.file)

    def add(self, role: str, url: str) -> None:
        self.targets.append({"targets": [url.removeprefix("http://")], "labels": {"namespace": self.namespace, "serving": NAME, "role": role}})
        self.file.write_text(json.dumps(self.targets))


@contextlib.contextmanager
def trial_world(kube: k.Kube, tmp_path: Path, label: str) -> Iterator[tuple[str, Scraped, contextlib.ExitStack]]:
    namespace = new_namespace(kube, f"specserve-{label}")
    scraped = Scraped(tmp_path, namespace)
    args = ["--namespace", namespace, "--prometheus-url", scraped.prometheus.url, "--poll-interval", "1"]
    try:
        with running_operator(label, args), contextlib.ExitStack() as simulators:
            try:
                create(kube, namespace, serving(name=NAME, **SPEC))
                for role, world in ((manifests.ROLE_SPECULATIVE, WORLD), (manifests.ROLE_BASELINE, ["--sim-qps", "6"])):
                    live = eventually(lambda: deployment(kube, namespace, role), timeout=60)
                    scraped.add(role, simulators.enter_context(running_simulator(*args_of(live), *world)))
                scraped.prometheus.start()
                yield namespace, scraped, simulators
            finally:
                scraped.prometheus.stop()
                delete_servings_then_namespace(kube, namespace)
    finally:
        delete_namespace(kube, namespace)


def run_trial(kube: k.Kube, tmp_path: Path, label: str, challenger_world: list[str]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Until the trial's verdict: (namespace, the TrialStarted event, the verdict's event)."""
    with trial_world(kube, tmp_path, label) as (ns, scraped, simulators):
        incumbent = eventually(lambda: deployment(kube, ns, manifests.ROLE_SPECULATIVE), timeout=30)
        assert incumbent["spec"]["replicas"] == 2 and k_of(incumbent) == 8
        try:
            started = eventually(lambda: events(kube, ns, "TrialStarted"), timeout=240)[0]
        except AssertionError as error:
            raise AssertionError(f"{error}; decisions: {json.dumps(status_of(kube, ns, NAME).get('decisions'))[-3000:]}") from None
        trial = eventually(lambda: status_of(kube, ns, NAME).get("trial"), timeout=30)
        assert trial["mode"] == "challenger" and trial["incumbentSummary"] == "k8 (the spec's)", trial
        challenger = eventually(lambda: deployment(kube, ns, manifests.ROLE_CHALLENGER), timeout=30)
        assert challenger["spec"]["replicas"] == 1 and k_of(challenger) < 8
        assert challenger["spec"]["template"]["metadata"]["labels"][manifests.ROLE_LABEL] == manifests.ROLE_CHALLENGER
        assert eventually(lambda: deployment(kube, ns, manifests.ROLE_SPECULATIVE)["spec"]["replicas"] == 1, timeout=30)
        assert args_of(deployment(kube, ns, manifests.ROLE_SPECULATIVE)) == args_of(incumbent), "the incumbent keeps its configuration"
        scraped.add(manifests.ROLE_CHALLENGER, simulators.enter_context(running_simulator(*args_of(challenger), *challenger_world)))
        verdict = eventually(lambda: events(kube, ns, "TrialPromoted") + events(kube, ns, "TrialReverted"), timeout=240)[0]
        eventually(lambda: deployment(kube, ns, manifests.ROLE_CHALLENGER) is None, timeout=30)
        final = eventually(lambda: (d := deployment(kube, ns, manifests.ROLE_SPECULATIVE)) and d["spec"]["replicas"] == 2 and d, timeout=30)
        assert status_of(kube, ns, NAME).get("trial") is None
        verdict["incumbent_args"], verdict["final_args"], verdict["candidate_args"] = args_of(incumbent), args_of(final), args_of(challenger)
        return ns, started, verdict


@pytest.mark.timeout(420)
def test_a_predicted_better_k_is_tried_on_a_challenger_and_promoted_on_its_measurement(kube, crd_installed, tmp_path):
    _, started, verdict = run_trial(kube, tmp_path, "trial-promote", BETTER_WORLD)
    assert "worth a trial" in started["message"] and "on 1 challenger replica(s) beside the incumbent" in started["message"]
    assert verdict["reason"] == "TrialPromoted", verdict["message"]
    measured = re.search(r"measured (\d+\.\d\d)x against the baseline over \d window\(s\), the incumbent k8 \(the spec's\) (\d+\.\d\d)x", verdict["message"])
    assert measured and float(measured.group(1)) > float(measured.group(2)), verdict["message"]
    assert verdict["final_args"] == verdict["candidate_args"], "every replica runs the promoted candidate"


@pytest.mark.timeout(420)
def test_a_candidate_measured_worse_is_reverted_and_the_incumbent_keeps_its_exact_objects(kube, crd_installed, tmp_path):
    _, _, verdict = run_trial(kube, tmp_path, "trial-revert", WORSE_WORLD)
    assert verdict["reason"] == "TrialReverted", verdict["message"]
    assert re.search(r"measured \d+\.\d\dx against the baseline over \d window\(s\), the incumbent k8 \(the spec's\) \d+\.\d\dx", verdict["message"]), verdict["message"]
    assert verdict["final_args"] == verdict["incumbent_args"]
