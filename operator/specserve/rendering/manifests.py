"""Pure rendering: a SpeculativeServing spec plus the current decision state become Kubernetes objects.

No I/O here: the controller applies what this returns, the CLI prints it, the tests inspect it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from specserve import api, catalog
from specserve.decision import evidence
from specserve.engine import vllm

MANAGER = "specserve"
ROLE_SPECULATIVE = "speculative"
ROLE_BASELINE = "baseline"
ROLE_CHALLENGER = "challenger"  # a trial's candidate beside the incumbent, behind the same Service
SERVING_LABEL = "specserve.dev/serving"
ROLE_LABEL = "specserve.dev/role"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
RENDERED_HASH_ANNOTATION = "specserve.dev/rendered-hash"
SHM_VOLUME = "dshm"
CACHE_VOLUME = "model-cache"


# Always on the vLLM container, whatever the spec says: Pod Security `restricted` asks for no more than this and a non-root user.
CONTAINER_HARDENING = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

PROGRESS_MARGIN_SECONDS = 600  # scheduling and pulling a multi-GB vLLM image, beyond the model's load time


class RenderError(ValueError):
    """The spec passed schema validation but cannot be turned into objects (the operator's own judgement)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Owner:
    """The SpeculativeServing whose objects are rendered."""

    name: str
    namespace: str
    uid: str = ""


@dataclass(frozen=True)
class DecisionState:
    """What the health loop decided; kept in status, defaults to the spec's starting point."""

    speculation: bool = True
    variant: str | None = None
    schedule: tuple[tuple[int, int, int], ...] | None = None  # k by batch size; None: the spec's k
    challenger: tuple[tuple[int, int, int], ...] | None = None  # a trial's candidate schedule, run by its own slice
    challenger_replicas: int = 0  # taken from the speculative Deployment's replicas while the trial runs


def ranges(spec: api.SpeculativeServingSpec, state: DecisionState) -> tuple[tuple[int, int, int], ...]:
    """k by batch size as rendered: the decided schedule within the spec's bounds, else the spec's own."""
    speculation = spec.speculation
    if state.schedule:
        return evidence.clamp(state.schedule, speculation.num_speculative_tokens, speculation.disable_above_batch_size)
    return evidence.spec_ranges(speculation.num_speculative_tokens, speculation.disable_above_batch_size)


def schedule_summary(spec: api.SpeculativeServingSpec, state: DecisionState) -> str:
    """The speculation in force in a few characters: off, k4, or k4<=31,0."""
    return evidence.short(ranges(spec, state)) if state.speculation else "off"


@dataclass(frozen=True)
class Target:
    """The checkpoint actually served after the variant is resolved."""

    variant: str | None
    model: str
    quantization: str | None
    revision: str | None


@dataclass(frozen=True)
class RenderOptions:
    pod_monitor_api: bool = False  # the cluster serves monitoring.coreos.com/v1
    allowed_image_prefixes: tuple[str, ...] = ()  # the operator's image policy; empty allows every image


def resolve_target(spec: api.SpeculativeServingSpec, state: DecisionState) -> Target:
    target = spec.target
    if not target.variants:
        if state.variant is not None:
            raise RenderError("UnknownVariant", f"variant {state.variant!r} is active but spec.target declares no variants")
        return Target(None, target.model, target.quantization, target.revision)
    wanted = state.variant or target.active_variant or target.variants[0].name
    for variant in target.variants:
        if variant.name == wanted:
            return Target(variant.name, variant.model, variant.quantization, variant.revision or target.revision)
    declared = ", ".join(v.name for v in target.variants)
    raise RenderError("UnknownVariant", f"variant {wanted!r} is not among spec.target.variants ({declared})")


def check(spec: api.SpeculativeServingSpec, state: DecisionState, options: RenderOptions = RenderOptions()) -> None:
    """Everything the schema cannot judge; raises RenderError naming the field. With planner.verdict, the one rule by
    which the operator refuses a spec (Accepted=False) and `specserve plan` and `render` say it would."""
    image_problem = image_refused(spec.engine.image, options.allowed_image_prefixes)
    if image_problem:
        raise RenderError("ImageNotAllowed", image_problem)
    product = spec.gpu.product
    if product is not None and catalog.gpu_product(product) is None:
        known = ", ".join(p.name for p in catalog.gpu_products().values())
        raise RenderError("UnknownGPUProduct", f"spec.gpu.product {product!r} is not in the GPU catalog ({known}); set spec.gpu.memoryGiB for other products")
    try:
        vllm.check_extra_args(spec.engine.extra_args)
    except vllm.ExtraArgsError as error:
        raise RenderError("InvalidExtraArgs", str(error)) from error
    resolve_target(spec, state)


def image_refused(image: str, allowed_prefixes: tuple[str, ...]) -> str | None:
    """Why the operator's image policy refuses an image, or None; no prefixes allow every image."""
    if not allowed_prefixes or any(image.startswith(prefix) for prefix in allowed_prefixes):
        return None
    listed = ", ".join(repr(p) for p in allowed_prefixes)
    return f"spec.engine.image {image!r} is not allowed by the operator's image policy, which allows only images starting with {listed} (SPECSERVE_ALLOWED_IMAGE_PREFIXES)"


def render(owner: Owner, spec: api.SpeculativeServingSpec, state: DecisionState, options: RenderOptions = RenderOptions()) -> list[dict[str, Any]]:
    """Every object the operator applies for one SpeculativeServing, in apply order."""
    check(spec, state, options)
    target = resolve_target(spec, state)
    objects = [deployment(owner, spec, state, target, ROLE_SPECULATIVE)]
    if trial_slice(spec, state):
        objects.append(deployment(owner, spec, state, target, ROLE_CHALLENGER))
    if spec.baseline.replicas > 0:
        objects.append(deployment(owner, spec, state, target, ROLE_BASELINE))
    objects.append(service(owner))
    if wants_pod_monitor(spec, options):
        objects.append(pod_monitor(owner))
    return [stamped(o) for o in objects]


def stamped(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with a hash of itself in an annotation: a live object carrying the same hash is as rendered
    (unless edited since, which the drift check sees), so a restarted operator need not apply it again."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]
    meta = obj["metadata"]
    return {**obj, "metadata": {**meta, "annotations": {**(meta.get("annotations") or {}), RENDERED_HASH_ANNOTATION: digest}}}


def wants_pod_monitor(spec: api.SpeculativeServingSpec, options: RenderOptions) -> bool:
    mode = spec.monitoring.pod_monitor
    return mode == api.PodMonitorMode.ENABLED or (mode == api.PodMonitorMode.AUTO and options.pod_monitor_api)


def deployment_name(owner_name: str, role: str) -> str:
    return owner_name if role == ROLE_SPECULATIVE else f"{owner_name}-{role}"


def selector_labels(owner_name: str, role: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "vllm", SERVING_LABEL: owner_name}
    if role is not None:
        labels[ROLE_LABEL] = role
    return labels


def common_labels(owner_name: str, role: str | None = None) -> dict[str, str]:
    return {**selector_labels(owner_name, role), "app.kubernetes.io/instance": owner_name, MANAGED_BY_LABEL: MANAGER}


def _metadata(owner: Owner, name: str, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": owner.namespace, "labels": labels}
    if owner.uid:
        meta["ownerReferences"] = [
            {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": owner.name, "uid": owner.uid, "controller": True, "blockOwnerDeletion": True}
        ]
    return meta


def trial_slice(spec: api.SpeculativeServingSpec, state: DecisionState) -> bool:
    """Whether a challenger Deployment runs: a trial's candidate while speculation is on and replicas leave room."""
    return state.challenger is not None and state.speculation and 0 < state.challenger_replicas < spec.replicas


def deployment(owner: Owner, spec: api.SpeculativeServingSpec, state: DecisionState, target: Target, role: str) -> dict[str, Any]:
    challenger = role == ROLE_CHALLENGER
    schedule = ranges(spec, replace(state, schedule=state.challenger)) if challenger else ranges(spec, state)
    speculating = role in (ROLE_SPECULATIVE, ROLE_CHALLENGER) and state.speculation and any(k > 0 for _, _, k in schedule)
    args = vllm.serve_args(
        model=target.model,
        served_model_name=spec.target.served_model_name or owner.name,
        revision=target.revision,
        quantization=target.quantization,
        tensor_parallel_size=spec.gpu.count,
        engine=spec.engine,
        speculative=vllm.speculative_config(spec.speculation, schedule) if speculating else None,
    )
    labels = common_labels(owner.name, role)
    replicas = {ROLE_SPECULATIVE: spec.replicas, ROLE_BASELINE: spec.baseline.replicas, ROLE_CHALLENGER: state.challenger_replicas}[role]
    if role == ROLE_SPECULATIVE and trial_slice(spec, state):
        replicas -= state.challenger_replicas
    annotations = {**spec.engine.pod_annotations, "specserve.dev/variant": target.variant or "", "specserve.dev/speculation": "on" if speculating else "off"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, deployment_name(owner.name, role), labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(owner.name, role)},
            # GPUs are scarce: replace pods in place instead of asking for a surge replica's GPUs.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            # Loading a model may take the whole startup timeout: only past it (plus scheduling and image pull) is
            # a rollout stuck, so the serving does not turn Degraded while a large model loads.
            "progressDeadlineSeconds": spec.engine.startup_timeout_seconds + PROGRESS_MARGIN_SECONDS,
            "template": {
                "metadata": {"labels": {**spec.engine.pod_labels, **labels}, "annotations": annotations},
                "spec": _pod_spec(spec, target, args),
            },
        },
    }


def _pod_spec(spec: api.SpeculativeServingSpec, target: Target, args: list[str]) -> dict[str, Any]:
    engine = spec.engine
    pod: dict[str, Any] = {
        "containers": [_container(spec, target, args)],
        "volumes": _volumes(spec, target),
        "terminationGracePeriodSeconds": 60,
        # vLLM never calls the API server: no ServiceAccount token in the pods.
        "automountServiceAccountToken": False,
        "securityContext": {**(engine.pod_security_context.wire() if engine.pod_security_context else {}), "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if engine.node_selector:
        pod["nodeSelector"] = dict(engine.node_selector)
    if engine.tolerations:
        pod["tolerations"] = [t.wire() for t in engine.tolerations]
    if engine.affinity:
        pod["affinity"] = engine.affinity
    return pod


def _container(spec: api.SpeculativeServingSpec, target: Target, args: list[str]) -> dict[str, Any]:
    engine = spec.engine
    gpus = {spec.gpu.resource_name: str(spec.gpu.count)} if spec.gpu.resource_name else {}
    resources = engine.resources.wire() if engine.resources else {}
    resources = {
        kind: amounts
        for kind in ("requests", "limits")
        if (amounts := {**{k: str(v) for k, v in (resources.get(kind) or {}).items()}, **gpus})
    }  # the API server stores an empty map as absent: rendering one would look like drift on every event
    startup_period = 10
    return {
        "name": "vllm",
        "image": engine.image,
        "command": list(vllm.COMMAND),
        "args": args,
        "ports": [{"name": "http", "containerPort": vllm.PORT, "protocol": "TCP"}],
        **({"env": env} if (env := _env(spec)) else {}),  # the API server drops empty lists; so do we
        "resources": resources,
        "volumeMounts": _volume_mounts(spec, target),
        "startupProbe": _probe(period=startup_period, failures=-(-engine.startup_timeout_seconds // startup_period), timeout=5),
        "readinessProbe": _probe(period=10, failures=3, timeout=5),
        "livenessProbe": _probe(period=15, failures=6, timeout=10),
        "securityContext": {**(engine.security_context.wire() if engine.security_context else {}), **CONTAINER_HARDENING},
    }


def _probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": timeout}


def _env(spec: api.SpeculativeServingSpec) -> list[dict[str, Any]]:
    engine = spec.engine
    env: list[dict[str, Any]] = []
    if engine.hf_token_secret:
        secret = engine.hf_token_secret
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}})
    if engine.model_cache:
        env.append({"name": "HF_HOME", "value": engine.model_cache.mount_path})
    reserved = {e["name"] for e in env}
    return env + [e.wire() for e in engine.env if e.name not in reserved]


def _pvc_claims(spec: api.SpeculativeServingSpec, target: Target) -> list[str]:
    refs = [target.model] + ([spec.speculation.draft.model] if spec.speculation.draft else [])
    claims = [ref.removeprefix("pvc://").split("/", 1)[0] for ref in refs if ref.startswith("pvc://")]
    return sorted(set(claims))


def _volumes(spec: api.SpeculativeServingSpec, target: Target) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.engine.shm_size}}]
    cache = spec.engine.model_cache
    if cache:
        volumes.append({"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.claim_name, **_read_only(cache.read_only)}})
    for claim in _pvc_claims(spec, target):
        volumes.append({"name": f"pvc-{claim}"[:63], "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    return volumes


def _volume_mounts(spec: api.SpeculativeServingSpec, target: Target) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    cache = spec.engine.model_cache
    if cache:
        mounts.append({"name": CACHE_VOLUME, "mountPath": cache.mount_path, **_read_only(cache.read_only)})
    for claim in _pvc_claims(spec, target):
        mounts.append({"name": f"pvc-{claim}"[:63], "mountPath": vllm.pvc_mount_path(claim), "readOnly": True})
    return mounts


def _read_only(flag: bool) -> dict[str, bool]:
    """readOnly only when true: the API server omits false booleans, and drift detection compares with it."""
    return {"readOnly": True} if flag else {}


def service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, owner.name, common_labels(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [{"name": "http", "port": vllm.PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def pod_monitor(owner: Owner) -> dict[str, Any]:
    """Scrapes every pod of the serving and turns its serving and role pod labels into metric labels."""
    relabel = [
        {"sourceLabels": ["__meta_kubernetes_pod_label_specserve_dev_serving"], "targetLabel": "serving", "action": "replace"},
        {"sourceLabels": ["__meta_kubernetes_pod_label_specserve_dev_role"], "targetLabel": "role", "action": "replace"},
        {"sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": "namespace", "action": "replace"},
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(owner, owner.name, common_labels(owner.name)),
        "spec": {
            "selector": {"matchLabels": {SERVING_LABEL: owner.name, MANAGED_BY_LABEL: MANAGER}},
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s", "relabelings": relabel}],
        },
    }
