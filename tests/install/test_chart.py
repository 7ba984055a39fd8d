"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk) and checked against Kubernetes schemas.

Covers the CRD copy, the operator pod's hardening, least-privilege RBAC in both modes, peering and the optional monitoring objects.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import ROOT
from tests.install import tools, values
from tests.install.tools import CHART, find, one, render_chart

CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"), ("kopf.dev/v1", "KopfPeering"), ("kopf.dev/v1", "ClusterKopfPeering")}
VALUE_SETS = pytest.mark.parametrize("values_", list(values.ALL.values()), ids=list(values.ALL))


def test_chart_crd_is_byte_identical_to_the_generated_crd() -> None:
    generated = ROOT / "crds" / "specserve.dev_speculativeservings.yaml"
    copy = CHART / "crds" / generated.name
    assert copy.read_bytes() == generated.read_bytes(), "stale copy: run scripts/sync-install-copies.sh"


def test_chart_crds_are_the_ones_helm_loads() -> None:
    helm = tools.module("helm_python", "helm-python-sdk")
    with helm.Chart.load(str(CHART)) as chart:
        names = sorted(c["name"] for c in chart.crds)
    assert names == ["crds/kopf.dev_peerings.yaml", "crds/specserve.dev_speculativeservings.yaml"]


@pytest.mark.parametrize("kube_version", tools.KUBERNETES_VERSIONS)
@VALUE_SETS
def test_chart_lints_without_warnings(values_: dict[str, Any], kube_version: str) -> None:
    helm = tools.module("helm_python", "helm-python-sdk")
    report = helm.lint(str(CHART), values_, strict=True, namespace=tools.NAMESPACE, kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], problems or report["errors"]


@pytest.mark.parametrize("kube_version", tools.KUBERNETES_VERSIONS)
@VALUE_SETS
def test_every_rendered_object_passes_the_kubernetes_schema(values_: dict[str, Any], kube_version: str) -> None:
    objects = render_chart(values_) + tools.chart_crds()
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
            tools.validate_kubernetes(obj, kube_version)


def test_default_values_satisfy_values_schema() -> None:
    helm = tools.module("helm_python", "helm-python-sdk")
    with helm.Chart.load(str(CHART)) as chart:
        for values_ in values.ALL.values():
            chart.validate_schema(values_)


@pytest.mark.parametrize(
    "bad",
    [{"bogus": 1}, {"operator": {"logFormat": "xml"}}, {"watch": {"namespaces": ["Not_A_Namespace"]}}, {"metrics": {"port": 70000}}, {"image": {"digest": "latest"}}],
    ids=["unknown-key", "log-format", "namespace-name", "port", "digest"],
)
def test_values_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    helm = tools.module("helm_python", "helm-python-sdk")
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(bad)


def test_more_than_one_replica_without_peering_is_refused() -> None:
    helm = tools.module("helm_python", "helm-python-sdk")
    with pytest.raises(helm.HelmRenderError, match="peering.enabled"):
        render_chart({"replicaCount": 2})


@VALUE_SETS
def test_operator_pod_is_hardened(values_: dict[str, Any]) -> None:
    pod = one(render_chart(values_), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and {"cpu", "memory"} <= set(container["resources"]["limits"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert {"name": mounts["/tmp"], "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


@VALUE_SETS
def test_liveness_probe_hits_kopfs_liveness_endpoint(values_: dict[str, Any]) -> None:
    (container,) = one(render_chart(values_), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    probe = container["livenessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == probe["port"])
    assert env["SPECSERVE_LIVENESS_ENDPOINT"] == f"http://0.0.0.0:{port}{probe['path']}"
    assert probe["path"] == "/healthz"


@VALUE_SETS
def test_readiness_probe_hits_readyz_beside_the_liveness_endpoint(values_: dict[str, Any]) -> None:
    from specserve.cluster import probes

    (container,) = one(render_chart(values_), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    probe = container["readinessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == probe["port"])
    assert probes.readiness_url(env["SPECSERVE_LIVENESS_ENDPOINT"]) == f"http://0.0.0.0:{port}{probe['path']}"


@VALUE_SETS
def test_operator_environment_parses_into_operator_settings(values_: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from specserve.settings import OperatorSettings

    merged = {**values.DEFAULT, **values_}
    (container,) = one(render_chart(values_), "Deployment")["spec"]["template"]["spec"]["containers"]
    for var in container["env"]:
        if "value" in var:
            monkeypatch.setenv(var["name"], var["value"])
    settings = OperatorSettings()
    assert settings.namespaces == merged.get("watch", {}).get("namespaces", [])
    assert (settings.peering is not None) == merged.get("peering", {}).get("enabled", False)
    assert settings.log_format == merged.get("operator", {}).get("logFormat", "json")
    assert settings.allowed_image_prefixes == merged.get("operator", {}).get("allowedImagePrefixes", [])


@VALUE_SETS
def test_metrics_service_targets_the_operators_metrics_port(values_: dict[str, Any]) -> None:
    objects = render_chart(values_)
    deployment, service = one(objects, "Deployment"), one(objects, "Service")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert env["SPECSERVE_METRICS_PORT"] == str(port["containerPort"])
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_service_monitor_keeps_the_servings_namespace_label() -> None:
    objects = render_chart(values.CLUSTER_EVERYTHING)
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True and endpoint["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_embeds_the_rule_file() -> None:
    import yaml

    rule = one(render_chart(values.CLUSTER_EVERYTHING), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "specserve.rules.yaml").read_text())


def test_grafana_dashboard_config_map_holds_the_dashboard() -> None:
    config_map = one(render_chart(values.CLUSTER_EVERYTHING), "ConfigMap", "specserve-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["specserve.json"]) == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())


def test_monitoring_objects_are_off_by_default() -> None:
    kinds = {o["kind"] for o in render_chart(values.DEFAULT)}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}


def test_peering_creates_the_peering_object_kopf_needs() -> None:
    cluster = render_chart(values.CLUSTER_EVERYTHING)
    assert one(cluster, "ClusterKopfPeering")["metadata"]["name"] == "specserve-ha"
    (container,) = one(cluster, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "SPECSERVE_PEERING", "value": "specserve-ha"} in container["env"]
    assert "strategy" not in one(cluster, "Deployment")["spec"]
    namespaced = render_chart(values.NAMESPACED)
    assert sorted(p["metadata"]["namespace"] for p in find(namespaced, "KopfPeering")) == ["team-a", "team-b"]


def test_existing_service_account_is_used_when_not_created() -> None:
    objects = render_chart(values.NAMESPACED_MINIMAL)
    assert not find(objects, "ServiceAccount")
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    assert one(objects, "RoleBinding")["subjects"] == [{"kind": "ServiceAccount", "name": "existing", "namespace": tools.NAMESPACE}]
