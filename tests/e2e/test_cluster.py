"""End to end on a real cluster: CRD admission, the operator reconciling every example, drift and bad input."""

from __future__ import annotations

import copy
import time

import pytest
from kubernetes.client.exceptions import ApiException

from specserve import kube as k
from tests.helpers import EXAMPLES, load_example, serving

SERVINGS = "/apis/specserve.dev/v1alpha1/namespaces/{ns}/speculativeservings"


def eventually(check, timeout=90.0, interval=1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def create(kube, namespace, obj, dry_run=False):
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    query = [("dryRun", "All")] if dry_run else []
    return kube._call("POST", SERVINGS.format(ns=namespace), body=obj, query=query)


def events_of(kube, namespace, name):
    return kube._call("GET", f"/api/v1/namespaces/{namespace}/events", query=[("fieldSelector", f"involvedObject.name={name}")])["items"]


def get(kube, kind, namespace, name):
    try:
        return kube._call("GET", kind.path(namespace, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_reconciled_into_owned_objects(kube, namespace, operator, path):
    created = create(kube, namespace, load_example(path))
    name, uid = created["metadata"]["name"], created["metadata"]["uid"]
    deployment = eventually(lambda: get(kube, k.DEPLOYMENTS, namespace, name))
    service = eventually(lambda: get(kube, k.SERVICES, namespace, name))
    for obj in (deployment, service):
        assert [ref["uid"] for ref in obj["metadata"]["ownerReferences"]] == [uid]
    managers = {entry["manager"] for entry in deployment["metadata"]["managedFields"] if entry["operation"] == "Apply"}
    assert managers == {"specserve"}
    status = eventually(lambda: (get(kube, k.SERVINGS, namespace, name).get("status") or {}).get("observedGeneration") and get(kube, k.SERVINGS, namespace, name)["status"])
    assert any(c["type"] == "Accepted" and c["status"] == "True" for c in status["conditions"])
    time.sleep(10)  # the Deployment controller updates status meanwhile: none of that is drift
    assert "DriftReverted" not in [e["reason"] for e in events_of(kube, namespace, name)]


@pytest.mark.parametrize(
    "mutation, fragment",
    [
        ({"speculation": {"method": "draft_model"}}, "speculation.draft is required"),
        ({"speculation": {"method": "ngram", "draft": {"model": "org/d"}}}, "must not be set"),
        ({"speculation": {"method": "ngram", "numSpeculativeTokens": 99}}, "numSpeculativeTokens"),
        ({"speculation": {"method": "medusa"}}, "method"),
        ({"healthPolicy": {"disableBelowAcceptance": 0.7, "watchBelowAcceptance": 0.6}}, "disableBelowAcceptance must be lower"),
        ({"target": {"model": "a/b", "variants": [{"name": "x", "model": "a/b"}], "activeVariant": "y"}}, "activeVariant must name"),
    ],
)
def test_api_server_rejects_bad_objects_naming_the_field(kube, namespace, crd_installed, mutation, fragment):
    obj = serving(name="bad")
    obj["spec"].update(mutation)
    with pytest.raises(ApiException) as error:
        create(kube, namespace, obj, dry_run=True)
    assert error.value.status == 422 and fragment in error.value.body


def test_status_is_a_subresource_the_spec_cannot_carry(kube, namespace, crd_installed):
    obj = serving(name="status-probe")
    obj["status"] = {"phase": "Ready"}
    created = create(kube, namespace, obj, dry_run=True)
    assert "status" not in created or created["status"].get("phase") != "Ready"


def test_deleted_deployment_is_put_back(kube, namespace, operator):
    created = create(kube, namespace, serving(name="drift"))
    first = eventually(lambda: get(kube, k.DEPLOYMENTS, namespace, "drift"))
    kube._call("DELETE", k.DEPLOYMENTS.path(namespace, "drift"))
    restored = eventually(lambda: (d := get(kube, k.DEPLOYMENTS, namespace, "drift")) and d["metadata"]["uid"] != first["metadata"]["uid"] and d)
    assert restored["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]


def test_operator_judged_error_sets_condition_and_warning_event(kube, namespace, operator):
    obj = serving(name="odd-gpu", gpu={"product": "Z100"})
    create(kube, namespace, obj)

    def rejected():
        status = (get(kube, k.SERVINGS, namespace, "odd-gpu") or {}).get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "Accepted" and c["status"] == "False"), None)

    cond = eventually(rejected)
    assert cond["reason"] == "UnknownGPUProduct" and "spec.gpu.product" in cond["message"]
    eventually(lambda: [e for e in events_of(kube, namespace, "odd-gpu") if e["reason"] == "UnknownGPUProduct"], timeout=30)
    time.sleep(5)  # room for a retry storm, if there were one
    warnings = [e for e in events_of(kube, namespace, "odd-gpu") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["UnknownGPUProduct"] and warnings[0].get("count", 1) == 1
    assert get(kube, k.DEPLOYMENTS, namespace, "odd-gpu") is None


def test_api_server_rejects_a_name_that_cannot_name_a_service(kube, namespace, crd_installed):
    with pytest.raises(ApiException) as error:
        create(kube, namespace, serving(name="qwen2.5-7b"), dry_run=True)
    assert error.value.status == 422 and "it names the Service too" in error.value.body
