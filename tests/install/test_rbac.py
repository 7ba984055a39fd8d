"""The chart's RBAC grants exactly what the operator and Kopf call: no wildcards, nothing more, nothing missing.

Expected permissions are derived from kube.py's resource table plus Kopf 1.45's own calls (CRD scan, namespaces, peering, events).
"""

from __future__ import annotations

from typing import Any

import pytest

from specserve.cluster import kube
from tests.install import values
from tests.install.tools import find, one, render_chart

Grant = dict[tuple[str, str], set[str]]
READ_WRITE = {"get", "list", "watch", "create", "patch", "delete"}

# What the operator itself calls in a watched namespace (cluster/ and cluster/kube.py).
NAMESPACED: Grant = {
    (kube.SERVINGS.group, kube.SERVINGS.plural): {"get", "list", "watch", "patch"},  # Kopf watches and patches annotations
    (kube.SERVINGS.group, kube.SERVINGS.plural + "/status"): {"get", "patch"},
    (kube.SERVINGS.group, kube.SERVINGS.plural + "/finalizers"): {"update"},  # blockOwnerDeletion under OwnerReferencesPermissionEnforcement
    (kube.DEPLOYMENTS.group, kube.DEPLOYMENTS.plural): READ_WRITE,  # server-side apply creating an object needs create and patch
    (kube.SERVICES.group, kube.SERVICES.plural): READ_WRITE,
    (kube.POD_MONITORS.group, kube.POD_MONITORS.plural): READ_WRITE - {"watch"},  # listed to prune, never watched
    ("", "events"): {"create"},  # kopf.event posts core v1 Events and never updates them
}
CRD_SCAN: Grant = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
NAMESPACE_SCAN: Grant = {("", "namespaces"): {"list", "watch"}}  # only when Kopf is given namespaces
PEERING = {"get", "list", "watch", "patch"}


def granted(rules: list[dict[str, Any]]) -> Grant:
    grant: Grant = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grant.setdefault((group, resource), set()).update(rule["verbs"])
    return grant


@pytest.mark.parametrize("values_", list(values.ALL.values()), ids=list(values.ALL))
def test_rbac_has_no_wildcards_or_non_resource_urls(values_: dict[str, Any]) -> None:
    objects = render_chart(values_)
    for role in find(objects, "ClusterRole") + find(objects, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], role["metadata"]["name"]
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule


def operator_cluster_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The ClusterRole the operator's ServiceAccount is bound to (the aggregated ones are bound to nobody)."""
    return one(objects, "ClusterRole", name=one(objects, "ClusterRoleBinding")["roleRef"]["name"])


def aggregated(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in find(objects, "ClusterRole") if any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in r["metadata"]["labels"])]


def test_cluster_mode_grants_exactly_what_the_operator_calls() -> None:
    objects = render_chart(values.DEFAULT)
    assert not find(objects, "Role") and not find(objects, "RoleBinding")
    assert granted(operator_cluster_role(objects)["rules"]) == NAMESPACED | CRD_SCAN


def test_cluster_mode_with_peering_adds_cluster_peerings() -> None:
    role = operator_cluster_role(render_chart(values.CLUSTER_EVERYTHING))
    assert granted(role["rules"]) == NAMESPACED | CRD_SCAN | {("kopf.dev", "clusterkopfpeerings"): PEERING}


USER_EDIT: Grant = {
    (kube.SERVINGS.group, kube.SERVINGS.plural): {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
    (kube.SERVINGS.group, kube.SERVINGS.plural + "/status"): {"get", "list", "watch"},  # status is the operator's to write
}
USER_VIEW: Grant = {(kube.SERVINGS.group, kube.SERVINGS.plural): {"get", "list", "watch"}, (kube.SERVINGS.group, kube.SERVINGS.plural + "/status"): {"get", "list", "watch"}}


@pytest.mark.parametrize("values_", [values.DEFAULT, values.NAMESPACED], ids=["cluster", "namespaced"])
def test_servings_rights_join_the_built_in_edit_admin_and_view_roles(values_: dict[str, Any]) -> None:
    roles = {r["metadata"]["name"]: r for r in aggregated(render_chart(values_))}
    assert sorted(roles) == ["specserve-edit", "specserve-view"]
    edit, view = roles["specserve-edit"], roles["specserve-view"]
    assert {k: v for k, v in edit["metadata"]["labels"].items() if k.startswith("rbac.")} == {
        "rbac.authorization.k8s.io/aggregate-to-edit": "true", "rbac.authorization.k8s.io/aggregate-to-admin": "true"}
    assert {k: v for k, v in view["metadata"]["labels"].items() if k.startswith("rbac.")} == {"rbac.authorization.k8s.io/aggregate-to-view": "true"}
    assert granted(edit["rules"]) == USER_EDIT and granted(view["rules"]) == USER_VIEW


def test_aggregation_can_be_left_out() -> None:
    assert not aggregated(render_chart({**values.DEFAULT, "rbac": {"aggregateToDefaultRoles": False}}))


def test_namespaced_mode_uses_a_role_in_each_watched_namespace() -> None:
    objects = render_chart(values.NAMESPACED)
    roles = find(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert granted(role["rules"]) == NAMESPACED | {("kopf.dev", "kopfpeerings"): PEERING}
        binding = one(objects, "RoleBinding", namespace=role["metadata"]["namespace"])
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}


def test_namespaced_mode_grants_cluster_wide_only_kopfs_discovery_reads() -> None:
    objects = render_chart(values.NAMESPACED)
    assert granted(operator_cluster_role(objects)["rules"]) == CRD_SCAN | NAMESPACE_SCAN


def test_namespaced_mode_without_discovery_has_no_cluster_role_for_the_operator() -> None:
    objects = render_chart(values.NAMESPACED_MINIMAL)
    assert not find(objects, "ClusterRoleBinding")
    assert find(objects, "ClusterRole") == aggregated(objects)  # only the roles for people, bound to nobody by the chart


def test_bindings_name_the_operators_service_account() -> None:
    for values_ in values.ALL.values():
        objects = render_chart(values_)
        account = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        for binding in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "specserve-system"}]
