"""Stopping the processes tests start (operators, simulators): politely first, then for sure.

SIGTERM, a grace period, SIGKILL; always reaped, so no zombie outlives the test.
"""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
