"""The poll's batch size against the real prometheus binary: per role, running requests summed over its pods and
the mean per pod (one vLLM pod is one replica), both averaged over the window, from one query.

Each pod is a tiny /metrics endpoint serving vLLM's running-requests gauge with a value the test sets.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from specserve.observation import metrics
from specserve.rendering import manifests
from tests.support.prometheus import Prometheus, Target

NAMESPACE, NAME, WINDOW = "llm", "batched", 30


class Pod:
    """One vLLM pod's /metrics, reduced to the running-requests gauge."""

    def __init__(self, running: float) -> None:
        self.running = running
        pod = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = f'vllm:num_requests_running{{engine="0",model_name="m"}} {pod.running}\n'.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def scraped(tmp_path: Path, pods: dict[str, list[Pod]]) -> Iterator[Prometheus]:
    targets = [Target(p.address, {"namespace": NAMESPACE, "serving": NAME, "role": role}) for role, group in pods.items() for p in group]
    prometheus = Prometheus(tmp_path, targets, scrape_interval="1s").start()
    try:
        yield prometheus
    finally:
        prometheus.stop()
        for group in pods.values():
            for pod in group:
                pod.stop()


def polled(prometheus: Prometheus, role: str) -> metrics.RoleMetrics:
    result = metrics.poll(metrics.prometheus_query(prometheus.url), {WINDOW})
    found = result.role(WINDOW, NAMESPACE, NAME, role)
    assert found is not None, result.by_window
    return found


@pytest.mark.timeout(90)
def test_batch_size_is_the_per_pod_mean_and_running_the_sum_over_a_roles_pods(tmp_path: Path) -> None:
    spec_a, spec_b, base = Pod(2), Pod(4), Pod(5)
    with scraped(tmp_path, {manifests.ROLE_SPECULATIVE: [spec_a, spec_b], manifests.ROLE_BASELINE: [base]}) as prometheus:
        prometheus.wait_for("count(vllm:num_requests_running) == 3", timeout=30)
        speculative, baseline = polled(prometheus, manifests.ROLE_SPECULATIVE), polled(prometheus, manifests.ROLE_BASELINE)
        assert (speculative.running, speculative.running_per_replica) == (6, 3)
        assert (baseline.running, baseline.running_per_replica) == (5, 5)


@pytest.mark.timeout(90)
def test_batch_size_is_a_mean_over_the_window_not_the_last_scrape(tmp_path: Path) -> None:
    spec_a, spec_b = Pod(2), Pod(4)
    with scraped(tmp_path, {manifests.ROLE_SPECULATIVE: [spec_a, spec_b]}) as prometheus:
        prometheus.wait_for("count(vllm:num_requests_running) == 2", timeout=30)
        time.sleep(4)  # a few scrapes at 2 and 4
        spec_a.running = 10
        prometheus.wait_for("max(vllm:num_requests_running) == 10", timeout=30)
        time.sleep(2)
        speculative = polled(prometheus, manifests.ROLE_SPECULATIVE)
        # per replica: 3 over the older samples, 7 over the newest; the window holds both
        assert 3 < speculative.running_per_replica < 7
        assert speculative.running == pytest.approx(2 * speculative.running_per_replica)
