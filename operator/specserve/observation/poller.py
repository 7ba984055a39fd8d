"""The poller: one task per operator that queries Prometheus once per interval for every subscribed serving.

Idle while nobody subscribes; a newer poll replaces one not yet judged. Its results go to the health loop.
"""

from __future__ import annotations

import asyncio
import logging
import time

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

    def __init__(self, query: metrics.Query, labels: metrics.Labels, interval_seconds: float, url: str = "Prometheus") -> None:
        self.query, self.labels, self.interval, self.url = query, labels, interval_seconds, url
        self.outage: tuple[float, str] | None = None  # since when (monotonic) and why Prometheus has not answered
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
            self._answered()
        except metrics.MetricsError as error:
            result = error
            TELEMETRY.record_prometheus_error()
            self._failed(error)
        if self.results.full():
            self.results.get_nowait()  # a newer poll replaces one not yet evaluated
        self.results.put_nowait(result)
        return result

    def _failed(self, error: metrics.MetricsError) -> None:
        """One line per outage, with the URL and the error; the polls that fail while it lasts say nothing more."""
        if self.outage is None:
            LOG.warning("Prometheus at %s does not answer: %s; health decisions are held (MetricsAvailable=False) until it does", self.url, error)
            self.outage = (time.monotonic(), str(error))
        else:
            LOG.debug("Prometheus at %s still does not answer: %s", self.url, error)

    def _answered(self) -> None:
        if self.outage is not None:
            LOG.info("Prometheus at %s answers again, after %.0f s (%s)", self.url, time.monotonic() - self.outage[0], self.outage[1])
            self.outage = None


class _QuietRetries(logging.Filter):
    """Drops urllib3's line per retried request ("Retrying (Retry(total=2, ...)) after connection broken by ..."): a poll
    of a dozen queries made a dozen of them per interval while Prometheus was away. The outage is said once, above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying (")


logging.getLogger("urllib3.connectionpool").addFilter(_QuietRetries())
