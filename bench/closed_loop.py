"""Benchmark (e), issue 13: a simulated day of traffic, managed against always-on, always-off and the per-phase best.

Everything is real but the GPU: a private control plane from ../shared/k8s, the real operator process, the real
Prometheus; every pod runs as a local simulator process (tests/support/pod_runner.py), so a Deployment rewrite is a
rollout, a new process with the new args and a simulated model load. Three SpeculativeServings of the closed-loop
e2e test's shape (Llama-3.1-70B on 2 simulated H200s, 1B draft model, one baseline replica) run side by side, on the
same phases of synthetic traffic (set through each process's PUT /sim/traffic at the same moment):

- managed:    healthPolicy.mode Enforce, k=4: what the operator decides is applied.
- always-on:  mode Observe, k=4: decisions are computed and recorded, nothing is applied.
- always-off: the baseline Deployment of the always-on serving: the same vLLM command without
              --speculative-config, never restarted (Observe mode cannot render a speculative Deployment without
              speculation, and a schedule of k=0 written into status would be the operator's state, not a fixed
              configuration).
- fixed k=2:  mode Observe, k=2, no baseline: one more fixed configuration for the oracle.
- oracle:     per phase, the fixed configuration (k=4, k=2, off) with the lowest P99 TPOT in that phase.

Latencies come from the simulator processes' own request records (every finished request, in simulated seconds):
the processes run through this script's `--simulator` wrapper, which appends each finished request to a JSONL file.

Time compression: one factor COMPRESSION for the simulator's --sim-time-scale, the policy's window, cooldown,
probation and learned half-life and the simulated model-load time; intervalSeconds is held at the CRD minimum (5 s).

    python bench/closed_loop.py            # about 20 minutes; writes bench/results/closed_loop.{json,png}
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import RESULTS, ROOT, import_from_repository, write_json

RECORDS_ENV = "SPECSERVE_CL_RECORDS"


def simulator_main(argv: list[str]) -> int:
    """The simulator, recording every finished request to $SPECSERVE_CL_RECORDS/<pid>.jsonl (wall time + simulated times)."""
    from specserve_simulator import main
    from specserve_simulator.metrics import EngineMetrics

    out = open(Path(os.environ[RECORDS_ENV]) / f"{os.getpid()}.jsonl", "a", buffering=1)
    original = EngineMetrics.record

    def record(self, report):  # type: ignore[no-untyped-def]
        original(self, report)
        now = time.time()
        for f in report.finished:
            out.write(json.dumps({"t": round(now, 3), "arrival": round(f.arrival, 4), "ttft": round(f.ttft, 5), "tpot": round(f.tpot, 6),
                                  "out": f.output_tokens, "e2e": round(f.e2e, 4)}) + "\n")

    EngineMetrics.record = record
    return main(argv, prog="closed_loop --simulator")


if __name__ == "__main__" and sys.argv[1:2] == ["--simulator"]:
    sys.exit(simulator_main(sys.argv[2:]))

import_from_repository()

import yaml  # noqa: E402

from specserve.rendering import manifests
from tests.e2e.cluster import create, status_of  # noqa: E402
from tests.e2e.conftest import apply_crd, new_namespace  # noqa: E402
from tests.e2e.operator_process import running_operator  # noqa: E402
from tests.helpers import serving  # noqa: E402
from tests.support import private_cluster  # noqa: E402
from tests.support.pod_runner import SIMULATOR_IMAGE, PodRunner, Process, get_json  # noqa: E402
from tests.support.prometheus import Prometheus  # noqa: E402

SPEC, BASE = manifests.ROLE_SPECULATIVE, manifests.ROLE_BASELINE
COMPRESSION = 10.0  # real seconds per wall second, for every clock below
TIME_SCALE = 1 / COMPRESSION  # --sim-time-scale: wall seconds per simulated second
LOAD_SECONDS_REAL = 90.0  # a 70B BF16 checkpoint onto 2 GPUs from local disk, plus CUDA graphs
REAL_POLICY = {"windowSeconds": 300, "cooldownSeconds": 600, "probationSeconds": 1800, "maxProbationSeconds": 14400, "learnedHalfLifeSeconds": 86400}
POLICY = {key: int(value / COMPRESSION) for key, value in REAL_POLICY.items()} | {"intervalSeconds": 5}  # CRD minimum; real default 30 (6x)
SIM_ARGS = ["--sim-time-scale", f"{TIME_SCALE:g}", "--sim-gpu-memory-gib", "141", "--sim-qps", "0"]
TARGET, DRAFT = "meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Llama-3.2-1B-Instruct"
# Phases: simulated QPS and temperature; "alternate" flips the temperature every MIX_FLIP_SECONDS of wall time.
PHASES = [
    {"name": "low code (0.5 QPS, T 0.1)", "qps": 0.5, "temperature": 0.1},
    {"name": "high chat (3 QPS, T 0.8)", "qps": 3.0, "temperature": 0.8},
    {"name": "saturation (6 QPS, T 0.2)", "qps": 6.0, "temperature": 0.2},
    {"name": "mixed (1.5 QPS, T 0.1/0.9)", "qps": 1.5, "temperature": 0.1, "alternate": [0.1, 0.9]},
    {"name": "low again (0.5 QPS, T 0.1)", "qps": 0.5, "temperature": 0.1},
]
MIX_FLIP_SECONDS = 5.0
# run name -> (serving, role); the oracle is assembled from FIXED afterwards
RUNS = {"managed": ("managed", SPEC), "always_on": ("on4", SPEC), "always_off": ("on4", BASE), "fixed_k2": ("on2", SPEC), "managed_baseline": ("managed", BASE)}
ALL_RUNS = dict(RUNS)
FIXED = ("always_on", "always_off", "fixed_k2")


def spec_for(runner: PodRunner, k: int, mode: str, baseline: int) -> dict[str, Any]:
    return {
        "target": {"model": TARGET},
        "gpu": {"count": 2, "product": "H200-141GB", "resourceName": ""},
        "speculation": {"method": "draft_model", "numSpeculativeTokens": k, "draft": {"model": DRAFT}},
        "baseline": {"replicas": baseline},
        "engine": {"image": SIMULATOR_IMAGE, "maxModelLen": 8192, "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}, **runner.placement()},
        "healthPolicy": {**POLICY, "mode": mode},
    }


SERVINGS = {"managed": (4, "Enforce", 1), "on4": (4, "Observe", 1), "on2": (2, "Observe", 0)}


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


def summarize(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    tpot = [r["tpot"] for r in records if r["out"] > 1]
    ttft = [r["ttft"] for r in records]
    return {
        "requests": len(records),
        "p50_tpot": quantile(tpot, 0.5), "p99_tpot": quantile(tpot, 0.99),
        "p50_ttft": quantile(ttft, 0.5), "p99_ttft": quantile(ttft, 0.99),
        "output_tokens_per_s": round(sum(r["out"] for r in records) / (seconds * COMPRESSION), 2) if seconds else None,  # per nominal simulated second
    }


class Recorder:
    """Polls the servings' status every second: every decision seen (status keeps only the last 20), and the phase log."""

    def __init__(self, kube, namespaces: dict[str, str]) -> None:
        self.kube, self.namespaces = kube, namespaces
        self.decisions: dict[str, list[dict[str, Any]]] = {name: [] for name in namespaces}
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Recorder":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def poll(self) -> None:
        for name, namespace in self.namespaces.items():
            try:
                status = status_of(self.kube, namespace, name)
            except Exception:  # noqa: BLE001 - a slow API server: next second
                continue
            seen = {(d.get("time"), d.get("action")) for d in self.decisions[name]}
            for decision in status.get("decisions") or []:
                if (decision.get("time"), decision.get("action")) not in seen:
                    self.decisions[name].append({**decision, "seen": time.time()})
            if name == "managed":
                self.samples.append({"t": time.time(), "speculation": status.get("speculation"), "schedule": status.get("scheduleSummary"),
                                     "batch": (status.get("observation") or {}).get("batchSize"), "phase": status.get("phase")})

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.poll()


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wall(process_time: float) -> float:
    """A time.monotonic() of the runner's history as time.time()."""
    return time.time() - (time.monotonic() - process_time)


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="specserve-closed-loop-"))
    records_dir = workdir / "records"
    records_dir.mkdir()
    os.environ[RECORDS_ENV] = str(records_dir)
    phase_seconds = args.phase_seconds
    started = time.time()
    with private_cluster.running() as cluster:
        kube = cluster.kube()
        apply_crd(kube, yaml.safe_load((ROOT / "crds" / "specserve.dev_speculativeservings.yaml").read_text()))
        namespace = new_namespace(kube, "bench-closed-loop")
        runner = PodRunner(workdir / "runner", sim_args={SPEC: SIM_ARGS, BASE: SIM_ARGS}, load_seconds=LOAD_SECONDS_REAL / COMPRESSION,
                           kubeconfig=str(cluster.kubeconfig), command_prefix=[sys.executable, str(Path(__file__).resolve()), "--simulator"])
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        with runner:
            prometheus = Prometheus(workdir, [], file_sd=runner.targets_file).start()
            operator_args = ["--namespace", namespace, "--prometheus-url", prometheus.url, "--poll-interval", "1"]
            try:
                with running_operator("closed-loop-bench", operator_args, env=cluster.operator_env) as operator:
                    for name, (k, mode, baseline) in SERVINGS.items():
                        create(kube, namespace, serving(name=name, namespace=namespace, **spec_for(runner, k, mode, baseline)))
                    recorder = Recorder(kube, {name: namespace for name in SERVINGS}).start()

                    def traffic(**changes: Any) -> None:
                        for name, (_, _, baseline) in SERVINGS.items():
                            for role in (SPEC, BASE) if baseline else (SPEC,):
                                runner.set_traffic(namespace, name, role, **changes)

                    def clocks() -> dict[str, float | None]:
                        """Each run's simulated clock now (None while it has no single Ready process: a rollout)."""
                        found: dict[str, float | None] = {}
                        for run_name, (serving_name, role) in RUNS.items():
                            live = runner.pods(namespace, serving_name, role)
                            found[run_name] = get_json(live[0].url, "/sim/stats")["simulated_seconds"] if len(live) == 1 else None
                        return found

                    for serving_name, role in RUNS.values():
                        runner.wait_for(namespace, serving_name, role, timeout=180)
                    print(f"all pods Ready after {time.time() - started:.0f}s; warm-up of {args.warmup_seconds:g}s at the first phase's traffic", flush=True)
                    traffic(qps=PHASES[0]["qps"], temperature=PHASES[0]["temperature"], acceptance=None)
                    time.sleep(args.warmup_seconds)
                    phases_log: list[dict[str, Any]] = []
                    for index, phase in enumerate(PHASES):
                        begin = time.time()
                        traffic(qps=phase["qps"], temperature=phase["temperature"], acceptance=None)
                        before = clocks()
                        print(f"{time.strftime('%H:%M:%S')} phase {index + 1}: {phase['name']}", flush=True)
                        flip = 0
                        while time.time() - begin < phase_seconds:
                            time.sleep(MIX_FLIP_SECONDS if "alternate" in phase else 1.0)
                            if "alternate" in phase:
                                flip += 1
                                traffic(temperature=phase["alternate"][flip % 2])
                        end = time.time()
                        after = clocks()  # a process restarted in between started its clock again: its share is not known
                        lag = {run_name: round((after[run_name] - before[run_name]) / ((end - begin) * COMPRESSION), 3)
                               if after[run_name] is not None and before[run_name] is not None and after[run_name] >= before[run_name] else None for run_name in RUNS}
                        phases_log.append({"name": phase["name"], "begin": begin, "end": end, "simulated_clock_share": lag})
                        print(f"  simulated seconds per nominal simulated second: {lag}", flush=True)
                    recorder.poll()
                    recorder.stop()
                    history = [{"serving": p.serving, "role": p.role, "pod": p.pod, "pid": p.popen.pid, "started": wall(p.started),
                                "ready": wall(p.ready) if p.ready else None, "stopped": wall(p.stopped) if p.stopped else None,
                                "speculative_config": config_of(p)} for p in runner.history]
                    final_status = {name: status_of(kube, namespace, name) for name in SERVINGS}
                    with contextlib.suppress(Exception):
                        kube._call("DELETE", f"/apis/specserve.dev/v1alpha1/namespaces/{namespace}/speculativeservings")
                        time.sleep(5)
                    operator_log = operator.log
            finally:
                prometheus.stop()
        runner_errors = list(runner.errors)
    return analyse(records_dir, history, phases_log, recorder, final_status, runner_errors, str(operator_log), args)


def config_of(process: Process) -> dict[str, Any] | None:
    if "--speculative-config" not in process.args:
        return None
    return json.loads(process.args[process.args.index("--speculative-config") + 1])


def analyse(records_dir: Path, history: list[dict[str, Any]], phases_log: list[dict[str, Any]], recorder: Recorder, final_status: dict[str, Any],
            runner_errors: list[str], operator_log: str, args: argparse.Namespace) -> dict[str, Any]:
    by_pid = {h["pid"]: h for h in history}
    per_run: dict[str, list[dict[str, Any]]] = {name: [] for name in ALL_RUNS}
    for path in records_dir.glob("*.jsonl"):
        owner = by_pid.get(int(path.stem))
        if owner is None:
            continue
        for run_name, (serving_name, role) in RUNS.items():
            if owner["serving"] == serving_name and owner["role"] == role:
                per_run[run_name] += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    begin, end = phases_log[0]["begin"], phases_log[-1]["end"]

    def within(records: list[dict[str, Any]], lo: float, hi: float) -> list[dict[str, Any]]:
        return [r for r in records if lo <= r["t"] < hi]

    managed_rollouts = [h for h in history if h["serving"] == "managed" and h["role"] == SPEC][1:]
    decisions = [d for d in recorder.decisions["managed"] if d.get("action") not in ("keep", "hold")]
    phases_out: list[dict[str, Any]] = []
    oracle_records: list[dict[str, Any]] = []
    for index, phase in enumerate(phases_log):
        lo, hi, seconds = phase["begin"], phase["end"], phase["end"] - phase["begin"]
        entry: dict[str, Any] = {"name": phase["name"], "wall_seconds": round(seconds, 1), "simulated_clock_share": phase["simulated_clock_share"]}
        for run_name in ALL_RUNS:
            entry[run_name] = summarize(within(per_run[run_name], lo, hi), seconds)
        best = min(FIXED, key=lambda name: entry[name]["p99_tpot"] if entry[name]["p99_tpot"] is not None else float("inf"))
        oracle_records += within(per_run[best], lo, hi)
        entry["oracle"] = {**entry[best], "configuration": best}
        in_phase = [d for d in decisions if lo <= epoch(d["time"]) < hi]
        rollouts = [h for h in managed_rollouts if lo <= h["started"] < hi]
        entry["managed"].update({
            "rewrites": len(rollouts),
            "decisions": [{"action": d["action"], "enforced": d.get("enforced"), "after_phase_change_s": round(epoch(d["time"]) - lo, 1), "reason": d.get("reason")} for d in in_phase],
            "decision_after_phase_change_s": round(epoch(in_phase[0]["time"]) - lo, 1) if in_phase else None,
            "rollout_ready_after_phase_change_s": [round(h["ready"] - lo, 1) if h["ready"] else None for h in rollouts],
            "unserved_seconds": round(sum(min(hi, h["ready"] or hi) - max(lo, prev_stop) for h, prev_stop in _gaps(history, lo, hi)), 1),
        })
        entry["always_on"]["recommendations"] = [{"action": d["action"], "after_phase_change_s": round(epoch(d["time"]) - lo, 1)}
                                                 for d in recorder.decisions.get("on4", []) if d.get("action") not in ("keep", "hold") and lo <= epoch(d["time"]) < hi]
        phases_out.append(entry)
    overall = {f"{name}_p99_tpot": summarize(within(per_run[name], begin, end), end - begin)["p99_tpot"] for name in ("managed", "always_on", "always_off")}
    overall["oracle_p99_tpot"] = summarize(oracle_records, end - begin)["p99_tpot"]
    overall["managed_rewrites"] = len([h for h in managed_rollouts if begin <= h["started"] < end])
    overall["fixed_k2_p99_tpot"] = summarize(within(per_run["fixed_k2"], begin, end), end - begin)["p99_tpot"]
    overall["managed_baseline_p99_tpot"] = summarize(within(per_run["managed_baseline"], begin, end), end - begin)["p99_tpot"]
    for name in ("managed", "always_on", "always_off", "fixed_k2"):
        overall[f"{name}_summary"] = summarize(within(per_run[name], begin, end), end - begin)
    overall["oracle_summary"] = summarize(oracle_records, end - begin)
    m, o = overall["managed_p99_tpot"], overall["oracle_p99_tpot"]
    target = {
        "managed_within_10pct_of_oracle": bool(m is not None and o and m <= 1.10 * o),
        "managed_below_always_on": bool(m is not None and overall["always_on_p99_tpot"] is not None and m < overall["always_on_p99_tpot"]),
        "managed_below_always_off": bool(m is not None and overall["always_off_p99_tpot"] is not None and m < overall["always_off_p99_tpot"]),
        "at_most_one_rewrite_per_phase_change": all(p["managed"]["rewrites"] <= 1 for p in phases_out),
    }
    target["met"] = all(target.values())
    curves = {name: p99_curve(per_run[name], begin, end) for name in ("managed", "always_on", "always_off", "fixed_k2")}
    return {
        "phases": phases_out,
        "overall": overall,
        "target": target,
        "metadata": {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
            "dirty": bool(subprocess.run(["git", "status", "--porcelain", "--", "operator", "tests/support"], cwd=ROOT, capture_output=True, text=True).stdout.strip()),
            "compression": COMPRESSION, "sim_time_scale": TIME_SCALE, "load_seconds_wall": LOAD_SECONDS_REAL / COMPRESSION, "load_seconds_real": LOAD_SECONDS_REAL,
            "policy": POLICY, "policy_real_equivalent": {**REAL_POLICY, "intervalSeconds": 5 * COMPRESSION},
            "phase_seconds_wall": args.phase_seconds, "phase_seconds_simulated": args.phase_seconds * COMPRESSION,
            "mix_flip_seconds_wall": MIX_FLIP_SECONDS,
            "latency_source": "the simulator processes' own records of every finished request (simulated seconds), assigned to a phase by the wall time it finished",
            "tokens_per_s": "output tokens of requests finished in the phase per nominal simulated second (wall seconds x compression)",
            "shape": {"target": TARGET, "draft": DRAFT, "gpus": "2 x H200-141GB (simulated)", "baseline_replicas": 1, "servings": {k: list(v) for k, v in SERVINGS.items()}},
            "runs": {name: list(v) for name, v in RUNS.items()},
            "managed_decisions": recorder.decisions["managed"],
            "always_on_decisions": recorder.decisions.get("on4", []),
            "fixed_k2_decisions": recorder.decisions.get("on2", []),
            "managed_status_samples": recorder.samples,
            "history": history, "phases_log": phases_log,
            "final_status": {name: {key: s.get(key) for key in ("phase", "speculation", "schedule", "scheduleSummary", "recommendation", "health")} for name, s in final_status.items()},
            "runner_errors": runner_errors, "operator_log": operator_log,
        },
        "curves": curves,
    }


def _gaps(history: list[dict[str, Any]], lo: float, hi: float) -> list[tuple[dict[str, Any], float]]:
    """Managed speculative processes started in [lo, hi) with the stop time of the one before: the rollout's gap (maxSurge 0)."""
    managed = sorted((h for h in history if h["serving"] == "managed" and h["role"] == SPEC), key=lambda h: h["started"])
    return [(h, prev["stopped"] or h["started"]) for prev, h in zip(managed, managed[1:]) if lo <= h["started"] < hi]


def p99_curve(records: list[dict[str, Any]], begin: float, end: float, width: float = 30.0, step: float = 5.0) -> list[list[float]]:
    points = []
    t = begin + width
    while t <= end + 1e-6:
        values = [r["tpot"] for r in records if t - width <= r["t"] < t and r["out"] > 1]
        if len(values) >= 5:
            points.append([round(t - begin, 1), quantile(values, 0.99)])
        t += step
    return points


def plot(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: {path} not drawn (pip install -e '.[bench]')", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    labels = {"managed": "managed (Enforce)", "always_on": "always-on (k=4)", "always_off": "always-off", "fixed_k2": "fixed k=2"}
    for name, label in labels.items():
        points = result["curves"][name]
        ax.plot([p[0] for p in points], [p[1] * 1000 for p in points], label=label, linewidth=2.2 if name == "managed" else 1.2)
    begin = result["metadata"]["phases_log"][0]["begin"]
    for phase in result["metadata"]["phases_log"]:
        ax.axvline(phase["begin"] - begin, color="grey", linestyle=":", linewidth=1)
        ax.text(phase["begin"] - begin + 2, 1.0, phase["name"], transform=ax.get_xaxis_transform(), fontsize=7, va="top", rotation=0)
    rewrites = [h for h in result["metadata"]["history"] if h["serving"] == "managed" and h["role"] == SPEC][1:]
    for h in rewrites:
        ax.axvline(h["started"] - begin, color="red", linewidth=1.5, alpha=0.6)
        config = h["speculative_config"]
        text = "off" if config is None else str(config.get("num_speculative_tokens_per_batch_size") or f"k={config['num_speculative_tokens']}")
        ax.text(h["started"] - begin + 1, 0.05, f"rewrite: {text}", transform=ax.get_xaxis_transform(), fontsize=7, color="red", rotation=90, va="bottom")
    ax.set_xlabel(f"wall seconds since the first phase ({result['metadata']['compression']:g}x compressed)")
    ax.set_ylabel("P99 TPOT over the last 30 s (ms, simulated)")
    title = "Closed loop: P99 TPOT per run; phase changes dotted, managed rewrites red"
    ax.set_title(f"PARTIAL - {result['partial']}\n{title}" if result.get("partial") else title, fontsize=9 if result.get("partial") else 12)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(result: dict[str, Any]) -> str:
    ms = lambda v: "-" if v is None else f"{v * 1000:.1f}"  # noqa: E731
    lines = ["| phase | run | P50 / P99 TPOT (ms) | P50 / P99 TTFT (ms) | output tok/s | rewrites | decision after change |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for phase in result["phases"]:
        for name in ("managed", "always_on", "always_off", "fixed_k2", "oracle"):
            r = phase[name]
            if not r.get("requests"):
                continue
            label = f"oracle ({r['configuration']})" if name == "oracle" else name
            rewrites = str(r.get("rewrites", "")) if name == "managed" else ""
            decision = ", ".join(f"{d['action']} {d['after_phase_change_s']} s" for d in r.get("decisions", [])) if name == "managed" else ""
            lines.append(f"| {phase['name']} | {label} | {ms(r['p50_tpot'])} / {ms(r['p99_tpot'])} | {ms(r['p50_ttft'])} / {ms(r['p99_ttft'])} | {r['output_tokens_per_s']} | {rewrites} | {decision} |")
    o = result["overall"]
    lines.append(f"| **overall** | P99 TPOT | managed {ms(o['managed_p99_tpot'])}, always-on {ms(o['always_on_p99_tpot'])}, always-off {ms(o['always_off_p99_tpot'])}, "
                 f"k=2 {ms(o['fixed_k2_p99_tpot'])}, oracle {ms(o['oracle_p99_tpot'])} | | | {o['managed_rewrites']} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase-seconds", type=float, default=180.0, help="wall seconds per phase (x compression simulated)")
    parser.add_argument("--warmup-seconds", type=float, default=float(POLICY["windowSeconds"]), help="first phase's traffic before the clock starts")
    parser.add_argument("--servings", default=",".join(SERVINGS), help="smoke tests: only these servings (the full comparison needs all)")
    parser.add_argument("--phases", type=int, default=len(PHASES), help="run only the first N phases (smoke tests)")
    parser.add_argument("--out", type=Path, default=RESULTS / "closed_loop.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "closed_loop.png")
    parser.add_argument("--partial", metavar="NOTE", help="mark the results partial (a smoke run), saying why")
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only redraw the plot (and print the table) from recorded results")
    args = parser.parse_args()
    if args.replot:
        result = json.loads(args.replot.read_text())
        if args.partial:
            result["partial"] = args.partial
            args.replot.write_text(json.dumps(result, indent=1))
        plot(result, args.plot)
        print(table(result))
        return
    del PHASES[args.phases:]
    for name in [n for n in SERVINGS if n not in args.servings.split(",")]:
        del SERVINGS[name]
    for name in [n for n, (serving_name, _) in RUNS.items() if serving_name not in SERVINGS]:
        del RUNS[name]
    result = run(args)
    if args.partial:
        result = {"partial": args.partial, **result}
    write_json(args.out, result)  # before the plot: a missing matplotlib must not cost the measurement
    plot(result, args.plot)
    print(table(result))
    print(json.dumps(result["overall"], indent=1))
    print(json.dumps(result["target"], indent=1))


if __name__ == "__main__":
    main()
