"""End to end on a real API server: admission, every example reconciled, truthful phases, drift, bad input, GC.

Runs against the cluster in KUBECONFIG with the operator as a real process (conftest); nothing is mocked.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specserve import api
from specserve.cluster import availability
from specserve.cluster import kube as k
from specserve.rendering import manifests
from tests.e2e.cluster import (
    PhaseRecorder,
    condition_of,
    create,
    events_of,
    eventually,
    get,
    merge_patch,
    status_of,
    warnings_of,
)
from tests.helpers import CEL_CASES, EXAMPLES, claims_and_secrets, load_example, serving
from tests.install.test_argocd_health import evaluate as argocd_health

HEALTHY_PHASES = {"Pending", "Progressing", "Ready"}
L40S = {"count": 1, "product": "L40S"}


def args_of(deployment: dict[str, Any]) -> list[str]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def delete_serving(kube: k.Kube, namespace: str, name: str) -> None:
    kube._call("DELETE", k.SERVINGS.path(namespace, name))
    eventually(lambda: get(kube, k.SERVINGS, namespace, name) is None, timeout=60)


@pytest.fixture(scope="module")
def example_prerequisites(kube, namespace):
    """The PVCs (bound to PVs, so the scheduler places the pods) and Secrets the examples refer to."""
    claims, secrets = set(), set()
    for path in EXAMPLES:
        found = claims_and_secrets(load_example(path))
        claims |= found[0]
        secrets |= found[1]
    for secret in secrets:
        kube._call("POST", f"/api/v1/namespaces/{namespace}/secrets", body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "stringData": {"token": "hf_e2e"}})
    volumes = []
    for claim in claims:
        volume = f"{namespace}-{claim}"
        kube._call("POST", "/api/v1/persistentvolumes", body={
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
            "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteMany"], "storageClassName": "", "hostPath": {"path": f"/tmp/{volume}"},
                     "claimRef": {"namespace": namespace, "name": claim}},
        })
        kube._call("POST", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", body={
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume, "resources": {"requests": {"storage": "1Ti"}}},
        })
        volumes.append(volume)
    for claim in claims:
        eventually(lambda: (kube._call("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}").get("status") or {}).get("phase") == "Bound", timeout=60)
    yield
    for volume in volumes:
        kube._call("DELETE", f"/api/v1/persistentvolumes/{volume}")


# ---------------------------------------------------------------- admission


@pytest.mark.parametrize("case", [c for c in CEL_CASES if c not in ("valid ngram", "eagle3 with draft")])
def test_api_server_refuses_each_cel_violation_naming_the_field(kube, namespace, crd_installed, case):
    with pytest.raises(ApiException) as error:
        create(kube, namespace, CEL_CASES[case], dry_run=True)
    assert error.value.status == 422, error.value.body
    causes = json.loads(error.value.body)["details"]["causes"]
    assert any(c.get("field", "").startswith("spec.") or "metadata.name" in c.get("message", "") for c in causes), causes


@pytest.mark.parametrize("case", ["valid ngram", "eagle3 with draft"])
def test_api_server_admits_valid_objects(kube, namespace, crd_installed, case):
    assert create(kube, namespace, CEL_CASES[case], dry_run=True)["metadata"]["name"] == "demo"


def test_every_cel_rule_of_the_crd_refuses_some_case(kube, namespace, crd_installed):
    schema = crd_installed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    messages = {rule["message"] for node in _walk(schema) for rule in node.get("x-kubernetes-validations", [])}
    bodies = ""
    for case, obj in CEL_CASES.items():
        try:
            create(kube, namespace, obj, dry_run=True)
        except ApiException as error:
            bodies += error.body
    assert {m for m in messages if m not in bodies} == set()


def _walk(schema: dict[str, Any]):
    yield schema
    for prop in schema.get("properties", {}).values():
        yield from _walk(prop)
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"])


@pytest.mark.parametrize(
    "mutation, fragment",
    [
        ({"speculation": {"method": "ngram", "numSpeculativeTokens": 99}}, "spec.speculation.numSpeculativeTokens"),
        ({"speculation": {"method": "medusa"}}, "spec.speculation.method"),
        ({"gpu": {"count": 0}}, "spec.gpu.count"),
        ({"healthPolicy": {"mode": "Sometimes"}}, "spec.healthPolicy.mode"),
    ],
)
def test_api_server_refuses_out_of_range_fields_by_name(kube, namespace, crd_installed, mutation, fragment):
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


# ---------------------------------------------------------------- every example, truthful phases


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_reaches_ready_through_progressing_and_never_degraded(kube, namespace, operator, example_prerequisites, path):
    obj = load_example(path)
    name = obj["metadata"]["name"]
    with PhaseRecorder(kube, namespace, name) as recorder:
        created = create(kube, namespace, obj)
        eventually(lambda: status_of(kube, namespace, name).get("phase") == "Ready", timeout=90)
    assert recorder.phases[0] in ("Pending", "Progressing") and recorder.phases[-1] == "Ready", recorder.phases
    assert set(recorder.phases) <= HEALTHY_PHASES, recorder.phases
    assert argocd_health(get(kube, k.SERVINGS, namespace, name))[0] == "Healthy"
    deployment = get(kube, k.DEPLOYMENTS, namespace, name)
    service = get(kube, k.SERVICES, namespace, name)
    for owned in (deployment, service):
        assert [ref["uid"] for ref in owned["metadata"]["ownerReferences"]] == [created["metadata"]["uid"]]
    assert {e["manager"] for e in deployment["metadata"]["managedFields"] if e["operation"] == "Apply"} == {"specserve"}
    assert condition_of(kube, namespace, name, "Accepted")["status"] == "True"
    assert "DriftReverted" not in [e["reason"] for e in events_of(kube, namespace, name)]
    delete_serving(kube, namespace, name)


def test_an_unschedulable_serving_stays_progressing_not_degraded(kube, namespace, operator):
    obj = serving(name="unschedulable", gpu=L40S, engine={"nodeSelector": {"specserve.dev/no-such-node": "true"}})
    with PhaseRecorder(kube, namespace, "unschedulable") as recorder:
        create(kube, namespace, obj)
        eventually(lambda: status_of(kube, namespace, "unschedulable").get("phase") == "Progressing")
        time.sleep(10)  # the scheduler has given up on the pod meanwhile; only the progress deadline may end this
    assert recorder.phases == ["Progressing"], recorder.phases
    deployment = get(kube, k.DEPLOYMENTS, namespace, "unschedulable")
    own = {c["type"]: c for c in deployment["status"]["conditions"]}
    assert own["Progressing"]["status"] == "True" and deployment["status"].get("availableReplicas", 0) == 0
    assert condition_of(kube, namespace, "unschedulable", "Ready")["reason"] == "RollingOut"
    assert argocd_health(get(kube, k.SERVINGS, namespace, "unschedulable"))[0] == "Progressing"
    assert deployment["spec"]["progressDeadlineSeconds"] == api.Engine().startup_timeout_seconds + manifests.PROGRESS_MARGIN_SECONDS
    delete_serving(kube, namespace, "unschedulable")


def test_a_deployment_past_its_progress_deadline_reads_as_degraded(kube, namespace, crd_installed):
    """The real Deployment controller's verdict, read the way the operator reads it (a managed Deployment's deadline
    covers the model's startup timeout, at least 11 minutes: too long to wait for here)."""
    labels = {"app": "deadline-probe"}
    body = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "deadline-probe"},
        "spec": {
            "replicas": 1, "progressDeadlineSeconds": 2, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"nodeSelector": {"specserve.dev/no-such-node": "true"}, "containers": [{"name": "c", "image": "x"}]}},
        },
    }
    kube._call("POST", k.DEPLOYMENTS.path(namespace), body=body)
    try:
        stuck = eventually(lambda: (d := get(kube, k.DEPLOYMENTS, namespace, "deadline-probe")) and any(
            c["reason"] == "ProgressDeadlineExceeded" for c in (d.get("status") or {}).get("conditions") or []) and d, timeout=60)
        found = availability.assess([stuck])
        assert (found.phase, found.ready_reason) == ("Degraded", "ProgressDeadlineExceeded")
    finally:
        kube._call("DELETE", k.DEPLOYMENTS.path(namespace, "deadline-probe"))


def test_lost_availability_is_degraded_and_recovery_ready_again(kube, namespace, operator):
    create(kube, namespace, serving(name="flaky", gpu=L40S))
    eventually(lambda: status_of(kube, namespace, "flaky").get("phase") == "Ready")
    pod = kube._call("GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", f"{manifests.SERVING_LABEL}=flaky")])["items"][0]
    with PhaseRecorder(kube, namespace, "flaky") as recorder:
        _set_pod_ready(kube, pod, False)
        eventually(lambda: status_of(kube, namespace, "flaky").get("phase") == "Degraded")
        assert condition_of(kube, namespace, "flaky", "Ready")["reason"] == "LostAvailability"
        assert argocd_health(get(kube, k.SERVINGS, namespace, "flaky"))[0] == "Degraded"
        _set_pod_ready(kube, pod, True)
        eventually(lambda: status_of(kube, namespace, "flaky").get("phase") == "Ready")
    assert recorder.phases == ["Ready", "Degraded", "Ready"], recorder.phases
    delete_serving(kube, namespace, "flaky")


def _set_pod_ready(kube: k.Kube, pod: dict[str, Any], ready: bool) -> None:
    """What a kubelet reports when a readiness probe fails or passes again."""
    value = "True" if ready else "False"
    patch = {"status": {"conditions": [{"type": "Ready", "status": value}, {"type": "ContainersReady", "status": value}]}}
    path = f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}/status"
    kube._call("PATCH", path, body=patch, content_type="application/strategic-merge-patch+json")


# ---------------------------------------------------------------- changes, drift and garbage collection


def test_a_spec_change_is_rolled_out(kube, namespace, operator):
    create(kube, namespace, serving(name="change", gpu=L40S))
    eventually(lambda: status_of(kube, namespace, "change").get("phase") == "Ready")
    merge_patch(kube, k.SERVINGS.path(namespace, "change"), {"spec": {"speculation": {"numSpeculativeTokens": 7}}})
    eventually(lambda: '"num_speculative_tokens": 7' in " ".join(args_of(get(kube, k.DEPLOYMENTS, namespace, "change"))) or
               '"num_speculative_tokens":7' in " ".join(args_of(get(kube, k.DEPLOYMENTS, namespace, "change"))))
    done = eventually(lambda: (s := status_of(kube, namespace, "change")).get("observedGeneration") == 2 and s.get("phase") == "Ready" and s)
    assert done["effectiveNumSpeculativeTokens"] == 7
    delete_serving(kube, namespace, "change")


def test_a_hand_edit_of_a_managed_deployment_is_put_back(kube, namespace, operator):
    create(kube, namespace, serving(name="edited", gpu=L40S))
    rendered = eventually(lambda: status_of(kube, namespace, "edited").get("phase") == "Ready" and get(kube, k.DEPLOYMENTS, namespace, "edited"))
    container = copy.deepcopy(rendered["spec"]["template"]["spec"]["containers"][0])
    container["args"] = [*container["args"], "--max-num-seqs", "7"]
    kube._call("PATCH", k.DEPLOYMENTS.path(namespace, "edited"), body={"spec": {"template": {"spec": {"containers": [container]}}}}, content_type="application/strategic-merge-patch+json")
    eventually(lambda: args_of(get(kube, k.DEPLOYMENTS, namespace, "edited")) == args_of(rendered))
    eventually(lambda: "DriftReverted" in [e["reason"] for e in events_of(kube, namespace, "edited")], timeout=30)
    delete_serving(kube, namespace, "edited")


def test_a_deleted_deployment_is_put_back(kube, namespace, operator):
    created = create(kube, namespace, serving(name="drift", gpu=L40S))
    first = eventually(lambda: get(kube, k.DEPLOYMENTS, namespace, "drift"))
    kube._call("DELETE", k.DEPLOYMENTS.path(namespace, "drift"))
    restored = eventually(lambda: (d := get(kube, k.DEPLOYMENTS, namespace, "drift")) and d["metadata"]["uid"] != first["metadata"]["uid"] and d)
    assert restored["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    delete_serving(kube, namespace, "drift")


def test_deleting_a_serving_garbage_collects_what_it_owns(kube, namespace, operator):
    create(kube, namespace, serving(name="owned", gpu=L40S, baseline={"replicas": 1}))
    eventually(lambda: status_of(kube, namespace, "owned").get("phase") == "Ready")
    delete_serving(kube, namespace, "owned")
    selector = [("labelSelector", f"{manifests.SERVING_LABEL}=owned")]
    for path in (k.DEPLOYMENTS.path(namespace), k.SERVICES.path(namespace), f"/api/v1/namespaces/{namespace}/pods"):
        eventually(lambda: kube._call("GET", path, query=selector)["items"] == [], timeout=60)


# ---------------------------------------------------------------- what only the operator can judge


@pytest.mark.parametrize(
    "name, overrides, reason, field",
    [
        ("odd-gpu", {"gpu": {"product": "Z100"}}, "UnknownGPUProduct", "spec.gpu.product"),
        ("removed-flag", {"gpu": L40S, "engine": {"extraArgs": ["--speculative-model", "org/draft"]}}, "InvalidExtraArgs", "--speculative-model"),
    ],
)
def test_operator_judged_bad_input_is_invalid_with_one_warning_and_nothing_applied(kube, namespace, operator, name, overrides, reason, field):
    create(kube, namespace, serving(name=name, **overrides))
    refused = eventually(lambda: (c := condition_of(kube, namespace, name, "Accepted")) and c["status"] == "False" and c)
    assert refused["reason"] == reason and field in refused["message"]
    assert refused["message"].endswith("nothing applied"), refused["message"]  # nothing ever was: no "keep serving"
    assert status_of(kube, namespace, name)["phase"] == "Invalid"
    eventually(lambda: warnings_of(kube, namespace, name), timeout=30)
    time.sleep(5)  # room for a retry storm, if there were one
    warnings = warnings_of(kube, namespace, name)
    assert [e["reason"] for e in warnings] == [reason] and warnings[0].get("count", 1) == 1
    assert get(kube, k.DEPLOYMENTS, namespace, name) is None and get(kube, k.SERVICES, namespace, name) is None
    delete_serving(kube, namespace, name)


def test_a_refused_change_leaves_the_serving_objects_as_they_were(kube, namespace, operator):
    create(kube, namespace, serving(name="kept", gpu=L40S))
    before = eventually(lambda: status_of(kube, namespace, "kept").get("phase") == "Ready" and get(kube, k.DEPLOYMENTS, namespace, "kept"))
    merge_patch(kube, k.SERVINGS.path(namespace, "kept"), {"spec": {"gpu": {"product": "Z100"}}})
    refused = eventually(lambda: (c := condition_of(kube, namespace, "kept", "Accepted")) and c["status"] == "False" and c)
    assert refused["message"].endswith("the objects applied earlier keep serving"), refused["message"]
    assert get(kube, k.DEPLOYMENTS, namespace, "kept")["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    delete_serving(kube, namespace, "kept")


def test_a_variant_the_spec_no_longer_declares_falls_back_visibly(kube, namespace, operator):
    ladder = {"model": "o/m-int4", "variants": [{"name": "int4", "model": "o/m-int4"}, {"name": "bf16", "model": "o/m"}]}
    create(kube, namespace, serving(name="ladder", gpu=L40S, target=ladder))
    eventually(lambda: status_of(kube, namespace, "ladder").get("phase") == "Ready")
    # What the health loop records when it steps up a rung; a Deployment event then renders it.
    kube._call("PATCH", k.SERVINGS.path(namespace, "ladder") + "/status", body={"status": {"activeVariant": "bf16"}}, content_type=k.MERGE)
    kube._call("PATCH", k.DEPLOYMENTS.path(namespace, "ladder"), body={"metadata": {"annotations": {"e2e/nudge": "1"}}}, content_type=k.MERGE)
    eventually(lambda: args_of(get(kube, k.DEPLOYMENTS, namespace, "ladder"))[0] == "o/m")
    merge_patch(kube, k.SERVINGS.path(namespace, "ladder"), {"spec": {"target": {"variants": [{"name": "int4", "model": "o/m-int4"}]}}})
    fallback = eventually(lambda: (c := condition_of(kube, namespace, "ladder", "Accepted")) and c["reason"] == "VariantFallback" and c)
    assert fallback["status"] == "True" and "'bf16'" in fallback["message"] and "variant 'int4'" in fallback["message"]
    eventually(lambda: args_of(get(kube, k.DEPLOYMENTS, namespace, "ladder"))[0] == "o/m-int4")
    assert status_of(kube, namespace, "ladder")["activeVariant"] == "int4"
    time.sleep(3)
    fallbacks = [e for e in warnings_of(kube, namespace, "ladder") if e["reason"] == "UnknownVariant"]
    assert len(fallbacks) == 1 and fallbacks[0].get("count", 1) == 1
    delete_serving(kube, namespace, "ladder")


def test_a_hundred_gpu_free_servings_cause_no_false_drift(kube, namespace, operator):
    names = [f"nogpu-{i:03d}" for i in range(100)]
    for name in names:
        create(kube, namespace, serving(name=name, gpu={"resourceName": "", "product": "L40S"}, engine={"resources": {"requests": {"cpu": "10m"}}}))
    eventually(lambda: all(status_of(kube, namespace, n).get("phase") == "Ready" for n in names), timeout=240, interval=2)
    time.sleep(10)  # the Deployment controller keeps writing status meanwhile: none of that is drift
    events = kube._call("GET", f"/api/v1/namespaces/{namespace}/events", query=[("fieldSelector", "reason=DriftReverted")])["items"]
    assert [e["involvedObject"]["name"] for e in events if e["involvedObject"]["name"] in names] == []
    for name in names:
        kube._call("DELETE", k.SERVINGS.path(namespace, name))
    eventually(lambda: not [s for s in kube._call("GET", k.SERVINGS.path(namespace))["items"] if s["metadata"]["name"].startswith("nogpu-")], timeout=120, interval=2)
