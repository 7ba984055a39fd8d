"""Runs `specserve run` as a real process against the cluster in KUBECONFIG, the way a user starts it.

Yields once Kopf's liveness endpoint answers; the log is kept under tests/e2e/logs/ for reading after a failure.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "tests" / "e2e" / "logs"
CLOSED_PROMETHEUS = "http://127.0.0.1:9"  # nothing listens: the health loop holds, no DNS look-ups


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0  # of the liveness endpoint (/healthz) and readiness beside it (/readyz)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def probe(self, path: str) -> tuple[int, str]:
        """GET http://127.0.0.1:PORT/PATH: the status code and the body (a 503 is an answer, not an error)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


@contextlib.contextmanager
def running_operator(label: str, args: list[str], env: dict[str, str] | None = None, start_timeout: float = 60) -> Iterator[OperatorProcess]:
    """`specserve run ARGS` with a liveness endpoint on a free port; stopped with SIGTERM when the block ends."""
    LOGS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = LOGS / f"operator-{label}.log"
    command = [sys.executable, "-m", "specserve.cli", "run", *args, "--liveness", f"http://127.0.0.1:{port}/healthz"]
    if "--prometheus-url" not in args:
        command += ["--prometheus-url", CLOSED_PROMETHEUS]
    if "--metrics-port" not in args:
        command += ["--metrics-port", "0"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            _wait_alive(port, process, log_path, start_timeout)
            yield OperatorProcess(process, log_path, port)
        finally:
            stop(process, grace_seconds=30)


def _wait_alive(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the operator exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the operator's liveness endpoint did not answer within {timeout}s; see {log}")
