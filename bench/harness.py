"""What every benchmark here shares: the repository on the import path, readings of this machine and its processes,
provenance, results written before anything can fail, and the real parts the tests use (control plane, operator
process, Prometheus, pod runner), imported only when a benchmark asks for them.

Light on purpose: `scale.py --operator-child` imports it inside the operator process whose memory it measures.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def import_from_repository() -> None:
    """Put this checkout's operator and tests on the import path (not done on import: scale.py measures other sources)."""
    for path in (ROOT / "operator", ROOT):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


# The real parts, from the test support the suite runs on: name -> (module, attribute).
PARTS = {
    "private_cluster": ("tests.support.private_cluster", None),  # a private kube-apiserver, etcd, controller-manager, scheduler
    "Prometheus": ("tests.support.prometheus", "Prometheus"),  # the real prometheus binary on loopback
    "Target": ("tests.support.prometheus", "Target"),
    "PodRunner": ("tests.support.pod_runner", "PodRunner"),  # runs simulator pods as local processes
    "running_operator": ("tests.e2e.operator_process", "running_operator"),  # `specserve run` as a process
    "OperatorProcess": ("tests.e2e.operator_process", "OperatorProcess"),
}


def __getattr__(name: str) -> Any:
    if name not in PARTS:
        raise AttributeError(name)
    module, attribute = PARTS[name]
    import_from_repository()
    loaded = importlib.import_module(module)
    return loaded if attribute is None else getattr(loaded, attribute)


def write_json(path: Path, data: Any) -> Path:
    """Write results first (a plot or a report after it may still fail); the file is replaced whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    partial.replace(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def proc_status_mib(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def machine_busy_s() -> float:
    """CPU seconds spent by anything on the machine (all cores, not idle or iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def commit_of(source: Path) -> tuple[str, bool]:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "operator"], cwd=source, capture_output=True, text=True).stdout.strip())
    return sha, dirty
