"""The README's by-hand steps, run word for word by bash against a private control plane and a real local Prometheus.

Only the Prometheus address changes (the README's http://localhost:9090 becomes the test's own port); the operator runs
cluster-wide as the README says, which is why the control plane is private.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT
from tests.install import tools
from tests.support import private_cluster
from tests.support.prometheus import Prometheus

README_PROMETHEUS = "http://localhost:9090"
TROUBLE = re.compile(r"Traceback|failed with an exception|has failed|[Uu]nhandled exception")


@pytest.fixture(scope="module", autouse=True)
def real_cluster_required() -> None:
    """Overrides the e2e one: this module brings its own cluster (the README's operator is cluster-wide)."""
    private_cluster.require()


def readme_block() -> str:
    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "specserve run --all-namespaces" in b]
    assert README_PROMETHEUS in block
    return block


def queries_answered(prometheus: Prometheus) -> float:
    """Instant queries this Prometheus answered (its own /metrics; the test asks it nothing through the API)."""
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line and 'code="200"' in line)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str, float]]:
    """bash's exit code, everything the block and the operator it started wrote, and the queries Prometheus answered
    while the operator ran (its first poll comes one poll interval, 15 s, after the serving is Ready)."""
    workdir = tmp_path_factory.mktemp("readme-prometheus")
    with private_cluster.running() as cluster:
        prometheus = Prometheus(workdir, targets=[]).start()
        script = readme_block().replace(README_PROMETHEUS, prometheus.url)
        path = os.pathsep.join([str(Path(sys.executable).parent), str(Path(tools.binary("kubectl")).parent), os.environ.get("PATH", "")])
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PATH": path}
        with tempfile.TemporaryFile("w+") as output:
            process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], stdout=output, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env, start_new_session=True)
            answered = 0.0
            try:
                code = process.wait(timeout=360)
                deadline = time.monotonic() + 45
                while code == 0 and not answered and time.monotonic() < deadline:
                    time.sleep(1)
                    answered = queries_answered(prometheus)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)  # the operator the block started in the background, in bash's session
                time.sleep(3)
                prometheus.stop()
            output.seek(0)
            yield code, output.read(), answered


def test_the_readme_steps_run_word_for_word_and_the_example_gets_ready(ran: tuple[int, str, float]) -> None:
    code, output, _ = ran
    assert code == 0, output[-4000:]
    assert re.search(r"^llm +sim-chat +Ready ", output, re.M), output[-4000:]


def test_the_operator_polls_the_local_prometheus_and_says_nothing_is_wrong(ran: tuple[int, str, float]) -> None:
    _, output, answered = ran
    assert answered > 0, "the operator never queried the Prometheus given by --prometheus-url"
    assert "does not answer" not in output and not TROUBLE.search(output), output[-4000:]
    assert "WARNING" not in output, [line for line in output.splitlines() if "WARNING" in line]
