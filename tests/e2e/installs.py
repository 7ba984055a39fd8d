"""Installing specserve the ways a user does - kubectl, kustomize, the Helm chart - on a real cluster, and removing it again.

Shared by test_install.py and test_uninstall.py: kubectl as a subprocess, the chart rendered by the real Helm engine, ServiceAccount kubeconfigs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from tests.helpers import ROOT
from tests.install import tools

CRDS = ROOT / "crds"
CRD_COPIES = (ROOT / "manifests" / "crds", ROOT / "charts" / "specserve" / "crds")
SERVING_CRD = "speculativeservings.specserve.dev"
INSTALL_GUIDE = ROOT / "docs" / "install.md"


def kubectl(*args: str, stdin: str | None = None, kubeconfig: Path | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`kubectl ARGS` from the repository root, as a user runs it; with check, a non-zero exit fails with kubectl's own words."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)} if kubeconfig else None
    result = subprocess.run([tools.binary("kubectl"), *args], input=stdin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
    return result


def wait_established(*crds: str, timeout: float = 60) -> None:
    """Until every named CRD (crd/NAME) is Established. Not `kubectl wait`: it fails outright while a brand-new
    CRD's status.conditions is still null ("accessor error: <nil>"), as it is for a moment on a fresh API server."""
    deadline = time.monotonic() + timeout
    pending = list(crds)
    while pending:
        live = json.loads(kubectl("get", *pending, "-o", "json").stdout)
        items = live["items"] if "items" in live else [live]
        done = {f"crd/{i['metadata']['name']}" for i in items if any(
            c["type"] == "Established" and c["status"] == "True" for c in (i.get("status") or {}).get("conditions") or [])}
        pending = [c for c in pending if c not in done]
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"not Established within {timeout}s: {', '.join(pending)}")
        time.sleep(0.3 if pending else 0)


def shell(script: str, timeout: float = 120, meanwhile: Callable[[], None] | None = None) -> str:
    """A documented command block, run by bash exactly as written (kubectl from PATH, or where pip put it); its output.

    MEANWHILE, if given, is called every 0.2 s while the commands run (to play the part of the cluster's other actors).
    """
    kubectl_dir = str(Path(tools.binary("kubectl")).parent)
    env = {**os.environ, "PATH": os.pathsep.join([os.environ.get("PATH", ""), kubectl_dir])}
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], stdout=output, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if meanwhile is not None:
                meanwhile()
            time.sleep(0.2)
        if process.poll() is None:
            process.kill()
        process.wait()
        output.seek(0)
        text = output.read()
    assert process.returncode == 0, f"documented commands exited {process.returncode} (-9: killed after {timeout:.0f}s):\n{script}\n{text}"
    return text


def yaml_stream(objects: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(obj, sort_keys=False) for obj in objects)


def namespace_object(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def existing(objects: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Which of OBJECTS the API server has now (kinds it does not serve count as absent)."""
    if not objects:
        return set()
    result = kubectl("get", "-f", "-", "--ignore-not-found", "-o", "json", stdin=yaml_stream(objects), check=False)
    if not result.stdout.strip():
        assert result.returncode == 0 or "the server doesn't have a resource type" in result.stderr or "no matches for kind" in result.stderr, result.stderr
        return set()
    found = json.loads(result.stdout)
    return {key(item) for item in found.get("items", [found] if "kind" in found and found["kind"] != "List" else [])}


def delete(objects: list[dict[str, Any]], timeout: float = 120) -> None:
    """Deletes OBJECTS and waits until they are gone (namespaces included), CRDs last so nothing loses its kind first."""
    if not objects:
        return
    ordered = sorted(objects, key=lambda o: o["kind"] == "CustomResourceDefinition")
    kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=true", f"--timeout={int(timeout)}s", stdin=yaml_stream(ordered), timeout=timeout + 30)


class Created:
    """The objects a test creates; `cleanup()` deletes them when the test ends, whatever happened."""

    def __init__(self) -> None:
        self.objects: list[dict[str, Any]] = []
        self.before: set[tuple[str, str, str]] = set()

    def expect(self, objects: list[dict[str, Any]]) -> None:
        """OBJECTS are about to be applied; those that already exist now (another install's) are left in place afterwards."""
        self.before |= existing(objects)
        self.objects += objects

    def own(self, objects: list[dict[str, Any]]) -> None:
        """OBJECTS were made by this test under names of its own: always deleted."""
        self.objects += objects


@contextlib.contextmanager
def cleanup() -> Iterator[Created]:
    """Deletes what the block created and waits until it is gone (namespaces too), so the cluster can be reused.

    The SpeculativeServing CRD is never deleted: the session's other e2e tests need it (test_uninstall.py re-installs it).
    """
    created = Created()
    try:
        yield created
    finally:
        doomed = {key(o): o for o in created.objects if key(o) not in created.before and key(o) != ("CustomResourceDefinition", "", SERVING_CRD)}
        delete(list(doomed.values()))


def apply_server_side(objects: list[dict[str, Any]]) -> str:
    """`kubectl apply --server-side -f -`: CRDs first, waited for until Established, then everything else, as Helm orders them."""
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    output = ""
    if crds:
        output += kubectl("apply", "--server-side", "-f", "-", stdin=yaml_stream(crds)).stdout
        names = [f"crd/{c['metadata']['name']}" for c in crds]
        wait_established(*names)
    if rest:
        output += kubectl("apply", "--server-side", "-f", "-", stdin=yaml_stream(rest)).stdout
    return output


@dataclass
class RenderedChart:
    """What `helm install RELEASE charts/specserve -n NAMESPACE` would send: the chart's CRDs and its rendered templates."""

    release: str
    namespace: str
    crds: list[dict[str, Any]]
    templates: list[dict[str, Any]]

    @property
    def objects(self) -> list[dict[str, Any]]:
        return self.crds + self.templates

    def one(self, kind: str) -> dict[str, Any]:
        return tools.one(self.templates, kind)

    def find(self, kind: str) -> list[dict[str, Any]]:
        return tools.find(self.templates, kind)


def render_chart(release: str, namespace: str, values: dict[str, Any]) -> RenderedChart:
    """The real Helm engine (helm-python-sdk): templates as `helm template` renders them, CRDs as Helm loads them from crds/."""
    helm = tools.module("helm_python", "helm-python-sdk")
    with helm.Chart.load(str(tools.CHART)) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
        crds = [doc for c in chart.crds for doc in yaml.safe_load_all(c["data"]) if doc]
    templates = [doc for path, text in sorted(rendered.items()) if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]
    return RenderedChart(release, namespace, crds, templates)


def service_account_kubeconfig(namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig holding only a fresh token of ACCOUNT and the admin kubeconfig's server and CA: what a pod of that account has."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    current = json.loads(kubectl("config", "view", "--minify", "--raw", "-o", "json").stdout)
    (cluster,) = current["clusters"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": {k: v for k, v in cluster["cluster"].items() if k in {"server", "certificate-authority-data", "certificate-authority", "tls-server-name"}}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "cluster", "user": account, "namespace": namespace}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def container_command(deployment: dict[str, Any], pod_name: str) -> tuple[list[str], dict[str, str]]:
    """The operator container's `specserve` arguments (after `run`) and environment, as the kubelet would start it."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = list(container.get("args", []))
    assert args[:1] == ["run"], f"the image's entrypoint is `specserve`; the chart should start `specserve run`, not {args}"
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = pod_name
        else:
            raise AssertionError(f"no way to resolve env var {var} outside a pod")
    return args[1:], env


def rbac_wildcards(objects: list[dict[str, Any]]) -> list[str]:
    """Every rule of every Role and ClusterRole that grants '*' in apiGroups, resources or verbs."""
    return [
        f"{role['kind']}/{role['metadata']['name']}: {rule}"
        for role in objects
        if role["kind"] in {"Role", "ClusterRole"}
        for rule in role.get("rules", [])
        if "*" in rule.get("apiGroups", []) + rule.get("resources", []) + rule.get("verbs", [])
    ]


def documented_commands(section: str, containing: str) -> str:
    """The `sh` block of docs/install.md under heading SECTION that contains CONTAINING: the commands a user copies."""
    text = INSTALL_GUIDE.read_text()
    match = re.search(rf"^#{{2,4}} {re.escape(section)}\n(.*?)(?=^#{{2,4}} [A-Z]|\Z)", text, re.S | re.M)
    assert match, f"docs/install.md has no section {section!r}"
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", match.group(1), re.S) if containing in b]
    assert len(blocks) == 1, f"docs/install.md, {section}: expected one sh block with {containing!r}, found {len(blocks)}"
    return blocks[0]
