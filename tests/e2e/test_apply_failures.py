"""Applies the real API server does not take: a full ResourceQuota and a refusing admission policy; pods it does not admit.

The serving says which object failed and why, one Warning per cause, backs off, and recovers by itself. Pods refused by a
quota or by Pod Security are named in the serving's conditions (the Deployment's ReplicaFailure); hardened pods pass
Pod Security baseline as rendered, and restricted with a non-root user in the spec.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specserve.cluster import kube as k
from tests.e2e.cluster import condition_of, create, eventually, get, merge_patch, status_of, warnings_of
from tests.e2e.conftest import delete_namespace, delete_servings_then_namespace, new_namespace
from tests.e2e.operator_process import running_operator
from tests.helpers import EXAMPLES, load_example, serving

FIRST_RETRY, LONGEST_RETRY = 1.0, 8.0
GPU_FREE = {"gpu": {"resourceName": "", "product": "L40S"}, "engine": {"resources": {"requests": {"cpu": "10m"}}}}
REFUSED_NAME = "refused"


@pytest.fixture(scope="module")
def failing_namespace(kube, crd_installed):
    """A namespace whose ResourceQuota allows no Service, with an operator retrying fast (1 s doubling to 8 s)."""
    namespace = new_namespace(kube, "specserve-fail")
    kube._call("POST", f"/api/v1/namespaces/{namespace}/resourcequotas", body={
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services"}, "spec": {"hard": {"services": "0"}},
    })
    # Quota admission refuses everything while the quota controller has not yet counted what is used.
    eventually(lambda: (kube._call("GET", f"/api/v1/namespaces/{namespace}/resourcequotas/no-services").get("status") or {}).get("hard"), timeout=60)
    env = {"SPECSERVE_RETRY_FIRST_SECONDS": str(FIRST_RETRY), "SPECSERVE_RETRY_LONGEST_SECONDS": str(LONGEST_RETRY)}
    with running_operator(namespace, ["--namespace", namespace], env=env) as process:
        yield namespace, process
        delete_servings_then_namespace(kube, namespace)


@pytest.fixture(scope="module")
def quota_failure(kube, failing_namespace):
    """One serving whose Service the quota refuses, observed for 20 s of retries."""
    namespace, process = failing_namespace
    create(kube, namespace, serving(name="quota", **GPU_FREE))
    eventually(lambda: (c := condition_of(kube, namespace, "quota", "Accepted")) and c["reason"] == "ApplyFailed", timeout=60)
    time.sleep(20)
    return namespace, process


def _attempts(log: str, name: str) -> list[tuple[int, float]]:
    """(attempt, next delay) of each failed apply of one serving, from the operator's log."""
    found = re.findall(rf"Service/{name} \(403\).*?attempt (\d+), next in (\d+) s", log)
    return [(int(a), float(d)) for a, d in found]


def test_a_failing_apply_names_the_object_and_the_api_servers_message(kube, quota_failure):
    namespace, _ = quota_failure
    accepted = condition_of(kube, namespace, "quota", "Accepted")
    assert accepted["status"] == "False" and accepted["reason"] == "ApplyFailed"
    assert accepted["message"].startswith("the API server did not take Service/quota (403): services \"quota\" is forbidden: exceeded quota: no-services")
    assert "already current: Deployment/quota" in accepted["message"]


def test_a_failing_apply_records_the_generation_it_tried(kube, quota_failure):
    namespace, _ = quota_failure
    serving_now = get(kube, k.SERVINGS, namespace, "quota")
    assert serving_now["status"]["observedGeneration"] == serving_now["metadata"]["generation"]


def test_the_deployment_applied_before_the_failure_keeps_serving(kube, quota_failure):
    namespace, _ = quota_failure
    assert get(kube, k.DEPLOYMENTS, namespace, "quota") is not None
    assert status_of(kube, namespace, "quota")["phase"] in ("Progressing", "Ready")


def test_a_failing_apply_emits_one_warning_however_often_it_is_retried(kube, quota_failure):
    namespace, process = quota_failure
    assert len(_attempts(process.text(), "quota")) >= 3
    failures = [e for e in warnings_of(kube, namespace, "quota") if e["reason"] == "ApplyFailed"]
    assert len(failures) == 1 and failures[0].get("count", 1) == 1
    assert "Service/quota" in failures[0]["message"]


def test_retries_back_off_exponentially_up_to_the_longest_delay(quota_failure):
    _, process = quota_failure
    delays = [delay for _, delay in _attempts(process.text(), "quota")]
    expected = [min(LONGEST_RETRY, FIRST_RETRY * 2**i) for i in range(len(delays))]
    assert all(abs(d - e) <= max(1.0, 0.1 * e) + 0.5 for d, e in zip(delays, expected)), delays


def test_a_retry_applies_only_what_did_not_go_in(quota_failure):
    _, process = quota_failure
    messages = re.findall(r"Service/quota \(403\)[^\n]*", process.text())
    assert "applied before it: Deployment/quota" in messages[0]
    assert all("already current: Deployment/quota" in m and "applied before it" not in m for m in messages[1:])


def test_the_serving_recovers_by_itself_once_the_quota_allows_it(kube, quota_failure):
    namespace, _ = quota_failure
    kube._call("DELETE", f"/api/v1/namespaces/{namespace}/resourcequotas/no-services")
    started = time.monotonic()
    eventually(lambda: condition_of(kube, namespace, "quota", "Accepted")["status"] == "True", timeout=LONGEST_RETRY * 1.1 + 15)
    print(f"recovered {time.monotonic() - started:.1f} s after the quota was removed")
    assert get(kube, k.SERVICES, namespace, "quota") is not None
    eventually(lambda: status_of(kube, namespace, "quota")["phase"] == "Ready", timeout=60)


# ---------------------------------------------------------------- refused for good: an admission policy


@pytest.fixture(scope="module")
def refusing_policy(kube, failing_namespace):
    """A ValidatingAdmissionPolicy that refuses Services named `refused` in the test namespace (422 Invalid)."""
    namespace, _ = failing_namespace
    name = f"{namespace}-refuse-service"
    base = "/apis/admissionregistration.k8s.io/v1"
    kube._call("POST", f"{base}/validatingadmissionpolicies", body={
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["services"]}]},
            "validations": [{"expression": f"object.metadata.name != '{REFUSED_NAME}'", "message": "Services named refused are not allowed here", "reason": "Invalid"}],
        },
    })
    kube._call("POST", f"{base}/validatingadmissionpolicybindings", body={
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    })
    probe = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": REFUSED_NAME}, "spec": {"ports": [{"port": 80}]}}
    eventually(lambda: _refused(kube, namespace, probe), timeout=30)
    yield namespace
    kube._call("DELETE", f"{base}/validatingadmissionpolicybindings/{name}")
    kube._call("DELETE", f"{base}/validatingadmissionpolicies/{name}")


def _refused(kube: k.Kube, namespace: str, service: dict[str, Any]) -> bool:
    try:
        kube._call("POST", f"/api/v1/namespaces/{namespace}/services", body=service, query=[("dryRun", "All")])
    except ApiException as error:
        return error.status == 422
    return False


def test_an_object_admission_refuses_is_invalid_with_one_warning_and_no_retries(kube, refusing_policy):
    namespace = refusing_policy
    create(kube, namespace, serving(name=REFUSED_NAME, **GPU_FREE))
    accepted = eventually(lambda: (c := condition_of(kube, namespace, REFUSED_NAME, "Accepted")) and c["reason"] == "ApplyRejected" and c, timeout=60)
    assert accepted["status"] == "False"
    assert "rejected Service/refused (422)" in accepted["message"] and "Services named refused are not allowed here" in accepted["message"]
    assert "applied before it: Deployment/refused" in accepted["message"]
    assert status_of(kube, namespace, REFUSED_NAME)["phase"] == "Invalid"
    time.sleep(FIRST_RETRY * 8)
    rejections = [e for e in warnings_of(kube, namespace, REFUSED_NAME) if e["reason"] == "ApplyRejected"]
    assert len(rejections) == 1 and rejections[0].get("count", 1) == 1


# ---------------------------------------------------------------- pods refused: a pod quota, and Pod Security admission

NON_ROOT = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}


@pytest.fixture(scope="module")
def pod_admission(kube):
    """Three namespaces that judge pods, under one operator: a ResourceQuota allowing no pod, Pod Security
    enforce=baseline and enforce=restricted (the API server's built-in admission, labels on the namespace)."""
    names = {"quota": new_namespace(kube, "specserve-podquota"), "baseline": new_namespace(kube, "specserve-psa-base"), "restricted": new_namespace(kube, "specserve-psa-restr")}
    kube._call("POST", f"/api/v1/namespaces/{names['quota']}/resourcequotas", body={
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}},
    })
    eventually(lambda: (kube._call("GET", f"/api/v1/namespaces/{names['quota']}/resourcequotas/no-pods").get("status") or {}).get("hard"), timeout=60)
    for level in ("baseline", "restricted"):
        merge_patch(kube, f"/api/v1/namespaces/{names[level]}", {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": level}}})
    args = [arg for namespace in names.values() for arg in ("--namespace", namespace)]
    try:
        with running_operator("pod-admission", args):
            yield names
            for namespace in names.values():
                delete_servings_then_namespace(kube, namespace)
    finally:
        for namespace in names.values():
            delete_namespace(kube, namespace)


def example_in(path, namespace: str, pod_security: dict[str, Any] | None = None) -> dict[str, Any]:
    """An example as its user applies it, in NAMESPACE; without GPU requests (Pod Security does not judge resources,
    and the shared cluster's GPUs are for the other tests), with PODSECURITY as spec.engine.podSecurityContext."""
    obj = load_example(path)
    obj["metadata"]["namespace"] = namespace
    obj["spec"].setdefault("gpu", {})["resourceName"] = ""
    if pod_security is not None:
        obj["spec"].setdefault("engine", {})["podSecurityContext"] = pod_security
    return obj


def pods_of(kube: k.Kube, namespace: str, serving_name: str) -> list[dict[str, Any]]:
    return kube._call("GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", f"specserve.dev/serving={serving_name}")])["items"]


def admitted(kube: k.Kube, namespace: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The serving's pods once every Deployment of it has created its pods (each replica's pod exists)."""
    name = obj["metadata"]["name"]
    deployments = [d for d in kube._call("GET", k.DEPLOYMENTS.path(namespace), query=[("labelSelector", f"specserve.dev/serving={name}")])["items"]]
    wanted = sum(d["spec"].get("replicas", 1) for d in deployments)
    pods = pods_of(kube, namespace, name)
    return pods if deployments and len(pods) >= wanted else []


def test_a_quota_that_refuses_every_pod_is_named_in_the_servings_conditions(kube, pod_admission):
    namespace = pod_admission["quota"]
    create(kube, namespace, serving(name="no-pods", **GPU_FREE))
    ready = eventually(lambda: (c := condition_of(kube, namespace, "no-pods", "Ready")) and c["reason"] == "FailedCreate" and c, timeout=90)
    assert ready["status"] == "False" and "cannot create pods" in ready["message"] and "exceeded quota: no-pods" in ready["message"]
    assert status_of(kube, namespace, "no-pods")["phase"] == "Degraded"
    assert condition_of(kube, namespace, "no-pods", "Accepted")["status"] == "True"  # everything the operator applies went in


def test_pod_security_baseline_admits_every_examples_pods(kube, pod_admission):
    namespace = pod_admission["baseline"]
    examples = [example_in(path, namespace) for path in EXAMPLES]
    for obj in examples:
        create(kube, namespace, obj)
    for obj in examples:
        pods = eventually(lambda obj=obj: admitted(kube, namespace, obj), timeout=90)
        assert all(p["spec"]["automountServiceAccountToken"] is False for p in pods), obj["metadata"]["name"]


def test_pod_security_restricted_admits_every_examples_pods_when_the_spec_sets_a_non_root_user(kube, pod_admission):
    namespace = pod_admission["restricted"]
    examples = [example_in(path, namespace, NON_ROOT) for path in EXAMPLES]
    for obj in examples:
        create(kube, namespace, obj)
    for obj in examples:
        pods = eventually(lambda obj=obj: admitted(kube, namespace, obj), timeout=90)
        for pod in pods:
            (container,) = pod["spec"]["containers"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False and container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not [v for v in pod["spec"].get("volumes", []) if v["name"].startswith("kube-api-access")]  # no token mounted


def test_pod_security_restricted_refusing_a_root_pod_is_named_in_the_servings_conditions(kube, pod_admission):
    namespace = pod_admission["restricted"]
    create(kube, namespace, serving(name="as-root", **GPU_FREE))
    ready = eventually(lambda: (c := condition_of(kube, namespace, "as-root", "Ready")) and c["reason"] == "FailedCreate" and c, timeout=90)
    assert 'violates PodSecurity "restricted:latest"' in ready["message"] and "runAsNonRoot" in ready["message"]
    assert not pods_of(kube, namespace, "as-root")
