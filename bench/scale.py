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
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "scale.json"
K8S = ROOT.parent / "shared" / "k8s"
CLOSED_PROMETHEUS = "http://127.0.0.1:9"  # nothing listens: the health loop holds, no DNS look-ups
GROUP, VERSION, PLURAL = "specserve.dev", "v1alpha1", "speculativeservings"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
READ_VERBS = frozenset({"GET", "LIST"})
OWNED = frozenset({"deployments", "services", "speculativeservings", "speculativeservings/status"})  # restart_writes
FAKE_KUBELET_RESOURCES = frozenset({"nodes", "nodes/status", "leases", "pods", "pods/status", "pods/binding"})
DEFAULT_KUBELET_ARGS = "--gpus 64 --max-pods 6000 --interval 10"  # a pod LIST a second costs ~0.4 core at 1,000 pods
SHARED_STATE = "/tmp/specserve-k8s"
SHARED_PORTS = {"APISERVER_PORT": "6443", "ETCD_CLIENT_PORT": "2379", "ETCD_PEER_PORT": "2380", "CONTROLLER_MANAGER_PORT": "10257", "SCHEDULER_PORT": "10259"}


# ---------------------------------------------------------------------------------------------- the operator process

PROBE_EVERY = 1.0


def operator_child(probe_out: str, argv: list[str]) -> None:
    """`python -m specserve.cli ARGV` in this process, plus a thread that samples asyncio tasks and event-loop lag."""
    import runpy

    sys.path[0] = os.getcwd()  # as `python -m` would have it
    if TRACEMALLOC_FRAMES:  # diagnosis only: slows the operator and adds ~50% to its memory
        import tracemalloc

        tracemalloc.start(TRACEMALLOC_FRAMES)
    threading.Thread(target=_probe, args=(Path(probe_out),), daemon=True, name="scale-probe").start()
    if argv[:1] == ["--bare-kopf"]:
        sys.argv = [str(ROOT / "bench" / "bare_kopf.py"), *argv[1:]]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return
    sys.argv = ["specserve.cli", *argv]
    runpy.run_module("specserve.cli", run_name="__main__", alter_sys=True)


def _probe(out: Path) -> None:
    import asyncio.tasks

    found = {"max_asyncio_tasks": 0, "max_loop_lag_s": 0.0, "samples": 0, "specserve_file": None}
    while True:
        time.sleep(PROBE_EVERY)
        try:
            tasks = list(asyncio.tasks._all_tasks)  # the C WeakSet behind asyncio.all_tasks(), read from this thread
        except RuntimeError:  # changed while copied; next second
            continue
        live = [t for t in tasks if not t.done()]
        loop = next((t.get_loop() for t in live), None)
        if loop is None or not loop.is_running():
            continue
        sent, ran = time.monotonic(), []
        done = threading.Event()
        loop.call_soon_threadsafe(lambda: (ran.append(time.monotonic() - sent), done.set()))
        done.wait(60)
        lag = ran[0] if ran else 60.0
        found["samples"] += 1
        if len(live) > found["max_asyncio_tasks"]:  # what the tasks are, at the most: the coroutines' names
            kinds = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in live)
            found["tasks_at_max"] = dict(kinds.most_common(8))
        found["max_asyncio_tasks"] = max(found["max_asyncio_tasks"], len(live))
        found["max_loop_lag_s"] = round(max(found["max_loop_lag_s"], lag), 4)
        found["asyncio_tasks_now"] = len(live)
        del tasks, live, loop  # the census below must not find the finished tasks held by this thread's own lists
        if OBJECTS_EVERY and found["samples"] % OBJECTS_EVERY == 0:  # diagnosis only: holds the GIL for a second or so
            found.setdefault("objects", []).append(_objects())
            if os.environ.get("SCALE_PROBE_COLLECT"):  # diagnosis: how much of it was garbage in reference cycles
                import gc

                before = proc_status_mib(os.getpid(), "VmRSS")
                started = time.monotonic()
                freed = gc.collect()
                found["objects"][-1]["gc_collect"] = {"freed": freed, "seconds": round(time.monotonic() - started, 2),
                                                      "rss_before": before, "rss_after": proc_status_mib(os.getpid(), "VmRSS"),
                                                      "stats": gc.get_stats()}
            if TRACEMALLOC_FRAMES:
                found["objects"][-1]["tracemalloc"] = _allocations(out)
            if os.environ.get("SCALE_PROBE_MALLOC"):  # diagnosis: Python's objects against the C heap, and what trimming gives back
                found["objects"][-1]["malloc"] = _malloc(trim=bool(os.environ.get("SCALE_PROBE_TRIM")))
        module = sys.modules.get("specserve")
        found["specserve_file"] = getattr(module, "__file__", None)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(found))
        tmp.replace(out)


def _malloc(trim: bool) -> dict[str, Any]:
    """glibc's mallinfo2 (MiB): heap obtained from the OS (arena, mmapped), in use, free inside it; Python's allocated
    blocks; with `trim`, VmRSS before and after malloc_trim(0), which hands free heap pages back to the OS."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    found: dict[str, Any] = {k: round(getattr(info, k) / 2**20, 1) for k in ("arena", "hblkhd", "uordblks", "fordblks")}
    found["python_allocated_blocks"] = sys.getallocatedblocks()
    if trim:
        before = proc_status_mib(os.getpid(), "VmRSS")
        libc.malloc_trim(0)
        found["trim_rss_before"], found["trim_rss_after"] = before, proc_status_mib(os.getpid(), "VmRSS")
    return found


OBJECTS_EVERY = int(os.environ.get("SCALE_PROBE_OBJECTS", "0") or 0)  # every this many probe samples: live objects by type
TRACEMALLOC_FRAMES = int(os.environ.get("SCALE_PROBE_TRACEMALLOC", "0") or 0)  # with the census: where the memory was allocated


def _allocations(out: Path) -> dict[str, Any]:
    """tracemalloc's live Python memory now; the snapshot itself is dumped beside the probe file for reading later
    (grouping a million traces here would hold the operator up for minutes)."""
    import tracemalloc

    current, peak = tracemalloc.get_traced_memory()
    path = out.with_name(f"{out.stem}.{int(time.time())}.tracemalloc")
    tracemalloc.take_snapshot().dump(str(path))
    return {"traced_mib": round(current / 2**20, 1), "traced_peak_mib": round(peak / 2**20, 1), "snapshot": str(path)}


def _objects() -> dict[str, Any]:
    """The live Python objects the garbage collector tracks, by type: the 15 largest by shallow size, and VmRSS."""
    import gc

    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        count[name] += 1
        try:
            size[name] += sys.getsizeof(obj)
        except TypeError:
            pass
    rss = proc_status_mib(os.getpid(), "VmRSS")
    import asyncio

    done = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and o.done()]
    holders: Counter[str] = Counter()
    sample = done[:: max(1, len(done) // 20)][:20]
    for task in sample:  # who keeps finished tasks alive
        for ref in gc.get_referrers(task):
            if ref is done or ref is sample:
                continue
            what = type(ref).__qualname__
            if hasattr(ref, "f_code"):  # a frame: whose
                what += ":" + ref.f_code.co_qualname
            elif isinstance(ref, dict):
                what += "{" + ",".join(sorted(str(k) for k in list(ref)[:4])) + "}"
            elif isinstance(ref, list):  # which list: its length and who holds it
                owners = [type(o).__qualname__ + (":" + getattr(o, "__qualname__", "") if hasattr(o, "f_code") or hasattr(o, "cr_code") else "")
                          for o in gc.get_referrers(ref) if o is not sample and o is not done][:3]
                what += f"[len {len(ref)}] held by {owners}"
            holders[what] += 1
    names = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in done)
    # Kopf's per-object backlogs: watch events delivered and not yet processed, each a whole parsed body
    waiting: Counter[str] = Counter()
    for stream in (o for o in gc.get_objects() if type(o).__name__ == "Stream" and type(o).__module__.startswith("kopf.")):
        for raw_event in list(stream.backlog._queue):
            waiting[str((raw_event.get("object") or {}).get("kind")) if isinstance(raw_event, dict) else "EOS"] += 1
    # Kopf's per-object memories, and the bodies the daemons keep (a daemon holds its object's latest full body)
    memories = [o for o in gc.get_objects() if type(o).__name__ == "ResourceMemory"]
    bodies, body_bytes, seen = 0, 0, set()
    for memory in memories:
        body = memory.daemons_memory.live_fresh_body
        if body is not None:
            bodies += 1
            body_bytes += _deep_size(getattr(body, "_src", None), seen)
    return {"kopf_resource_memories": len(memories), "daemon_bodies": bodies, "daemon_bodies_deep_mib": round(body_bytes / 2**20, 1),"rss_mib": rss, "objects": sum(count.values()), "mib_by_type": {k: [count[k], round(v / 2**20, 1)] for k, v in size.most_common(15)},
            "kopf_backlog_events": dict(waiting), "done_tasks": len(done), "done_tasks_by_coro": dict(names.most_common(5)), "done_task_holders": dict(holders.most_common(8))}


def _deep_size(value: Any, seen: set[int]) -> int:
    """Bytes of a parsed JSON value and everything in it (each object counted once)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Operator:
    """The real operator, started the way a user starts it, from the given source tree."""

    def __init__(self, source: Path, namespace: str, kubeconfig: str, log: Path) -> None:
        self.source, self.namespace, self.kubeconfig, self.log = source, namespace, kubeconfig, log
        self.liveness_port, self.metrics_port = free_port(), free_port()
        self.probe_out = log.with_suffix(".probe.json")
        self.counts_servings = "specserve_servings" in (source / "operator" / "specserve" / "telemetry.py").read_text()
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.alive_at: float | None = None
        self.final: dict[str, Any] = {}

    def start(self) -> "Operator":
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "PYTHONPATH": str(self.source / "operator")}
        command = [
            sys.executable, str(Path(__file__).resolve()), "--operator-child", str(self.probe_out), "--",
            "run", "--namespace", self.namespace, "--prometheus-url", CLOSED_PROMETHEUS,
            "--metrics-port", str(self.metrics_port), "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
        ]
        self.probe_out.unlink(missing_ok=True)
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.source)
        return self

    def alive(self) -> bool:
        """Liveness answered (remembered: the first time it did)."""
        if self.alive_at is not None:
            return True
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2).close()
        except OSError:
            return False
        self.alive_at = time.monotonic()
        return True

    def wait_alive(self, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while not self.alive():
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}; see {self.log}:\n{self.log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the operator's liveness endpoint did not answer within {timeout}s; see {self.log}")
            time.sleep(0.2)
        return self.alive_at - self.started

    def cpu_s(self) -> float:
        return proc_cpu_seconds(self.process.pid) or 0.0

    def hwm_mib(self) -> float | None:
        return proc_status_mib(self.process.pid, "VmHWM")

    def served(self) -> int | None:
        """The servings the operator says it handles (sum of specserve_servings by phase), None if not exposed."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics?name[]=specserve_servings", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        values = [float(m.group(1)) for m in re.finditer(r"^specserve_servings\{[^}]*\} (\S+)$", text, re.M)]
        return int(sum(values)) if values else None

    def probe(self) -> dict[str, Any]:
        try:
            return json.loads(self.probe_out.read_text())
        except (OSError, ValueError):
            return {}

    def stop(self, grace: float = 120) -> float:
        """SIGTERM, wait; what it held and used is read just before. Returns seconds to exit (SIGKILL after grace)."""
        self.final = {"peak_rss_mib": self.hwm_mib(), "cpu_s": round(self.cpu_s(), 2), **self.probe()}
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.final["killed_after_grace"] = True
        return round(time.monotonic() - started, 2)


class BareKopf(Operator):
    """bench/bare_kopf.py: Kopf with the operator's watches and settings and handlers that do nothing."""

    def __init__(self, source: Path, namespace: str, kubeconfig: str, log: Path) -> None:
        super().__init__(source, namespace, kubeconfig, log)
        self.counts_servings = False

    def start(self) -> "BareKopf":
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "PYTHONPATH": str(self.source / "operator")}
        command = [sys.executable, str(Path(__file__).resolve()), "--operator-child", str(self.probe_out), "--bare-kopf",
                   self.namespace, f"http://127.0.0.1:{self.liveness_port}/healthz"]
        self.probe_out.unlink(missing_ok=True)
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.source)
        return self

    def served(self) -> int | None:
        return None


def measure_bare_kopf(api: "Api", n: int, ns: str, source: Path, kubeconfig: str, log: Path, timeout: float) -> dict[str, Any]:
    """Restart bare Kopf over the same servings: until it is alive and idle (under 10% of a core over 10 s)."""
    bare = BareKopf(source, ns, kubeconfig, log).start()
    try:
        base = api.requests()
        found, snap, _ = quiet_after(api, bare, bare.started, base, 10, timeout, n, wait_idle=True)
        writes = owned_counts(snap)[0] - owned_counts(base)[0]
        stop_s = bare.stop()
        return {"idle_s": found["cpu_idle_s"], "owned_writes": writes, "cpu_s": bare.final.get("cpu_s"), "peak_rss_mib": bare.final.get("peak_rss_mib"),
                "max_loop_lag_s": bare.final.get("max_loop_lag_s"), "cpu_timeline": found["cpu_timeline"], "stop_s": stop_s}
    finally:
        if bare.process.poll() is None:
            bare.process.kill()
            bare.process.wait()


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def proc_status_mib(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def machine_busy_s() -> float:
    """CPU seconds spent by anything on the machine (all cores, not idle or iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# ---------------------------------------------------------------------------------------------- the API server


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


# ---------------------------------------------------------------------------------------------- the cluster


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


IDLE_WINDOW_S, IDLE_CORES = 10.0, 0.10  # idle: under 10% of a core over the last 10 s


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


# ---------------------------------------------------------------------------------------------- one size


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
            _cleanup(api, ns)
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


# ---------------------------------------------------------------------------------------------- the control plane's floor

FLOOR_THREADS = 32  # as the operator's API pool (kube.API_THREADS)


def measure_floor(n: int, args: argparse.Namespace, cluster: Cluster, source: Path) -> dict[str, Any]:
    """The control plane's own floor for N servings: no operator, no watch, no Kopf. A plain client does the least the
    operator must make the API server do, as early as it can: create each serving, at once server-side apply the
    Deployment and Service the checkout renders for it, and write its status (Accepted); 32 calls in flight, as the
    operator's API pool. Converge is measured as for the operator; the time each kind of call took is recorded."""
    sys.path.insert(0, str(source / "operator"))
    from specserve import api as serving_api
    from specserve.rendering import manifests
    from specserve.cluster import servings

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
            _cleanup(api, ns)
    return row


def _cpu_shares(before: dict[str, float], after: dict[str, float], busy0: float, busy1: float, wall: float, own: float) -> dict[str, Any]:
    """CPU seconds over a phase: the whole machine, each control-plane component, and what neither they, the operator
    nor this script used (other work on a shared machine; `own` is the operator's and this script's)."""
    components = {name: round(after[name] - before[name], 2) for name in sorted(after) if name in before}
    return {"wall_s": round(wall, 1), "machine_busy_cpu_s": round(busy1 - busy0, 1), "control_plane_cpu_s": components,
            "unaccounted_cpu_s": round(busy1 - busy0 - sum(components.values()) - own, 1)}


def _cleanup(api: Api, ns: str) -> None:
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


# ---------------------------------------------------------------------------------------------- poll cost, output


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
    return "RECORDING_PROBE" in (source / "operator" / "specserve" / "metrics.py").read_text()


def commit_of(source: Path) -> tuple[str, bool]:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "operator"], cwd=source, capture_output=True, text=True).stdout.strip())
    return sha, dirty


def save(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    old = json.loads(out.read_text()) if out.exists() else []
    fresh = {(r["operator"], r["servings"]) for r in rows}
    merged = [r for r in old if (r["operator"], r["servings"]) not in fresh] + rows
    merged.sort(key=lambda r: (r["operator"], r["servings"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: {out} not drawn (pip install matplotlib)", file=sys.stderr)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    fig, (times, memory, poll) = plt.subplots(1, 3, figsize=(16, 7))
    colours = {label: plt.cm.tab20(i % 20) for i, label in enumerate(sorted({r["operator"] for r in rows}))}
    for label, colour in colours.items():
        mine = sorted((r for r in rows if r["operator"] == label), key=lambda r: r["servings"])
        for key, limit_key, style, name in (("converge_s", "converge_timeout_s", "-o", "converge"), ("restart_s", "restart_timeout_s", "--s", "restart")):
            drawn = [r for r in mine if not (name == "restart" and (r.get("restart_note") or r.get("restart_timeout_s") is None))]  # not measured (or a floor row): no point
            xs = [r["servings"] for r in drawn]
            ys = [r[key] if r.get(key) is not None else r.get(limit_key) for r in drawn]
            times.plot(xs, ys, style, color=colour)
            for x, y, r in zip(xs, ys, drawn):
                if r.get(key) is None:
                    times.plot([x], [y], "x", color="red", markersize=12)
                    times.annotate(f"{name}: not done in {y:.0f} s", (x, y), textcoords="offset points", xytext=(-115, -14 if name == "converge" else 6), fontsize=7, color="red")
        held = [r for r in mine if r.get("peak_rss_mib") is not None]
        if held:
            memory.plot([r["servings"] for r in held], [r["peak_rss_mib"] for r in held], "-o", color=colour)
        for key, style in (("poll_s", "-o"), ("poll_recorded_s", "--s")):
            polled = [r for r in mine if r.get(key) is not None]
            if polled:
                poll.plot([r["servings"] for r in polled], [r[key] for r in polled], style, color=colour)
    panels = ((times, (120, 60), "converge after create (solid) / restart (dashed)", "seconds"), (memory, (300 / 1.048576,), "operator peak RSS", "MiB"),
              (poll, (2,), "poll cycle: raw, 60 s window (solid) / recording rules, 300 s (dashed)", "seconds"))
    for ax, target, title, unit in panels:
        for t in target:
            ax.axhline(t, color="grey", linestyle=":", linewidth=1)
        if any(len(line.get_xdata()) > 0 and line.get_linestyle() != ":" for line in ax.get_lines()):
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("SpeculativeServings")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=colour, marker="o", label=label) for label, colour in colours.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("specserve at scale (dotted: the targets of issue 12 at 5,000: converge 120 s, restart 60 s, 300 MB, poll 2 s)", fontsize=10)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(out, dpi=110)


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, one line per label and N (what bench/README.md shows)."""

    def cell(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            value = f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        return f"{value}{unit}"

    lines = ["| operator | N | converge_s | restart_s | restart_writes (to Deployments + Services) | peak RSS MiB | cpu_s | max asyncio tasks | max loop lag s | poll_s raw / recorded | loadavg at start |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["operator"], r["servings"])):
        converge = cell(r.get("converge_s")) if r.get("converged", True) else f"not in {round(r.get('converge_timeout_s') or 0)}"
        restart = cell(r.get("restart_s")) if r.get("restart_settled", True) else f"not in {round(r.get('restart_timeout_s') or 0)}"
        if r.get("restart_note"):
            restart = "not measured (restart_note)"
        by = r.get("restart_writes_by_resource") or {}
        owned = (by.get("deployments") or 0) + (by.get("services") or 0)
        poll = f"{cell(r.get('poll_s'))} / {cell(r.get('poll_recorded_s'))}"
        lines.append(f"| {r['operator']} | {r['servings']:,} | {converge} | {restart} | {cell(r.get('restart_writes'))} ({cell(owned)}) | {cell(r.get('peak_rss_mib'))} "
                     f"| {cell(r.get('cpu_s'))} | {cell(r.get('max_asyncio_tasks'))} | {cell(r.get('max_loop_lag_s'))} | {poll} | {(r.get('loadavg_before') or ['-'])[0]} |")
    return "\n".join(lines)


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
