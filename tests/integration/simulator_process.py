"""Start a real simulator process (`python -m specserve_simulator`) on a free loopback port, for integration tests.

Reusable by any test that needs a vLLM stand-in: `with running_simulator(*vllm_args) as base_url: ...`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.processes import stop

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def simulator_command(*argv: str, module: str = "specserve_simulator") -> list[str]:
    return [sys.executable, "-m", module, *argv]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "operator"), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def running_simulator(*argv: str, module: str = "specserve_simulator") -> Iterator[str]:
    """Run the simulator with these `vllm serve` arguments until the block ends; yields its base URL."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        command = simulator_command(*argv, "--host", "127.0.0.1", "--port", str(port), module=module)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment())
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base_url, process, log)
            yield base_url
        finally:
            stop(process, grace_seconds=10)


def request(base_url: str, path: str, body: Any = None, method: str | None = None) -> tuple[int, Any]:
    """One HTTP call; returns (status, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base_url + path, data=data, method=method or ("POST" if data else "GET"), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw, kind = response.status, response.read().decode(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read().decode(), error.headers.get("Content-Type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw


def _wait_healthy(base_url: str, process: subprocess.Popen, log: Any) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"simulator exited with {process.returncode}: {log.read().decode()}")
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"simulator at {base_url} not healthy after {START_TIMEOUT}s")
