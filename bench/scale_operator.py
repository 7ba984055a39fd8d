"""The operator under the scale benchmark, as a process: started from a given source with a probe thread inside,
stopped, and Kopf alone with the operator's watches (the floor under its restart).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness import ROOT, free_port, proc_cpu_seconds, proc_status_mib
from scale_cluster import Api, owned_counts, quiet_after
from scale_probe import TRACEMALLOC_FRAMES, probe

CLOSED_PROMETHEUS = "http://127.0.0.1:9"  # nothing listens: the health loop holds, no DNS look-ups


def operator_child(probe_out: str, argv: list[str]) -> None:
    """`python -m specserve.cli ARGV` in this process, plus a thread that samples asyncio tasks and event-loop lag."""
    import runpy

    sys.path[0] = os.getcwd()  # as `python -m` would have it
    if TRACEMALLOC_FRAMES:  # diagnosis only: slows the operator and adds ~50% to its memory
        import tracemalloc

        tracemalloc.start(TRACEMALLOC_FRAMES)
    threading.Thread(target=probe, args=(Path(probe_out),), daemon=True, name="scale-probe").start()
    if argv[:1] == ["--bare-kopf"]:
        sys.argv = [str(ROOT / "bench" / "bare_kopf.py"), *argv[1:]]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return
    sys.argv = ["specserve.cli", *argv]
    runpy.run_module("specserve.cli", run_name="__main__", alter_sys=True)


class Operator:
    """The real operator, started the way a user starts it, from the given source tree."""

    def __init__(self, source: Path, namespace: str, kubeconfig: str, log: Path) -> None:
        self.source, self.namespace, self.kubeconfig, self.log = source, namespace, kubeconfig, log
        self.liveness_port, self.metrics_port = free_port(), free_port()
        self.probe_out = log.with_suffix(".probe.json")
        self.counts_servings = "specserve_servings" in (source / "operator" / "specserve" / "telemetry.py").read_text()
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.alive_at: float | None = None
        self.final: dict[str, Any] = {}

    def start(self) -> "Operator":
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "PYTHONPATH": str(self.source / "operator")}
        command = [
            sys.executable, str(Path(__file__).resolve()), "--operator-child", str(self.probe_out), "--",
            "run", "--namespace", self.namespace, "--prometheus-url", CLOSED_PROMETHEUS,
            "--metrics-port", str(self.metrics_port), "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
        ]
        self.probe_out.unlink(missing_ok=True)
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.source)
        return self

    def alive(self) -> bool:
        """Liveness answered (remembered: the first time it did)."""
        if self.alive_at is not None:
            return True
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2).close()
        except OSError:
            return False
        self.alive_at = time.monotonic()
        return True

    def wait_alive(self, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while not self.alive():
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}; see {self.log}:\n{self.log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the operator's liveness endpoint did not answer within {timeout}s; see {self.log}")
            time.sleep(0.2)
        return self.alive_at - self.started

    def cpu_s(self) -> float:
        return proc_cpu_seconds(self.process.pid) or 0.0

    def hwm_mib(self) -> float | None:
        return proc_status_mib(self.process.pid, "VmHWM")

    def served(self) -> int | None:
        """The servings the operator says it handles (sum of specserve_servings by phase), None if not exposed."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics?name[]=specserve_servings", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        values = [float(m.group(1)) for m in re.finditer(r"^specserve_servings\{[^}]*\} (\S+)$", text, re.M)]
        return int(sum(values)) if values else None

    def probe(self) -> dict[str, Any]:
        try:
            return json.loads(self.probe_out.read_text())
        except (OSError, ValueError):
            return {}

    def stop(self, grace: float = 120) -> float:
        """SIGTERM, wait; what it held and used is read just before. Returns seconds to exit (SIGKILL after grace)."""
        self.final = {"peak_rss_mib": self.hwm_mib(), "cpu_s": round(self.cpu_s(), 2), **self.probe()}
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.final["killed_after_grace"] = True
        return round(time.monotonic() - started, 2)


class BareKopf(Operator):
    """bench/bare_kopf.py: Kopf with the operator's watches and settings and handlers that do nothing."""

    def __init__(self, source: Path, namespace: str, kubeconfig: str, log: Path) -> None:
        super().__init__(source, namespace, kubeconfig, log)
        self.counts_servings = False

    def start(self) -> "BareKopf":
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "PYTHONPATH": str(self.source / "operator")}
        command = [sys.executable, str(Path(__file__).resolve()), "--operator-child", str(self.probe_out), "--bare-kopf",
                   self.namespace, f"http://127.0.0.1:{self.liveness_port}/healthz"]
        self.probe_out.unlink(missing_ok=True)
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.source)
        return self

    def served(self) -> int | None:
        return None


def measure_bare_kopf(api: "Api", n: int, ns: str, source: Path, kubeconfig: str, log: Path, timeout: float) -> dict[str, Any]:
    """Restart bare Kopf over the same servings: until it is alive and idle (under 10% of a core over 10 s)."""
    bare = BareKopf(source, ns, kubeconfig, log).start()
    try:
        base = api.requests()
        found, snap, _ = quiet_after(api, bare, bare.started, base, 10, timeout, n, wait_idle=True)
        writes = owned_counts(snap)[0] - owned_counts(base)[0]
        stop_s = bare.stop()
        return {"idle_s": found["cpu_idle_s"], "owned_writes": writes, "cpu_s": bare.final.get("cpu_s"), "peak_rss_mib": bare.final.get("peak_rss_mib"),
                "max_loop_lag_s": bare.final.get("max_loop_lag_s"), "cpu_timeline": found["cpu_timeline"], "stop_s": stop_s}
    finally:
        if bare.process.poll() is None:
            bare.process.kill()
            bare.process.wait()
