"""Runs the real `prometheus` binary on loopback for tests and benchmarks, scraping given targets.

Targets carry namespace/serving/role labels the way the documented plain-Prometheus relabel rules produce them:
fixed ones (`targets`), and/or a file_sd target file that someone else keeps current (`file_sd`, e.g. the pod
runner's, tests/support/pod_runner.py), which Prometheus re-reads when it changes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(binary: str) -> str:
    """The binary's path; fails loudly under CI=true, skips with a visible reason elsewhere."""
    path = shutil.which(binary)
    if path:
        return path
    message = f"`{binary}` is not installed (Debian package prometheus); scripts/setup.sh installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Target:
    address: str
    labels: dict[str, str]


class Prometheus:
    def __init__(
        self, workdir: Path, targets: list[Target], scrape_interval: str = "1s", rule_groups: list[dict] | None = None, file_sd: Path | None = None,
    ) -> None:
        """rule_groups: recording and alerting rule groups (a PrometheusRule's spec.groups) to evaluate; file_sd: a JSON
        file_sd target file (a list of {"targets": [...], "labels": {...}}) scraped in the same job as `targets`."""
        self.binary = require("prometheus")
        self.workdir, self.targets, self.scrape_interval = workdir, targets, scrape_interval
        self.file_sd = file_sd
        self.rule_groups = rule_groups or []
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict:
        job = {"job_name": "vllm", "honor_labels": True, "static_configs": [{"targets": [t.address], "labels": t.labels} for t in self.targets]}
        if self.file_sd is not None:
            job["file_sd_configs"] = [{"files": [str(self.file_sd)], "refresh_interval": "5s"}]  # inotify sees changes at once; this is the fallback
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [job],
        }
        if self.rule_groups:
            config["rule_files"] = [str(self.workdir / "rules.yml")]
        return config

    def start(self) -> "Prometheus":
        if self.rule_groups:
            (self.workdir / "rules.yml").write_text(yaml.safe_dump({"groups": self.rule_groups}))
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready within 30s")

    def reload_rules(self, rule_groups: list[dict]) -> None:
        """Replace the rule groups of a running Prometheus (started with some) and have it re-read them (SIGHUP),
        keeping its data: the same scraped series measured under other rules."""
        if not self.rule_groups or self.process is None:
            raise RuntimeError("reload_rules needs a running Prometheus started with rule groups")
        self.rule_groups = rule_groups
        (self.workdir / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups}))
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no data for {promql} within {timeout}s")


