"""Who may use the operator, on a real API server: the install's aggregated ClusterRoles tie SpeculativeServing rights to
the built-in edit, admin and view roles, and nobody but the operator may write a serving's status.

The API server's own RBAC authorizer answers (SubjectAccessReview) for users bound to the built-in roles in one namespace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from specserve.cluster import kube as k
from tests.e2e.cluster import eventually
from tests.e2e.conftest import delete_namespace, new_namespace
from tests.e2e.installs import apply_server_side, cleanup
from tests.install import tools

AGGREGATED = ("specserve-edit", "specserve-view")


@pytest.fixture(scope="module")
def namespaces(kube: k.Kube, crd_installed: dict) -> Iterator[tuple[str, str]]:
    """The kustomize install's aggregated ClusterRoles applied; two namespaces, users bound to edit, admin and view in the first."""
    roles = [o for o in tools.kustomize(tools.MANIFESTS) if o["kind"] == "ClusterRole" and o["metadata"]["name"] in AGGREGATED]
    assert len(roles) == 2
    with cleanup() as created:
        created.expect(roles)
        apply_server_side(roles)
        mine, other = new_namespace(kube, "specserve-access"), new_namespace(kube, "specserve-access")
        for role in ("edit", "admin", "view"):
            kube._call("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{mine}/rolebindings", body={
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": f"{role}-user"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"{role}-user"}],
            })
        # The controller-manager's aggregation controller copies the rules into the built-in roles.
        for role in ("edit", "admin", "view"):
            eventually(lambda role=role: any("speculativeservings" in r.get("resources", []) for r in kube._call("GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}").get("rules") or []), timeout=60)
        try:
            yield mine, other
        finally:
            delete_namespace(kube, mine)
            delete_namespace(kube, other)


def allowed(kube: k.Kube, user: str, verb: str, namespace: str, subresource: str = "") -> bool:
    review = kube._call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:authenticated"], "resourceAttributes": {
            "group": k.SERVINGS.group, "resource": k.SERVINGS.plural, "subresource": subresource, "verb": verb, "namespace": namespace, "name": f"x-{uuid.uuid4().hex[:4]}" if verb != "create" else "",
        }},
    })
    return bool(review["status"].get("allowed"))


@pytest.mark.parametrize("user", ["edit-user", "admin-user"])
def test_who_may_edit_a_namespace_may_create_change_and_delete_servings_there(kube: k.Kube, namespaces: tuple[str, str], user: str) -> None:
    mine, _ = namespaces
    assert all(allowed(kube, user, verb, mine) for verb in ("create", "update", "patch", "delete", "get", "list", "watch"))


@pytest.mark.parametrize("user", ["edit-user", "admin-user", "view-user"])
def test_nobody_but_the_operator_writes_a_servings_status(kube: k.Kube, namespaces: tuple[str, str], user: str) -> None:
    mine, _ = namespaces
    assert not any(allowed(kube, user, verb, mine, "status") for verb in ("update", "patch"))
    assert allowed(kube, user, "get", mine, "status")


def test_who_may_view_a_namespace_may_read_servings_but_not_create_them(kube: k.Kube, namespaces: tuple[str, str]) -> None:
    mine, _ = namespaces
    assert all(allowed(kube, "view-user", verb, mine) for verb in ("get", "list", "watch"))
    assert not any(allowed(kube, "view-user", verb, mine) for verb in ("create", "update", "patch", "delete"))


def test_rights_in_one_namespace_give_none_in_another(kube: k.Kube, namespaces: tuple[str, str]) -> None:
    _, other = namespaces
    assert not any(allowed(kube, user, verb, other) for user in ("edit-user", "admin-user", "view-user") for verb in ("create", "get"))
