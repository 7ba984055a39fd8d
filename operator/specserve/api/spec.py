"""The SpeculativeServing API: the spec as pydantic models, and the base every model of the API shares.

These models are the single source of truth; crd.py generates the CRD (schema, defaults, CEL rules) from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "specserve.dev"
VERSION = "v1alpha1"
KIND = "SpeculativeServing"
PLURAL = "speculativeservings"
SINGULAR = "speculativeserving"
SHORT_NAMES = ["sps"]
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_IMAGE = "vllm/vllm-openai:v0.33.0"
MAX_NAME_LENGTH = 42  # leaves room for "-baseline" plus ReplicaSet and pod suffixes within 63
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # a DNS-1035 label, because the Service takes the same name

MODEL_REF_PATTERN = r"^((hf://)?[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?|/[^\s]+)$"
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


@dataclass(frozen=True)
class Rule:
    """A cross-field constraint, stated once: CEL for the API server, a Python check for everything else."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str | None = None  # the field the API server names when the rule fails (CEL fieldPath), relative to the object


class Model(BaseModel):
    """Base for all API models: camelCase on the wire, no unknown fields, rules checked on validation."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True)
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> "Model":
        for rule in type(self).rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self

    def wire(self) -> dict[str, Any]:
        """The object as it appears in Kubernetes: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def name_problem(name: str) -> str | None:
    """Why a SpeculativeServing name cannot be used (the CRD's root CEL rules say the same), or None."""
    if not name:
        return "metadata.name is required"
    if len(name) > MAX_NAME_LENGTH:
        return f"metadata.name must be at most {MAX_NAME_LENGTH} characters (the operator derives Deployment and pod names from it)"
    if not re.match(NAME_PATTERN, name):
        return "metadata.name must start with a letter and hold only lowercase letters, digits and '-' (it names the Service too)"
    return None


def describe_error(error: Exception, prefix: str = "") -> str:
    """One clause per problem, each naming the field in the API's own spelling (prefix says where it sits)."""
    if isinstance(error, ValidationError):
        return "; ".join(f"{prefix}{'.'.join(str(p) for p in e['loc'])}: {_message(e)}" if e["loc"] else _message(e) for e in error.errors())
    return str(error)


def _message(error: Any) -> str:
    """Pydantic's message without the "Value error, " it puts before what a validator raised."""
    return str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")


def section(model: type[Model], description: str) -> Any:
    """A sub-object whose own fields all have defaults, so the API server fills it in when omitted."""
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


class SpeculationMethod(StrEnum):
    DRAFT_MODEL = "draft_model"
    EAGLE = "eagle"
    EAGLE3 = "eagle3"
    NGRAM = "ngram"
    MTP = "mtp"
    SUFFIX = "suffix"


METHODS_NEEDING_DRAFT = (SpeculationMethod.DRAFT_MODEL, SpeculationMethod.EAGLE, SpeculationMethod.EAGLE3)
METHODS_WITHOUT_DRAFT = (SpeculationMethod.NGRAM, SpeculationMethod.SUFFIX)


class HealthMode(StrEnum):
    ENFORCE = "Enforce"
    OBSERVE = "Observe"


class PodMonitorMode(StrEnum):
    AUTO = "Auto"
    ENABLED = "Enabled"
    DISABLED = "Disabled"


# ---------------------------------------------------------------- target model


class ModelArchitecture(Model):
    parameters_billions: float | None = Field(default=None, gt=0, le=10000, description="Parameters in billions, every expert included for MoE models.")
    layers: int | None = Field(default=None, ge=1, le=1024, description="Attention layers that keep a KV cache (an EAGLE head or MTP module: its own layers).")
    kv_heads: int | None = Field(default=None, ge=1, le=1024, description="Key/value attention heads per layer.")
    head_dim: int | None = Field(default=None, ge=1, le=4096, description="Size of one attention head.")
    max_context: int | None = Field(default=None, ge=1, le=10_000_000, description="Longest context the model supports, in tokens.")
    tokenizer_family: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64, description="Tokenizer family, e.g. llama-3, qwen2; draft and target should share it.")


ARCHITECTURE_DESCRIPTION = "Architecture for the memory planner, for models its catalog lacks; each field set here overrides the catalog."


class Variant(Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=32, description="Variant name, e.g. int4, int8, bf16.")
    model: str = Field(pattern=MODEL_REF_PATTERN, max_length=256, description="Checkpoint of this variant: HF id, hf://, pvc://claim/path or an absolute path.")
    quantization: str | None = Field(default=None, pattern=r"^[a-z0-9_-]+$", max_length=32, description="vLLM --quantization for this checkpoint (fp8, awq_marlin, gptq_marlin, compressed-tensors, ...). Omit for auto-detection or unquantized weights.")
    revision: str | None = Field(default=None, max_length=128, description="Revision (branch, tag or commit) of this checkpoint.")
    architecture: ModelArchitecture | None = Field(default=None, description=ARCHITECTURE_DESCRIPTION)


def _variant_names_unique(target: "TargetModel") -> bool:
    names = [v.name for v in target.variants]
    return len(names) == len(set(names))


def _active_variant_declared(target: "TargetModel") -> bool:
    return target.active_variant is None or any(v.name == target.active_variant for v in target.variants)


class TargetModel(Model):
    rules = (
        Rule("self.variants.all(v, self.variants.exists_one(w, w.name == v.name))", "variant names must be unique", _variant_names_unique, ".variants"),
        Rule("!has(self.activeVariant) || self.variants.exists(v, v.name == self.activeVariant)", "activeVariant must name one of spec.target.variants", _active_variant_declared, ".activeVariant"),
    )

    model: str = Field(pattern=MODEL_REF_PATTERN, max_length=256, description="Target checkpoint: HF id, hf://, pvc://claim/path or an absolute path. Used when no variants are declared.")
    served_model_name: str | None = Field(default=None, max_length=128, description="Name clients use in the OpenAI API; defaults to the SpeculativeServing's name.")
    revision: str | None = Field(default=None, max_length=128, description="Revision (branch, tag or commit) of the target checkpoint.")
    quantization: str | None = Field(default=None, pattern=r"^[a-z0-9_-]+$", max_length=32, description="vLLM --quantization of the target when no variants are declared.")
    variants: list[Variant] = Field(default_factory=list, max_length=8, description="Precision ladder of the target, lowest memory first. The health loop steps up one rung when quantization costs acceptance.", json_schema_extra={"default": [], "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    active_variant: str | None = Field(default=None, max_length=32, description="Variant that starts active; defaults to the first (lowest-memory) variant.")
    architecture: ModelArchitecture | None = Field(default=None, description=ARCHITECTURE_DESCRIPTION)


# ---------------------------------------------------------------- GPUs


class GpuSpec(Model):
    count: int = Field(default=1, ge=1, le=16, description="GPUs per replica; also the tensor parallel size.")
    product: str | None = Field(default=None, max_length=64, description="GPU product from the catalog (A10G, L4, L40S, A100-40GB, A100-80GB, H100-80GB, H200-141GB, B200).")
    memory_gib: float | None = Field(default=None, alias="memoryGiB", gt=0, le=1024, description="Memory per GPU in GiB, for products the catalog lacks.")
    resource_name: str = Field(
        default="nvidia.com/gpu", pattern=r"^([a-z0-9.-]+/[a-z0-9.-]+)?$", max_length=128,
        description="Extended resource requested per GPU (amd.com/gpu for AMD); empty requests none, e.g. for the simulator image on a cluster without GPUs.",
    )


# ---------------------------------------------------------------- speculation


class DraftModel(Model):
    model: str = Field(pattern=MODEL_REF_PATTERN, max_length=256, description="Draft checkpoint (draft_model) or EAGLE/EAGLE-3/MTP head.")
    revision: str | None = Field(default=None, max_length=128)
    quantization: str | None = Field(default=None, pattern=r"^[a-z0-9_-]+$", max_length=32, description="Quantization of the draft checkpoint; prefer pre-quantized checkpoints.")
    tensor_parallel_size: int | None = Field(default=None, ge=1, le=16, description="Draft tensor parallel size: 1 or the target's GPU count.")
    architecture: ModelArchitecture | None = Field(default=None, description=ARCHITECTURE_DESCRIPTION)


class NgramSettings(Model):
    rules = (Rule("self.promptLookupMin <= self.promptLookupMax", "promptLookupMin must not exceed promptLookupMax", lambda n: n.prompt_lookup_min <= n.prompt_lookup_max, ".promptLookupMin"),)

    prompt_lookup_min: int = Field(default=2, ge=1, le=16, description="Smallest n-gram matched in the prompt.")
    prompt_lookup_max: int = Field(default=4, ge=1, le=16, description="Largest n-gram matched in the prompt.")


def _draft_when_needed(s: "Speculation") -> bool:
    return s.method not in METHODS_NEEDING_DRAFT or s.draft is not None


def _no_draft_when_modelless(s: "Speculation") -> bool:
    return s.method not in METHODS_WITHOUT_DRAFT or s.draft is None


def _ngram_only_for_ngram(s: "Speculation") -> bool:
    return s.ngram is None or s.method == SpeculationMethod.NGRAM


class Speculation(Model):
    rules = (
        Rule("!(self.method in ['draft_model', 'eagle', 'eagle3']) || has(self.draft)", "speculation.draft is required for methods draft_model, eagle and eagle3", _draft_when_needed, ".draft"),
        Rule("!(self.method in ['ngram', 'suffix']) || !has(self.draft)", "speculation.draft must not be set for methods ngram and suffix", _no_draft_when_modelless, ".draft"),
        Rule("!has(self.ngram) || self.method == 'ngram'", "speculation.ngram applies only to method ngram", _ngram_only_for_ngram, ".ngram"),
    )

    method: SpeculationMethod = Field(description="Proposer: draft_model, eagle, eagle3, ngram, mtp or suffix.")
    draft: DraftModel | None = Field(default=None, description="Draft model or head; required for draft_model, eagle and eagle3.")
    num_speculative_tokens: int = Field(default=4, ge=1, le=16, description="Tokens proposed per step (k).")
    ngram: NgramSettings | None = Field(default=None, description="Prompt lookup window for method ngram.")
    disable_above_batch_size: int | None = Field(default=None, ge=1, le=65536, description="Turn speculation off when the running batch is larger than this.")


# ---------------------------------------------------------------- engine


class SecretKeyRef(Model):
    name: str = Field(max_length=253, description="Secret name.")
    key: str = Field(default="token", max_length=253, description="Key within the secret.")


class ModelCache(Model):
    claim_name: str = Field(max_length=253, description="PersistentVolumeClaim holding the model cache (HF_HOME).")
    mount_path: str = Field(default="/models-cache", pattern=r"^/.*", max_length=256)
    read_only: bool = Field(default=False)


IntOrString = int | str


class Resources(Model):
    rules = (
        Rule("!has(self.limits) || !('nvidia.com/gpu' in self.limits)", "set GPUs with spec.gpu.count, not in engine.resources", lambda r: "nvidia.com/gpu" not in (r.limits or {}), ".limits"),
        Rule("!has(self.requests) || !('nvidia.com/gpu' in self.requests)", "set GPUs with spec.gpu.count, not in engine.resources", lambda r: "nvidia.com/gpu" not in (r.requests or {}), ".requests"),
    )

    requests: dict[str, IntOrString] | None = Field(default=None, max_length=16)
    limits: dict[str, IntOrString] | None = Field(default=None, max_length=16)


class Toleration(Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(Model):
    name: str = Field(max_length=256)
    value: str | None = None
    value_from: dict[str, Any] | None = Field(default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class ContainerSecurity(Model):
    """The vLLM container's securityContext as a serving may set it; privilege escalation and capabilities stay off."""

    rules = (Rule("!has(self.runAsNonRoot) || !self.runAsNonRoot || !has(self.runAsUser) || self.runAsUser != 0", "runAsNonRoot contradicts runAsUser 0", lambda s: not (s.run_as_non_root and s.run_as_user == 0), ".runAsUser"),)

    run_as_user: int | None = Field(default=None, ge=0, le=2147483647, description="UID the vLLM process runs as (the image's user when unset).")
    run_as_group: int | None = Field(default=None, ge=0, le=2147483647, description="GID the vLLM process runs as.")
    run_as_non_root: bool | None = Field(default=None, description="Refuse to start a container whose user is root; Pod Security `restricted` requires it (here or in podSecurityContext).")
    read_only_root_filesystem: bool | None = Field(default=None, description="Mount the image read-only; vLLM then needs writable caches (modelCache, env such as HF_HOME and TRITON_CACHE_DIR on a volume).")


class PodSecurity(Model):
    """The vLLM pods' securityContext as a serving may set it; the seccomp profile stays RuntimeDefault."""

    rules = (Rule("!has(self.runAsNonRoot) || !self.runAsNonRoot || !has(self.runAsUser) || self.runAsUser != 0", "runAsNonRoot contradicts runAsUser 0", lambda s: not (s.run_as_non_root and s.run_as_user == 0), ".runAsUser"),)

    run_as_user: int | None = Field(default=None, ge=0, le=2147483647, description="UID of every container of the pod (the image's user when unset).")
    run_as_group: int | None = Field(default=None, ge=0, le=2147483647, description="GID of every container of the pod.")
    run_as_non_root: bool | None = Field(default=None, description="Refuse to start containers whose user is root; Pod Security `restricted` requires it.")
    fs_group: int | None = Field(default=None, ge=0, le=2147483647, description="Group that owns the pod's volumes (the model cache), so a non-root user can write them.")
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = Field(default=None, description="When fsGroup ownership is applied to volumes; OnRootMismatch spares a large model cache a full walk.")
    supplemental_groups: list[Annotated[int, Field(ge=0, le=2147483647)]] | None = Field(default=None, max_length=16, description="Further groups of every container of the pod.")


class Engine(Model):
    image: str = Field(default=DEFAULT_IMAGE, max_length=512, description="vLLM OpenAI server image.")
    vllm_version: str | None = Field(default=None, pattern=r"^v?[0-9]+\.[0-9]+(\.[0-9]+)?$", description="vLLM release the image runs (e.g. 0.33.0), when its tag does not say: the decision core models that release's speculation mechanisms and their costs.")
    gpu_memory_utilization: float = Field(default=0.92, gt=0, le=1, description="--gpu-memory-utilization.")
    max_model_len: int | None = Field(default=None, ge=1, le=10_000_000, description="--max-model-len in tokens.")
    max_num_seqs: int | None = Field(default=None, ge=1, le=65536, description="--max-num-seqs.")
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = Field(default="auto")
    kv_cache_dtype: Literal["auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(default="auto", description="--kv-cache-dtype.")
    extra_args: list[str] = Field(default_factory=list, max_length=64, description="Further vLLM flags, each flag and value its own item.", json_schema_extra={"default": []})
    env: list[EnvVar] = Field(default_factory=list, max_length=64, json_schema_extra={"default": []})
    hf_token_secret: SecretKeyRef | None = Field(default=None, description="Secret with the Hugging Face token, exposed as HF_TOKEN.")
    model_cache: ModelCache | None = Field(default=None, description="PVC mounted as HF_HOME so restarts skip the download.")
    shm_size: str = Field(default="16Gi", pattern=QUANTITY_PATTERN, description="Size limit of the memory-backed /dev/shm.")
    startup_timeout_seconds: int = Field(default=1800, ge=60, le=14400, description="How long a replica may take to load its model before it is restarted.")
    resources: Resources | None = Field(default=None, description="CPU and memory requests/limits of the vLLM container; GPUs come from spec.gpu.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    affinity: dict[str, Any] | None = Field(default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    pod_labels: dict[str, str] = Field(default_factory=dict)
    security_context: ContainerSecurity | None = Field(default=None, description="securityContext of the vLLM container beyond what specserve always sets (allowPrivilegeEscalation false, every capability dropped).")
    pod_security_context: PodSecurity | None = Field(default=None, description="securityContext of the vLLM pods beyond what specserve always sets (seccomp RuntimeDefault); set runAsNonRoot and runAsUser for Pod Security `restricted`, fsGroup for a writable model cache.")


# ---------------------------------------------------------------- health policy and baseline


class HealthPolicy(Model):
    rules = (
        Rule("self.disableBelowAcceptance < self.watchBelowAcceptance", "disableBelowAcceptance must be lower than watchBelowAcceptance", lambda p: p.disable_below_acceptance < p.watch_below_acceptance, ".disableBelowAcceptance"),
        Rule("self.probationSeconds <= self.maxProbationSeconds", "probationSeconds must not exceed maxProbationSeconds", lambda p: p.probation_seconds <= p.max_probation_seconds, ".probationSeconds"),
        Rule("self.windowSeconds >= self.intervalSeconds", "windowSeconds must be at least intervalSeconds", lambda p: p.window_seconds >= p.interval_seconds, ".windowSeconds"),
    )

    mode: HealthMode = Field(default=HealthMode.ENFORCE, description="Enforce acts on decisions; Observe only records and announces them.")
    interval_seconds: int = Field(default=30, ge=5, le=3600, description="How often the health policy evaluates.")
    window_seconds: int = Field(default=300, ge=30, le=86400, description="Rate window of the Prometheus queries.")
    min_draft_tokens: int = Field(default=1000, ge=0, description="Fewer draft tokens than this in the window is not evidence.")
    disable_below_acceptance: float = Field(default=0.50, ge=0, le=1, description="Acceptance below this is net-negative: speculation off.")
    watch_below_acceptance: float = Field(default=0.65, ge=0, le=1, description="Acceptance below this is the break-even band: keep only if P99 TPOT holds against the baseline.")
    p99_tpot_regression_ratio: float = Field(default=1.10, ge=1, le=10, description="P99 TPOT worse than the baseline's by more than this ratio counts as a regression.")
    p99_ttft_regression_ratio: float = Field(default=2.0, ge=1, le=20, description="P99 TTFT worse than the baseline's by more than this ratio counts as a regression. Looser than the TPOT ratio: on a GPU, speculation raised mean TTFT 1.6-1.9x at batch 1 while it cut TPOT 1.6x.")
    max_p99_tpot_seconds: float | None = Field(default=None, gt=0, description="Absolute P99 TPOT limit while speculating.")
    max_p99_ttft_seconds: float | None = Field(default=None, gt=0, description="Absolute P99 TTFT limit while speculating.")
    consecutive_breaches: int = Field(default=3, ge=1, le=100, description="Breaching evaluations in a row before acting.")
    cooldown_seconds: int = Field(default=600, ge=0, le=86400, description="No further action for this long after any action.")
    probation_seconds: int = Field(default=1800, ge=0, le=604800, description="Delay before speculation is turned back on and judged afresh.")
    max_probation_seconds: int = Field(default=14400, ge=0, le=604800, description="Cap of the probation delay, which doubles after every failed probation.")
    quantization_drop_threshold: float = Field(default=0.05, gt=0, le=1, description="Acceptance drop against the next higher-precision variant that triggers a step up.")
    min_predicted_gain: float = Field(default=0.10, ge=0, le=10, description="A schedule of k by batch size is rewritten (restarting the pods) only when the goodput model predicts at least this gain over the configuration in force, unless the window measured a slowdown against the baseline.")
    learned_half_life_seconds: int = Field(default=86400, ge=60, le=2592000, description="Age at which a speedup learned for a batch-size bucket counts half; it is forgotten below a twentieth.")
    confidence: float = Field(default=0.9, ge=0.5, le=0.999, description="How sure a predicted gain must be: a change is made only when the gain at this one-sided confidence (the pessimistic end of the prediction) is still a gain.")


class Baseline(Model):
    replicas: int = Field(default=0, ge=0, le=64, description="Replicas without speculation kept for side-by-side comparison.")


class Trials(Model):
    enabled: bool = Field(default=True, description="Apply a predicted change as a trial that is measured, then promoted or reverted; off: predicted changes are only recommended.")
    replicas: int = Field(default=1, ge=1, le=64, description="Replicas that run the candidate beside the incumbent, behind the same Service, while the serving has more replicas than this (a challenger slice); with no more, the candidate replaces the incumbent and is compared with the windows measured before it.")
    windows: int = Field(default=3, ge=1, le=100, description="Windows measured against the baseline before the trial's verdict.")
    max_seconds: int = Field(default=3600, ge=60, le=86400, description="A trial not measured enough windows by then is reverted.")


class Monitoring(Model):
    pod_monitor: PodMonitorMode = Field(default=PodMonitorMode.AUTO, description="Auto renders a PodMonitor when the cluster serves monitoring.coreos.com/v1.")


# ---------------------------------------------------------------- spec


def _draft_tp_matches(spec: "SpeculativeServingSpec") -> bool:
    draft, method = spec.speculation.draft, spec.speculation.method
    if draft is None or draft.tensor_parallel_size is None or draft.tensor_parallel_size == spec.gpu.count:
        return True
    return method != SpeculationMethod.DRAFT_MODEL and draft.tensor_parallel_size == 1


class SpeculativeServingSpec(Model):
    rules = (
        Rule(
            "!has(self.speculation.draft) || !has(self.speculation.draft.tensorParallelSize) || self.speculation.draft.tensorParallelSize == self.gpu.count"
            " || (self.speculation.method != 'draft_model' && self.speculation.draft.tensorParallelSize == 1)",
            "speculation.draft.tensorParallelSize must equal gpu.count for draft_model (vLLM requires the same tensor parallel size), and be 1 or gpu.count for other methods",
            _draft_tp_matches,
            ".speculation.draft.tensorParallelSize",
        ),
    )

    target: TargetModel = Field(description="The model served.")
    replicas: int = Field(default=1, ge=0, le=256, description="Replicas of the speculative Deployment.")
    gpu: GpuSpec = section(GpuSpec, "GPUs per replica.")
    speculation: Speculation = Field(description="The proposer and how much it proposes.")
    engine: Engine = section(Engine, "vLLM engine and pod settings.")
    health_policy: HealthPolicy = section(HealthPolicy, "When speculation is judged unhealthy and what is done about it.")
    baseline: Baseline = section(Baseline, "Non-speculative replicas for comparison.")
    trials: Trials = section(Trials, "How a change the health policy predicts but never measured for this serving is tried before it sticks.")
    monitoring: Monitoring = section(Monitoring, "Scrape configuration.")


Schedule = list[Annotated[list[int], Field(min_length=3, max_length=3)]]
