"""Benchmark (c): reliability on a real API server - SIGKILLs during random spec changes, API-server restarts
under a running operator, and the standby's takeover after the leader of two peered operators is SIGKILLed.

A private control plane from ../shared/k8s (tests/support/private_cluster.py) and the real operator as processes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from harness import ROOT, import_from_repository  # noqa: E402

import_from_repository()

from specserve.cluster import kube as k
from specserve.rendering import manifests
from tests.e2e.cluster import SERVINGS, create, eventually  # noqa: E402
from tests.e2e.conftest import apply_crd, new_namespace  # noqa: E402
from tests.e2e.operator_process import LOGS, OperatorProcess, running_operator  # noqa: E402
from tests.e2e.test_api_restart import TROUBLE, example_serving, mismatches, patch_when_served, restart_and_change  # noqa: E402
from tests.e2e.test_peering import PEERING, TAKEOVER_GOAL_SECONDS, peers, reconciled  # noqa: E402
from tests.support import private_cluster  # noqa: E402

POLL_SECONDS = 2  # the operators' --poll-interval
KILL_AFTER_SECONDS = (5, 20)  # each operator incarnation lives this long (uniform) before its SIGKILL
OUTAGE_SECONDS = 20
SETTLE_SECONDS = 10  # before and after each API-server restart trial
PEERING_LIFETIME_SECONDS = 20  # specserve's default peering lifetime (settings.peering_lifetime_seconds)
MANAGED = f"{manifests.MANAGED_BY_LABEL}={manifests.MANAGER}"
KNOBS = {  # what a random change sets: one or two of these, each to a value other than the current one
    "replicas": ((1, 2, 3), lambda v: {"replicas": v}),
    "numSpeculativeTokens": ((1, 2, 3, 4, 5, 6), lambda v: {"speculation": {"numSpeculativeTokens": v}}),
    "maxNumSeqs": ((16, 32, 64, 128, 256), lambda v: {"engine": {"maxNumSeqs": v}}),
    "baselineReplicas": ((0, 1), lambda v: {"baseline": {"replicas": v}}),
}
STARTING = {"replicas": 1, "numSpeculativeTokens": 4, "maxNumSeqs": None, "baselineReplicas": 0}  # the example's values


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def operator_args(namespace: str, *extra: str) -> list[str]:
    return ["--namespace", namespace, "--poll-interval", str(POLL_SECONDS), *extra]


def troubles(process: OperatorProcess) -> list[str]:
    return [line for line in process.text().splitlines() if TROUBLE.search(line)]


class Incarnations:
    """The operator of one namespace, SIGKILLed and started again at will; each start logs to its own file."""

    def __init__(self, cluster: private_cluster.PrivateCluster, namespace: str, label: str) -> None:
        self.cluster, self.namespace, self.label = cluster, namespace, label
        self.started: list[OperatorProcess] = []
        self._stack = contextlib.ExitStack()

    @property
    def current(self) -> OperatorProcess:
        return self.started[-1]

    def start(self) -> OperatorProcess:
        self._stack = contextlib.ExitStack()
        label = f"{self.label}-{len(self.started):02d}"
        self.started.append(self._stack.enter_context(running_operator(label, operator_args(self.namespace), env=self.cluster.operator_env)))
        return self.current

    def kill_and_start(self) -> tuple[int | None, float]:
        """SIGKILL the running operator and start another; (its exit code if it had exited by itself, seconds down)."""
        exited = self.current.process.poll()
        self.current.process.kill()
        killed = time.monotonic()
        self._stack.close()
        self.start()
        return exited, time.monotonic() - killed

    def stop(self) -> None:
        self._stack.close()

    def log_lines_with_tracebacks(self) -> int:
        return sum(len(troubles(process)) for process in self.started)


# ---------------------------------------------------------------- (1) chaos


def all_mismatches(kube: k.Kube, namespace: str) -> dict[str, list[str]]:
    """Per serving, what differs from its spec: one list of servings and one of Deployments per round."""
    servings = kube._call("GET", SERVINGS.format(ns=namespace))["items"]
    deployments = {d["metadata"]["name"]: d for d in kube._call("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments", query=[("labelSelector", MANAGED)])["items"]}
    return {
        s["metadata"]["name"]: mismatches(s, deployments.get(manifests.deployment_name(s["metadata"]["name"], manifests.ROLE_SPECULATIVE)),
                                          deployments.get(manifests.deployment_name(s["metadata"]["name"], manifests.ROLE_BASELINE)))
        for s in servings
    }


def serving_warnings(kube: k.Kube, namespace: str) -> list[dict[str, Any]]:
    return [
        {"serving": e["involvedObject"]["name"], "reason": e["reason"], "message": e["message"], "count": e.get("count", 1)}
        for e in kube._call("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
        if e["type"] == "Warning" and e["involvedObject"]["kind"] == "SpeculativeServing"
    ]


def by_reason(warnings: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for warning in warnings:
        counts[warning["reason"]] = counts.get(warning["reason"], 0) + warning["count"]
    return counts


class Changer(threading.Thread):
    """Random spec changes: all but the last at random moments over SPAN seconds, whatever the operator is doing;
    the last once FINAL is set (after the last SIGKILL), so that convergence is timed from a change."""

    def __init__(self, kube: k.Kube, namespace: str, names: list[str], count: int, span: float, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace, self.names, self.rng = kube, namespace, names, rng
        self.offsets = sorted(rng.uniform(0, span) for _ in range(count - 1))
        self.final = threading.Event()
        self.wanted = {name: dict(STARTING) for name in names}
        self.issued: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.last_change: float | None = None

    def run(self) -> None:
        started = time.monotonic()
        for offset in self.offsets:
            time.sleep(max(0.0, started + offset - time.monotonic()))
            self.change(started)
        self.final.wait()
        self.change(started)

    def change(self, started: float) -> None:
        name = self.rng.choice(self.names)
        patch: dict[str, Any] = {}
        for knob in self.rng.sample(sorted(KNOBS), self.rng.choice((1, 2))):
            values, shape = KNOBS[knob]
            value = self.rng.choice([v for v in values if v != self.wanted[name][knob]])
            self.wanted[name][knob] = value
            for key, part in shape(value).items():
                patch[key] = {**patch.get(key, {}), **part} if isinstance(part, dict) else part
        try:
            patch_when_served(self.kube, self.namespace, name, patch)
        except Exception as error:  # noqa: BLE001 - recorded; the API server is up throughout, so this is news
            self.errors.append(f"{name}: {error!r}"[:300])
        self.last_change = time.monotonic()
        self.issued.append({"at": round(self.last_change - started, 1), "serving": name, "spec": patch})


def chaos(kube: k.Kube, operator: Incarnations, names: list[str], changes: int, kills: int, rng: random.Random, converge_timeout: float) -> dict[str, Any]:
    """Random spec changes while the operator is SIGKILLed and started again KILLS times, one last change, then the
    wait until every serving matches its spec."""
    namespace = operator.namespace
    lifetimes = [rng.uniform(*KILL_AFTER_SECONDS) for _ in range(kills)]
    changer = Changer(kube, namespace, names, changes, sum(lifetimes) + kills * 1.0, rng)  # a start takes ~1 s
    kill_log: list[dict[str, Any]] = []
    operator.start()
    began = time.monotonic()
    changer.start()
    for i, lifetime in enumerate(lifetimes, start=1):
        time.sleep(lifetime)
        at = time.monotonic() - began
        exited, down = operator.kill_and_start()
        kill_log.append({"at": round(at, 1), "lived": round(lifetime, 1), "down": round(down, 1), "had_exited_by_itself": exited})
        log(f"chaos: SIGKILL {i}/{kills} after {lifetime:.1f}s; {len(changer.issued)}/{changes} changes issued")
    last_start = time.monotonic()
    time.sleep(2)
    changer.final.set()
    changer.join()
    last_change = changer.last_change or time.monotonic()
    log(f"chaos: all {len(changer.issued)} changes issued; waiting for convergence")
    deadline = time.monotonic() + converge_timeout
    while True:
        off = {name: problems for name, problems in all_mismatches(kube, namespace).items() if problems}
        if not off or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    converged = time.monotonic()
    warnings = serving_warnings(kube, namespace)
    as_issued = sum(1 for name, spec in spec_knobs(kube, namespace).items() if spec == changer.wanted[name])
    return {
        "servings": len(names),
        "changes": len(changer.issued),
        "kills": len(kill_log),
        "change_errors": changer.errors,
        "mismatched_servings": len(off),
        "mismatches": off,
        "specs_as_issued": as_issued,
        "converged": not off,
        "converge_seconds_after_last_change": round(converged - last_change, 1) if not off else None,
        "converge_seconds_after_last_operator_start": round(converged - last_start, 1) if not off else None,
        "changes_before_the_last_kill": sum(1 for c in changer.issued if c["at"] < kill_log[-1]["at"]) if kill_log else 0,
        "operator_exited_by_itself": sum(1 for k_ in kill_log if k_["had_exited_by_itself"] is not None),
        "log_lines_with_tracebacks": operator.log_lines_with_tracebacks(),
        "warning_events": by_reason(warnings),
        "drift_reverted": [w for w in warnings if w["reason"] == "DriftReverted"],  # nobody edits a Deployment here: each is a false drift
        "kill_schedule": kill_log,
        "changes_issued": changer.issued,
    }


def spec_knobs(kube: k.Kube, namespace: str) -> dict[str, dict[str, Any]]:
    """The knobs Changer sets, as the API server holds them now (to check every change landed)."""
    result = {}
    for s in kube._call("GET", SERVINGS.format(ns=namespace))["items"]:
        spec = s["spec"]
        result[s["metadata"]["name"]] = {
            "replicas": spec.get("replicas", 1),
            "numSpeculativeTokens": spec["speculation"].get("numSpeculativeTokens", 4),
            "maxNumSeqs": (spec.get("engine") or {}).get("maxNumSeqs"),
            "baselineReplicas": (spec.get("baseline") or {}).get("replicas", 0),
        }
    return result


# ---------------------------------------------------------------- (2) API-server restart


def api_restarts(kube: k.Kube, cluster: private_cluster.PrivateCluster, operator: Incarnations, names: list[str],
                 steady: int, resuming: int, rng: random.Random) -> dict[str, Any]:
    """Stop the API server for OUTAGE_SECONDS under the running operator, then time a change made at /readyz.
    STEADY trials with the operator settled; RESUMING ones just after it started (its resume handlers still
    applying every serving when the API server goes)."""
    results = []
    first = len(operator.started) - 1
    time.sleep(SETTLE_SECONDS)
    for trial, kind in enumerate(["steady"] * steady + ["resuming"] * resuming, start=1):
        if kind == "resuming":
            operator.kill_and_start()
        name = rng.choice(names)
        change = {"replicas": rng.choice((1, 2, 3)), "speculation": {"numSpeculativeTokens": rng.choice((1, 2, 3, 5, 6))}}
        try:
            away, reconcile = restart_and_change(cluster, kube, operator.namespace, name, change, OUTAGE_SECONDS)
            results.append({"while": kind, "serving": name, "away_seconds": round(away, 1), "reconciled_seconds_after_readyz": round(reconcile, 1)})
        except AssertionError as error:
            results.append({"while": kind, "serving": name, "failed": str(error)[:500]})
        results[-1]["operator_alive"] = operator.current.process.poll() is None
        log(f"restart {trial}/{steady + resuming}: {results[-1]}")
        time.sleep(SETTLE_SECONDS)  # the health daemons wake against the restarted API server; the operator settles
    measured = [r["reconciled_seconds_after_readyz"] for r in results if "reconciled_seconds_after_readyz" in r and r["while"] == "steady"]
    lines = [line for process in operator.started[first:] for line in process.text().splitlines()]
    return {
        "servings_under_the_operator": len(names),
        "outage_seconds": OUTAGE_SECONDS,
        "trials": results,
        "median_reconciled_seconds_after_readyz_steady": median(measured),
        "median_away_seconds": median([r["away_seconds"] for r in results if "away_seconds" in r]),
        "operator_alive_after": operator.current.process.poll() is None,
        "log_lines_with_tracebacks": sum(1 for line in lines if TROUBLE.search(line)),
        "handlers_failed_temporarily": sum("failed temporarily" in line for line in lines),
        "health_decisions_held_for_the_api_server": sum("did not take the decision" in line for line in lines),
    }


# ---------------------------------------------------------------- (3) HA takeover


def live_peer_entries(kube: k.Kube, namespace: str) -> dict[str, dict[str, Any]]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        identity: entry for identity, entry in peers(kube, namespace).items()
        if entry and datetime.datetime.fromisoformat(entry["lastseen"]).replace(tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=entry["lifetime"]) > now
    }


def takeovers(kube: k.Kube, cluster: private_cluster.PrivateCluster, trials: int) -> dict[str, Any]:
    """Two peered operators; SIGKILL the leader, time until the standby reconciles a new serving. The standby then
    leads the next trial, with a freshly started standby beside it."""
    for doc in yaml.safe_load_all((ROOT / "charts" / "specserve" / "crds" / "kopf.dev_peerings.yaml").read_text()):
        apply_crd(kube, doc)
    namespace = new_namespace(kube, "bench-ha")
    kube._call("POST", f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings", body={"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}})
    args = operator_args(namespace, "--peering", PEERING)
    results = []
    with contextlib.ExitStack() as processes:
        leader = processes.enter_context(running_operator("ha-0", args, env=cluster.operator_env))
        create(kube, namespace, example_serving("ha-first"))
        eventually(lambda: reconciled(kube, namespace, "ha-first"), timeout=60)
        for trial in range(1, trials + 1):
            leader_log_before = len(leader.text())
            standby = processes.enter_context(running_operator(f"ha-{trial}", args, env=cluster.operator_env))
            eventually(lambda: len(live_peer_entries(kube, namespace)) == 2, timeout=60)
            create(kube, namespace, example_serving(f"ha-joined-{trial}"))
            eventually(lambda: reconciled(kube, namespace, f"ha-joined-{trial}"), timeout=60)
            standby_acted = "reconciled generation" in standby.text()
            leader_paused = "Pausing" in leader.text()[leader_log_before:]  # a former standby logged its own pause earlier
            entries = live_peer_entries(kube, namespace)
            lead_entry = max(entries.values(), key=lambda e: e["priority"])
            expires = datetime.datetime.fromisoformat(lead_entry["lastseen"]).replace(tzinfo=datetime.timezone.utc).timestamp() + lead_entry["lifetime"]
            leader.process.kill()
            killed, killed_wall = time.monotonic(), time.time()
            create(kube, namespace, example_serving(f"ha-after-{trial}"))
            try:
                eventually(lambda: reconciled(kube, namespace, f"ha-after-{trial}"), timeout=TAKEOVER_GOAL_SECONDS + 60, interval=0.2)
                takeover = round(time.monotonic() - killed, 1)
            except AssertionError:
                takeover = None
            results.append({
                "takeover_seconds": takeover,
                "leader_entry_expired_seconds_after_kill": round(expires - killed_wall, 1),
                "standby_acted_before_takeover": standby_acted,
                "leader_paused_by_joining_standby": leader_paused,
                "standby_logged_resuming": "Resuming operations" in standby.text(),
            })
            log(f"ha {trial}/{trials}: {results[-1]}")
            leader = standby
    measured = [r["takeover_seconds"] for r in results if r["takeover_seconds"] is not None]
    return {
        "peering_lifetime_seconds": PEERING_LIFETIME_SECONDS,
        "goal_seconds": TAKEOVER_GOAL_SECONDS,
        "trials": results,
        "median_takeover_seconds": median(measured),
        "max_takeover_seconds": max(measured) if measured else None,
        "median_floor_seconds": median([r["leader_entry_expired_seconds_after_kill"] for r in results]),
    }


# ---------------------------------------------------------------- record


def environment(kube: k.Kube) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    memory_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    uncommitted = subprocess.run(["git", "status", "--porcelain", "--", "operator"], capture_output=True, text=True, cwd=ROOT).stdout.split("\n")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(memory_kib / 2**20, 1), "os": platform.platform(), "gpu": None,
                    "load_average_at_start": os.getloadavg()[0]},  # other work on the machine shares its 2 cores
        "versions": {
            "python": platform.python_version(),
            "specserve": importlib.metadata.version("specserve"),
            "specserve_commit": commit,
            "uncommitted_operator_files": sorted(line[3:] for line in uncommitted if line.strip()),  # measured as they were
            "kopf": importlib.metadata.version("kopf"),
            "kubernetes_client": importlib.metadata.version("kubernetes"),
            "kube_apiserver": kube._call("GET", "/version")["gitVersion"],
            "etcd": etcd[0].split(":", 1)[1].strip() if etcd else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servings", type=int, default=50)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--kills", type=int, default=18)
    parser.add_argument("--restarts", type=int, default=3, help="API-server restart trials with the operator settled")
    parser.add_argument("--restarts-resuming", type=int, default=1, help="API-server restart trials just after the operator started")
    parser.add_argument("--takeovers", type=int, default=5, help="HA takeover trials")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="10 servings, 30 changes, 3 kills, one restart trial of each kind, one takeover; writes no file unless --out")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/reliability.json (none with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.servings, args.changes, args.kills, args.restarts, args.restarts_resuming, args.takeovers = 10, 30, 3, 1, 1, 1
    out = args.out or (None if args.quick else ROOT / "bench" / "results" / "reliability.json")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    problem = private_cluster.missing()
    if problem:
        sys.exit(problem)

    log("starting a private control plane")
    with private_cluster.running() as cluster:
        kube = cluster.kube()
        record: dict[str, Any] = environment(kube)
        record["parameters"] = {
            "servings": args.servings, "changes": args.changes, "kills": args.kills, "restart_trials": args.restarts,
            "restart_trials_resuming": args.restarts_resuming, "takeover_trials": args.takeovers, "seed": seed, "poll_interval_seconds": POLL_SECONDS,
            "operator_lifetime_before_kill_seconds": list(KILL_AFTER_SECONDS), "serving": "manifests/examples/simulator-no-gpu.yaml",
            "fake_kubelet_args": private_cluster.FAKE_KUBELET_ARGS,
        }
        apply_crd(kube, yaml.safe_load((ROOT / "crds" / "specserve.dev_speculativeservings.yaml").read_text()))
        namespace = new_namespace(kube, "bench-chaos")
        names = [f"c-{i:02d}" for i in range(args.servings)]
        operator = Incarnations(cluster, namespace, "chaos")
        try:
            operator.start()
            for name in names:
                create(kube, namespace, example_serving(name))
            eventually(lambda: all(((s.get("status") or {}).get("phase") == "Ready") for s in kube._call("GET", SERVINGS.format(ns=namespace))["items"]), timeout=600, interval=1)
            operator.stop()
            log(f"{len(names)} servings Ready; chaos: {args.changes} changes, {args.kills} SIGKILLs")
            record["chaos"] = chaos(kube, operator, names, args.changes, args.kills, rng, 600)
            log(f"chaos: {record['chaos']['mismatched_servings']} mismatched, converged {record['chaos']['converge_seconds_after_last_change']}s after the last change")
            record["api_restart"] = api_restarts(kube, cluster, operator, names, args.restarts, args.restarts_resuming, rng)
        finally:
            operator.stop()  # the takeover trials have the machine to themselves
        record["ha_takeover"] = takeovers(kube, cluster, args.takeovers)

    summary = {
        "chaos_mismatched_servings": record["chaos"]["mismatched_servings"],
        "chaos_converge_seconds_after_last_change": record["chaos"]["converge_seconds_after_last_change"],
        "api_restart_reconciled_seconds_after_readyz": [f"{t.get('reconciled_seconds_after_readyz')} ({t['while']})" for t in record["api_restart"]["trials"]],
        "chaos_warning_events": record["chaos"]["warning_events"],
        "ha_takeover_seconds": [t["takeover_seconds"] for t in record["ha_takeover"]["trials"]],
    }
    record["summary"] = summary
    record["machine"]["load_average_at_end"] = os.getloadavg()[0]
    text = json.dumps(record, indent=2) + "\n"
    if out is not None:
        out.write_text(text)
        log(f"written to {out}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
