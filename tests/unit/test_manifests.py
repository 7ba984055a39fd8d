"""Rendering: spec plus decision state become Deployments, a Service and a PodMonitor."""

import json

import pydantic
import pytest

from specserve import api
from specserve.rendering import manifests
from tests.helpers import minimal_spec

OWNER = manifests.Owner(name="demo", namespace="llm", uid="1234-uid")


def spec(**overrides):
    return api.SpeculativeServingSpec.model_validate(minimal_spec(**overrides))


def objects(s=None, state=manifests.DecisionState(), options=manifests.RenderOptions()):
    return manifests.render(OWNER, s or spec(), state, options)


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


def flag(args, name):
    return args[args.index(name) + 1] if name in args else None


def speculative_config(deployment):
    value = flag(container(deployment)["args"], "--speculative-config")
    return json.loads(value) if value else None


def test_minimal_spec_renders_one_deployment_and_one_service():
    assert [o["kind"] for o in objects()] == ["Deployment", "Service"]


def test_every_object_is_owned_by_the_serving():
    for obj in objects(spec(baseline={"replicas": 1}), options=manifests.RenderOptions(pod_monitor_api=True)):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "specserve.dev/v1alpha1", "kind": "SpeculativeServing", "name": "demo", "uid": "1234-uid", "controller": True, "blockOwnerDeletion": True}
        assert obj["metadata"]["namespace"] == "llm"


def test_pods_carry_the_design_labels():
    labels = objects()[0]["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/managed-by": "specserve",
        "specserve.dev/serving": "demo",
        "specserve.dev/role": "speculative",
    }


def test_user_pod_labels_cannot_override_the_design_labels():
    labels = objects(spec(engine={"podLabels": {"specserve.dev/role": "x", "team": "a"}}))[0]["spec"]["template"]["metadata"]["labels"]
    assert labels["specserve.dev/role"] == "speculative" and labels["team"] == "a"


def test_selector_matches_template_labels():
    for dep in by_kind(objects(spec(baseline={"replicas": 2})), "Deployment"):
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_vllm_serve_with_positional_model_first():
    c = container(objects()[0])
    assert c["command"] == ["vllm", "serve"]
    assert c["args"][0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert "--model" not in c["args"]


def test_served_model_name_defaults_to_the_serving_name():
    assert flag(container(objects()[0])["args"], "--served-model-name") == "demo"


def test_gpu_count_sets_requests_limits_and_tensor_parallel_size():
    c = container(objects(spec(gpu={"count": 4}))[0])
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "4"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert flag(c["args"], "--tensor-parallel-size") == "4"


def test_gpu_resource_name_can_change_or_be_left_out():
    amd = container(objects(spec(gpu={"count": 2, "resourceName": "amd.com/gpu"}))[0])["resources"]
    assert amd["limits"] == {"amd.com/gpu": "2"} and amd["requests"] == {"amd.com/gpu": "2"}
    none = container(objects(spec(gpu={"resourceName": ""}))[0])["resources"]
    assert none == {}  # no empty maps: the API server stores them as absent, and the difference would look like drift


def test_dev_shm_is_a_memory_backed_empty_dir():
    dep = objects()[0]
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert volume["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(dep)["volumeMounts"]


def test_probes_use_health_and_startup_tolerates_the_configured_load_time():
    c = container(objects(spec(engine={"startupTimeoutSeconds": 2400}))[0])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2400


def test_ngram_speculative_config():
    s = spec(speculation={"method": "ngram", "numSpeculativeTokens": 5, "ngram": {"promptLookupMin": 2, "promptLookupMax": 6}})
    assert speculative_config(objects(s)[0]) == {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_min": 2, "prompt_lookup_max": 6}


def test_draft_model_speculative_config_carries_the_draft():
    draft = {"model": "org/draft", "quantization": "fp8", "tensorParallelSize": 1, "revision": "v2"}
    cfg = speculative_config(objects(spec(speculation={"method": "draft_model", "draft": draft, "numSpeculativeTokens": 3}))[0])
    assert cfg == {"method": "draft_model", "model": "org/draft", "quantization": "fp8", "draft_tensor_parallel_size": 1, "revision": "v2", "num_speculative_tokens": 3}


def test_batch_size_cutoff_becomes_a_per_batch_size_schedule():
    cfg = speculative_config(objects(spec(speculation={"method": "ngram", "disableAboveBatchSize": 32}))[0])
    assert cfg["num_speculative_tokens_per_batch_size"] == [[1, 32, 4], [33, 33, 0]]


def test_obsolete_flags_are_never_rendered():
    args = " ".join(container(objects(spec(speculation={"method": "draft_model", "draft": {"model": "o/d"}, "disableAboveBatchSize": 8}))[0])["args"])
    for obsolete in ("--speculative-model", "--num-speculative-tokens", "--speculative-disable-by-batch-size", "disable_by_batch_size"):
        assert obsolete not in args


def test_speculation_off_renders_no_speculative_config():
    dep = objects(state=manifests.DecisionState(speculation=False))[0]
    assert speculative_config(dep) is None
    assert dep["spec"]["template"]["metadata"]["annotations"]["specserve.dev/speculation"] == "off"


def test_a_decided_schedule_is_rendered_as_vllms_per_batch_size_ranges():
    cfg = speculative_config(objects(state=manifests.DecisionState(schedule=((1, 8, 2), (9, 9, 0))))[0])
    assert (cfg["num_speculative_tokens"], cfg["num_speculative_tokens_per_batch_size"]) == (2, [[1, 8, 2], [9, 9, 0]])


def test_a_decided_schedule_never_exceeds_the_specs_k():
    cfg = speculative_config(objects(state=manifests.DecisionState(schedule=((1, 8, 9), (9, 9, 2))))[0])
    assert cfg["num_speculative_tokens_per_batch_size"] == [[1, 8, 4], [9, 9, 2]]


LADDER = {
    "model": "org/base",
    "variants": [
        {"name": "int4", "model": "org/base-awq", "quantization": "awq_marlin"},
        {"name": "int8", "model": "org/base-w8a8", "quantization": "compressed-tensors"},
        {"name": "bf16", "model": "org/base"},
    ],
}


def test_first_variant_starts_active_by_default():
    args = container(objects(spec(target=LADDER))[0])["args"]
    assert args[0] == "org/base-awq" and flag(args, "--quantization") == "awq_marlin"


def test_variant_switch_renders_the_other_checkpoint():
    args = container(objects(spec(target=LADDER), state=manifests.DecisionState(variant="bf16"))[0])["args"]
    assert args[0] == "org/base" and "--quantization" not in args


def test_unknown_active_variant_is_a_render_error():
    with pytest.raises(manifests.RenderError) as error:
        objects(spec(target=LADDER), state=manifests.DecisionState(variant="fp4"))
    assert error.value.reason == "UnknownVariant" and "int4, int8, bf16" in str(error.value)


def test_baseline_deployment_runs_without_speculation_on_the_same_variant():
    deps = by_kind(objects(spec(target=LADDER, baseline={"replicas": 2})), "Deployment")
    speculative, baseline = deps
    assert baseline["metadata"]["name"] == "demo-baseline" and baseline["spec"]["replicas"] == 2
    assert baseline["spec"]["template"]["metadata"]["labels"]["specserve.dev/role"] == "baseline"
    assert speculative_config(baseline) is None and speculative_config(speculative) is not None
    assert container(baseline)["args"][0] == container(speculative)["args"][0]


def test_service_selects_both_roles():
    svc = by_kind(objects(spec(baseline={"replicas": 1})), "Service")[0]
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "vllm", "specserve.dev/serving": "demo"}
    assert svc["spec"]["ports"][0]["port"] == 8000


def test_pod_monitor_when_the_cluster_serves_it_or_the_spec_asks():
    assert by_kind(objects(options=manifests.RenderOptions(pod_monitor_api=True)), "PodMonitor")
    assert not by_kind(objects(), "PodMonitor")
    assert by_kind(objects(spec(monitoring={"podMonitor": "Enabled"})), "PodMonitor")
    assert not by_kind(objects(spec(monitoring={"podMonitor": "Disabled"}), options=manifests.RenderOptions(pod_monitor_api=True)), "PodMonitor")


def test_pod_monitor_turns_pod_labels_into_serving_role_and_namespace():
    pm = by_kind(objects(spec(monitoring={"podMonitor": "Enabled"})), "PodMonitor")[0]
    targets = {r["targetLabel"] for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert targets == {"serving", "role", "namespace"}


def test_hf_token_and_model_cache():
    c = container(objects(spec(engine={"hfTokenSecret": {"name": "hf"}, "modelCache": {"claimName": "cache"}}))[0])
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert env["HF_HOME"]["value"] == "/models-cache"


def test_pvc_model_reference_is_mounted_and_passed_as_a_path():
    dep = objects(spec(target={"model": "pvc://weights/llama/8b"}))[0]
    assert container(dep)["args"][0] == "/models/weights/llama/8b"
    claims = [v["persistentVolumeClaim"]["claimName"] for v in dep["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["weights"]


def test_unknown_gpu_product_is_a_render_error_naming_the_field():
    with pytest.raises(manifests.RenderError, match="spec.gpu.product 'Z100'") as error:
        objects(spec(gpu={"product": "Z100"}))
    assert error.value.reason == "UnknownGPUProduct"


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--speculative-model", "x/y"], "removed from vLLM"),
        (["--max-model-len", "4096"], "set by specserve"),
        (["enable-prefix-caching"], "must start with a flag"),
        (["--served-model-name=x"], "set by specserve"),
    ],
)
def test_unusable_extra_args_are_render_errors(extra, fragment):
    with pytest.raises(manifests.RenderError, match=fragment):
        objects(spec(engine={"extraArgs": extra}))


def test_extra_args_come_last():
    args = container(objects(spec(engine={"extraArgs": ["--enable-prefix-caching"]}))[0])["args"]
    assert args[-1] == "--enable-prefix-caching"


def test_rendering_is_deterministic():
    assert objects(spec(target=LADDER, baseline={"replicas": 1})) == objects(spec(target=LADDER, baseline={"replicas": 1}))



# ---------------------------------------------------------------- hardened pods


def pod_spec(deployment):
    return deployment["spec"]["template"]["spec"]


def test_every_rendered_pod_is_hardened_and_gets_no_service_account_token():
    for deployment in by_kind(objects(spec(baseline={"replicas": 1})), "Deployment"):
        pod = pod_spec(deployment)
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
        assert container(deployment)["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_the_specs_security_contexts_add_to_the_hardening():
    s = spec(engine={
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "readOnlyRootFilesystem": True},
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch", "supplementalGroups": [44]},
    })
    (deployment,) = by_kind(objects(s), "Deployment")
    assert pod_spec(deployment)["securityContext"] == {
        "runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True, "fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch", "supplementalGroups": [44],
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(deployment)["securityContext"] == {
        "runAsUser": 1000, "runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    }


@pytest.mark.parametrize("field", [
    {"securityContext": {"privileged": True}},
    {"securityContext": {"allowPrivilegeEscalation": True}},
    {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
    {"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
    {"podSecurityContext": {"runAsNonRoot": True, "runAsUser": 0}},
])
def test_a_spec_cannot_take_the_hardening_back(field):
    with pytest.raises(pydantic.ValidationError) as error:
        spec(engine=field)
    assert [e["loc"][:2] for e in error.value.errors()] == [("engine", next(iter(field)))]


def test_the_image_policy_refuses_other_images_and_allows_all_without_prefixes():
    policy = manifests.RenderOptions(allowed_image_prefixes=("vllm/vllm-openai:",))
    assert objects(options=policy)
    with pytest.raises(manifests.RenderError) as refused:
        objects(spec(engine={"image": "vllm/vllm-openai-evil:latest"}), options=policy)
    assert refused.value.reason == "ImageNotAllowed" and "'vllm/vllm-openai-evil:latest'" in str(refused.value)
    assert objects(spec(engine={"image": "vllm/vllm-openai-evil:latest"}))
