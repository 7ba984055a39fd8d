"""The SpeculativeServing status: what the operator decided and observed, as pydantic models, and the whole object.

Written only by the operator; the CRD marks it a subresource, so spec and status never share a write.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from specserve.api.spec import Model, Schedule, SpeculativeServingSpec


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class Observation(Model):
    time: str | None = None
    acceptance_rate: float | None = None
    mean_accepted_length: float | None = None
    draft_tokens: float | None = None
    p50_tpot_seconds: float | None = None
    p99_tpot_seconds: float | None = None
    baseline_p99_tpot_seconds: float | None = None
    p50_ttft_seconds: float | None = None
    p99_ttft_seconds: float | None = None
    request_rate: float | None = None
    requests_running: float | None = None
    requests_waiting: float | None = None
    kv_cache_usage: float | None = None
    per_position_acceptance: list[float] = Field(default_factory=list, max_length=32, description="Acceptance at draft position 0, 1, ...")
    batch_size: float | None = Field(default=None, description="Running requests per speculative replica, mean over the window.")
    baseline_batch_size: float | None = Field(default=None, description="Running requests per baseline replica, mean over the window.")
    baseline_p50_tpot_seconds: float | None = None
    baseline_p99_ttft_seconds: float | None = None


class BucketVerdict(Model):
    """What was measured against the baseline in one batch-size bucket (decayed with age, see learnedHalfLifeSeconds)."""

    lo: int = Field(ge=1, description="First batch size of the bucket.")
    hi: int | None = Field(default=None, description="Last batch size of the bucket; unset: every larger one.")
    k: int = Field(ge=0, description="k in force when measured.")
    speedup: float = Field(description="Baseline P50 TPOT over the speculative one (the tail allowance when lower).")
    correction: float = Field(description="Measured speedup over the GPU prior's at the same batch size, k and acceptance.")
    time: str = Field(description="Newest measurement.")
    windows: float = Field(description="Measured windows, each decayed by its age.")
    cost_scale: float | None = Field(default=None, description="This serving's speculative step cost fitted to these windows, as a share of the GPU prior's extra cost (c - 1): other k and batch sizes are predicted from it.")


class Recommendation(Model):
    """What the goodput model recommends now, applied or not (Observe mode shows it without applying it)."""

    schedule: Schedule = Field(max_length=16, description="k by batch size, vLLM's num_speculative_tokens_per_batch_size.")
    summary: str = Field(description="The schedule in short, e.g. k4<=31,0.")
    predicted_gain: float = Field(description="Predicted weighted speedup over the configuration in force, minus 1.")
    predicted_gain_low: float | None = Field(default=None, description="The gain at the pessimistic end of the prediction (healthPolicy.confidence); a change is made only when it is above 0.")
    evidence: Literal["measured", "learned", "fitted", "prior"] = Field(description="The weakest evidence behind the recommendation: measured (this window), learned (an earlier window at the same k), fitted (predicted from the step cost fitted to this serving), prior (the GPU calibration alone).")
    estimated_speedup: float | None = Field(default=None, description="Speedup at the present batch size with the k in force.")
    time: str | None = None


class Trial(Model):
    """A predicted change being tried: the candidate beside (or after) the incumbent, measured against the baseline."""

    candidate: Schedule = Field(max_length=16, description="k by batch size being tried.")
    candidate_summary: str
    incumbent: Schedule | None = Field(default=None, max_length=16, description="The configuration it is compared with; unset: the spec's own.")
    incumbent_summary: str
    mode: Literal["challenger", "sequential"] = Field(description="challenger: trials.replicas run the candidate beside the incumbent; sequential: the candidate replaces the incumbent and is compared with the windows before it.")
    started_time: str
    predicted_gain: float = Field(description="What the goodput model predicted the candidate gains; the trial measures it.")
    windows: int = Field(default=0, description="Windows measured so far for the candidate.")
    needed: int = Field(description="Windows the verdict waits for (trials.windows).")
    candidate_speedup: float | None = Field(default=None, description="The candidate's speedup against the baseline, mean of its windows.")
    incumbent_speedup: float | None = Field(default=None, description="The incumbent's speedup against the baseline: side by side (challenger) or before the trial (sequential).")
    incumbent_windows: float = Field(default=1.0, description="Windows behind incumbentSpeedup.")


class RejectedCandidate(Model):
    summary: str = Field(description="The candidate a trial measured worse.")
    time: str
    measured_gain: float | None = Field(default=None, description="What its trial measured against the incumbent, minus 1.")


class HealthStatus(Model):
    """The health policy's memory, so an operator restart neither repeats nor reverses a decision."""

    last_evaluation_time: str | None = None
    consecutive_breaches: int = 0
    last_action_time: str | None = None
    configured_time: str | None = Field(default=None, description="When the health loop last changed the configuration in force; windows that began earlier are not judged.")
    disabled_time: str | None = None
    probation_seconds: float | None = None
    on_probation: bool = False
    references: dict[str, float] = Field(default_factory=dict, description="Acceptance measured per variant (moving average).")
    spec_active_variant: str | None = Field(default=None, description="spec.target.activeVariant when the health loop last chose the variant.")
    buckets: list[BucketVerdict] = Field(default_factory=list, max_length=16, description="Speedup learned per batch-size bucket against the baseline.")
    rejected: list[RejectedCandidate] = Field(default_factory=list, max_length=8, description="Candidates trials measured worse: not tried again until their evidence decays (learnedHalfLifeSeconds).")


class DecisionRecord(Model):
    time: str
    action: Literal["hold", "keep", "disable_speculation", "switch_variant", "enable_speculation", "set_schedule", "start_trial", "promote_trial", "revert_trial"]
    reason: str
    speculation: bool
    variant: str | None = None
    schedule: Schedule | None = Field(default=None, max_length=16)
    enforced: bool = True


class SpeculativeServingStatus(Model):
    observed_generation: int | None = None
    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Invalid"] | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    speculation: Literal["On", "Off"] | None = Field(default=None, description="Effective speculation state.")
    active_variant: str | None = None
    effective_num_speculative_tokens: int | None = None
    schedule: Schedule | None = Field(default=None, max_length=16, description="k by batch size decided by the health policy; unset: the spec's k.")
    schedule_summary: str | None = Field(default=None, description="The speculation in force in short: k4 (k 4 at every batch size), k4<=31,0 (4 up to 31, 0 above) or off.")
    recommendation: Recommendation | None = None
    trial: Trial | None = Field(default=None, description="The trial in progress; unset when none runs (each trial's start and verdict are in decisions and events).")
    observation: Observation | None = None
    decisions: list[DecisionRecord] = Field(default_factory=list, max_length=20, description="Most recent decisions, newest last.")
    health: HealthStatus | None = None


class SpeculativeServing(Model):
    """The whole object, for files read by the CLI (metadata kept loosely)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    api_version: Literal["specserve.dev/v1alpha1"]
    kind: Literal["SpeculativeServing"]
    metadata: dict[str, Any]
    spec: SpeculativeServingSpec
    status: SpeculativeServingStatus | None = None
