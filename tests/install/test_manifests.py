"""The kustomize install (manifests/), built by the real `kubectl kustomize`: the chart's defaults, nothing more.

manifests/monitoring/ must match the chart's monitoring objects, and manifests/examples/ stays out of the base.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT
from tests.install import tools, values
from tests.install.tools import CHART, MANIFESTS, kustomize, render_chart

HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
SYNC = "stale copy: run scripts/sync-install-copies.sh"
MONITORING_VALUES = {"metrics": {"serviceMonitor": {"enabled": True}}, "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}


def comparable(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Objects keyed by kind and name, without the labels only Helm sets; dashboard JSON compared as data."""
    result = {}
    for obj in copy.deepcopy(objects):
        labels = obj["metadata"].get("labels", {})
        for label in HELM_ONLY_LABELS:
            labels.pop(label, None)
        if obj["kind"] == "ConfigMap":
            obj["data"] = {k: json.loads(v) for k, v in obj["data"].items()}
        result[(obj["kind"], obj["metadata"]["name"])] = obj
    return result


def test_kustomize_base_equals_chart_defaults() -> None:
    built = [o for o in kustomize(MANIFESTS) if o["kind"] != "Namespace"]
    assert comparable(built) == comparable(render_chart(values.DEFAULT) + tools.chart_crds())


def test_kustomize_base_creates_the_namespace_it_installs_into() -> None:
    built = kustomize(MANIFESTS)
    namespaces = [o["metadata"]["name"] for o in built if o["kind"] == "Namespace"]
    assert namespaces == [tools.NAMESPACE]
    assert {o["metadata"].get("namespace") for o in built if o["kind"] in {"Deployment", "Service", "ServiceAccount"}} == {tools.NAMESPACE}


def test_kustomize_base_leaves_out_examples_and_monitoring() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert not [r for r in kustomization["resources"] if r.startswith(("examples", "monitoring"))]
    assert {o["kind"] for o in kustomize(MANIFESTS)}.isdisjoint({"SpeculativeServing", "PrometheusRule", "ServiceMonitor"})


@pytest.mark.parametrize("kube_version", tools.KUBERNETES_VERSIONS)
def test_kustomize_objects_pass_the_kubernetes_schema(kube_version: str) -> None:
    for obj in kustomize(MANIFESTS):
        tools.validate_kubernetes(obj, kube_version)


@pytest.mark.parametrize("name", ["specserve.dev_speculativeservings.yaml", "kopf.dev_peerings.yaml"])
def test_manifests_crds_are_byte_identical_to_the_charts(name: str) -> None:
    assert (MANIFESTS / "crds" / name).read_bytes() == (CHART / "crds" / name).read_bytes(), SYNC
    if name.startswith("specserve"):
        assert (MANIFESTS / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), SYNC


def test_monitoring_kustomization_equals_the_charts_monitoring_objects() -> None:
    chart = [o for o in render_chart(MONITORING_VALUES) if o["kind"] in {"ServiceMonitor", "PrometheusRule", "ConfigMap"}]
    assert comparable(kustomize(MANIFESTS / "monitoring")) == comparable(chart), SYNC


def test_monitoring_dashboard_is_byte_identical_to_the_charts() -> None:
    assert (MANIFESTS / "monitoring" / "grafana-dashboard.json").read_bytes() == (CHART / "files" / "grafana-dashboard.json").read_bytes(), SYNC
