"""The scale benchmark's view of the API server: a counting HTTPS client, the cluster it runs on, the servings it
creates and the convergence, quiet and state it reads back.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import ROOT, proc_cpu_seconds

if TYPE_CHECKING:
    from scale import Operator

GROUP, VERSION, PLURAL = "specserve.dev", "v1alpha1", "speculativeservings"
IDLE_WINDOW_S, IDLE_CORES = 10.0, 0.10  # idle: under 10% of a core over the last 10 s
K8S = ROOT.parent / "shared" / "k8s"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
READ_VERBS = frozenset({"GET", "LIST"})
OWNED = frozenset({"deployments", "services", "speculativeservings", "speculativeservings/status"})  # restart_writes
FAKE_KUBELET_RESOURCES = frozenset({"nodes", "nodes/status", "leases", "pods", "pods/status", "pods/binding"})
SHARED_STATE = "/tmp/specserve-k8s"
SHARED_PORTS = {"APISERVER_PORT": "6443", "ETCD_CLIENT_PORT": "2379", "ETCD_PEER_PORT": "2380", "CONTROLLER_MANAGER_PORT": "10257", "SCHEDULER_PORT": "10259"}


class Api:
    """A plain HTTPS client for the API server (admin from KUBECONFIG) that counts its own requests by verb and resource."""

    def __init__(self, kubeconfig: str, pool: int) -> None:
        import kubernetes
        import urllib3

        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        self.base = configuration.host
        self.http = urllib3.PoolManager(
            maxsize=pool, cert_file=configuration.cert_file, key_file=configuration.key_file, ca_certs=configuration.ssl_ca_cert,
            cert_reqs="CERT_REQUIRED", timeout=urllib3.Timeout(connect=10, read=120), retries=False,
        )
        self.mine: Counter[str] = Counter()  # "VERB resource[/sub]" as apiserver_request_total names them
        self._lock = threading.Lock()

    def call(self, method: str, path: str, *, count: str | None = None, body: Any = None, content_type: str = "application/json",
             accept: str = "application/json", query: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201, 202)) -> tuple[int, Any]:
        if count:
            with self._lock:
                self.mine[count] += 1
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        response = self.http.request(method, url, body=data, headers={"Content-Type": content_type, "Accept": accept})
        parsed: Any = response.data
        if accept.startswith("application/json"):
            try:
                parsed = json.loads(response.data)
            except ValueError:
                pass
        if response.status not in ok:
            raise ApiError(response.status, method, path, parsed)
        return response.status, parsed

    def requests(self) -> Counter[tuple[str, str, str, str]]:
        """apiserver_request_total now, by (system_client, verb, resource[/sub], code)."""
        _, text = self.call("GET", "/metrics", accept="text/plain")
        counts: Counter[tuple[str, str, str, str]] = Counter()
        for line in text.decode().splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            head, value = line.rsplit(" ", 1)
            labels = dict(re.findall(r'(\w+)="([^"]*)"', head))
            if not labels.get("resource"):
                continue  # /healthz, /metrics, discovery
            resource = labels["resource"] + ("/" + labels["subresource"] if labels.get("subresource") else "")
            counts[(labels.get("system_client", ""), labels["verb"], resource, labels["code"])] += int(float(value))
        return counts


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: Any) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {str(body)[:300]}")
        self.status = status


def attributed(before: Counter, after: Counter, mine_before: Counter, mine_after: Counter) -> dict[str, Any]:
    """The operator's requests between two snapshots: system_client "" minus ours minus the fake kubelet's resources."""
    delta = after - before
    mine = mine_after - mine_before
    by_request: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    clients: Counter[str] = Counter()
    for (client, verb, resource, code), n in delta.items():
        clients[client or "other (operator, this script, fake kubelet)"] += n
        if client or resource in FAKE_KUBELET_RESOURCES:
            continue
        by_request[f"{verb} {resource}"] += n
        if not code.startswith("2"):
            by_code[f"{verb} {resource} {code}"] += n
    for key, n in mine.items():
        by_request[key] -= n
    operator = {k: v for k, v in sorted(by_request.items()) if v}
    writes = sum(v for k, v in operator.items() if k.split()[0] in WRITE_VERBS and k.split()[1] in OWNED)
    return {"api_requests": operator, "api_errors": dict(sorted(by_code.items())), "owned_writes": writes,
            "apiserver_requests_by_client": dict(sorted(clients.items()))}


def owned_counts(counts: Counter) -> tuple[int, int]:
    """(writes, reads) to the owned resources by clients other than the control plane's own."""
    writes = reads = 0
    for (client, verb, resource, _), n in counts.items():
        if client or resource not in OWNED:
            continue
        if verb in WRITE_VERBS:
            writes += n
        elif verb in READ_VERBS:
            reads += n
    return writes, reads


class Cluster:
    """A private control plane from ../shared/k8s (fresh per size, wiped after), or the one KUBECONFIG names."""

    def __init__(self, state: str | None, kubelet_args: str) -> None:
        self.state, self.kubelet_args = state, kubelet_args
        if state:
            ports = {k: os.environ.get(k, v) for k, v in SHARED_PORTS.items()}
            clash = [k for k, v in ports.items() if v == SHARED_PORTS[k]]
            if os.path.realpath(state) == SHARED_STATE or clash:
                raise SystemExit(f"--private-cluster needs its own state directory and all five ports set away from the defaults (still default: {', '.join(clash) or 'state dir'})")

    @property
    def kubeconfig(self) -> str:
        if self.state:
            return f"{self.state}/kubeconfig"
        path = os.environ.get("KUBECONFIG")
        if not path:
            raise SystemExit("set KUBECONFIG, or --private-cluster STATE with its five *_PORT variables")
        return path

    def up(self) -> None:
        if not self.state:
            return
        self.down()
        env = {**os.environ, "K8S_STATE": self.state, "FAKE_KUBELET": "1", "FAKE_KUBELET_ARGS": self.kubelet_args}
        subprocess.run([str(K8S / "up.sh")], env=env, check=True, stdout=subprocess.DEVNULL)

    def down(self) -> None:
        if self.state:
            subprocess.run([str(K8S / "down.sh"), "--wipe"], env={**os.environ, "K8S_STATE": self.state}, check=True, stderr=subprocess.DEVNULL)

    def components(self) -> dict[str, int]:
        state = self.state or os.environ.get("K8S_STATE")
        if not state or not Path(state, "run").is_dir():
            return {}
        pids = {}
        for pid_file in Path(state, "run").glob("*.pid"):
            try:
                pids[pid_file.stem] = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                pass
        return pids

    def cpu(self) -> dict[str, float]:
        return {name: cpu for name, pid in self.components().items() if (cpu := proc_cpu_seconds(pid)) is not None}


def apply_crd(api: Api, source: Path) -> None:
    """The measured checkout's own CRD (crds/), as its operator expects it."""
    import yaml

    crd = yaml.safe_load((source / "crds" / "specserve.dev_speculativeservings.yaml").read_text())
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
    api.call("PATCH", path, body=json.dumps(crd), content_type="application/apply-patch+yaml", query={"fieldManager": "specserve-bench", "force": "true"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, live = api.call("GET", path)
        if any(c["type"] == "Established" and c["status"] == "True" for c in (live.get("status") or {}).get("conditions") or []):
            return
        time.sleep(0.5)
    raise RuntimeError("the CRD was not Established within 60 s")


def serving(name: str) -> dict[str, Any]:
    """GPU-free, tiny cpu request: thousands fit the fake node (as the e2e test of 100 GPU-free servings does)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SpeculativeServing", "metadata": {"name": name},
        "spec": {
            "target": {"model": "meta-llama/Llama-3.1-8B-Instruct"}, "speculation": {"method": "ngram"},
            "gpu": {"resourceName": "", "product": "L40S"}, "engine": {"resources": {"requests": {"cpu": "10m"}}},
        },
    }


def servings_path(ns: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"


def create_all(api: Api, ns: str, names: list[str], threads: int) -> dict[str, Any]:
    """POST every serving from a thread pool; 429 and 5xx are retried after a short wait."""
    retries = Counter()

    def create(name: str) -> None:
        for attempt in range(20):
            try:
                api.call("POST", servings_path(ns), count="POST speculativeservings", body=serving(name))
                return
            except ApiError as error:
                if error.status == 409:  # created by an earlier attempt whose answer was lost
                    return
                if error.status != 429 and error.status < 500:
                    raise
                retries[error.status] += 1
                time.sleep(min(0.1 * 2 ** attempt, 5))
        raise RuntimeError(f"could not create {name}")

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, names))
    return {"create_retries": dict(retries)}


def converged(api: Api, ns: str, names: set[str], check_deployments: bool) -> tuple[int, int, dict[str, int]]:
    """(servings current and accepted, servings with a Deployment, phases) from two LISTs out of the watch cache."""
    _, listed = api.call("GET", servings_path(ns), count="LIST speculativeservings", query={"resourceVersion": "0"})
    current, phases = 0, Counter()
    for item in listed.get("items") or []:
        status = item.get("status") or {}
        phases[status.get("phase") or "-"] += 1
        accepted = any(c.get("type") == "Accepted" and c.get("status") == "True" for c in status.get("conditions") or [])
        if accepted and status.get("observedGeneration") == item["metadata"].get("generation"):
            current += 1
    deployed = -1
    if check_deployments:
        _, deployments = api.call(
            "GET", f"/apis/apps/v1/namespaces/{ns}/deployments", count="LIST deployments",
            accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1", query={"resourceVersion": "0"},
        )
        deployed = len(names & {d["metadata"]["name"] for d in deployments.get("items") or []})
    return current, deployed, dict(phases)


def quiet_after(api: Api, operator: Operator, start: float, base: Counter, quiet: float, timeout: float, servings: int,
                linger: float = 0.0, wait_idle: bool = False) -> tuple[dict[str, Any], Counter, Counter]:
    """Waits until the operator has settled: alive, holding every serving (when its specserve_servings says how many
    it holds), and no write to the owned resources for `quiet` s. settled_s is the last of: its last write, liveness,
    holding all; None if it never was quiet before `timeout`. Times are from `start`; `base` is apiserver_request_total
    at `start`. Then it keeps watching: at least `linger` s, and with `wait_idle` until the operator is idle too
    (under 10% of a core over 10 s) or `timeout`; writes in that time are late_writes. Returns the result, and
    apiserver_request_total and this script's own request counts at the moment it settled (or gave up)."""
    last_write, last_read, settled_snap, settled_mine = None, None, None, None
    writes0, reads0 = owned_counts(base)
    prev_writes, prev_reads = writes0, reads0
    cpu_samples = [(time.monotonic(), operator.cpu_s())]
    timeline, busy_until, seen_all_at, settled_at, idle, ended, writes_at_end = [], None, None, None, False, None, writes0
    cpu0, cpu_timeline, next_cpu_mark = cpu_samples[0][1], [], start + 5
    deadline = start + timeout
    while True:
        time.sleep(1.0)
        now = time.monotonic()
        snap = api.requests()
        writes, reads = owned_counts(snap)
        cpu_samples.append((now, operator.cpu_s()))
        if now >= next_cpu_mark:
            cpu_timeline.append([round(now - start, 1), round(cpu_samples[-1][1] - cpu0, 1)])
            next_cpu_mark += 5
        if writes != prev_writes:
            last_write = now
            timeline.append([round(now - start, 1), writes - writes0])
        if reads != prev_reads:
            last_read = now
        cpu_samples = [(t, c) for t, c in cpu_samples if t >= now - IDLE_WINDOW_S - 0.5]
        first_t, first_c = cpu_samples[0]
        idle = now - start >= IDLE_WINDOW_S and (cpu_samples[-1][1] - first_c) / max(now - first_t, 1e-6) < IDLE_CORES
        busy_until = busy_until if idle else now
        served = operator.served() if seen_all_at is None else servings  # its /metrics costs it CPU: read until it holds all
        if seen_all_at is None and served is not None and served >= servings:
            seen_all_at = now
        prev_writes, prev_reads = writes, reads
        if operator.process.poll() is not None:
            raise RuntimeError(f"the operator exited with {operator.process.returncode}; see {operator.log}")
        if ended is None:
            # An operator that counts its servings (specserve_servings) is ready once it counts them all; before it has
            # reconciled any, or while its /metrics does not answer, it reads as None, which is not ready.
            ready = operator.alive() and (seen_all_at is not None or (served is None and not operator.counts_servings))
            marks = [m for m in (last_write, operator.alive_at, seen_all_at) if m is not None]
            candidate = max(marks) if marks else start
            writes_quiet = ready and now - candidate >= quiet
            if writes_quiet or now > deadline:
                settled_at = candidate if writes_quiet else None
                ended, settled_snap, settled_mine, writes_at_end = now, snap, Counter(api.mine), writes
        if ended is not None and now - ended >= linger and (not wait_idle or idle or now > deadline):
            break

    def since(t: float | None) -> float | None:
        return None if t is None else round(t - start, 1)

    return {
        "settled_s": since(settled_at),
        # the end of the last 10 s window in which it used 10% of a core or more (None: still busy when watching stopped)
        "cpu_idle_s": (since(busy_until) if busy_until else 0.0) if idle else None,
        "last_write_s": since(last_write), "last_read_s": since(last_read), "seen_all_s": since(seen_all_at),
        "ended_s": since(ended), "watched_s": since(time.monotonic()),
        "late_writes": writes - writes_at_end,  # owned writes after it settled, while still watched
        "write_timeline": timeline,  # [seconds from start, owned writes since start] at each change (1 s samples)
        "cpu_timeline": cpu_timeline,  # [seconds from start, the operator's CPU seconds since start], every 5 s
    }, settled_snap, settled_mine


TIME_KEY = re.compile(r"(^time$|Time$|Timestamp$)")


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if not TIME_KEY.search(k)}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def state_of(api: Api, ns: str) -> dict[str, dict[str, Any]]:
    """What a restart could change: each serving's resourceVersion and status without times, each Deployment's and
    Service's resourceVersion (LISTs from the watch cache, counted as this script's)."""
    _, servings = api.call("GET", servings_path(ns), count="LIST speculativeservings", query={"resourceVersion": "0"})
    state: dict[str, dict[str, Any]] = {"servings": {}, "servings_status": {}}
    for item in servings.get("items") or []:
        state["servings"][item["metadata"]["name"]] = item["metadata"]["resourceVersion"]
        state["servings_status"][item["metadata"]["name"]] = _timeless(item.get("status") or {})
    for kind, path in (("deployments", f"/apis/apps/v1/namespaces/{ns}/deployments"), ("services", f"/api/v1/namespaces/{ns}/services")):
        _, listed = api.call("GET", path, count=f"LIST {kind}", accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                             query={"resourceVersion": "0"})
        state[kind] = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in listed.get("items") or []}
    return state


def changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Objects whose resourceVersion moved (rewritten) and servings whose status changed in more than times."""
    moved = {kind: sum(1 for name, rv in after[kind].items() if before[kind].get(name) != rv) for kind in ("servings", "deployments", "services")}
    status = sum(1 for name, st in after["servings_status"].items() if before["servings_status"].get(name) != st)
    return {"servings_rewritten": moved["servings"], "servings_status_changed_beyond_times": status,
            "deployments_rewritten": moved["deployments"], "services_rewritten": moved["services"]}


def cleanup(api: Api, ns: str) -> None:
    """Finalizers off (no operator runs now), then the namespace; waits until it is gone so the next size starts clean."""
    _, listed = api.call("GET", servings_path(ns), query={"resourceVersion": "0"})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: api.call("PATCH", f"{servings_path(ns)}/{item['metadata']['name']}", body={"metadata": {"finalizers": None}},
                                            content_type="application/merge-patch+json", ok=(200, 404)), listed["items"]))
    api.call("DELETE", f"/api/v1/namespaces/{ns}", ok=(200, 202, 404))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status, _ = api.call("GET", f"/api/v1/namespaces/{ns}", ok=(200, 404))
        if status == 404:
            return
        time.sleep(2)
