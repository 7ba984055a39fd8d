"""Every install path on a real API server: kubectl's CRDs, the kustomize base, the Helm chart, and the operator under the chart's own RBAC.

Each test installs under names of its own where it can (release e2e-helm, unique namespaces) and removes what it created.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from specserve.cluster import kube as k
from tests.e2e.cluster import create, events_of, eventually, get, status_of
from tests.e2e.conftest import new_namespace
from tests.e2e.installs import (
    CRD_COPIES,
    CRDS,
    SERVING_CRD,
    apply_server_side,
    cleanup,
    container_command,
    documented_commands,
    existing,
    key,
    kubectl,
    namespace_object,
    rbac_wildcards,
    render_chart,
    service_account_kubeconfig,
    shell,
    wait_established,
    yaml_stream,
)
from tests.e2e.operator_process import running_operator
from tests.helpers import ROOT, serving
from tests.install import tools

RELEASE = "e2e-helm"
MODES = ["cluster-wide", "namespaced"]
SERVING_CRD_FILE = "specserve.dev_speculativeservings.yaml"


def test_crds_apply_server_side_with_kubectl_and_every_copy_is_accepted(crd_installed: dict[str, Any]) -> None:
    result = kubectl("apply", "--server-side", "-f", "crds/")
    assert f"customresourcedefinition.apiextensions.k8s.io/{SERVING_CRD} serverside-applied" in result.stdout
    wait_established(f"crd/{SERVING_CRD}")
    for directory in CRD_COPIES:
        assert (directory / SERVING_CRD_FILE).read_bytes() == (CRDS / SERVING_CRD_FILE).read_bytes(), "stale copy: run scripts/sync-install-copies.sh"
        result = kubectl("apply", "--server-side", "--dry-run=server", "-f", str(directory.relative_to(ROOT)))
        applied = [line for line in result.stdout.splitlines() if line.endswith("serverside-applied (server dry run)")]
        assert len(applied) == len(tools.chart_crds()), result.stdout


def test_documented_crd_upgrade_takes_over_the_fields_helm_installed(crd_installed: dict[str, Any]) -> None:
    """Helm creates the CRDs under field manager `helm`; the guide's upgrade command must win over it, not conflict."""
    new = yaml.safe_load((CRDS / SERVING_CRD_FILE).read_text())
    older = json.loads(json.dumps(new))
    older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "the previous release's CRD"
    command = documented_commands("Helm", "charts/specserve/crds/")
    try:
        kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=helm", "-f", "-", stdin=yaml_stream([older]))
        with cleanup() as created:
            created.expect(tools.chart_crds())
            plain = kubectl("apply", "--server-side", "-f", "charts/specserve/crds/", check=False)
            assert plain.returncode != 0 and 'conflict with "helm"' in plain.stderr, "without --force-conflicts the upgrade should conflict with helm"
            shell(command)
        live = json.loads(kubectl("get", f"crd/{SERVING_CRD}", "-o", "json").stdout)
        assert live["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] == new["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
    finally:
        # Helm's claim released again and the committed CRD in place, for every test after this one.
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "crds/")
        release = {"apiVersion": new["apiVersion"], "kind": new["kind"], "metadata": {"name": SERVING_CRD}}
        kubectl("apply", "--server-side", "--field-manager=helm", "-f", "-", stdin=yaml_stream([release]))
        wait_established(f"crd/{SERVING_CRD}")


def test_kustomize_base_applies_server_side_and_its_operator_becomes_available(crd_installed: dict[str, Any]) -> None:
    built = tools.kustomize(tools.MANIFESTS)
    with cleanup() as created:
        created.expect(built)
        result = kubectl("apply", "--server-side", "-k", "manifests/")
        assert len([line for line in result.stdout.splitlines() if line.endswith(" serverside-applied")]) == len(built), result.stdout
        assert existing(built) == {key(o) for o in built}
        kubectl("wait", "--for=condition=Available", "--timeout=90s", "deployment/specserve", "-n", tools.NAMESPACE)
        binding = json.loads(kubectl("get", "clusterrolebinding/specserve", "-o", "json").stdout)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "specserve", "namespace": tools.NAMESPACE}]
        deployment = json.loads(kubectl("get", "deployment/specserve", "-n", tools.NAMESPACE, "-o", "json").stdout)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "specserve"


@pytest.mark.parametrize("mode", MODES)
def test_helm_chart_rendered_by_the_helm_engine_is_accepted_by_the_api_server(kube: k.Kube, crd_installed: dict[str, Any], mode: str) -> None:
    """Every template but the Prometheus Operator's kinds (ServiceMonitor, PrometheusRule: no such CRDs on this cluster), with peering on."""
    with cleanup() as created:
        namespace = new_namespace(kube, "e2e-helm")
        watched = [new_namespace(kube, "e2e-helm-team") for _ in range(2)] if mode == "namespaced" else []
        created.own([namespace_object(n) for n in [namespace, *watched]])
        values: dict[str, Any] = {"replicaCount": 2, "peering": {"enabled": True, "name": RELEASE}, "grafanaDashboard": {"enabled": True}}
        if watched:
            values["watch"] = {"namespaces": watched}
        chart = render_chart(RELEASE, namespace, values)
        templates = {o["kind"] for o in chart.templates}
        assert templates >= ({"Role", "RoleBinding", "KopfPeering"} if watched else {"ClusterKopfPeering"}) | {"ClusterRole", "Deployment", "ConfigMap"}
        created.expect(chart.objects)
        output = apply_server_side(chart.objects)
        assert output.count(" serverside-applied") == len(chart.objects), output
        assert existing(chart.objects) == {key(o) for o in chart.objects}
        kubectl("wait", "--for=condition=Available", "--timeout=90s", f"deployment/{chart.one('Deployment')['metadata']['name']}", "-n", namespace)


def test_helm_install_through_the_helm_sdk_deploys_and_helm_uninstall_keeps_the_crds(kube: k.Kube, crd_installed: dict[str, Any]) -> None:
    """What `helm install` and `helm uninstall` do, by the real Helm library: CRDs from crds/ first, and never deleted."""
    helm = tools.module("helm_python", "helm-python-sdk")
    release = f"{RELEASE}-sdk"
    with cleanup() as created:
        namespace = new_namespace(kube, "e2e-helm-sdk")
        created.own([namespace_object(namespace)])
        chart = render_chart(release, namespace, {})
        created.expect(chart.objects)
        config = helm.Config(namespace=namespace)
        try:
            with helm.Chart.load(str(tools.CHART)) as loaded:
                installed = config.install(loaded, release, {}, namespace=namespace, wait="watcher", timeout=90)
            assert installed["status"] == "deployed"
            assert existing(chart.objects) == {key(o) for o in chart.objects}
            kubectl("wait", "--for=condition=Available", "--timeout=60s", f"deployment/{chart.one('Deployment')['metadata']['name']}", "-n", namespace)
            assert config.uninstall(release, wait="watcher", timeout=90)["release"]["name"] == release
            assert existing(chart.objects) == {key(o) for o in chart.crds}
        finally:
            config.close()


@pytest.mark.parametrize("mode", MODES)
def test_operator_under_the_charts_service_account_serves_without_forbidden_calls(kube: k.Kube, crd_installed: dict[str, Any], mode: str, tmp_path: Path) -> None:
    with cleanup() as created:
        namespace = new_namespace(kube, "e2e-helm")
        workload = new_namespace(kube, "e2e-helm-work")
        created.own([namespace_object(namespace), namespace_object(workload)])
        chart = render_chart(RELEASE, namespace, {"watch": {"namespaces": [workload]}} if mode == "namespaced" else {})
        assert not rbac_wildcards(chart.templates)
        assert {o["kind"] for o in chart.templates} >= ({"Role", "RoleBinding", "ClusterRole"} if mode == "namespaced" else {"ClusterRole", "ClusterRoleBinding"})
        created.expect(chart.objects)
        apply_server_side(chart.objects)

        deployment = chart.one("Deployment")
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        kubeconfig = service_account_kubeconfig(namespace, account, tmp_path / "kubeconfig")
        whoami = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
        assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:{account}"
        args, env = container_command(deployment, pod_name=f"{deployment['metadata']['name']}-e2e")
        assert json.loads(env["SPECSERVE_NAMESPACES"]) == ([workload] if mode == "namespaced" else [])

        with running_operator(f"chart-{mode}", args, env={**env, "KUBECONFIG": str(kubeconfig)}) as operator:
            create(kube, workload, serving(name="chart-sa", gpu={"count": 1, "product": "L40S"}))
            eventually(lambda: status_of(kube, workload, "chart-sa").get("phase") == "Ready", timeout=60)
            assert "Applied" in [e["reason"] for e in events_of(kube, workload, "chart-sa")]
            kube._call("DELETE", k.SERVINGS.path(workload, "chart-sa"))
            eventually(lambda: get(kube, k.SERVINGS, workload, "chart-sa") is None, timeout=30)  # the finalizer released under the chart's RBAC
        refused = forbidden_lines(operator.text())
        assert not refused, "the chart's RBAC refused calls:\n" + "\n".join(refused[:20])


def forbidden_lines(log: str) -> list[str]:
    """Log lines that report a refused call: "Forbidden" or an HTTP 403 (the liveness access log's byte counts aside)."""
    return [line for line in log.splitlines() if "Forbidden" in line or (re.search(r"\b403\b", line) and "/healthz" not in line)]
