"""The poller: one task per operator that queries Prometheus once per interval for every subscribed serving.

Idle while nobody subscribes; a newer poll replaces one not yet judged. Its results go to the health loop.
"""

from __future__ import annotations

import asyncio
import logging

from specserve.observation import metrics
from specserve.telemetry import TELEMETRY

LOG = logging.getLogger("specserve.health")


PollResult = metrics.Poll | metrics.MetricsError



PROBE_EVERY = 20  # poll cycles between asking Prometheus whether the recording rules are there



class Poller:
    """Polls Prometheus once per interval for every subscribed serving; idle when nobody subscribes.

    Servings are subscribed while this replica's health loop judges them (none while peering pauses the
    replica), so only the active operator of several replicas ever queries Prometheus.
    Each result goes to `results`; a newer one replaces one not yet taken.
    """

    def __init__(self, query: metrics.Query, labels: metrics.Labels, interval_seconds: float) -> None:
        self.query, self.labels, self.interval = query, labels, interval_seconds
        self.subscribers: dict[tuple[str, str], int] = {}
        self.results: asyncio.Queue[PollResult] = asyncio.Queue(maxsize=1)
        self.recorded = False  # whether Prometheus has the chart's recording rules, asked every PROBE_EVERY cycles
        self.cycles = 0

    def subscribe(self, namespace: str, name: str, window_seconds: int) -> None:
        self.subscribers[(namespace, name)] = window_seconds

    def unsubscribe(self, namespace: str, name: str) -> None:
        self.subscribers.pop((namespace, name), None)

    async def run(self) -> None:
        while True:
            if self.subscribers:
                await self.cycle()
            await asyncio.sleep(self.interval)

    async def cycle(self) -> PollResult:
        windows = set(self.subscribers.values())
        result: PollResult
        if self.cycles % PROBE_EVERY == 0 and metrics.RECORDED_WINDOW_SECONDS in windows:
            recorded = await asyncio.to_thread(metrics.recording_rules_present, self.query)
            if recorded != self.recorded:
                LOG.info("recording rules %s: the %d s window reads %s series", "found" if recorded else "not found", metrics.RECORDED_WINDOW_SECONDS, "recorded" if recorded else "raw")
            self.recorded = recorded
        self.cycles += 1
        try:
            with TELEMETRY.time_poll():
                result = await asyncio.to_thread(metrics.poll, self.query, windows, self.labels, self.recorded)
            LOG.debug("poll: %d queries in %.3fs for %d servings", result.queries, result.seconds, len(self.subscribers))
        except metrics.MetricsError as error:
            result = error
            TELEMETRY.record_prometheus_error()
            LOG.warning("poll failed: %s", error)
        if self.results.full():
            self.results.get_nowait()  # a newer poll replaces one not yet evaluated
        self.results.put_nowait(result)
        return result
