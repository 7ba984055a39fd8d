"""Benchmark (d): one operator and N SpeculativeServings on a real API server - converge, restart, memory, poll.

For each N: the CRD from crds/, a fresh namespace (a fresh private control plane with --private-cluster), the real
operator as a process (`python -m specserve.cli run`, imported from --operator-src/operator, Prometheus unreachable so
the health loop only holds), N GPU-free servings created concurrently. Recorded:

- converge_s: first create -> every serving has status.observedGeneration == metadata.generation, Accepted=True and
  its Deployment exists (LISTs from the watch cache every max(1, N/2000) s, so the resolution is that interval);
- then the operator is left until its writes stop (settle), SIGTERMed, started again: restart_s = spawn -> the last
  write the restarted operator makes, with `--quiet` s without writes after it (its liveness endpoint up, and its
  specserve_servings counting every serving);
  restart_writes = writes (POST/PUT/PATCH/APPLY/DELETE) to deployments, services, speculativeservings(/status)
  in that window;
- peak RSS (VmHWM) and CPU seconds of each operator process, and, from a probe thread in the operator process, the
  most asyncio tasks alive and the worst event-loop lag (a callback posted from the thread every second);
- the API server's requests by verb and resource (apiserver_request_total before/after). That metric has no user
  agent label, only `system_client` (kube-controller-manager, kube-scheduler, ...; "" for every other client), so
  the operator's share is system_client="" minus this script's own requests (counted here, request by request)
  minus the fake kubelet's resources (nodes, leases, pods: the operator reads none of them);
- poll_s: bench/poll_cost.py's measurement (its functions, imported) at the same N against the real prometheus.

Results go to bench/results/scale.json (rows replaced per operator label and N) and bench/results/scale.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from harness import RESULTS, ROOT, commit_of, loadavg, machine_busy_s, proc_status_mib
from scale_cluster import (
    OWNED,
    WRITE_VERBS,
    Api,
    ApiError,
    Cluster,
    apply_crd,
    attributed,
    changes,
    cleanup,
    converged,
    create_all,
    owned_counts,
    quiet_after,
    serving,
    servings_path,
    state_of,
)
from scale_operator import Operator, measure_bare_kopf, operator_child
from scale_report import plot, save, table

OUT = RESULTS / "scale.json"
DEFAULT_KUBELET_ARGS = "--gpus 64 --max-pods 6000 --interval 10"  # a pod LIST a second costs ~0.4 core at 1,000 pods


def measure(n: int, args: argparse.Namespace, cluster: Cluster, source: Path, operator_label: str) -> dict[str, Any]:
    row: dict[str, Any] = {"servings": n, "operator": operator_label}
    log_dir = Path(tempfile.gettempdir()) / "specserve-scale-logs"
    log_dir.mkdir(exist_ok=True)
    tag = f"{re.sub(r'[^A-Za-z0-9]+', '-', operator_label).strip('-')}-{n}"
    cluster.up()
    api = Api(cluster.kubeconfig, pool=args.create_threads + 4)
    apply_crd(api, source)
    ns = f"specserve-scale-{uuid.uuid4().hex[:6]}"
    api.call("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    names = [f"s{i:05d}" for i in range(n)]
    first = Operator(source, ns, cluster.kubeconfig, log_dir / f"{tag}-1.log").start()
    second: Operator | None = None
    try:
        row["operator_alive_s"] = round(first.wait_alive(), 2)
        time.sleep(3)  # its watches are up
        # ------------------------------------------------------------ create and converge
        snap0, mine0, comp0, busy0, load0 = api.requests(), Counter(api.mine), cluster.cpu(), machine_busy_s(), loadavg()
        cpu_first0, bench_cpu0 = first.cpu_s(), time.process_time()
        started = time.monotonic()
        creating = concurrent.futures.ThreadPoolExecutor(1).submit(create_all, api, ns, names, args.create_threads)
        row.update(follow_converge(api, ns, names, started, args.converge_timeout, creating))
        converge_wall = time.monotonic() - started
        snap1, mine1, comp1, busy1 = api.requests(), Counter(api.mine), cluster.cpu(), machine_busy_s()
        converge_share = attributed(snap0, snap1, mine0, mine1)
        operator_cpu, bench_cpu = first.cpu_s() - cpu_first0, time.process_time() - bench_cpu0
        row["converge"] = {
            "operator_cpu_s": round(operator_cpu, 2), "rss_mib_at_end": proc_status_mib(first.process.pid, "VmRSS"),
            **converge_share, **_cpu_shares(comp0, comp1, busy0, busy1, converge_wall, operator_cpu + bench_cpu), "bench_cpu_s": round(bench_cpu, 2),
            "loadavg_start": load0, "loadavg_end": loadavg(), "probe": first.probe(),
        }
        print(json.dumps({"servings": n, "phase": "converge", **{k: row[k] for k in ("converged", "converge_s", "all_deployments_s", "all_status_current_s")}}), flush=True)
        wanted = set(names)
        # ------------------------------------------------------------ left alone until its writes stop
        steady, snap2, mine2 = quiet_after(api, first, time.monotonic(), snap1, args.settle_quiet, args.settle_timeout, n)
        _, _, phases = converged(api, ns, wanted, False)
        row["settle"] = {**{k: v for k, v in steady.items() if k not in ("write_timeline", "cpu_timeline")}, "phases_after": phases, **attributed(snap1, snap2, mine1, mine2)}
        idle, idle_cpu0 = 30.0, first.cpu_s()
        w0, _ = owned_counts(api.requests())
        time.sleep(idle)
        w1, _ = owned_counts(api.requests())
        row["idle_writes_per_s"] = round((w1 - w0) / idle, 2)  # owned writes per second, 30 s after settling (or giving up)
        row["idle_cpu_cores"] = round((first.cpu_s() - idle_cpu0) / idle, 3)  # the operator's CPU use in those 30 s
        # ------------------------------------------------------------ restart with nothing changed
        row["stop_s"] = first.stop()
        time.sleep(2)
        state_before = state_of(api, ns)
        snap3, mine3, comp3, busy3, load3 = api.requests(), Counter(api.mine), cluster.cpu(), machine_busy_s(), loadavg()
        bench_cpu3 = time.process_time()
        second = Operator(source, ns, cluster.kubeconfig, log_dir / f"{tag}-2.log").start()
        restart, snap4, mine4 = quiet_after(api, second, second.started, snap3, args.quiet, args.restart_timeout, n, linger=args.linger, wait_idle=True)
        restart["changed_while_watched"] = changes(state_before, state_of(api, ns))
        restart_wall = time.monotonic() - second.started
        comp4, busy4, restart_cpu = cluster.cpu(), machine_busy_s(), second.cpu_s()
        bench_cpu = time.process_time() - bench_cpu3
        share = attributed(snap3, snap4, mine3, mine4)
        row.update({
            "restart_settled": restart["settled_s"] is not None, "restart_s": restart["settled_s"], "restart_timeout_s": args.restart_timeout,
            "restart_writes": share["owned_writes"], "restart_late_writes": restart["late_writes"], "restart_idle_s": restart["cpu_idle_s"],
            "restart_writes_by_resource": {r: sum(v for k, v in share["api_requests"].items() if k.split()[0] in WRITE_VERBS and k.split()[1] == r) for r in sorted(OWNED)},
            "restart": {
                **restart, "alive_s": None if second.alive_at is None else round(second.alive_at - second.started, 2), **share,
                **_cpu_shares(comp3, comp4, busy3, busy4, restart_wall, restart_cpu + bench_cpu), "bench_cpu_s": round(bench_cpu, 2), "loadavg_start": load3, "loadavg_end": loadavg(),
            },
        })
        row["restart"]["operator_stop_s"] = second.stop()
        if args.bare_kopf:
            time.sleep(2)
            row["bare_kopf_restart"] = measure_bare_kopf(api, n, ns, source, cluster.kubeconfig, log_dir / f"{tag}-bare-kopf.log", args.restart_timeout)
        second_final, first_final = second.final, first.final
        row["restart"]["operator"] = second_final
        row["converge"]["operator"] = first_final
        row["peak_rss_mib"] = max(v for v in (first_final.get("peak_rss_mib"), second_final.get("peak_rss_mib")) if v is not None)
        row["cpu_s"] = first_final.get("cpu_s")  # the first process: start, create, converge, settle, 30 s idle
        row["restart_cpu_s"] = second_final.get("cpu_s")
        tasks = [f.get("max_asyncio_tasks") for f in (first_final, second_final) if f.get("max_asyncio_tasks") is not None]
        lags = [f.get("max_loop_lag_s") for f in (first_final, second_final) if f.get("max_loop_lag_s") is not None]
        row["max_asyncio_tasks"] = max(tasks) if tasks else None
        row["max_loop_lag_s"] = max(lags) if lags else None
        row["specserve_imported_from"] = first_final.get("specserve_file")
        row["logs"] = [str(first.log), str(second.log)]
        print(json.dumps({"servings": n, "phase": "restart", **{k: row[k] for k in ("restart_s", "restart_writes", "peak_rss_mib", "cpu_s", "max_asyncio_tasks")}}), flush=True)
    finally:
        for process in (first, second):
            if process is not None and process.process is not None and process.process.poll() is None:
                process.process.kill()
                process.process.wait()
        if cluster.state:
            cluster.down()
        else:
            cleanup(api, ns)
    return row


def follow_converge(api: Api, ns: str, names: list[str], started: float, timeout: float, creating: concurrent.futures.Future[dict[str, Any]]) -> dict[str, Any]:
    """Lists from the watch cache until every serving is current and accepted and has its Deployment, or `timeout`;
    `creating` is the work that creates them (its result joins the row)."""
    n, wanted, row = len(names), set(names), {}
    interval = max(1.0, n / 2000)
    deployments_s, status_s, converge_s, created_s = None, None, None, None
    current, deployed, phases = 0, -1, {}
    deadline = started + timeout
    while time.monotonic() < deadline:
        if created_s is None and creating.done():
            row.update(creating.result())
            created_s = round(time.monotonic() - started, 2)
        try:
            current, deployed, phases = converged(api, ns, wanted, deployments_s is None)
        except ApiError as error:
            if error.status != 429:  # a watch cache still starting ("storage is (re)initializing")
                raise
            time.sleep(1)
            continue
        seen = time.monotonic() - started
        if deployments_s is None and deployed == n:
            deployments_s = round(seen, 1)
        if status_s is None and current == n:
            status_s = round(seen, 1)
        if deployments_s is not None and status_s is not None:
            converge_s = max(deployments_s, status_s)
            break
        time.sleep(interval)
    if created_s is None:
        row.update(creating.result())
        created_s = round(time.monotonic() - started, 2)
    row.update({
        "converged": converge_s is not None, "converge_s": converge_s, "converge_timeout_s": timeout,
        "converge_resolution_s": interval, "created_s": created_s, "all_deployments_s": deployments_s, "all_status_current_s": status_s,
    })
    if converge_s is None:
        row["at_timeout"] = {"status_current_and_accepted": current, "deployments": deployed if deployed >= 0 else n, "phases": phases}
    return row


FLOOR_THREADS = 32  # as the operator's API pool (kube.API_THREADS)


def measure_floor(n: int, args: argparse.Namespace, cluster: Cluster, source: Path) -> dict[str, Any]:
    """The control plane's own floor for N servings: no operator, no watch, no Kopf. A plain client does the least the
    operator must make the API server do, as early as it can: create each serving, at once server-side apply the
    Deployment and Service the checkout renders for it, and write its status (Accepted); 32 calls in flight, as the
    operator's API pool. Converge is measured as for the operator; the time each kind of call took is recorded."""
    sys.path.insert(0, str(source / "operator"))
    from specserve import api as serving_api
    from specserve.cluster import servings
    from specserve.rendering import manifests

    row: dict[str, Any] = {"servings": n, "operator": "floor: no operator, the same objects applied directly"}
    cluster.up()
    api = Api(cluster.kubeconfig, pool=FLOOR_THREADS + 4)
    apply_crd(api, source)
    ns = f"specserve-floor-{uuid.uuid4().hex[:6]}"
    api.call("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    names = [f"s{i:05d}" for i in range(n)]
    took: dict[str, list[float]] = {"create serving": [], "apply Deployment": [], "apply Service": [], "status": []}
    lock = threading.Lock()

    def timed(what: str, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(20):
            t0 = time.monotonic()
            try:
                _, body = api.call(method, path, **kwargs)
            except ApiError as error:
                if error.status != 429 and error.status < 500:
                    raise
                time.sleep(min(0.1 * 2 ** attempt, 5))
                continue
            with lock:
                took[what].append(time.monotonic() - t0)
            return body
        raise RuntimeError(f"{what} {path}: no answer after 20 attempts")

    def one(name: str) -> None:
        body = timed("create serving", "POST", servings_path(ns), count="POST speculativeservings", body=serving(name))
        spec = serving_api.SpeculativeServingSpec.model_validate(body["spec"])
        for obj in manifests.render(servings.owner_of(body), spec, manifests.DecisionState()):
            kind = obj["kind"]
            path = (f"/apis/apps/v1/namespaces/{ns}/deployments/" if kind == "Deployment" else f"/api/v1/namespaces/{ns}/services/") + obj["metadata"]["name"]
            timed(f"apply {kind}", "PATCH", path, count=f"APPLY {kind.lower()}s", body=obj, content_type="application/apply-patch+yaml",
                  query={"fieldManager": manifests.MANAGER, "force": "true"})
        accepted = {"type": "Accepted", "status": "True", "reason": "Applied", "message": "floor", "observedGeneration": 1,
                    "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        timed("status", "PATCH", f"{servings_path(ns)}/{name}/status", count="PATCH speculativeservings/status",
              body={"status": {"observedGeneration": 1, "phase": "Progressing", "conditions": [accepted]}}, content_type="application/merge-patch+json")

    def run_all() -> dict[str, Any]:
        with concurrent.futures.ThreadPoolExecutor(FLOOR_THREADS) as pool:
            list(pool.map(one, names))
        return {}

    try:
        snap0, mine0, comp0, busy0, load0 = api.requests(), Counter(api.mine), cluster.cpu(), machine_busy_s(), loadavg()
        bench_cpu0 = time.process_time()
        started = time.monotonic()
        work = concurrent.futures.ThreadPoolExecutor(1).submit(run_all)
        row.update(follow_converge(api, ns, names, started, args.converge_timeout, work))
        wall = time.monotonic() - started
        snap1, mine1, comp1, busy1 = api.requests(), Counter(api.mine), cluster.cpu(), machine_busy_s()
        bench_cpu = time.process_time() - bench_cpu0
        row["converge"] = {**attributed(snap0, snap1, mine0, mine1), **_cpu_shares(comp0, comp1, busy0, busy1, wall, bench_cpu),
                           "bench_cpu_s": round(bench_cpu, 2), "loadavg_start": load0, "loadavg_end": loadavg()}
        row["client_seconds_per_call"] = {k: {"calls": len(v), "mean": round(sum(v) / len(v), 3), "max": round(max(v), 2)} for k, v in took.items() if v}
        row["services_per_s"] = round(len(took["apply Service"]) / wall, 1) if took["apply Service"] else None
        print(json.dumps({"servings": n, "phase": "floor", **{k: row[k] for k in ("converged", "converge_s", "all_deployments_s", "all_status_current_s")},
                          "seconds_per_call": row["client_seconds_per_call"]}), flush=True)
    finally:
        if cluster.state:
            cluster.down()
        else:
            cleanup(api, ns)
    return row


def _cpu_shares(before: dict[str, float], after: dict[str, float], busy0: float, busy1: float, wall: float, own: float) -> dict[str, Any]:
    """CPU seconds over a phase: the whole machine, each control-plane component, and what neither they, the operator
    nor this script used (other work on a shared machine; `own` is the operator's and this script's)."""
    components = {name: round(after[name] - before[name], 2) for name in sorted(after) if name in before}
    return {"wall_s": round(wall, 1), "machine_busy_cpu_s": round(busy1 - busy0, 1), "control_plane_cpu_s": components,
            "unaccounted_cpu_s": round(busy1 - busy0 - sum(components.values()) - own, 1)}


POLL_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import poll_cost
n, cycles, recorded = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
results = poll_cost.run([n], cycles, recorded) if recorded else poll_cost.run([n], cycles)
print("RESULTS " + json.dumps(results))
"""


def poll_cost_at(n: int, source: Path, cycles: int, recorded: bool) -> dict[str, Any]:
    """bench/poll_cost.py's run() at this N, importing the measured operator source: poll_s is the raw poll (60 s
    window) against a Prometheus without rules. With `recorded`, a second run loads the chart's recording rules and
    measures the poll that reads them (300 s window), as `poll_cost.py --recorded` does: poll_recorded_s. (Raw polls
    measured beside the rules are slower, as Prometheus evaluates the rules meanwhile: kept in "poll", not in poll_s.)"""
    row: dict[str, Any] = {}
    runs = [False, True] if recorded else [False]
    for with_rules in runs:
        results = _poll_cost_child(n, source, cycles, with_rules)
        if isinstance(results, str):
            row.setdefault("poll_s", None)
            row["poll_error" if not with_rules else "poll_recorded_error"] = results
            continue
        row.setdefault("poll", []).extend(results)
        if not with_rules:
            row["poll_s"] = results[0]["poll_seconds_median"]
        else:
            row["poll_recorded_s"] = next(r["poll_seconds_median"] for r in results if r.get("recorded"))
            row["poll_rule_evaluation_s"] = results[-1].get("rule_evaluation_seconds")
    return row


def _poll_cost_child(n: int, source: Path, cycles: int, recorded: bool) -> list[dict[str, Any]] | str:
    """In a small process of its own: poll_cost's RSS is its children's ru_maxrss, which Linux carries over from the
    forking process across exec, so forking them from this (larger) process would inflate it."""
    env = {**os.environ, "PYTHONPATH": str(source / "operator")}
    done = subprocess.run([sys.executable, "-c", POLL_CHILD, str(ROOT / "bench"), str(n), str(cycles), "1" if recorded else "0"],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    if done.returncode != 0 or not lines:  # an older operator may not have what poll_cost.py calls: say so in the row
        return (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return json.loads(lines[-1][len("RESULTS "):])


def supports_recorded(source: Path) -> bool:
    where = [source / "operator" / "specserve" / "observation" / "metrics.py", source / "operator" / "specserve" / "metrics.py"]  # after and before the layout of 2026-12
    return any(path.exists() and "RECORDING_PROBE" in path.read_text() for path in where)


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--operator-child":
        operator_child(sys.argv[2], sys.argv[4:] if sys.argv[3] == "--" else sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--operator-src", type=Path, default=ROOT, help="checkout whose operator/ is run (default: this one)")
    parser.add_argument("--label", default="after", help='row label: "operator" is "LABEL (commit SHA)"')
    parser.add_argument("--private-cluster", metavar="STATE", help="start a fresh ../shared/k8s control plane per size in STATE (its five *_PORT "
                        "variables must be set away from the defaults) and wipe it after; default: the cluster in KUBECONFIG, a fresh namespace per size")
    parser.add_argument("--kubelet-args", default=DEFAULT_KUBELET_ARGS, help="FAKE_KUBELET_ARGS for --private-cluster")
    parser.add_argument("--create-threads", type=int, default=16)
    parser.add_argument("--converge-timeout", type=float, default=600)
    parser.add_argument("--settle-timeout", type=float, default=180, help="after converging, how long to wait for the operator's writes to stop")
    parser.add_argument("--restart-timeout", type=float, default=300)
    parser.add_argument("--quiet", type=float, default=10, help="seconds without writes that count as settled after a restart")
    parser.add_argument("--settle-quiet", type=float, default=60, help="the same before the restart: long enough for the health loop's first judgements")
    parser.add_argument("--linger", type=float, default=60, help="after the restart settled, watch at least this long (and until the operator is idle, "
                        "up to --restart-timeout) for late writes")
    parser.add_argument("--bare-kopf", action="store_true", help="after the restart, restart bench/bare_kopf.py (Kopf with the operator's watches and "
                        "settings, handlers that do nothing) over the same servings: the floor under the operator's restart")
    parser.add_argument("--poll-cycles", type=int, default=3)
    parser.add_argument("--no-poll", action="store_true", help="skip the Prometheus poll cost")
    parser.add_argument("--poll-recorded", choices=["auto", "yes", "no"], default="auto",
                        help="also measure the poll that reads the chart's recording rules (auto: when the operator source has them)")
    parser.add_argument("--poll-only", action="store_true", help="only (re)measure the poll cost, into the existing rows of this operator label")
    parser.add_argument("--floor", action="store_true", help="measure the control plane's floor instead of the operator: the same objects applied "
                        "directly by a plain client, no operator (row operator 'floor: ...')")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true", help="print the results in --out as a Markdown table (and draw the plot), measure nothing")
    args = parser.parse_args()
    if args.table:
        rows = json.loads(args.out.read_text())
        print(table(rows))
        plot(rows, args.out.with_suffix(".png"))
        return

    source = args.operator_src.resolve()
    sha, dirty = commit_of(source)
    label = f"{args.label} (commit {sha}{', operator/ modified' if dirty else ''})"
    cluster = Cluster(args.private_cluster, args.kubelet_args)
    from importlib import metadata

    rows = []
    sizes = [int(s) for s in args.sizes.split(",")]
    recorded = args.poll_recorded == "yes" or (args.poll_recorded == "auto" and supports_recorded(source))
    if args.poll_only:
        existing = {(r["operator"], r["servings"]): r for r in (json.loads(args.out.read_text()) if args.out.exists() else [])}
        for n in sizes:
            row = existing.get((label, n))
            if row is None:
                raise SystemExit(f"no row for {label!r} at {n} servings in {args.out}")
            for key in ("poll", "poll_s", "poll_recorded_s", "poll_error", "poll_recorded_error", "poll_rule_evaluation_s"):
                row.pop(key, None)
            row["loadavg_before_poll"] = loadavg()
            row.update(poll_cost_at(n, source, args.poll_cycles, recorded))
            row["loadavg_after_poll"] = loadavg()
            rows.append(row)
            plot(save(rows, args.out), args.out.with_suffix(".png"))
        return
    for n in sizes:
        load = loadavg()
        row = measure_floor(n, args, cluster, source) if args.floor else measure(n, args, cluster, source, label)
        row.update({"loadavg_before": load, "cores": os.cpu_count(), "kopf": metadata.version("kopf"), "python": sys.version.split()[0],
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "fake_kubelet_args": args.kubelet_args if cluster.state else None})
        if not args.no_poll and not args.floor:
            row["loadavg_before_poll"] = loadavg()
            row.update(poll_cost_at(n, source, args.poll_cycles, recorded))
            row["loadavg_after_poll"] = loadavg()
        rows.append(row)
        merged = save(rows, args.out)
        plot(merged, args.out.with_suffix(".png"))
        print(json.dumps({k: row.get(k) for k in ("operator", "servings", "converge_s", "restart_s", "restart_writes", "peak_rss_mib", "poll_s", "cpu_s")}), flush=True)


if __name__ == "__main__":
    main()
