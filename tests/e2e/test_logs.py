"""The operator's log on a real API server: plain lines carry the time, the level and [namespace/name]; JSON lines stay
Kopf's (the serving in `object`); a refused spec is one line per generation.

One operator process per format, each in a namespace of its own, with one serving applied and one refused.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from specserve.cluster import kube as k
from tests.e2e.cluster import SERVINGS, condition_of, create, eventually, merge_patch
from tests.e2e.conftest import delete_servings_then_namespace, new_namespace
from tests.e2e.operator_process import OperatorProcess, running_operator
from tests.helpers import serving

GPU_FREE = {"gpu": {"resourceName": "", "product": "L40S"}, "engine": {"resources": {"requests": {"cpu": "10m"}}}}
PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S")
JSON_KEYS = {"message", "timestamp", "severity"}  # Kopf's JSON formatter; `object` on a serving's lines


def refused_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if "refused generation" in line and name in line]


def run_story(kube: k.Kube, log_format: str) -> Iterator[tuple[str, OperatorProcess]]:
    namespace = new_namespace(kube, f"specserve-log-{log_format}")
    with running_operator(f"logs-{log_format}", ["--namespace", namespace, "--log-format", log_format]) as operator:
        create(kube, namespace, serving(name="good", **GPU_FREE))
        create(kube, namespace, serving(name="bad", **{**GPU_FREE, "gpu": {"resourceName": "", "product": "RTX-4090"}}))
        eventually(lambda: (condition_of(kube, namespace, "good", "Accepted") or {}).get("status") == "True", timeout=60)
        eventually(lambda: (condition_of(kube, namespace, "bad", "Accepted") or {}).get("reason") == "UnknownGPUProduct", timeout=60)
        # A change that leaves it refused: one more line, for generation 2; a status write or a label is no new generation.
        merge_patch(kube, SERVINGS.format(ns=namespace) + "/bad", {"spec": {"gpu": {"product": "h100"}}})
        eventually(lambda: "'h100'" in (condition_of(kube, namespace, "bad", "Accepted") or {}).get("message", ""), timeout=60)
        merge_patch(kube, SERVINGS.format(ns=namespace) + "/bad", {"metadata": {"labels": {"touched": "yes"}}})
        time.sleep(3)
        yield namespace, operator
        delete_servings_then_namespace(kube, namespace)


@pytest.fixture(scope="module")
def plain(kube: k.Kube, crd_installed: dict) -> Iterator[tuple[str, OperatorProcess]]:
    yield from run_story(kube, "plain")


@pytest.fixture(scope="module")
def json_log(kube: k.Kube, crd_installed: dict) -> Iterator[tuple[str, OperatorProcess]]:
    yield from run_story(kube, "json")


def test_every_plain_line_carries_the_time_and_the_level(plain: tuple[str, OperatorProcess]) -> None:
    _, operator = plain
    lines = [line for line in operator.text().splitlines() if line.strip()]
    assert lines and [line for line in lines if not PLAIN_LINE.match(line)] == []


def test_a_servings_plain_lines_name_it(plain: tuple[str, OperatorProcess]) -> None:
    namespace, operator = plain
    assert re.search(rf"^\S+ \S+ INFO +\[{namespace}/good\] reconciled generation 1: ", operator.text(), re.M)


def test_a_refused_spec_is_one_warning_line_per_generation(plain: tuple[str, OperatorProcess]) -> None:
    namespace, operator = plain
    lines = refused_lines(operator.text(), f"[{namespace}/bad]")
    assert len(lines) == 2, lines
    assert "WARNING" in lines[0] and "refused generation 1 (Accepted=False, UnknownGPUProduct): spec.gpu.product 'RTX-4090'" in lines[0]
    assert "refused generation 2 (Accepted=False, UnknownGPUProduct): spec.gpu.product 'h100'" in lines[1]


def test_json_lines_are_kopfs_with_the_serving_in_object(json_log: tuple[str, OperatorProcess]) -> None:
    namespace, operator = json_log
    records = [json.loads(line) for line in operator.text().splitlines() if line.strip()]
    assert all(JSON_KEYS <= set(r) for r in records)
    reconciled = [r for r in records if r["message"].startswith("reconciled generation 1") and (r.get("object") or {}).get("name") == "good"]
    assert reconciled and reconciled[0]["object"]["namespace"] == namespace and reconciled[0]["severity"] == "info"
    refused = [r for r in records if r["message"].startswith("refused generation") and (r.get("object") or {}).get("name") == "bad"]
    assert [r["severity"] for r in refused] == ["warn", "warn"]
