"""A private control plane from ../shared/k8s for tests and benchmarks that take the API server away and back.

Own state directory under a temporary directory, five free ports, a fake kubelet, an optional 503-answering front; wiped on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import yaml

from specserve.cluster import kube

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT.parent / "shared" / "k8s"  # beside the repository, as .ci/run and the README use it
PORT_VARIABLES = ("APISERVER_PORT", "ETCD_CLIENT_PORT", "ETCD_PEER_PORT", "CONTROLLER_MANAGER_PORT", "SCHEDULER_PORT")
FAKE_KUBELET_ARGS = "--gpus 64 --max-pods 500"
UP_TIMEOUT_SECONDS = 240.0


def missing() -> str | None:
    """Why no private cluster can be started here, in one line; None when ../shared/k8s is there."""
    if not (K8S_DIR / "up.sh").is_file():
        return f"a private control plane needs ../shared/k8s beside the repository ({K8S_DIR}/up.sh is missing)"
    return None


def require() -> None:
    """For a test module that brings its own cluster: fail in CI (a test that skips there does not exist), skip elsewhere."""
    import pytest

    problem = missing()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


def free_ports(count: int) -> list[int]:
    """COUNT distinct ports nothing listens on right now (all held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@dataclass
class PrivateCluster:
    state: Path
    env: dict[str, str]

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def apiserver_pid_file(self) -> Path:
        return self.state / "run" / "kube-apiserver.pid"

    @property
    def apiserver_log(self) -> Path:
        return self.state / "logs" / "kube-apiserver.log"

    @property
    def operator_env(self) -> dict[str, str]:
        """What a process started against this cluster needs in its environment."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def configuration(self, retries: int | None = None) -> kubernetes.client.Configuration:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        configuration.retries = retries
        return configuration

    def kube(self) -> kube.Kube:
        """specserve's client, logged in to this cluster (not to whatever KUBECONFIG names)."""
        return kube.Kube(kubernetes.client.ApiClient(self.configuration()))

    def ready(self) -> bool:
        """Whether the API server's /readyz answers ok now (one attempt, no retries)."""
        with kubernetes.client.ApiClient(self.configuration(retries=0)) as client:
            try:
                response = client.call_api("GET", f"{client.configuration.host}/readyz", _request_timeout=2)
                response.read()
                return response.status == 200 and response.data == b"ok"
            except Exception:  # noqa: BLE001 - refused, reset, timed out, 5xx: all mean "not ready"
                return False

    def up(self) -> None:
        """up.sh with this cluster's environment: starts what is not running, returns when everything is ready."""
        result = subprocess.run([str(K8S_DIR / "up.sh")], env=self.env, capture_output=True, text=True, timeout=UP_TIMEOUT_SECONDS)
        if result.returncode != 0:
            raise RuntimeError(f"up.sh (K8S_STATE={self.state}) exited {result.returncode}:\n{result.stderr[-3000:]}")

    def down(self) -> None:
        subprocess.run([str(K8S_DIR / "down.sh"), "--wipe"], env=self.env, capture_output=True, text=True, timeout=120)

    @contextlib.contextmanager
    def front(self) -> Iterator["ApiFront"]:
        """An ApiFront of this cluster's API server; point a process at its kubeconfig."""
        front = ApiFront(self)
        try:
            yield front
        finally:
            front.close()

    def apiserver_pid(self) -> int | None:
        try:
            return int(self.apiserver_pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_apiserver(self, grace_seconds: float = 5) -> None:
        """SIGTERM the kube-apiserver, SIGKILL after GRACE_SECONDS, and wait until it is gone and its port is free.

        It stops listening within a second of SIGTERM, then lingers for 60 s in its graceful termination: the grace
        is short so that the process, not only its port, is gone before the test goes on."""
        pid = self.apiserver_pid()
        if pid is None or not _running(pid):
            raise RuntimeError(f"no kube-apiserver runs for {self.state} (pid file {self.apiserver_pid_file})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
            while _running(pid):
                time.sleep(0.1)
        while _listening(int(self.env["APISERVER_PORT"])):
            time.sleep(0.1)

    def start_apiserver(self) -> float:
        """up.sh again (only the API server is missing); returns time.monotonic() when /readyz first answered ok,
        having waited for up.sh itself to finish."""
        process = subprocess.Popen([str(K8S_DIR / "up.sh")], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ready_at = None
        deadline = time.monotonic() + UP_TIMEOUT_SECONDS
        while ready_at is None and time.monotonic() < deadline:
            if self.ready():
                ready_at = time.monotonic()
            elif process.poll() is not None and process.returncode != 0:
                break
            else:
                time.sleep(0.1)
        try:
            _, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        if process.returncode != 0 or ready_at is None:
            raise RuntimeError(f"up.sh (K8S_STATE={self.state}) exited {process.returncode} restarting the API server:\n{stderr[-3000:]}")
        return ready_at


class ApiFront:
    """A TCP front of the API server on its own port: passes connections through (TLS stays end to end) until
    unavailable() is called; from then until available(), it cuts every open connection (watch streams break) and
    answers each request itself, with the API server's certificate, 503 ServiceUnavailable - what a load balancer
    with no healthy API server behind it, or a starting kube-apiserver for a moment, answers."""

    MESSAGE = "no API server available behind the front (test)"

    def __init__(self, cluster: PrivateCluster) -> None:
        self.upstream = ("127.0.0.1", int(cluster.env["APISERVER_PORT"]))
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cluster.state / "pki" / "apiserver.crt", cluster.state / "pki" / "apiserver.key")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.kubeconfig = cluster.state / "kubeconfig-front"
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        for entry in config["clusters"]:
            entry["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.refused = 0  # requests answered with 503
        self._down = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def unavailable(self) -> None:
        with self._lock:
            self._down = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def available(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self._closed = True
        self.unavailable()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            target = self._refuse if self._down else self._relay
            threading.Thread(target=target, args=(client,), daemon=True).start()

    def _refuse(self, client: socket.socket) -> None:
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.MESSAGE,
                           "reason": "ServiceUnavailable", "code": 503}).encode()
        try:
            with self.tls.wrap_socket(client, server_side=True) as conn:
                conn.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                self.refused += 1
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        except (OSError, ssl.SSLError):
            pass

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open |= {client, upstream}
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in selector.select():
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            pass
        finally:
            selector.close()
            with self._lock:
                self._open -= {client, upstream}
            client.close()
            upstream.close()


def _running(pid: int) -> bool:
    """Alive and not a zombie (the API server is detached by setsid; its reaper may be slow or absent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running(attempts: int = 3) -> Iterator[PrivateCluster]:
    """A private control plane with a fake kubelet (64 GPUs, 500 pods) on free ports; down --wipe and removed on exit.

    A port taken by someone else between choosing and starting (up.sh refuses it) means new ports, up to ATTEMPTS times.
    """
    problem = missing()
    if problem:
        raise RuntimeError(problem)
    workdir = Path(tempfile.mkdtemp(prefix="specserve-private-k8s-"))
    cluster = None
    try:
        for attempt in range(1, attempts + 1):
            ports = dict(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES)))))
            env = {**os.environ, **ports, "K8S_STATE": str(workdir / "state"), "FAKE_KUBELET": "1", "FAKE_KUBELET_ARGS": FAKE_KUBELET_ARGS}
            cluster = PrivateCluster(workdir / "state", env)
            try:
                cluster.up()
                break
            except RuntimeError as error:
                cluster.down()
                if "already in use" not in str(error) or attempt == attempts:
                    raise
        yield cluster
    finally:
        if cluster is not None:
            cluster.down()
        shutil.rmtree(workdir, ignore_errors=True)
