"""A local pod runner for tests and benchmarks: a node of its own on the real control plane, whose simulator pods run
as local `specserve simulate` processes on loopback (test support, not product code).

The runner registers a Node (Ready, allocatable cpu/memory/pods, no GPUs) carrying a NoSchedule taint of its own, so
only pods that tolerate it and select it land there (`runner.placement()` gives the `spec.engine` fields that do);
the fake kubelet of ../shared/k8s only touches pods bound to its own node (`fake-gpu-node`), so the two never act on
the same pod. Every pod bound to the runner's node whose container runs the simulator image (`vllm serve ...` in an
image whose name holds `specserve-simulator`, as manifests/examples/simulator-no-gpu.yaml renders it) becomes
`python -m specserve_simulator` with the container's exact args, except `--host 127.0.0.1 --port <a free port of
its own>`, plus the extra `--sim-*` args given for its role (`specserve.dev/role`) and the container's literal
`SPECSERVE_SIM_*` env. As a kubelet does, through the pods/status subresource: Running with Ready=False when the
process starts, Ready=True (podIP 127.0.0.1) only once `/health` answers and the simulated model-load time
(`load_seconds`) has passed; a process that exits is restarted (restartCount + 1) and is not Ready again until the
new one answers; a pod with a deletionTimestamp has its process stopped, then is deleted with grace 0. A Deployment
rewrite therefore becomes a rollout, which becomes a new process with the new args, paying the load time again.

Every Ready pod is listed in a Prometheus file_sd target file (`runner.targets_file`) with the labels the operator
groups by - namespace, serving, role (from the pod's `specserve.dev/serving` / `specserve.dev/role` labels) - plus
pod; `Prometheus(..., file_sd=runner.targets_file)` scrapes them. Traffic set with `runner.set_traffic(...)` goes to
the running processes of that role (PUT /sim/traffic) and is replayed to every later process of it before it turns
Ready, so a phase of traffic outlives a rollout. `runner.pods(...)` / `runner.url(...)` give each Ready pod's URL and
args; `runner.history` records every process (start, ready, stop times), for benchmarks counting restarts.

    with PodRunner(tmp_path, sim_args={"speculative": ["--sim-time-scale", "0.2"]}, load_seconds=3) as runner:
        spec["engine"] = {"image": SIMULATOR_IMAGE, **runner.placement()}
        ...
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import stop as stop_process

ROOT = Path(__file__).resolve().parents[2]
SERVING_LABEL = "specserve.dev/serving"  # render.SERVING_LABEL / ROLE_LABEL, kept literal: this is the pod's view
ROLE_LABEL = "specserve.dev/role"
TAINT_KEY = "specserve.dev/pod-runner"
SIMULATOR_IMAGE = "ghcr.io/specserve/specserve-simulator:0.1.0"
VLLM_COMMAND = ["vllm", "serve"]

log = logging.getLogger("pod-runner")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def runs_simulator(container: dict[str, Any]) -> bool:
    return (container.get("command") or []) == VLLM_COMMAND and "specserve-simulator" in (container.get("image") or "")


def local_args(args: list[str], port: int) -> list[str]:
    """The container's vLLM args with its --host/--port (either spelling, `--x v` or `--x=v`) replaced by loopback ones."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0].replace("_", "-")
        if name in ("--host", "--port"):
            skip = "=" not in arg
            continue
        kept.append(arg)
    if kept and kept[0] == "serve":
        kept = kept[1:]
    return [*kept, "--host", "127.0.0.1", "--port", str(port)]


@dataclass
class Process:
    """One simulator process standing for one pod's container (a restart gets a new one)."""

    namespace: str
    pod: str
    uid: str
    serving: str
    role: str
    args: list[str]  # the pod's container args, as the API server has them
    command: list[str]  # what was run
    port: int
    log: Path
    popen: subprocess.Popen[bytes]
    started: float  # time.monotonic()
    ready: float | None = None
    stopped: float | None = None
    restart_count: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.namespace, self.serving, self.role


@dataclass
class _Pod:
    uid: str
    namespace: str
    name: str
    process: Process | None = None
    restarts: int = 0
    deleting: bool = False
    marked_ready: bool = False


@dataclass
class PodRunner:
    """See the module docstring. Start with `with PodRunner(...) as runner:` or start()/stop()."""

    workdir: Path
    sim_args: dict[str, list[str]] = field(default_factory=dict)  # role -> extra --sim-* args for its processes
    load_seconds: float = 0.0  # simulated model-load time: Ready no earlier than this after the process starts
    node_name: str = field(default_factory=lambda: f"specserve-runner-{uuid.uuid4().hex[:6]}")
    kubeconfig: str | None = None
    interval: float = 0.5  # seconds between pod syncs
    cpu: str = "16"
    memory: str = "64Gi"
    max_pods: int = 110
    is_simulator: Callable[[dict[str, Any]], bool] = runs_simulator
    history: list[Process] = field(default_factory=list)
    # what runs the simulator, before its args: a benchmark may wrap it (e.g. to record every finished request)
    command_prefix: list[str] = field(default_factory=lambda: [sys.executable, "-m", "specserve_simulator"])

    def __post_init__(self) -> None:
        from kubernetes import client, config

        self.workdir = Path(self.workdir)
        self.logs = self.workdir / "pod-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.targets_file = self.workdir / "file_sd" / f"{self.node_name}.json"
        self.targets_file.parent.mkdir(parents=True, exist_ok=True)
        self._write_targets([])
        api_client = config.new_client_from_config(config_file=self.kubeconfig or os.environ.get("KUBECONFIG"))
        self._core = client.CoreV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)
        self._client = client
        self._pods: dict[str, _Pod] = {}
        self._traffic: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []  # API or process problems met on the way (a test may assert none)
        self.ignored: set[str] = set()  # "namespace/pod" bound here whose container does not run the simulator

    # ------------------------------------------------------------------ public
    def placement(self) -> dict[str, Any]:
        """The `spec.engine` fields that put a serving's pods on this node, and only there."""
        return {
            "nodeSelector": {"kubernetes.io/hostname": self.node_name},
            "tolerations": [{"key": TAINT_KEY, "operator": "Equal", "value": self.node_name, "effect": "NoSchedule"}],
        }

    def start(self) -> "PodRunner":
        self._register_node()
        self._thread = threading.Thread(target=self._run, name=f"pod-runner-{self.node_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops every process, removes pods already being deleted (as a last kubelet sync would) and the node."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        with self._lock:
            for pod in list(self._pods.values()):
                self._stop_process(pod)
            self._write_targets([])
        try:
            for item in self._list_pods():
                if item["metadata"].get("deletionTimestamp"):
                    self._delete_pod(item["metadata"]["namespace"], item["metadata"]["name"], item["metadata"]["uid"])
        except Exception as error:  # noqa: BLE001 - best effort on the way out
            self.errors.append(f"final sync: {error}")
        for call in (lambda: self._core.delete_node(self.node_name), lambda: self._coordination.delete_namespaced_lease(self.node_name, "kube-node-lease")):
            try:
                call()
            except Exception:  # noqa: BLE001 - already gone
                pass

    def __enter__(self) -> "PodRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_sim_args(self, role: str, args: list[str]) -> None:
        """Extra --sim-* args for the role's processes started from now on."""
        with self._lock:
            self.sim_args[role] = list(args)

    def set_traffic(self, namespace: str, serving: str, role: str, **changes: Any) -> dict[str, Any]:
        """PUT /sim/traffic on every live process of the role now, and on every later one before it turns Ready.
        Returns the role's accumulated traffic settings."""
        key = (namespace, serving, role)
        with self._lock:
            self._traffic[key] = {**self._traffic.get(key, {}), **changes}
            merged = dict(self._traffic[key])
            live = [p.process for p in self._pods.values() if p.process and p.process.key == key and p.process.ready is not None and not p.deleting]
        for process in live:
            put_traffic(process.url, changes)
        return merged

    def pods(self, namespace: str | None = None, serving: str | None = None, role: str | None = None) -> list[Process]:
        """The Ready processes (one per Ready pod), oldest first."""
        with self._lock:
            found = [p.process for p in self._pods.values() if p.process and p.process.ready is not None and not p.deleting and p.process.popen.poll() is None]
        found = [p for p in found if (namespace is None or p.namespace == namespace) and (serving is None or p.serving == serving) and (role is None or p.role == role)]
        return sorted(found, key=lambda p: p.started)

    def url(self, namespace: str, serving: str, role: str) -> str:
        """The URL of the role's one Ready pod (AssertionError when there is not exactly one)."""
        found = self.pods(namespace, serving, role)
        assert len(found) == 1, f"{len(found)} Ready pods of {namespace}/{serving}/{role}: {[p.pod for p in found]}"
        return found[0].url

    def wait_for(self, namespace: str, serving: str, role: str, predicate: Callable[[Process], bool] = lambda p: True, timeout: float = 60) -> Process:
        """The role's only Ready process once one satisfies predicate (e.g. new args after a rollout)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.pods(namespace, serving, role)
            if len(found) == 1 and predicate(found[0]):
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no Ready {namespace}/{serving}/{role} pod as wanted within {timeout}s: {[(p.pod, p.args) for p in found]}")
            time.sleep(0.2)

    # ------------------------------------------------------------------ node
    def _register_node(self) -> None:
        from kubernetes.client.rest import ApiException

        labels = {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", TAINT_KEY: "true"}
        taint = {"key": TAINT_KEY, "value": self.node_name, "effect": "NoSchedule"}
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, "labels": labels}, "spec": {"taints": [taint]}}
        try:
            self._core.create_node(body)
        except ApiException as error:
            if error.status != 409:
                raise
        self._post_node_status()
        self._renew_lease()
        # a new node carries node.kubernetes.io/not-ready until the lifecycle controller sees Ready: clear it, as fake-kubelet does
        node = self._core.read_node(self.node_name)
        taints = [t.to_dict() for t in node.spec.taints or [] if not t.key.startswith(("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"))]
        if len(taints) != len(node.spec.taints or []):
            self._core.patch_node(self.node_name, {"spec": {"taints": taints}})

    def _post_node_status(self) -> None:
        ts = now_rfc3339()

        def condition(kind: str, status: str, reason: str) -> dict[str, str]:
            return {"type": kind, "status": status, "reason": reason, "message": "pod runner", "lastHeartbeatTime": ts, "lastTransitionTime": ts}

        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods), "ephemeral-storage": "100Gi"}
        status = {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [condition("MemoryPressure", "False", "KubeletHasSufficientMemory"), condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                           condition("PIDPressure", "False", "KubeletHasSufficientPID"), condition("Ready", "True", "KubeletReady")],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": "pod-runner", "systemUUID": "pod-runner", "bootID": "pod-runner", "kernelVersion": "local", "osImage": "pod-runner",
                         "containerRuntimeVersion": "local-process://0", "kubeletVersion": "v1.32.13", "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64"},
        }
        self._core.patch_node_status(self.node_name, {"status": status})

    def _renew_lease(self) -> None:
        from kubernetes.client.rest import ApiException

        renew = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": renew}
        try:
            self._coordination.patch_namespaced_lease(self.node_name, "kube-node-lease", {"spec": spec})
        except ApiException as error:
            if error.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.node_name, "namespace": "kube-node-lease"}, "spec": spec}
            self._coordination.create_namespaced_lease("kube-node-lease", body)

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        last_lease = last_status = time.monotonic()
        while not self._stop.is_set():
            try:
                t = time.monotonic()
                if t - last_lease >= 10:
                    self._renew_lease()
                    last_lease = t
                if t - last_status >= 30:
                    self._post_node_status()
                    last_status = t
                self._sync()
            except Exception as error:  # noqa: BLE001 - the API server may be slow or restarting: keep going
                self.errors.append(f"{time.strftime('%H:%M:%S')} sync: {error}")
                log.warning("sync: %s", error)
                self._stop.wait(1.0)
            self._stop.wait(self.interval)

    def _list_pods(self) -> list[dict[str, Any]]:
        response = self._core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node_name}", _preload_content=False)
        return json.loads(response.data)["items"]

    def _sync(self) -> None:
        items = self._list_pods()
        seen: set[str] = set()
        for item in items:
            meta = item["metadata"]
            uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
            seen.add(uid)
            with self._lock:
                pod = self._pods.setdefault(uid, _Pod(uid, namespace, name))
            if meta.get("deletionTimestamp"):
                pod.deleting = True
                self._stop_process(pod)
                self._delete_pod(namespace, name, uid)
                continue
            container = (item["spec"].get("containers") or [{}])[0]
            if not self.is_simulator(container):
                if f"{namespace}/{name}" not in self.ignored:
                    self.ignored.add(f"{namespace}/{name}")
                    log.warning("pod %s/%s is bound here but does not run the simulator: left alone", namespace, name)
                continue
            self._drive(pod, item, container)
        with self._lock:
            for uid in [u for u in self._pods if u not in seen]:  # gone without our final delete (force-deleted)
                self._stop_process(self._pods.pop(uid))

    def _drive(self, pod: _Pod, item: dict[str, Any], container: dict[str, Any]) -> None:
        process = pod.process
        if process is None:
            self._start_process(pod, item, container)
            self._post_pod_status(pod, item, container, ready=False)
            return
        if process.popen.poll() is not None:  # the container died: restart it; not Ready until the new one answers
            self.errors.append(f"{pod.namespace}/{pod.name} exited with {process.popen.returncode}; see {process.log}")
            self._stop_process(pod)
            pod.restarts += 1
            self._start_process(pod, item, container)
            self._post_pod_status(pod, item, container, ready=False)
            return
        if process.ready is None and time.monotonic() - process.started >= self.load_seconds and healthy(process.url):
            with self._lock:
                traffic = dict(self._traffic.get(process.key, {}))
            if traffic:
                put_traffic(process.url, traffic)
            process.ready = time.monotonic()
            self._publish_targets()
            self._post_pod_status(pod, item, container, ready=True)

    def _start_process(self, pod: _Pod, item: dict[str, Any], container: dict[str, Any]) -> None:
        labels = item["metadata"].get("labels") or {}
        serving, role = labels.get(SERVING_LABEL, ""), labels.get(ROLE_LABEL, "")
        port = free_port()
        with self._lock:
            extra = list(self.sim_args.get(role, []))
        container_args = list(container.get("args") or [])
        command = [*self.command_prefix, *local_args(container_args, port), *extra]
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env") or [] if e.get("value") is not None and e["name"].startswith("SPECSERVE_SIM_")}}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "operator"), env.get("PYTHONPATH")]))
        log_path = self.logs / f"{pod.namespace}_{pod.name}_{pod.restarts}.log"
        with open(log_path, "wb") as out:
            out.write((" ".join(command) + "\n").encode())
            out.flush()
            popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        process = Process(pod.namespace, pod.name, pod.uid, serving, role, container_args, command, port, log_path, popen, time.monotonic(), restart_count=pod.restarts)
        with self._lock:
            pod.process = process
            pod.marked_ready = False
            self.history.append(process)
        log.info("started %s/%s on port %d", pod.namespace, pod.name, port)

    def _stop_process(self, pod: _Pod) -> None:
        process = pod.process
        if process is None or process.stopped is not None:
            return
        was_ready = process.ready is not None
        process.stopped = time.monotonic()
        if was_ready:
            self._publish_targets()  # out of the target list before it goes, so Prometheus marks its series stale
        if process.popen.poll() is None:
            stop_process(process.popen, grace_seconds=10)

    def _publish_targets(self) -> None:
        with self._lock:
            live = [p.process for p in self._pods.values() if p.process and p.process.ready is not None and p.process.stopped is None]
        self._write_targets([
            {"targets": [p.address], "labels": {"namespace": p.namespace, "serving": p.serving, "role": p.role, "pod": p.pod}} for p in live
        ])

    def _write_targets(self, groups: list[dict[str, Any]]) -> None:
        """Atomically (write, then rename), so Prometheus never reads half a file."""
        temporary = self.targets_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups, indent=1))
        os.replace(temporary, self.targets_file)

    def _post_pod_status(self, pod: _Pod, item: dict[str, Any], container: dict[str, Any], ready: bool) -> None:
        from kubernetes.client.rest import ApiException

        process = pod.process
        assert process is not None
        ts = now_rfc3339()
        started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=time.monotonic() - process.started)
        flag = "True" if ready else "False"
        conditions = [{"type": t, "status": "True", "lastTransitionTime": ts, "lastProbeTime": None} for t in ("PodReadyToStartContainers", "Initialized", "PodScheduled")]
        conditions += [{"type": t, "status": flag, "lastTransitionTime": ts, "lastProbeTime": None, **({} if ready else {"reason": "ContainersNotReady"})}
                       for t in ("ContainersReady", "Ready")]
        status = {
            "phase": "Running", "conditions": conditions, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": item["status"].get("startTime") or ts,
            "containerStatuses": [{
                "name": container.get("name", "vllm"), "image": container.get("image", ""), "imageID": f"local-process://{container.get('image', '')}",
                "containerID": f"local-process://{process.popen.pid}", "ready": ready, "started": ready, "restartCount": pod.restarts,
                "state": {"running": {"startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ")}},
            }],
        }
        try:
            self._core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})
            pod.marked_ready = ready
            log.info("pod %s/%s Running, Ready=%s", pod.namespace, pod.name, ready)
        except ApiException as error:
            if error.status != 404:
                self.errors.append(f"status {pod.namespace}/{pod.name}: {error.status} {error.reason}")

    def _delete_pod(self, namespace: str, name: str, uid: str) -> None:
        from kubernetes.client.rest import ApiException

        client = self._client
        try:
            # grace 0 goes in the body: the API server ignores query parameters when a body is sent
            self._core.delete_namespaced_pod(name, namespace, body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)))
        except ApiException as error:
            if error.status not in (404, 409):
                self.errors.append(f"delete {namespace}/{name}: {error.status} {error.reason}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def put_traffic(url: str, changes: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/sim/traffic", data=json.dumps(changes).encode(), method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def get_json(url: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}{path}", timeout=10) as response:
        return json.load(response)
