"""What goes into and comes out of the engine: request specs, finished requests, step reports and running totals.

Plain data; the engine fills them, metrics.py and the HTTP layer read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RequestSpec:
    """One generation request as the engine sees it."""

    prompt_tokens: int
    max_tokens: int
    temperature: float
    min_tokens: int = 0
    ignore_eos: bool = False


@dataclass(frozen=True)
class Finished:
    """A completed request and its timeline, in simulated seconds."""

    id: int
    tag: Any
    prompt_tokens: int
    output_tokens: int
    max_tokens: int
    finish_reason: str
    arrival: float
    admitted: float
    first_token: float
    finished: float
    drafts: int
    accepted_tokens: int

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival

    @property
    def e2e(self) -> float:
        return self.finished - self.arrival

    @property
    def queue_time(self) -> float:
        return self.admitted - self.arrival

    @property
    def prefill_time(self) -> float:
        return self.first_token - self.admitted

    @property
    def decode_time(self) -> float:
        return self.finished - self.first_token

    @property
    def inference_time(self) -> float:
        return self.finished - self.admitted

    @property
    def tpot(self) -> float:
        """Seconds per output token after the first: what speculation shortens."""
        return self.decode_time / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0


@dataclass
class StepReport:
    """What one engine step did, for the metrics."""

    start: float
    duration: float
    batch_size: int
    k: int
    iteration_tokens: int
    prompt_tokens: int = 0
    generated_tokens: int = 0
    decode_samples: int = 0  # requests that got tokens from decoding: one inter-token latency sample each
    drafts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    first_token_latencies: list[float] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0


@dataclass
class Totals:
    """Running sums since start, for /sim/stats and tests."""

    steps: int = 0
    requests_finished: int = 0
    synthetic_dropped: int = 0
    generated_tokens: int = 0
    decode_steps: int = 0
    drafts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else None

    @property
    def mean_accepted_length(self) -> float | None:
        return 1 + self.accepted_tokens / self.drafts if self.drafts else None
