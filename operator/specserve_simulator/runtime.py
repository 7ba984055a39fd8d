"""Runs the engine in wall time: step, record metrics, answer finished requests, sleep until the clocks agree.

One simulated second takes time_scale wall seconds; when the CPU cannot keep up, simulated time slows instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from specserve_simulator.engine import Engine
from specserve_simulator.metrics import EngineMetrics
from specserve_simulator.records import Finished, RequestSpec
from specserve_simulator.workload import Workload

MIN_SLEEP = 0.002  # wall seconds; shorter leads are carried to the next step
MAX_LAG = 0.25  # wall seconds behind schedule before the clocks are re-anchored
MAX_IDLE_WAIT = 1.0
YIELD_EVERY_STEPS = 16


class Runtime:
    """The engine, its metrics and the asyncio task that drives them."""

    def __init__(self, engine: Engine, metrics: EngineMetrics, time_scale: float) -> None:
        self.engine = engine
        self.metrics = metrics
        self.time_scale = time_scale
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._anchor()

    def start(self) -> None:
        self._anchor()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def generate(self, spec: RequestSpec) -> Finished:
        """Queue a request and wait for the engine to finish it."""
        self._catch_up_if_idle()
        future: asyncio.Future[Finished] = asyncio.get_running_loop().create_future()
        self.engine.submit(spec, tag=future)
        self._wakeup.set()
        return await future

    def update_workload(self, changes: dict[str, Any]) -> Workload:
        """Change traffic or content settings; ValueError on a bad field."""
        workload = self.engine.workload.changed(changes)
        self._catch_up_if_idle()
        self.engine.set_workload(workload)
        self._wakeup.set()
        return workload

    def stats(self) -> dict[str, Any]:
        totals = self.engine.totals
        speculation = self.engine.speculation
        return {
            "simulated_seconds": round(self.engine.now, 3),
            "time_scale": self.time_scale,
            "running": self.engine.running,
            "waiting": self.engine.waiting,
            "kv_cache_capacity_tokens": self.engine.kv_capacity,
            "speculation": None if speculation is None else {"method": speculation.method, "num_speculative_tokens": speculation.num_speculative_tokens},
            "steps": totals.steps,
            "requests_finished": totals.requests_finished,
            "synthetic_dropped": totals.synthetic_dropped,
            "generated_tokens": totals.generated_tokens,
            "drafts": totals.drafts,
            "draft_tokens": totals.draft_tokens,
            "accepted_tokens": totals.accepted_tokens,
            "acceptance_rate": totals.acceptance_rate,
            "mean_accepted_length": totals.mean_accepted_length,
        }

    async def _run(self) -> None:
        steps = 0
        while True:
            report = self.engine.step()
            if report is None:
                await self._idle()
                continue
            self.metrics.record(report)
            for finished in report.finished:
                if isinstance(finished.tag, asyncio.Future) and not finished.tag.done():
                    finished.tag.set_result(finished)
            steps += 1
            await self._pace(force_yield=steps % YIELD_EVERY_STEPS == 0)

    async def _pace(self, force_yield: bool) -> None:
        lead = (self.engine.now - self._simulated_now()) * self.time_scale
        if lead >= MIN_SLEEP:
            await asyncio.sleep(lead)
            return
        if lead < -MAX_LAG:
            self._anchor()  # let simulated time slow down rather than race to catch up
        if force_yield:
            await asyncio.sleep(0)

    async def _idle(self) -> None:
        wait = (self.engine.next_arrival() - self._simulated_now()) * self.time_scale
        self._wakeup.clear()
        if wait > 0:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=min(wait, MAX_IDLE_WAIT))
            except TimeoutError:
                pass
        self.engine.advance_to(self._simulated_now())

    def _catch_up_if_idle(self) -> None:
        if not self.engine.busy:
            self.engine.advance_to(self._simulated_now())

    def _anchor(self) -> None:
        self._wall_origin = time.monotonic()
        self._simulated_origin = self.engine.now

    def _simulated_now(self) -> float:
        return self._simulated_origin + (time.monotonic() - self._wall_origin) / self.time_scale
