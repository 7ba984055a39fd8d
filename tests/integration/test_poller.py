"""A Prometheus outage in the operator's log: one line when it starts (its URL and the error), one when it ends.

A real Prometheus is stopped and started again on its port under a polling Poller; urllib3's retries are real too.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from specserve.observation import metrics
from specserve.observation.poller import Poller
from tests.support.prometheus import Prometheus

POLLS_DURING_THE_OUTAGE = 3  # each takes some 6 s: the client retries every query twice, backing off


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records if r.levelno >= logging.INFO]


def test_an_outage_is_said_once_with_the_url_and_the_error_and_its_end_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prometheus = Prometheus(tmp_path, targets=[]).start()
    poller = Poller(metrics.prometheus_query(prometheus.url, timeout_seconds=2), metrics.Labels(), interval_seconds=1, url=prometheus.url)
    poller.subscribe("ns", "s", 300)
    caplog.set_level(logging.DEBUG)
    try:
        assert isinstance(asyncio.run(poller.cycle()), metrics.Poll)
        prometheus.stop()
        caplog.clear()
        results = [asyncio.run(poller.cycle()) for _ in range(POLLS_DURING_THE_OUTAGE)]
        assert all(isinstance(r, metrics.MetricsError) for r in results)
        during = lines(caplog)
        prometheus.start()
        caplog.clear()
        assert isinstance(asyncio.run(poller.cycle()), metrics.Poll)
        assert isinstance(asyncio.run(poller.cycle()), metrics.Poll)
        after = lines(caplog)
    finally:
        prometheus.stop()
    assert during == [
        f"specserve.health WARNING Prometheus at {prometheus.url} does not answer: cannot connect: Connection refused; "
        "health decisions are held (MetricsAvailable=False) until it does"
    ]
    assert len(after) == 1 and after[0].startswith(f"specserve.health INFO Prometheus at {prometheus.url} answers again, after ")
    assert after[0].endswith("(cannot connect: Connection refused)")


def test_urllib3_says_nothing_of_the_requests_it_retries(caplog: pytest.LogCaptureFixture) -> None:
    closed = "http://127.0.0.1:9"  # nothing listens: each query is refused and retried by urllib3
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception):  # noqa: B017 - whatever the client raises; the log is the point
        metrics.prometheus_query(closed, timeout_seconds=1)("up")
    assert not [r for r in caplog.records if r.name.startswith("urllib3") and r.levelno >= logging.WARNING]
