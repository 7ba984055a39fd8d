"""`specserve export` without Prometheus: its time forms, its grid and chunks, how a range answer becomes replay lines, and bad arguments.

The real range queries against the prometheus binary are in tests/integration/test_export.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from specserve.cli import commands
from specserve.observation import export, metrics, replay
from specserve.rendering import manifests
from tests.helpers import serving

NOW = 1_767_258_000.7


@pytest.mark.parametrize(("text", "seconds"), [
    ("1767250000", 1767250000),
    ("1767250000.9", 1767250000),
    ("2026-01-01T09:00:00Z", 1767258000),
    ("2026-01-01T10:00:00+01:00", 1767258000),
    ("2026-01-01T09:00:00", 1767258000),  # no offset: UTC
    ("now", 1767258000),
    ("now-6h", 1767258000 - 6 * 3600),
    ("now-1h30m", 1767258000 - 5400),
])
def test_times_are_unix_seconds_rfc3339_or_relative_to_now(text: str, seconds: int) -> None:
    assert export.parse_time(text, NOW) == seconds


@pytest.mark.parametrize("text", ["yesterday", "now-6 hours", "now+1h", ""])
def test_a_time_it_cannot_read_says_which_forms_it_reads(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time: give Unix seconds, RFC 3339"):
        export.parse_time(text, NOW)


@pytest.mark.parametrize(("text", "seconds"), [("30", 30), ("30s", 30), ("1m", 60), ("1h30m", 5400), ("2d", 172800)])
def test_durations_are_seconds_or_prometheus_durations(text: str, seconds: float) -> None:
    assert export.parse_duration(text) == seconds


def test_the_grid_is_prometheus_own_start_plus_k_steps() -> None:
    assert export.TimeRange(100, 110, 4).times() == [100, 104, 108]


def test_long_ranges_are_queried_in_chunks_prometheus_accepts_on_the_same_grid() -> None:
    span = export.TimeRange(0, 30 * (2 * export.MAX_POINTS + 5), 30)
    chunks = list(span.chunks())
    assert all(chunk.points <= export.MAX_POINTS for chunk in chunks)
    assert [t for chunk in chunks for t in chunk.times()] == span.times()


def test_a_range_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="--end 1970-01-01T00:00:05Z is before --start 1970-01-01T00:00:10Z"):
        export.TimeRange(10, 5, 1)


def matrix(role: str, name: str, values: list[tuple[int, str]], namespace: str = "shop") -> dict[str, Any]:
    return {"metric": {"namespace": namespace, "serving": name, "role": role}, "values": [[t, v] for t, v in values]}


class RecordedPrometheus:
    """Answers each of the poller's queries with a fixed matrix, and remembers what it was asked."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        self.answers, self.asked = answers, []

    def __call__(self, promql: str, start: int, end: int, step: float) -> list[dict[str, Any]]:
        self.asked.append((promql, start, end, step))
        return self.answers.get(promql, [])


def test_lines_take_the_servings_own_series_and_the_baselines_p99() -> None:
    queries = metrics.queries(300)
    prometheus = RecordedPrometheus({
        queries["acceptance_rate"]: [matrix(manifests.ROLE_SPECULATIVE, "mine", [(60, "0.7"), (90, "NaN")]), matrix(manifests.ROLE_SPECULATIVE, "other", [(60, "0.1")])],
        queries["p99_tpot"]: [matrix(manifests.ROLE_SPECULATIVE, "mine", [(60, "0.03")]), matrix(manifests.ROLE_BASELINE, "mine", [(90, "0.025")]),
                              matrix(manifests.ROLE_SPECULATIVE, "mine", [(60, "9")], namespace="elsewhere")],
    })
    lines = export.export(prometheus, export.Serving("shop", "mine", 300), export.TimeRange(30, 90, 30))
    assert [(x["t"], x["acceptance_rate"], x["p99_tpot"], x["baseline_p99_tpot"]) for x in lines] == [
        (30, None, None, None), (60, 0.7, 0.03, None), (90, None, None, 0.025)
    ]
    assert {promql for promql, *_ in prometheus.asked} == {queries[field] for field in export.QUERIED}
    assert export.has_data(lines) and not export.has_data(lines[:1])


def position(name: str, at: int, values: list[tuple[int, str]], role: str = manifests.ROLE_SPECULATIVE) -> dict[str, Any]:
    series = matrix(role, name, values)
    series["metric"]["position"] = str(at)
    return series


def running(role: str, stat: str, values: list[tuple[int, str]], name: str = "mine") -> dict[str, Any]:
    series = matrix(role, name, values)
    series["metric"]["stat"] = stat
    return series


def exported(answers: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    queries = metrics.queries(300)
    prometheus = RecordedPrometheus({queries[field]: series for field, series in answers.items()})
    return export.export(prometheus, export.Serving("shop", "mine", 300), export.TimeRange(30, 90, 30))


def test_per_position_acceptance_is_a_list_in_position_order_from_the_speculative_role() -> None:
    lines = exported({"per_position_acceptance": [
        position("mine", 1, [(30, "0.6"), (60, "0.55")]), position("mine", 0, [(30, "0.85"), (60, "0.8")]),
        position("mine", 0, [(30, "0.1")], role=manifests.ROLE_BASELINE), position("other", 2, [(30, "0.4")]),
    ]})
    assert [x["per_position_acceptance"] for x in lines] == [[0.85, 0.6], [0.8, 0.55], None]


def test_per_position_acceptance_without_data_at_position_0_is_null() -> None:
    lines = exported({"per_position_acceptance": [position("mine", 0, [(30, "NaN")]), position("mine", 1, [(30, "NaN")])]})
    assert lines[0]["per_position_acceptance"] is None and not export.has_data(lines)


def test_batch_sizes_are_each_roles_running_requests_per_replica_not_the_total() -> None:
    lines = exported({"running": [
        running(manifests.ROLE_SPECULATIVE, "sum", [(30, "96")]), running(manifests.ROLE_SPECULATIVE, "mean", [(30, "48")]),
        running(manifests.ROLE_BASELINE, "sum", [(60, "40")]), running(manifests.ROLE_BASELINE, "mean", [(60, "20")]),
    ]})
    assert [(x["batch_size"], x["baseline_batch_size"]) for x in lines] == [(48, None), (None, 20), (None, None)]


def test_the_baselines_p50_tpot_and_p99_ttft_come_from_its_own_series() -> None:
    lines = exported({
        "p50_tpot": [matrix(manifests.ROLE_SPECULATIVE, "mine", [(30, "0.02")]), matrix(manifests.ROLE_BASELINE, "mine", [(30, "0.015")])],
        "p99_ttft": [matrix(manifests.ROLE_SPECULATIVE, "mine", [(30, "0.4")]), matrix(manifests.ROLE_BASELINE, "mine", [(30, "0.3")])],
    })
    assert (lines[0]["p50_tpot"], lines[0]["baseline_p50_tpot"], lines[0]["p99_ttft"], lines[0]["baseline_p99_ttft"]) == (0.02, 0.015, 0.4, 0.3)


def test_lines_leave_out_k_which_prometheus_cannot_know() -> None:
    lines = exported({})
    assert all(tuple(x) == export.LINE_KEYS for x in lines) and "k" not in export.LINE_KEYS
    assert set(export.LINE_KEYS) == set(replay.KEYS) - {"k"}


def test_exported_lines_are_lines_replay_reads() -> None:
    lines = exported({
        "acceptance_rate": [matrix(manifests.ROLE_SPECULATIVE, "mine", [(30, "0.7")])], "draft_tokens": [matrix(manifests.ROLE_SPECULATIVE, "mine", [(30, "9000")])],
        "per_position_acceptance": [position("mine", 0, [(30, "0.8")]), position("mine", 1, [(30, "0.6")])],
        "running": [running(manifests.ROLE_SPECULATIVE, "mean", [(30, "8")]), running(manifests.ROLE_BASELINE, "mean", [(30, "7.5")])],
    })
    _, observation = replay.parse_line(json.dumps(lines[0]), 1)
    assert (observation.per_position_acceptance, observation.k, observation.batch_size, observation.baseline_batch_size) == ((0.8, 0.6), None, 8, 7.5)


def serving_file(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(serving(name="s")))
    return path


@pytest.mark.parametrize(("arguments", "message"), [
    (["--start", "yesterday", "--end", "now"], "specserve export: --start 'yesterday' is not a time: give Unix seconds, RFC 3339"),
    (["--start", "now", "--end", "now-1h"], "specserve export: --end "),
    (["--start", "now-1h", "--end", "now", "--step", "1.5"], "specserve export: --step 1.5: give whole seconds"),
    (["--start", "now-1h", "--end", "now", "--step", "soon"], "specserve export: --step 'soon' is not a duration"),
])
def test_bad_times_are_one_line_and_exit_2(arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["export", str(serving_file(tmp_path)), "--prometheus-url", "http://127.0.0.1:9", *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(message) and len(captured.err.splitlines()) == 1


def test_export_takes_one_serving(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([serving(name="a"), serving(name="b")]))
    assert commands.main(["export", str(path), "--prometheus-url", "http://127.0.0.1:9", "--start", "now-1h", "--end", "now"]) == 2
    assert capsys.readouterr().err == f"specserve export: {path}: holds 2 documents; export takes one SpeculativeServing\n"


def test_metric_labels_come_from_the_operators_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECSERVE_SERVING_LABEL", "not a label")
    assert commands.main(["export", str(serving_file(tmp_path)), "--prometheus-url", "http://127.0.0.1:9", "--start", "now-1h", "--end", "now"]) == 2
    assert capsys.readouterr().err.startswith("specserve export: metric labels from SPECSERVE_*_LABEL: 'not a label' is not a Prometheus label name")
