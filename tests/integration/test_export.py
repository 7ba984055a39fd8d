"""`specserve export` against the real prometheus binary scraping simulator processes, and `specserve replay` reading what it wrote.

Each exported value must be what the poller's own instant query (metrics.queries) returns at that line's time, for that serving only.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from specserve.cli import commands
from specserve.observation import export, metrics
from specserve.rendering import manifests
from tests.helpers import serving
from tests.integration.simulator_process import running_simulator
from tests.support.prometheus import Prometheus, Target

NAMESPACE, NAME, WINDOW = "shop", "exported", 30
SERVING = serving(name=NAME, namespace=NAMESPACE, healthPolicy={"intervalSeconds": 5, "windowSeconds": WINDOW, "minDraftTokens": 10}, baseline={"replicas": 1})
SERVE = ["HuggingFaceTB/SmolLM2-135M-Instruct", "--served-model-name", "smol", "--max-model-len", "2048"]
NGRAM = ["--speculative-config", json.dumps({"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4})]
TRAFFIC = ["--sim-qps", "4", "--sim-temperature", "0", "--sim-echo", "1", "--sim-time-scale", "0.05", "--sim-max-tokens", "128"]
STEP = 2


def labels(serving_name: str, role: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "serving": serving_name, "role": role}


def instant(prometheus: Prometheus, promql: str, at: int) -> list[dict]:
    """An instant query evaluated at `at`, as the poller runs it at that moment."""
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": at})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]["result"]


def polled(prometheus: Prometheus, field: str, role: str, at: int) -> float | None:
    series = instant(prometheus, metrics.queries(WINDOW)[field], at)
    return next((metrics.number(s["value"][1]) for s in series if s["metric"] == labels(NAME, role)), None)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = commands.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.timeout(180)
def test_export_writes_the_pollers_numbers_per_step_and_replay_reads_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    serving_file = tmp_path / "serving.yaml"
    serving_file.write_text(yaml.safe_dump(SERVING))
    with running_simulator(*SERVE, *NGRAM, *TRAFFIC) as speculative, running_simulator(*SERVE, *TRAFFIC) as baseline:
        prometheus = Prometheus(tmp_path, [
            Target(speculative.removeprefix("http://"), labels(NAME, manifests.ROLE_SPECULATIVE)),
            Target(baseline.removeprefix("http://"), labels(NAME, manifests.ROLE_BASELINE)),
            Target(baseline.removeprefix("http://"), labels("someone-else", manifests.ROLE_SPECULATIVE)),  # must not leak into NAME's lines
        ]).start()
        try:
            prometheus.wait_for(metrics.queries(WINDOW)["acceptance_rate"], timeout=60)
            prometheus.wait_for(metrics.queries(WINDOW)["p99_tpot"], timeout=60)
            start = int(time.time()) + 1  # the first whole second with data on both sides
            time.sleep(4 * STEP + 2)
            end = int(time.time()) - 1
            code, out, err = run(["export", str(serving_file), "--prometheus-url", prometheus.url, "--start", str(start), "--end", str(end), "--step", f"{STEP}s"], capsys)
            assert (code, err) == (0, "")
            lines = [json.loads(line) for line in out.splitlines()]
            assert [line["t"] for line in lines] == list(range(start, end + 1, STEP))
            assert all(tuple(line) == export.LINE_KEYS for line in lines)
            for line in lines:
                for field in export.EXPORTED:
                    assert line[field] == pytest.approx(polled(prometheus, field, manifests.ROLE_SPECULATIVE, line["t"])), (field, line)
                assert line["baseline_p99_tpot"] == pytest.approx(polled(prometheus, "p99_tpot", manifests.ROLE_BASELINE, line["t"]))
            # Each role's quantile appears once its window holds a finished request: on a busy machine a step or two later.
            assert all(0.3 < line["acceptance_rate"] <= 1 and line["draft_tokens"] > 0 for line in lines if line["acceptance_rate"] is not None)
            assert lines[-1]["acceptance_rate"] is not None and (lines[-1]["baseline_p99_tpot"] or 0) > 0
        finally:
            prometheus.stop()
    observations = tmp_path / "history.jsonl"
    observations.write_text(out)
    code, out, err = run(["replay", str(serving_file), "--observations", str(observations)], capsys)
    decisions = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and err == "" and [d["t"] for d in decisions] == [line["t"] for line in lines]
    assert {d["action"] for d in decisions} <= {"keep", "hold", "disable_speculation"}


def test_export_from_an_unreachable_prometheus_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    serving_file = tmp_path / "serving.yaml"
    serving_file.write_text(yaml.safe_dump(SERVING))
    code, out, err = run(["export", str(serving_file), "--prometheus-url", "http://127.0.0.1:9", "--start", "now-1h", "--end", "now"], capsys)
    assert (code, out) == (2, "")
    assert err == "specserve export: http://127.0.0.1:9: Prometheus did not answer: cannot connect: Connection refused\n"
