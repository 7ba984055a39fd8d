"""Benchmark (b): poll-cycle cost at 10, 100 and 1,000 SpeculativeServings against a real Prometheus.

Per size: queries per cycle, poll wall time, evaluation time for every serving, and the RSS of an operator-like
process (specserve.cluster.lifecycle imported, N serving bodies held) measured beside an idle one in the same run.
With --recorded, Prometheus also evaluates the chart's recording rules and the poll reads them (300 s window),
measured beside the raw poll in the same run, with what the rule groups cost Prometheus meanwhile (each
evaluation's duration, missed iterations, Prometheus's CPU). --rules-before REF first measures the rules of
that git revision (and the recorded poll of its time: the fields those rules record, the others raw), then
reloads the working tree's rules into the same Prometheus and measures again: before and after on the same data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

from harness import ROOT, import_from_repository, loadavg  # noqa: E402

import_from_repository()

WINDOW = 60
RULES = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
CHART_RULES = "charts/specserve/files/specserve.rules.yaml"
# What the chart's rules recorded before the load fields were: a poll of that time read these recorded, the rest raw.
QUANTILE_ERA_FIELDS = ("acceptance_rate", "mean_accepted_length", "draft_tokens", "per_position_acceptance", "p50_tpot", "p99_tpot", "p50_ttft", "p99_ttft")


def measure(prometheus_url: str, servings: int, cycles: int, window: int = WINDOW, recorded: str = "", compare_at_once: str = "") -> dict:
    """Runs in a fresh process so its RSS is its own. `recorded`: "" raw, "all" the current recorded poll, or a
    comma-separated list of the fields an older chart recorded (the others then read raw, as that operator did).
    `compare_at_once` ("1,4"): each cycle also polls with these numbers of queries in flight, one after another,
    so they meet the same Prometheus at nearly the same moment (side by side); the main figures are the operator's.
    Then one poll each under tracemalloc: the most memory the poll held at once (its answers being parsed)."""
    import specserve.cluster.lifecycle  # noqa: F401  (what the operator process holds)
    from specserve import api
    from specserve.decision import judgment
    from specserve.observation import metrics, readings

    if recorded and recorded != "all":
        fields = recorded.split(",")
        metrics.RECORDED = {**metrics.queries(metrics.RECORDED_WINDOW_SECONDS), **{f: metrics.RECORDED[f] for f in fields}}
    spec = api.SpeculativeServingSpec.model_validate({"target": {"model": "o/m"}, "speculation": {"method": "ngram"}, "healthPolicy": {"windowSeconds": window}})
    bodies = [{"metadata": {"name": f"s{i:04d}", "namespace": "bench", "generation": 1}, "status": {}} for i in range(servings)]
    query = metrics.prometheus_query(prometheus_url, timeout_seconds=120)
    polls, evaluations, found = [], [], 0
    compared: dict[str, list[float]] = {n: [] for n in compare_at_once.split(",") if n}
    for cycle in range(cycles):
        for n in sorted(compared, key=lambda n: (int(n) + cycle) % 2):  # alternate which goes first
            compared[n].append(round(metrics.poll(query, {window}, recorded=bool(recorded), at_once=int(n)).seconds, 3))
        poll = metrics.poll(query, {window}, recorded=bool(recorded)) if servings else metrics.Poll({}, 0, 0.0)
        polls.append(poll)
        started = time.perf_counter()
        outcomes = [judgment.evaluate(body, spec, readings.observe(poll, window, body["metadata"]["namespace"], body["metadata"]["name"]), time.time()) for body in bodies]
        evaluations.append(time.perf_counter() - started)
        found = sum(1 for o in outcomes if o.decision.action != "hold")
    traced: dict[str, float] = {}
    for n in compared:  # after the timed cycles: tracing slows the parsing several times over
        tracemalloc.start()
        metrics.poll(query, {window}, recorded=bool(recorded), at_once=int(n))
        traced[n] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    return {
        "servings": servings,
        "window_seconds": window,
        "recorded": polls[-1].recorded,
        "queries_per_cycle": polls[-1].queries,
        "poll_seconds_median": round(statistics.median(p.seconds for p in polls), 4),
        "poll_seconds": [round(p.seconds, 3) for p in polls],
        "evaluate_seconds_median": round(statistics.median(evaluations), 4),
        "servings_with_data": found,
        "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "queries_at_once": metrics.QUERIES_AT_ONCE,
        **({"compared_at_once": {n: {"poll_seconds_median": statistics.median(v), "poll_seconds": v, "traced_peak_mib": traced[n]} for n, v in compared.items()}} if compared else {}),
    }


class RuleWatch:
    """Follows Prometheus's recording groups while a phase runs: every evaluation's duration (from /api/v1/rules),
    and at the end the missed iterations, prometheus_rule_group_last_duration_seconds and Prometheus's CPU seconds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.durations: dict[str, dict[str, float]] = {}  # group -> lastEvaluation -> seconds
        self.stopped = threading.Event()
        self.started = time.monotonic()
        self.start_metrics = _self_metrics(url)
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        while not self.stopped.wait(2.0):
            try:
                for group in _recording_groups(self.url):
                    if group.get("lastEvaluation", "").startswith("0001"):
                        continue  # not evaluated yet
                    self.durations.setdefault(group["name"], {})[group["lastEvaluation"]] = group["evaluationTime"]
            except OSError:
                pass

    def stop(self, evaluations: int = 4, timeout: float = 600.0) -> dict[str, Any]:
        """Ends the phase once every recording group was seen evaluated `evaluations` times (or after `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (not self.durations or min(len(d) for d in self.durations.values()) < evaluations):
            time.sleep(2)
        self.stopped.set()
        self.thread.join()
        wall = time.monotonic() - self.started
        end = _self_metrics(self.url)
        groups = {}
        for name, seen in sorted(self.durations.items()):
            values = list(seen.values())
            groups[name] = {
                "evaluations": len(values),
                "seconds_median": round(statistics.median(values), 3),
                "seconds_max": round(max(values), 3),
                "last_duration_seconds": round(end["last_duration"].get(name, float("nan")), 3),
                "iterations_missed": int(end["missed"].get(name, 0) - self.start_metrics["missed"].get(name, 0)),
                "interval_seconds": end["interval"].get(name),
            }
        return {
            "rule_groups": groups,
            "prometheus_cpu_seconds_per_second": round((end["cpu"] - self.start_metrics["cpu"]) / wall, 3),
            "phase_seconds": round(wall, 1),
        }


def _recording_groups(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/rules?type=record", timeout=30) as response:
        return [g for g in json.load(response)["data"]["groups"] if "recording" in g["name"]]


def _self_metrics(url: str) -> dict[str, Any]:
    """Prometheus's own /metrics: rule-group duration, interval and missed iterations per recording group
    (keyed by group name), and its process CPU seconds."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        lines = response.read().decode().splitlines()
    found: dict[str, Any] = {"last_duration": {}, "missed": {}, "interval": {}, "cpu": 0.0}
    names = {"prometheus_rule_group_last_duration_seconds": "last_duration", "prometheus_rule_group_iterations_missed_total": "missed",
             "prometheus_rule_group_interval_seconds": "interval"}
    for line in lines:
        if line.startswith("process_cpu_seconds_total "):
            found["cpu"] = float(line.split()[1])
        metric = line.split("{", 1)[0]
        if metric in names and "recording" in line:
            group = line.split('rule_group="', 1)[1].split('"', 1)[0].rsplit(";", 1)[-1]
            found[names[metric]][group] = float(line.rsplit(" ", 1)[1])
    return found


def wait_for_load(max_load: float | None, patience: float = 1200.0) -> dict[str, Any]:
    """Before a size: wait (60 s at a time, up to `patience`) while the 1-minute load average is above max_load."""
    waited, started = 0.0, time.monotonic()
    while max_load is not None and os.getloadavg()[0] > max_load and waited < patience:
        print(f"load {loadavg()} above {max_load}: waiting 60 s", flush=True)
        time.sleep(60)
        waited = time.monotonic() - started
    return {"loadavg_at_start": loadavg(), "waited_for_load_seconds": round(waited)}


def rule_groups(ref: str | None = None) -> list[dict]:
    """The chart's rule groups: the working tree's (as the kustomize copy a test keeps identical), or a revision's."""
    import yaml

    if ref is None:
        return yaml.safe_load(RULES.read_text())["spec"]["groups"]
    return yaml.safe_load(subprocess.check_output(["git", "show", f"{ref}:{CHART_RULES}"], cwd=ROOT, text=True))["groups"]


def _evaluated(prometheus, groups: list[dict], times: int, timeout: float) -> None:
    """Wait until every recording group of `groups` has been evaluated `times` times after this call."""
    names = {g["name"] for g in groups if "recording" in g["name"]}
    seen: dict[str, set[str]] = {name: set() for name in names}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for group in _recording_groups(prometheus.url):
            if group["name"] in names and group["rules"] and {r.get("name") for r in group["rules"]} == _rule_names(groups, group["name"]):
                seen[group["name"]].add(group["lastEvaluation"])
        if all(len(s) > times for s in seen.values()):  # the first one seen may predate the call
            return
        time.sleep(2)
    raise AssertionError(f"recording groups not evaluated {times} times within {timeout}s: {seen}")


def _rule_names(groups: list[dict], name: str) -> set[str]:
    return {r["record"] for g in groups if g["name"] == name for r in g["rules"] if "record" in r}


def run(sizes: list[int], cycles: int, recorded: bool = False, rules_before: str | None = None, max_load: float | None = None,
        fill_seconds: float | None = None, compare_at_once: str = "", recorded_only: bool = False) -> list[dict]:
    """fill_seconds: how long Prometheus scrapes before a recorded measurement (default: the 300 s window and 15 s).
    compare_at_once: see measure; done in each phase's first poll (the recorded one when there are rules).
    recorded_only: skip the raw polls beside the rules (at 5,000 servings they take minutes each)."""
    from specserve.observation import metrics
    from tests.support.prometheus import Prometheus, Target, free_port

    phases: list[tuple[str, list[dict] | None, str]] = [("current", None, "")]
    if recorded:
        phases = [("current", rule_groups(), "all")]
    if rules_before:
        sha = subprocess.check_output(["git", "rev-parse", "--short", rules_before], cwd=ROOT, text=True).strip()
        phases = [(f"before ({sha})", rule_groups(rules_before), ",".join(QUANTILE_ERA_FIELDS)), ("after (working tree)", rule_groups(), "all")]
        recorded = True

    results = []
    for servings in sizes:
        load = wait_for_load(max_load)
        port = free_port()
        exporter = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fleet_exporter.py"), "--servings", str(servings), "--port", str(port)])
        with tempfile.TemporaryDirectory() as tmp:
            prometheus = Prometheus(Path(tmp), [Target(f"127.0.0.1:{port}", {})], scrape_interval="5s", rule_groups=phases[0][1]).start()
            try:
                prometheus.wait_for('count(vllm:spec_decode_num_draft_tokens_total{serving!=""})', timeout=180)
                scraping_since = time.monotonic()
                if recorded:
                    # A full 300 s window of samples before anything is measured: rate() over a window that is still
                    # filling reads fewer samples than it will for as long as the fleet runs.
                    fill = metrics.RECORDED_WINDOW_SECONDS + 15 if fill_seconds is None else fill_seconds
                    time.sleep(max(0.0, fill - (time.monotonic() - scraping_since)))
                    _evaluated(prometheus, phases[0][1], 1, timeout=600)
                else:
                    time.sleep(12)  # at least three scrapes inside the rate window
                idle = json.loads(subprocess.check_output([sys.executable, __file__, "--child", prometheus.url, "0", str(cycles), str(WINDOW), "", ""]))
                for number, (label, groups, fields) in enumerate(phases):
                    if number:
                        prometheus.reload_rules(groups)
                        _evaluated(prometheus, groups, 2, timeout=600)
                    # The recorded poll first, alone with the rules (as the operator would run): the groups' cost
                    # beside it; then the raw polls, which share Prometheus with the same rules.
                    variants = [(WINDOW, "")]
                    if recorded:
                        variants = [(metrics.RECORDED_WINDOW_SECONDS, fields)]
                        if not recorded_only:
                            variants += [(WINDOW, ""), (metrics.RECORDED_WINDOW_SECONDS, "")]
                    rows, watch = [], RuleWatch(prometheus.url) if recorded else None
                    for position, (window, use_rules) in enumerate(variants):
                        before = loadavg()
                        compare = compare_at_once if position == 0 else ""
                        busy = json.loads(subprocess.check_output([sys.executable, __file__, "--child", prometheus.url, str(servings), str(cycles), str(window), use_rules, compare]))
                        busy.update(idle_operator_rss_mib=idle["rss_mib"], loadavg_before=before, **load)
                        if recorded:
                            busy["rules"] = label
                            busy["recorded_fields"] = "all" if use_rules == "all" else (use_rules.split(",") if use_rules else [])
                            busy["rule_evaluation_seconds"] = _rule_seconds(prometheus)
                        rows.append(busy)
                        print(json.dumps(busy), flush=True)
                        if watch is not None and use_rules:  # the recorded poll, then quiet: 3 evaluations in all
                            _report(rows[-1:], watch.stop(evaluations=3), servings, label, "recorded poll")
                            watch = RuleWatch(prometheus.url) if not recorded_only else None
                    if watch is not None:  # beside the raw polls: at least one evaluation
                        _report(rows[1:], watch.stop(evaluations=1), servings, label, "raw polls")
                    results.extend(rows)
            finally:
                prometheus.stop()
                exporter.terminate()
                exporter.wait()
    return results


def _report(rows: list[dict], cost: dict, servings: int, label: str, beside: str) -> None:
    for row in rows:
        row["rule_cost"] = {"beside": beside, **cost}
    print(json.dumps({"servings": servings, "rules": label, "beside": beside, **cost}), flush=True)


def _rule_seconds(prometheus) -> float:
    """How long Prometheus took for its last evaluation of the recording rules (all recording groups): the cost
    moved off the poll."""
    return round(sum(g.get("evaluationTime", 0.0) for g in _recording_groups(prometheus.url)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--recorded", action="store_true", help="also load the chart's recording rules and poll them (300 s window)")
    parser.add_argument("--rules-before", metavar="REF", help="measure the rules (and recorded poll) of this git revision first, then the working tree's (implies --recorded)")
    parser.add_argument("--max-load", type=float, help="before each size, wait while the 1-minute load average is above this (60 s steps, 20 minutes at most)")
    parser.add_argument("--fill-seconds", type=float, help="scrape this long before recorded measurements (default: the 300 s window + 15 s; shorter only for trying the script)")
    parser.add_argument("--compare-at-once", default="", metavar="N,M", help="also poll with N and with M queries in flight in each cycle, side by side (e.g. 1,4)")
    parser.add_argument("--recorded-only", action="store_true", help="with --recorded: skip the raw polls beside the rules")
    parser.add_argument("--child", nargs=6, metavar=("URL", "SERVINGS", "CYCLES", "WINDOW", "RECORDED", "COMPARE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "poll_cost.json")
    args = parser.parse_args()
    if args.child:
        url, servings, cycles, window, recorded, compare = args.child
        print(json.dumps(measure(url, int(servings), int(cycles), int(window), recorded, compare)))
        return
    results = run([int(s) for s in args.sizes.split(",")], args.cycles, args.recorded, args.rules_before, args.max_load, args.fill_seconds,
                  args.compare_at_once, args.recorded_only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"window_seconds": WINDOW, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
