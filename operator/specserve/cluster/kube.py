"""The operator's own Kubernetes calls: server-side apply, prune, status patches and discovery.

Thin wrapper over the official client; blocking calls run in a thread so Kopf's event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from specserve import api
from specserve.rendering import manifests

API_THREADS = 32  # blocking API calls in flight at once (asyncio's default pool has cores + 4 threads)
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


@dataclass(frozen=True)
class Kind:
    """Where the API serves one kind of object."""

    group: str
    version: str
    plural: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> "Kind":
        group, _, version = obj["apiVersion"].rpartition("/")
        return KINDS[(group, version, obj["kind"])]

    def path(self, namespace: str | None, name: str | None = None) -> str:
        """An object's path, its namespace's collection, or (namespace None) the collection across namespaces."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is None:
            return f"{prefix}/{self.plural}"
        return f"{prefix}/namespaces/{namespace}/{self.plural}" + (f"/{name}" if name else "")


DEPLOYMENTS = Kind("apps", "v1", "deployments")
SERVICES = Kind("", "v1", "services")
POD_MONITORS = Kind("monitoring.coreos.com", "v1", "podmonitors")
SERVINGS = Kind(api.GROUP, api.VERSION, api.PLURAL)
KINDS = {
    ("apps", "v1", "Deployment"): DEPLOYMENTS,
    ("", "v1", "Service"): SERVICES,
    ("monitoring.coreos.com", "v1", "PodMonitor"): POD_MONITORS,
    (api.GROUP, api.VERSION, api.KIND): SERVINGS,
}


class EndlessBackoffs:
    """Kopf's delays between retries of a failed API request, never exhausted: an API server outage of any
    length is waited out (Kopf's default schedule gives up after 54 s, and a watch that gives up ends the
    operator with a traceback)."""

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((1.0, 1.0, 2.0, 3.0), itertools.repeat(5.0))


def new_api_client() -> kubernetes.client.ApiClient:
    """A client configured the same way Kopf logs in: in-cluster service account, else KUBECONFIG."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = API_THREADS
    return kubernetes.client.ApiClient(configuration)


def _revision(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


NO_CLUSTER = "no cluster configured: set KUBECONFIG or run in a pod"


def login_problem() -> str | None:
    """Why new_api_client (the way Kopf logs in too) cannot log in, in one line; None when it can."""
    try:
        new_api_client()
        return None
    except (kubernetes.config.ConfigException, OSError, yaml.YAMLError, ValueError, TypeError) as error:
        kubeconfig = os.environ.get("KUBECONFIG", "")
        paths = [Path(p).expanduser() for p in kubeconfig.split(os.pathsep) if p] or [Path("~/.kube/config").expanduser()]
        if not any(p.is_file() for p in paths):
            return NO_CLUSTER + (f" (KUBECONFIG={kubeconfig} names no file)" if kubeconfig else "")
        where = f"KUBECONFIG={kubeconfig}" if kubeconfig else str(paths[0])
        return f"{where}: unusable kubeconfig: {' '.join(str(error).split())}"


class Kube:
    def __init__(self, client: kubernetes.client.ApiClient, threads: int = API_THREADS) -> None:
        self.client = client
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="specserve-api")
        self._turns: dict[tuple[str, str], list[Any]] = {}  # per serving: [its status-write lock, writers waiting or writing]
        self._written: dict[tuple[str, str], dict[str, Any]] = {}  # per serving: resourceVersion and status of this process's last status write

    def _call(
        self, method: str, path: str, body: Any = None, content_type: str | None = None, query: list[tuple[str, Any]] | None = None, accept: str = "application/json"
    ) -> Any:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.client.param_serialize(
            method=method, resource_path=path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.client.call_api(*request)
        response.read()
        return self.client.response_deserialize(response, {"200": "object", "201": "object", "202": "object"}).data

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(self._call, method, path, **kwargs))

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under specserve's own field manager; other owners' fields are left alone."""
        meta = obj["metadata"]
        path = Kind.of(obj).path(meta["namespace"], meta["name"])
        return await self.call("PATCH", path, body=obj, content_type=APPLY, query=[("fieldManager", manifests.MANAGER), ("force", "true")])

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.call("GET", kind.path(namespace, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def list(self, kind: Kind, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return [item async for page in self.pages(kind, namespace, labels, limit=0) for item in page]

    async def pages(
        self, kind: Kind, namespace: str | None, labels: dict[str, str] | None = None, limit: int = 500, metadata_only: bool = False
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """LIST in pages of `limit` (all at once for 0): one page of parsed objects in memory at a time.
        `metadata_only`: each item is only the object's metadata (the API server's PartialObjectMetadata)."""
        query: list[tuple[str, Any]] = [("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(labels.items())))] if labels else []
        accept = METADATA_ONLY if metadata_only else "application/json"
        token = None
        while True:
            paging = ([("limit", limit)] if limit else []) + ([("continue", token)] if token else [])
            page = await self.call("GET", kind.path(namespace), query=query + paging, accept=accept)
            yield list(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    async def delete(self, kind: Kind, namespace: str, name: str) -> None:
        try:
            await self.call("DELETE", kind.path(namespace, name), body={"propagationPolicy": "Background"})
        except ApiException as error:
            if error.status != 404:
                raise

    async def update_serving_status(
        self,
        namespace: str,
        name: str,
        build: Callable[[dict[str, Any]], dict[str, Any] | None],
        attempts: int = 5,
        known: dict[str, Any] | None = None,
        required: bool = False,
    ) -> dict[str, Any] | None:
        """Read the latest status, let build() derive the new fields from it, and write them guarded by the
        resourceVersion, retrying on conflict: concurrent writers never overwrite each other's conditions.
        `known` (the serving as a watch last saw it) saves the first read; a conflict means it was stale.

        This process's writers of one serving's status (reconcile, availability, health loop) take turns, and
        each starts from the newest copy it knows: the watched one, or the API server's answer to this
        process's own last status write when the watch has not delivered it yet. So a burst of Deployment
        events costs one write per actual change (a writer whose change is already written finds nothing to
        write) instead of a conflict, a GET and a retry per writer.

        `required`: the caller's watch still has the serving, so a read that finds none (the API server answers 404
        for a moment after its CRD was created again) raises instead of taking the serving for gone."""
        key = (namespace, name)
        async with self._status_turn(key):
            for attempt in range(attempts):
                serving = self._newest(key, known) if attempt == 0 and known is not None else None
                if serving is None:
                    serving = self._newest(key, await self.get(SERVINGS, namespace, name))
                if serving is None:
                    self._written.pop(key, None)
                    if required:
                        raise ApiException(status=404, reason=f"{SERVINGS.plural}.{SERVINGS.group} {namespace}/{name} not found, though the watch still has it")
                    return None
                fields = build(serving.get("status") or {})
                if not fields:
                    return None
                body = {"metadata": {"resourceVersion": serving["metadata"].get("resourceVersion")}, "status": fields}
                try:
                    answer = await self.call("PATCH", SERVINGS.path(namespace, name) + "/status", body=body, content_type=MERGE)
                except ApiException as error:
                    if error.status != 409:
                        raise
                    self._written.pop(key, None)  # someone else wrote since: only a fresh read is trusted now
                    continue
                if isinstance(answer, dict) and (answer.get("metadata") or {}).get("resourceVersion"):
                    self._written[key] = {"metadata": {"resourceVersion": answer["metadata"]["resourceVersion"]}, "status": answer.get("status") or {}}
                return fields
        raise ApiException(status=409, reason=f"status of {namespace}/{name} kept changing under {attempts} attempts")

    @contextlib.asynccontextmanager
    async def _status_turn(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """One status writer per serving at a time in this process; the lock is dropped when nobody waits."""
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = [asyncio.Lock(), 0]
        turn[1] += 1
        try:
            async with turn[0]:
                yield
        finally:
            turn[1] -= 1
            if turn[1] == 0:
                self._turns.pop(key, None)

    def _newest(self, key: tuple[str, str], seen: dict[str, Any] | None) -> dict[str, Any] | None:
        """`seen` (watched or read), or this process's last written copy if that is newer. resourceVersions are
        compared as numbers (etcd revisions); should that ever be wrong, the write conflicts and is read again."""
        mine = self._written.get(key)
        if seen is None or mine is None:
            return seen
        newer = _revision(mine) > _revision(seen)
        if not newer:
            self._written.pop(key, None)  # the watch has caught up with (or gone past) what this process wrote
        return mine if newer else seen

    def watched(self, namespace: str, name: str, seen: dict[str, Any] | None) -> None:
        """The watch delivered `seen` (None: the serving is gone): this process's own written copy of its status is
        kept only while it is newer, so thousands of servings do not each keep a second copy of their status."""
        key = (namespace, name)
        mine = self._written.get(key)
        if mine is not None and (seen is None or _revision(mine) <= _revision(seen)):
            del self._written[key]

    async def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether the API server serves a resource (discovery), e.g. PodMonitors."""
        try:
            resources = await self.call("GET", f"/apis/{group}/{version}")
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in resources.get("resources", []))
