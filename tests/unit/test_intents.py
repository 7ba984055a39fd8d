"""intents.Renderings: one render per serving version, shared by the resume and the drift checks of its objects."""

from __future__ import annotations

import copy

import pydantic
import pytest

from specserve.cluster import intents
from specserve.rendering import manifests


def serving(name: str = "llama", version: str | None = "7", model: str = "meta-llama/Llama-3.1-8B-Instruct") -> dict:
    meta = {"name": name, "namespace": "team", "uid": f"u-{name}", "generation": 1}
    if version is not None:
        meta["resourceVersion"] = version
    return {
        "apiVersion": "specserve.dev/v1alpha1", "kind": "SpeculativeServing", "metadata": meta,
        "spec": {"target": {"model": model}, "speculation": {"method": "ngram"}, "gpu": {"resourceName": "", "product": "L40S"}},
    }


def test_the_same_version_is_rendered_once():
    renderings = intents.Renderings()
    first = renderings.of(serving(), manifests.RenderOptions(pod_monitor_api=False))
    again = renderings.of(copy.deepcopy(serving()), manifests.RenderOptions(pod_monitor_api=False))
    assert again is first and (renderings.hits, renderings.misses) == (1, 1)


def test_a_new_version_is_rendered_anew():
    renderings = intents.Renderings()
    before = renderings.of(serving(version="7"), manifests.RenderOptions(pod_monitor_api=False))
    after = renderings.of(serving(version="8", model="meta-llama/Llama-3.1-70B-Instruct"), manifests.RenderOptions(pod_monitor_api=False))
    assert after is not before and after.spec.target.model == "meta-llama/Llama-3.1-70B-Instruct"


def test_the_pod_monitor_choice_is_part_of_what_is_remembered():
    renderings = intents.Renderings()
    without = renderings.of(serving(), manifests.RenderOptions(pod_monitor_api=False))
    with_monitor = renderings.of(serving(), manifests.RenderOptions(pod_monitor_api=True))
    assert "PodMonitor" in {o["kind"] for o in with_monitor.objects} - {o["kind"] for o in without.objects}


def test_the_oldest_version_is_forgotten_first():
    renderings = intents.Renderings(size=2)
    oldest = renderings.of(serving("a"), manifests.RenderOptions(pod_monitor_api=False))
    renderings.of(serving("b"), manifests.RenderOptions(pod_monitor_api=False))
    renderings.of(serving("c"), manifests.RenderOptions(pod_monitor_api=False))
    assert renderings.of(serving("a"), manifests.RenderOptions(pod_monitor_api=False)) is not oldest


def test_a_serving_without_a_version_is_never_remembered():
    renderings = intents.Renderings()
    assert renderings.of(serving(version=None), manifests.RenderOptions(pod_monitor_api=False)) is not renderings.of(serving(version=None), manifests.RenderOptions(pod_monitor_api=False))


def test_a_spec_that_cannot_be_rendered_raises_each_time():
    renderings = intents.Renderings()
    bad = serving()
    bad["spec"]["target"] = {}
    for _ in range(2):
        with pytest.raises(pydantic.ValidationError):
            renderings.of(bad, manifests.RenderOptions(pod_monitor_api=False))
    assert renderings.hits == 0
