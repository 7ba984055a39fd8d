"""PromQL and the batched poll: constant query count, label settings, parsing Prometheus answers."""

import re
import threading

import pytest

from specserve.observation import metrics


def test_query_count_is_fixed_per_window():
    assert len(metrics.queries(300)) == 12


def test_queries_group_by_the_configured_labels_and_never_name_an_object():
    labels = metrics.Labels("kube_namespace", "app_serving", "app_role")
    for promql in metrics.queries(120, labels).values():
        assert "kube_namespace, app_serving, app_role" in promql
        assert "[120s]" in promql or "vllm:num_requests" in promql or "kv_cache" in promql


def test_acceptance_is_accepted_over_draft_tokens():
    q = metrics.queries(300)["acceptance_rate"]
    assert q.index("vllm:spec_decode_num_accepted_tokens_total") < q.index("/") < q.index("vllm:spec_decode_num_draft_tokens_total")


def test_p99_tpot_uses_the_per_request_histogram():
    assert metrics.queries(300)["p99_tpot"].startswith("histogram_quantile(0.99, sum by (le, namespace, serving, role) (rate(vllm:request_time_per_output_token_seconds_bucket[300s])))")


def test_label_names_are_validated():
    with pytest.raises(ValueError, match="not a Prometheus label name"):
        metrics.Labels(serving='serving"} or vector(1) #')


def sample(value, **labels):
    return {"metric": {"namespace": "llm", "serving": "a", "role": "speculative", **labels}, "value": [0, str(value)]}


def test_poll_fills_each_role_and_skips_foreign_series():
    answers = {
        "acceptance_rate": [sample(0.7), {"metric": {"job": "other"}, "value": [0, "0.1"]}],
        "per_position_acceptance": [sample(0.8, position="0"), sample(0.5, position="1")],
        "p99_tpot": [sample("NaN"), sample(0.05, role="baseline")],
    }
    by_query = {q: answers.get(name, []) for name, q in metrics.queries(60).items()}
    result = metrics.poll(lambda q: by_query[q], {60})
    speculative = result.role(60, "llm", "a", "speculative")
    assert speculative.acceptance_rate == 0.7 and speculative.per_position_acceptance == {0: 0.8, 1: 0.5}
    assert speculative.p99_tpot is None
    assert result.role(60, "llm", "a", "baseline").p99_tpot == 0.05
    assert result.queries == 12


def test_one_query_set_per_distinct_window():
    seen = []
    metrics.poll(lambda q: seen.append(q) or [], {60, 300, 60})
    assert len(seen) == 24


def test_the_queries_of_a_poll_are_in_flight_side_by_side():
    in_flight = threading.Barrier(2, timeout=5)  # broken (an error) unless two queries wait at once

    def slow(_):
        in_flight.wait()
        return []

    assert metrics.poll(slow, {60}).queries == 12


def test_a_poll_reads_the_same_whatever_the_queries_in_flight():
    answers = {q: [sample(i / 100, position="0")] for i, q in enumerate(metrics.queries(60).values())}

    def read(at_once):
        poll = metrics.poll(lambda q: answers[q], {60}, at_once=at_once)
        return poll.by_window

    assert read(1) == read(metrics.QUERIES_AT_ONCE) == read(12)


def test_any_failure_is_a_metrics_error():
    def broken(_):
        raise ConnectionError("refused")

    with pytest.raises(metrics.MetricsError, match="ConnectionError: refused"):
        metrics.poll(broken, {60})


def test_a_refused_connection_is_one_short_line_without_the_query():
    said = (
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /api/v1/query?query=sum+by+%28namespace%29 "
        "(Caused by NewConnectionError(\"<urllib3.connection.HTTPConnection object>: Failed to establish a new connection: [Errno 111] Connection refused\"))"
    )

    def refused(_):
        raise ConnectionError(said)

    with pytest.raises(metrics.MetricsError) as raised:
        metrics.poll(refused, {300})
    assert str(raised.value) == "cannot connect: Connection refused"


def test_prometheus_own_error_text_is_kept():
    error = RuntimeError('HTTP Status Code 422 (b\'{"status":"error","errorType":"execution","error":"query timed out"}\')')
    assert metrics.problem(error) == "RuntimeError: query timed out"


# ---------------------------------------------------------------- running requests and the batch size


def test_running_is_one_query_for_the_total_and_the_per_replica_mean_over_the_window():
    q = metrics.queries(120)["running"]
    assert q == (
        'label_replace(sum by (namespace, serving, role) (avg_over_time(vllm:num_requests_running[120s])), "stat", "sum", "", "")'
        ' or label_replace(avg by (namespace, serving, role) (avg_over_time(vllm:num_requests_running[120s])), "stat", "mean", "", "")'
    )


def test_the_running_querys_sum_fills_running_and_its_mean_the_batch_size_per_replica():
    by_query = {q: [] for q in metrics.queries(60).values()}
    by_query[metrics.queries(60)["running"]] = [sample(96, stat="sum"), sample(48, stat="mean"), sample(20, role="baseline", stat="sum"), sample(20, role="baseline", stat="mean")]
    result = metrics.poll(lambda q: by_query[q], {60})
    speculative, baseline = result.role(60, "llm", "a", "speculative"), result.role(60, "llm", "a", "baseline")
    assert (speculative.running, speculative.running_per_replica) == (96, 48)
    assert (baseline.running, baseline.running_per_replica) == (20, 20)


def test_no_running_series_leaves_the_batch_size_unknown():
    result = metrics.poll(lambda q: [sample(0.7)] if q == metrics.queries(60)["acceptance_rate"] else [], {60})
    assert result.role(60, "llm", "a", "speculative").running_per_replica is None


def test_the_batch_size_adds_no_query():
    seen = []
    metrics.poll(lambda q: seen.append(q) or [], {60})
    assert len(seen) == 12 and sum("num_requests_running" in q for q in seen) == 1


# ---------------------------------------------------------------- the recorded poll and the chart's recording rules


def _recorded_names() -> set[str]:
    import yaml

    from tests.helpers import ROOT

    groups = yaml.safe_load((ROOT / "charts" / "specserve" / "files" / "specserve.rules.yaml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_a_recorded_poll_reads_only_series_the_charts_rules_record():
    recorded = _recorded_names()
    for name, promql in metrics.poll_queries(metrics.RECORDED_WINDOW_SECONDS, recorded=True).items():
        assert "vllm:" not in promql and "[" not in promql, name  # no raw series, no range over anything
        assert set(re.findall(r"\b[a-z_]+:[a-z_0-9]+:[a-z_0-9]+\b", promql)) <= recorded, name


def test_every_field_of_the_poll_has_a_recorded_series():
    assert metrics.RECORDED.keys() == metrics.queries(metrics.RECORDED_WINDOW_SECONDS).keys()


def test_the_probe_asks_for_one_series_of_each_recording_group_and_one_only_the_current_rules_record():
    import yaml

    from tests.helpers import ROOT

    probed = re.findall(r"count\(([a-z_:0-9]+)\)", metrics.RECORDING_PROBE)
    assert metrics.RECORDING_PROBE == " and ".join(f"count({series})" for series in probed)
    groups = yaml.safe_load((ROOT / "charts" / "specserve" / "files" / "specserve.rules.yaml").read_text())["groups"]
    for group in (g for g in groups if "recording" in g["name"]):
        assert {r["record"] for r in group["rules"]} & set(probed), group["name"]
    assert "serving_role:vllm_num_requests_running:avg_over_time5m" in probed  # older charts did not record it


def test_recorded_series_replace_raw_queries_only_for_their_window_and_the_default_labels():
    assert metrics.poll_queries(metrics.RECORDED_WINDOW_SECONDS, recorded=True) == metrics.RECORDED
    assert metrics.poll_queries(60, recorded=True) == metrics.queries(60)
    assert metrics.poll_queries(metrics.RECORDED_WINDOW_SECONDS, metrics.Labels(serving="app"), recorded=True) == metrics.queries(metrics.RECORDED_WINDOW_SECONDS, metrics.Labels(serving="app"))


def test_a_recorded_poll_fills_running_and_the_batch_size_from_the_two_recorded_means():
    by_query = {q: [] for q in metrics.RECORDED.values()}
    by_query[metrics.RECORDED["running"]] = [sample(96, stat="sum"), sample(48, stat="mean")]
    result = metrics.poll(lambda q: by_query[q], {metrics.RECORDED_WINDOW_SECONDS}, recorded=True)
    role = result.role(metrics.RECORDED_WINDOW_SECONDS, "llm", "a", "speculative")
    assert result.recorded and result.queries == 12 and (role.running, role.running_per_replica) == (96, 48)
