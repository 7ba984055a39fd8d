"""The policy's terms: the Observation it judges, the State kept in status, the spec's Setup and Ladder, the Decision.

Frozen dataclasses; an Observation cleans its per-position acceptance when made, so the policy reads it as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from specserve import api
from specserve.decision import configurations, evidence, goodput, proposers, schedules
from specserve.decision.acceptance import clean_per_position
from specserve.engine.profiles import EngineProfile, profile_for

Action = Literal[
    "hold", "keep", "disable_speculation", "switch_variant", "enable_speculation", "set_schedule", "start_trial", "promote_trial", "revert_trial",
]



CHANGES: frozenset[str] = frozenset({
    "disable_speculation", "switch_variant", "enable_speculation", "set_schedule", "start_trial", "promote_trial", "revert_trial",
})



@dataclass(frozen=True)
class Observation:
    """What Prometheus said about one serving over one window; None means no data.

    Made where data enters (observation.readings from a poll, observation.replay from a file): per-position
    acceptance is cleaned here, once, into probabilities that never rise with position, and read as such after.
    """

    acceptance_rate: float | None = None
    draft_tokens: float | None = None
    p50_tpot: float | None = None
    p99_tpot: float | None = None
    baseline_p99_tpot: float | None = None
    p99_ttft: float | None = None
    request_rate: float | None = None
    variant: str | None = None  # the variant that served the sample
    error: str | None = None  # Prometheus unreachable or erroring
    per_position_acceptance: tuple[float, ...] = ()  # accepted at draft position i over drafts (unconditional)
    k: int | None = None  # k in effect at this batch size during the whole window; None: not known
    batch_size: float | None = None  # running requests per speculative replica, mean over the window
    baseline_batch_size: float | None = None  # running requests per baseline replica
    baseline_p50_tpot: float | None = None
    baseline_p99_ttft: float | None = None
    # Shown in status, not judged:
    mean_accepted_length: float | None = None
    p50_ttft: float | None = None
    requests_running: float | None = None
    requests_waiting: float | None = None
    kv_cache_usage: float | None = None
    # A trial's challenger slice, measured in the same window (its own role):
    challenger_p50_tpot: float | None = None
    challenger_batch_size: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_position_acceptance", clean_per_position(self.per_position_acceptance))



@dataclass(frozen=True)
class State:
    """The decision state kept in status; times are seconds on the caller's clock."""

    speculation: bool = True
    variant: str | None = None
    consecutive_breaches: int = 0
    last_action_at: float | None = None
    configured_at: float | None = None  # when the configuration in force was last changed (Observe mode changes nothing)
    disabled_at: float | None = None
    probation_delay: float | None = None  # current delay before re-enabling; doubles after a failed probation
    on_probation: bool = False
    references: dict[str, float] = field(default_factory=dict)  # acceptance measured per variant
    schedule: tuple[schedules.Range, ...] | None = None  # k by batch size in force; None: the spec's own
    verdicts: tuple[evidence.Verdict, ...] = ()  # speedup learned per batch-size bucket
    trial: Trial | None = None  # a predicted change being measured
    rejected: tuple[Rejected, ...] = ()  # candidates trials measured worse


@dataclass(frozen=True)
class Trial:
    """A predicted change on trial: the candidate schedule against the incumbent, both measured against the baseline."""

    candidate: tuple[schedules.Range, ...]
    incumbent: tuple[schedules.Range, ...] | None  # None: the spec's own
    mode: Literal["challenger", "sequential"]
    started_at: float
    predicted_gain: float
    needed: int
    candidate_sum: float = 0.0  # sum of the candidate's measured speedups
    windows: int = 0
    incumbent_sum: float = 0.0  # sum of the incumbent's (the window that started it, for a sequential trial)
    incumbent_windows: float = 0.0

    @property
    def candidate_speedup(self) -> float | None:
        return self.candidate_sum / self.windows if self.windows else None

    @property
    def incumbent_speedup(self) -> float | None:
        return self.incumbent_sum / self.incumbent_windows if self.incumbent_windows else None


@dataclass(frozen=True)
class Rejected:
    summary: str
    at: float
    measured_gain: float | None = None



@dataclass(frozen=True)
class Setup:
    """What the policy needs of the spec besides its health policy: the proposer and the spec's bounds on k."""

    max_k: int = 4
    disable_above_batch_size: int | None = None
    proposer: proposers.Proposer = field(default_factory=lambda: proposers.proposer_for("draft_model"))
    profile: EngineProfile = field(default_factory=lambda: profile_for(None))
    trials: api.Trials = field(default_factory=api.Trials)
    replicas: int = 1  # of the speculative Deployment: more than trials.replicas makes room for a challenger slice

    @property
    def costs(self) -> configurations.Costs:
        return configurations.Costs(self.proposer, self.profile)

    @property
    def table(self) -> tuple[schedules.Bucket, ...]:
        return schedules.buckets(schedules.DEFAULT_BUCKET_STARTS, self.disable_above_batch_size)

    def ranges(self, state: State) -> tuple[schedules.Range, ...]:
        """The schedule in force: the decided one within the spec's bounds, else the spec's own."""
        if state.schedule:
            return evidence.clamp(state.schedule, self.max_k, self.disable_above_batch_size)
        return evidence.spec_ranges(self.max_k, self.disable_above_batch_size)

    def k_at(self, state: State, batch_size: float) -> int:
        return schedules.k_for_batch(self.ranges(state), max(1, round(batch_size)), self.max_k)

    @property
    def uses_thresholds(self) -> bool:
        """Whether the framework's acceptance thresholds judge this proposer without a baseline: every proposer
        with a forward pass; a look-up costs so little that its prior break-even replaces them."""
        return self.proposer.kind != "lookup"



@dataclass(frozen=True)
class Ladder:
    """The precision ladder (lowest memory first) and which rungs fit the GPUs."""

    variants: tuple[str, ...] = ()
    fitting: frozenset[str] | None = None  # None: unknown, every rung is allowed

    def next_up(self, current: str | None) -> str | None:
        if current not in self.variants:
            return None
        index = self.variants.index(current)
        return self.variants[index + 1] if index + 1 < len(self.variants) else None

    def fits(self, variant: str) -> bool:
        return self.fitting is None or variant in self.fitting



@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    state: State
    plan: evidence.Plan | None = None  # what the goodput model recommends, applied or not
    estimate: goodput.Estimate | None = None  # speedup at the present batch size with the k in force

    @property
    def changes(self) -> bool:
        return self.action in CHANGES
