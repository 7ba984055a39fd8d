"""The real operator against kmock: create, update, hand edits, deletion, bad input and availability."""

from __future__ import annotations

import asyncio
import json

from specserve import api
from tests.helpers import serving
from tests.integration.conftest import DEPLOYMENTS, NAMESPACE, SERVICES, SERVINGS, events_for, eventually, live

SERVINGS_URL = f"/apis/specserve.dev/v1alpha1/namespaces/{NAMESPACE}/speculativeservings"
DEPLOYMENTS_URL = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
MERGE = {"Content-Type": "application/merge-patch+json"}


async def create(kube, name, **spec):
    response = await kube.post(SERVINGS_URL, json=serving(name=name, namespace=NAMESPACE, **spec))
    assert response.status in (200, 201), await response.text()
    return await response.json()


def args(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def speculative_config(deployment):
    a = args(deployment)
    return json.loads(a[a.index("--speculative-config") + 1]) if "--speculative-config" in a else None


def condition(kube, name, type_):
    status = (live(kube, SERVINGS, name) or {}).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


async def test_create_makes_owned_deployment_and_service(kube, operator):
    created = await create(kube, "alpha")
    deployment = await eventually(lambda: live(kube, DEPLOYMENTS, "alpha"))
    service = await eventually(lambda: live(kube, SERVICES, "alpha"))
    for obj in (deployment, service):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("SpeculativeServing", "alpha", created["metadata"]["uid"], True)
    assert speculative_config(deployment)["method"] == "ngram"


async def test_create_records_status_and_an_applied_event(kube, operator):
    await create(kube, "beta")
    accepted = await eventually(lambda: condition(kube, "beta", "Accepted"))
    assert accepted["status"] == "True"
    status = live(kube, SERVINGS, "beta")["status"]
    assert status["observedGeneration"] == 1 and status["speculation"] == "On" and status["phase"] in ("Progressing", "Degraded")
    await eventually(lambda: [e for e in events_for(kube, "beta") if e["reason"] == "Applied"])


async def test_the_operator_writes_only_the_status_of_a_serving(kube, operator):
    created = await create(kube, "beta2")
    await eventually(lambda: condition(kube, "beta2", "Accepted"))
    await eventually(lambda: live(kube, DEPLOYMENTS, "beta2"))
    await asyncio.sleep(1.0)  # room for a late write to the object itself, if there were one
    to_servings = [r for r in list(kube) if r.resource is not None and r.resource.plural == api.PLURAL and r.method not in ("GET", "POST")]
    assert to_servings and all(r.subresource == "status" for r in to_servings), [(r.method, r.name, r.subresource) for r in to_servings]
    assert live(kube, SERVINGS, "beta2")["metadata"].get("annotations", {}) == created["metadata"].get("annotations", {})


async def test_spec_change_updates_the_deployment(kube, operator):
    await create(kube, "gamma")
    await eventually(lambda: live(kube, DEPLOYMENTS, "gamma"))
    patch = {"spec": {"replicas": 3, "speculation": {"method": "ngram", "numSpeculativeTokens": 2}}}
    assert (await kube.patch(f"{SERVINGS_URL}/gamma", json=patch, headers=MERGE)).status == 200
    deployment = await eventually(lambda: (d := live(kube, DEPLOYMENTS, "gamma")) and speculative_config(d)["num_speculative_tokens"] == 2 and d)
    assert deployment["spec"]["replicas"] == 3
    await eventually(lambda: live(kube, SERVINGS, "gamma")["status"]["observedGeneration"] == 2)


async def test_hand_edited_deployment_is_put_back(kube, operator):
    await create(kube, "delta")
    original = await eventually(lambda: live(kube, DEPLOYMENTS, "delta"))
    hacked = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": "evil:1", "args": ["x"]}]}}}}
    assert (await kube.patch(f"{DEPLOYMENTS_URL}/delta", json=hacked, headers=MERGE)).status == 200
    restored = await eventually(lambda: (d := live(kube, DEPLOYMENTS, "delta")) and args(d) == args(original) and d)
    assert restored["spec"]["template"]["spec"]["containers"][0]["image"] == original["spec"]["template"]["spec"]["containers"][0]["image"]
    await eventually(lambda: [e for e in events_for(kube, "delta") if e["reason"] == "DriftReverted" and e["type"] == "Warning"])


async def test_deleted_deployment_is_put_back(kube, operator):
    await create(kube, "epsilon")
    first = await eventually(lambda: live(kube, DEPLOYMENTS, "epsilon"))
    assert (await kube.delete(f"{DEPLOYMENTS_URL}/epsilon")).status == 200
    again = await eventually(lambda: (d := live(kube, DEPLOYMENTS, "epsilon")) and d["metadata"]["uid"] != first["metadata"]["uid"] and d)
    assert args(again) == args(first)


async def test_invalid_object_gets_a_condition_and_one_warning_while_another_reconciles(kube, operator):
    await create(kube, "broken", gpu={"product": "Z100"})
    await create(kube, "healthy")
    rejected = await eventually(lambda: (c := condition(kube, "broken", "Accepted")) and c["status"] == "False" and c)
    assert rejected["reason"] == "UnknownGPUProduct" and "spec.gpu.product 'Z100'" in rejected["message"]
    assert live(kube, SERVINGS, "broken")["status"]["phase"] == "Invalid"
    await eventually(lambda: live(kube, DEPLOYMENTS, "healthy"))
    assert live(kube, DEPLOYMENTS, "broken") is None
    await asyncio.sleep(1.5)  # room for a retry storm, if there were one
    warnings = [e for e in events_for(kube, "broken") if e["type"] == "Warning"]
    assert [w["reason"] for w in warnings] == ["UnknownGPUProduct"]


async def test_invalid_update_leaves_the_previous_objects_serving_without_retries(kube, operator):
    await create(kube, "zeta")
    good = await eventually(lambda: live(kube, DEPLOYMENTS, "zeta"))
    await eventually(lambda: (c := condition(kube, "zeta", "Accepted")) and c["status"] == "True")
    bad = {"spec": {"engine": {"extraArgs": ["--speculative-model", "org/draft"]}}}
    assert (await kube.patch(f"{SERVINGS_URL}/zeta", json=bad, headers=MERGE)).status == 200
    rejected = await eventually(lambda: (c := condition(kube, "zeta", "Accepted")) and c["status"] == "False" and c)
    assert rejected["reason"] == "InvalidExtraArgs" and "removed from vLLM" in rejected["message"]
    assert rejected["observedGeneration"] == 2
    patches_before = sum(1 for r in list(kube) if r.method == "PATCH" and r.resource is not None and r.name == "zeta")
    await asyncio.sleep(1.5)
    patches_after = sum(1 for r in list(kube) if r.method == "PATCH" and r.resource is not None and r.name == "zeta")
    assert patches_after == patches_before
    assert args(live(kube, DEPLOYMENTS, "zeta")) == args(good)


async def test_schema_invalid_object_that_slipped_past_admission_is_reported(kube, operator):
    await create(kube, "eta", speculation={"method": "draft_model"})
    rejected = await eventually(lambda: (c := condition(kube, "eta", "Accepted")) and c["status"] == "False" and c)
    assert rejected["reason"] == "InvalidSpec" and "speculation.draft is required" in rejected["message"]


async def test_baseline_scaled_to_zero_is_pruned(kube, operator):
    await create(kube, "theta", baseline={"replicas": 1})
    await eventually(lambda: live(kube, DEPLOYMENTS, "theta-baseline"))
    assert (await kube.patch(f"{SERVINGS_URL}/theta", json={"spec": {"baseline": {"replicas": 0}}}, headers=MERGE)).status == 200
    await eventually(lambda: live(kube, DEPLOYMENTS, "theta-baseline") is None)
    assert live(kube, DEPLOYMENTS, "theta") is not None


async def test_available_deployment_makes_the_serving_ready(kube, operator):
    await create(kube, "iota")
    deployment = await eventually(lambda: live(kube, DEPLOYMENTS, "iota"))
    available = {"status": {"observedGeneration": deployment["metadata"]["generation"], "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "readyReplicas": 1}}
    assert (await kube.patch(f"{DEPLOYMENTS_URL}/iota/status", json=available, headers=MERGE)).status == 200
    ready = await eventually(lambda: (c := condition(kube, "iota", "Ready")) and c["status"] == "True" and c)
    assert "iota: 1/1 available" in ready["message"]
    assert live(kube, SERVINGS, "iota")["status"]["phase"] == "Ready"


TOO_BIG = {
    "target": {"model": "meta-llama/Llama-3.1-70B-Instruct"},
    "gpu": {"count": 2, "product": "H100-80GB"},
    "speculation": {"method": "draft_model", "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct"}},
    "engine": {"maxModelLen": 16384},
}


async def test_a_serving_that_does_not_fit_is_not_applied(kube, operator):
    await create(kube, "kappa", **TOO_BIG)
    rejected = await eventually(lambda: (c := condition(kube, "kappa", "Accepted")) and c["status"] == "False" and c)
    assert rejected["reason"] == "MemoryBudgetExceeded"
    memory = condition(kube, "kappa", "MemoryBudget")
    assert (memory["status"], memory["reason"]) == ("False", "DoesNotFit") and "GiB" in memory["message"]
    assert live(kube, DEPLOYMENTS, "kappa") is None


async def test_a_fitting_serving_reports_its_budget(kube, operator):
    fits = {**TOO_BIG, "target": {"model": "neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8", "quantization": "fp8"}}
    fits["speculation"] = {"method": "draft_model", "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 2}}
    await create(kube, "lambda", **fits)
    memory = await eventually(lambda: condition(kube, "lambda", "MemoryBudget"))
    assert memory["status"] == "True" and "sequences at 16384 tokens" in memory["message"]
    assert live(kube, DEPLOYMENTS, "lambda") is not None


async def test_reconciles_and_rejections_are_counted_in_the_operators_metrics(kube, operator):
    from specserve.telemetry import TELEMETRY

    def count(result):
        return TELEMETRY.registry.get_sample_value("specserve_reconciles_total", {"result": result}) or 0

    applied, rejected = count("applied"), count("rejected")
    await create(kube, "mu")
    await create(kube, "nu", gpu={"product": "Z100"})
    await eventually(lambda: count("applied") > applied and count("rejected") > rejected)
    assert TELEMETRY.registry.get_sample_value("specserve_speculation_enabled", {"namespace": NAMESPACE, "serving": "mu"}) == 1


async def test_changing_the_spec_active_variant_is_new_intent(kube, operator):
    ladder = {"model": "o/m", "variants": [{"name": "int4", "model": "o/m-awq", "quantization": "awq_marlin"}, {"name": "bf16", "model": "o/m"}]}
    await create(kube, "xi", target=ladder)
    await eventually(lambda: live(kube, SERVINGS, "xi").get("status", {}).get("activeVariant") == "int4")
    patch = {"spec": {"target": {**ladder, "activeVariant": "bf16"}}}
    assert (await kube.patch(f"{SERVINGS_URL}/xi", json=patch, headers=MERGE)).status == 200
    deployment = await eventually(lambda: (d := live(kube, DEPLOYMENTS, "xi")) and args(d)[0] == "o/m" and d)
    assert "--quantization" not in args(deployment)
    await eventually(lambda: live(kube, SERVINGS, "xi")["status"]["activeVariant"] == "bf16")
