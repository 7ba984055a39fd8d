"""The simulated engine: vLLM-style continuous batching on a simulated clock, with optional synthetic traffic.

Pure and deterministic for a seed and a sequence of submissions; server.py maps its clock to wall time.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from specserve_simulator.acceptance import AcceptanceModel, draw_accepted
from specserve_simulator.args import ServeConfig
from specserve_simulator.latency import StepCost
from specserve_simulator.records import Finished, RequestSpec, StepReport, Totals
from specserve_simulator.speculative import Speculation
from specserve_simulator.workload import Workload

NATURAL_LENGTH_SHARE = 0.75  # median natural answer length, as a share of the workload's max_tokens
NATURAL_LENGTH_SIGMA = 0.6
PROMPT_SIGMA = 0.4
SYNTHETIC_BACKLOG_LIMIT = 4096  # synthetic arrivals beyond this many waiting requests are dropped, as clients give up


@dataclass(eq=False)
class _Request:
    id: int
    tag: Any
    spec: RequestSpec
    target_tokens: int
    rate: float  # conditional per-position acceptance
    arrival: float
    admitted: float = 0.0
    prefill_left: int = 0
    first_token: float = 0.0
    generated: int = 0
    drafts: int = 0
    accepted: int = 0

    @property
    def context(self) -> int:
        return self.spec.prompt_tokens - self.prefill_left + self.generated


def expected_accepted_length(decoding: list[_Request], k: int) -> float:
    """Mean accepted length these requests should reach with k drafts: 1 + c + c^2 + ... + c^k, averaged."""
    if not decoding or not k:
        return 1.0
    return sum(1.0 + sum(r.rate ** (i + 1) for i in range(k)) for r in decoding) / len(decoding)


class Engine:
    """Continuous batching: admit while seats and KV allow, decode everyone each step, prefill in chunks."""

    def __init__(self, config: ServeConfig, workload: Workload | None = None, seed: int | None = None) -> None:
        self.config = config
        self.speculation: Speculation | None = config.speculation
        self.acceptance = AcceptanceModel.for_config(config)
        self.cost = StepCost.for_config(config)
        self.kv_capacity = self.cost.kv_capacity_tokens(config)
        self.workload = workload or Workload.from_options(config.sim)
        seed = config.sim.seed if seed is None else seed
        self._rng = random.Random(f"{seed}:engine")
        self._traffic_rng = random.Random(f"{seed}:traffic")
        self._clock = 0.0
        self._ids = 0
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._next_arrival = self._schedule_arrival()
        self.totals = Totals()

    @property
    def now(self) -> float:
        return self._clock

    @property
    def busy(self) -> bool:
        return bool(self._running or self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def next_arrival(self) -> float:
        """Simulated time of the next synthetic request (inf without synthetic traffic)."""
        return self._next_arrival

    def set_workload(self, workload: Workload) -> None:
        rate_changed = workload.qps != self.workload.qps
        self.workload = workload
        if rate_changed:
            self._next_arrival = self._schedule_arrival()

    def submit(self, spec: RequestSpec, tag: Any = None) -> int:
        """Queue a request now; returns its id."""
        return self._enqueue(spec, tag, self._clock)

    def advance_to(self, t: float) -> None:
        """Let idle time pass, stopping at the next synthetic arrival so its queue time stays exact."""
        if self.busy:
            return
        self._clock = max(self._clock, min(t, self._next_arrival))
        self._enqueue_arrivals()

    def run_until(self, t: float) -> Iterator[StepReport]:
        """Step (and idle) until the clock reaches t; for tests and benchmarks."""
        while self._clock < t:
            report = self.step()
            if report is None:
                if math.isinf(self._next_arrival):
                    self._clock = t
                self.advance_to(t)
            else:
                yield report

    def step(self) -> StepReport | None:
        """One engine iteration; None when there is nothing to do."""
        self._enqueue_arrivals()
        self._admit()
        if not self._running:
            return None
        k = self.speculation.tokens_for_batch(len(self._running)) if self.speculation else 0
        decoding = [r for r in self._running if r.prefill_left == 0]
        chunks = self._prefill_chunks(self.config.max_num_batched_tokens - len(decoding) * (1 + k))
        prompt_tokens = sum(chunks.values())
        context = sum(r.context for r in decoding)
        duration = self.cost.step_time(len(decoding), k, prompt_tokens, context, expected_accepted_length(decoding, k))
        report = StepReport(
            start=self._clock, duration=duration, batch_size=len(self._running), k=k,
            iteration_tokens=len(decoding) * (1 + k) + prompt_tokens, prompt_tokens=prompt_tokens,
            accepted_per_position=[0] * (self.speculation.num_speculative_tokens if self.speculation else 0),
        )
        self._clock += duration
        for request in decoding:
            self._decode(request, k, report)
        for request, chunk in chunks.items():
            self._prefill(request, chunk, report)
        self._retire(report)
        self._account(report)
        return report

    def _enqueue(self, spec: RequestSpec, tag: Any, arrival: float) -> int:
        self._ids += 1
        rate = 0.0
        if self.acceptance is not None:
            workload = self.workload
            rate = self.acceptance.draw_request_rate(self._rng, spec.temperature, workload.echo, workload.acceptance)
        request = _Request(self._ids, tag, spec, self._target_tokens(spec), rate, arrival, prefill_left=spec.prompt_tokens)
        self._waiting.append(request)
        return request.id

    def _target_tokens(self, spec: RequestSpec) -> int:
        """How long the answer will be: where the model would stop, within min_tokens and max_tokens."""
        if spec.ignore_eos:
            return spec.max_tokens
        median = max(1.0, NATURAL_LENGTH_SHARE * self.workload.max_tokens)
        natural = int(self._rng.lognormvariate(math.log(median), NATURAL_LENGTH_SIGMA)) + 1
        return max(spec.min_tokens, 1, min(natural, spec.max_tokens))

    def _schedule_arrival(self) -> float:
        qps = self.workload.qps
        return self._clock + self._traffic_rng.expovariate(qps) if qps > 0 else math.inf

    def _enqueue_arrivals(self) -> None:
        while self._next_arrival <= self._clock:
            if len(self._waiting) < SYNTHETIC_BACKLOG_LIMIT:
                self._enqueue(self._synthetic_request(), None, self._next_arrival)
            else:
                self.totals.synthetic_dropped += 1
            self._next_arrival += self._traffic_rng.expovariate(self.workload.qps)

    def _synthetic_request(self) -> RequestSpec:
        workload = self.workload
        max_tokens = min(workload.max_tokens, self.config.max_model_len - 1)
        prompt = int(self._traffic_rng.lognormvariate(math.log(workload.prompt_tokens), PROMPT_SIGMA))
        prompt = max(1, min(prompt, self.config.max_model_len - max_tokens))
        return RequestSpec(prompt_tokens=prompt, max_tokens=max_tokens, temperature=workload.temperature)

    def _admit(self) -> None:
        used = sum(r.context + r.prefill_left for r in self._running)
        pending_prefill = sum(r.prefill_left for r in self._running)
        while self._waiting and len(self._running) < self.config.max_num_seqs:
            request = self._waiting[0]
            if used + request.spec.prompt_tokens > self.kv_capacity or pending_prefill >= self.config.max_num_batched_tokens:
                break
            self._waiting.popleft()
            request.admitted = self._clock
            self._running.append(request)
            used += request.spec.prompt_tokens
            pending_prefill += request.spec.prompt_tokens

    def _prefill_chunks(self, budget: int) -> dict[_Request, int]:
        chunks: dict[_Request, int] = {}
        for request in self._running:
            if request.prefill_left and budget > 0:
                chunks[request] = min(request.prefill_left, budget)
                budget -= chunks[request]
        return chunks

    def _decode(self, request: _Request, k: int, report: StepReport) -> None:
        drawn = draw_accepted(self._rng, request.rate, k) if k else 0
        tokens = min(1 + drawn, request.target_tokens - request.generated)
        request.generated += tokens
        report.generated_tokens += tokens
        report.decode_samples += 1
        if k:  # like vLLM, count what the rejection sampler accepted, even past the end of the answer
            request.drafts += 1
            request.accepted += drawn
            report.drafts += 1
            report.draft_tokens += k
            report.accepted_tokens += drawn
            for position in range(drawn):
                report.accepted_per_position[position] += 1

    def _prefill(self, request: _Request, chunk: int, report: StepReport) -> None:
        request.prefill_left -= chunk
        if request.prefill_left == 0:
            request.first_token = self._clock
            request.generated = 1
            report.generated_tokens += 1
            report.first_token_latencies.append(self._clock - request.arrival)

    def _retire(self, report: StepReport) -> None:
        still_running = []
        for request in self._running:
            if request.prefill_left == 0 and request.generated >= request.target_tokens:
                report.finished.append(self._finished(request))
            else:
                still_running.append(request)
        self._running = still_running
        report.running, report.waiting = len(self._running), len(self._waiting)
        report.kv_usage = min(1.0, sum(r.context for r in self._running) / self.kv_capacity)

    def _finished(self, request: _Request) -> Finished:
        spec = request.spec
        reason = "length" if request.generated >= spec.max_tokens else "stop"
        return Finished(
            id=request.id, tag=request.tag, prompt_tokens=spec.prompt_tokens, output_tokens=request.generated,
            max_tokens=spec.max_tokens, finish_reason=reason, arrival=request.arrival, admitted=request.admitted,
            first_token=request.first_token, finished=self._clock, drafts=request.drafts, accepted_tokens=request.accepted,
        )

    def _account(self, report: StepReport) -> None:
        totals = self.totals
        totals.steps += 1
        totals.requests_finished += len(report.finished)
        totals.generated_tokens += report.generated_tokens
        totals.decode_steps += report.decode_samples
        totals.drafts += report.drafts
        totals.draft_tokens += report.draft_tokens
        totals.accepted_tokens += report.accepted_tokens
