"""indexes.Cache: what the watches know, filled from paged LISTs at start-up and kept by watch events."""

from __future__ import annotations

import asyncio

from specserve.cluster import indexes, kube


def deployment(name: str, serving: str, namespace: str = "team", uid: str = "u-1") -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "generation": 1, "labels": {"specserve.dev/serving": serving}, "ownerReferences": [{"uid": uid}]},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "vllm", "args": ["--model", "m"] * 200}]}}},
        "status": {"availableReplicas": 1},
    }


def serving_body(name: str, namespace: str = "team") -> dict:
    return {"kind": "SpeculativeServing", "metadata": {"name": name, "namespace": namespace, "uid": f"u-{name}", "managedFields": [{"manager": "kubectl"}]}, "spec": {"target": {"model": "m"}}, "status": {"phase": "Ready"}}


def test_an_owned_object_is_kept_under_its_serving_as_a_summary():
    cache = indexes.Cache()
    cache.observe("ADDED", deployment("llama", "llama"))
    (kept,) = cache.deployments_of("team", "llama", "u-1")
    assert kept["status"] == {"availableReplicas": 1} and kept["spec"] == {"replicas": 1}


def test_a_deleted_object_is_forgotten():
    cache = indexes.Cache()
    cache.observe(None, deployment("llama", "llama"))
    cache.observe("DELETED", deployment("llama", "llama"))
    assert cache.deployments_of("team", "llama") == [] and ("team", "llama") not in cache.deployments


def test_an_object_relabelled_to_another_serving_moves():
    cache = indexes.Cache()
    cache.observe(None, deployment("shared", "a"))
    cache.observe("MODIFIED", deployment("shared", "b"))
    assert cache.deployments_of("team", "a") == [] and len(cache.deployments_of("team", "b")) == 1


def test_a_serving_is_kept_without_its_managed_fields_and_forgotten_when_deleted():
    cache = indexes.Cache()
    cache.observe(None, serving_body("llama"))
    assert "managedFields" not in cache.serving("team", "llama")["metadata"] and list(cache.servings) == [("team", "llama")]
    cache.observe("DELETED", serving_body("llama"))
    assert cache.serving("team", "llama") is None


class PagingKube:
    """Answers LISTs from fixed pages, recording each request."""

    def __init__(self, items: dict[str, list[dict]], namespaces: list[str] = ()) -> None:
        self.items, self.namespaces, self.requests = items, list(namespaces), []

    async def call(self, method: str, path: str, query=(), accept: str = "application/json") -> dict:
        self.requests.append((path, {**dict(query), "accept": accept}))
        if path == "/api/v1/namespaces":
            return {"items": [{"metadata": {"name": n}} for n in self.namespaces]}
        plural = path.rsplit("/", 1)[1]
        start = int(dict(query).get("continue", 0))
        limit = int(dict(query).get("limit", 10**9))
        page = self.items.get(plural, [])[start : start + limit]
        rest = start + limit < len(self.items.get(plural, []))
        return {"items": page, "metadata": {"continue": str(start + limit) if rest else None}}

    pages = kube.Kube.pages


def test_fill_reads_every_kind_a_page_at_a_time():
    deployments = [deployment(f"d{i}", f"s{i}") for i in range(5)]
    for d in deployments:
        del d["kind"]  # LIST items carry no kind
    client = PagingKube({"speculativeservings": [serving_body("s0")], "deployments": deployments})
    found = asyncio.run(indexes.Cache().fill(client, [], chunk=2))
    assert found == {"speculativeservings": 1, "deployments": 5, "services": 0}
    deployment_pages = [q for path, q in client.requests if path.endswith("/deployments")]
    assert len(deployment_pages) == 3 and all(q["limit"] == 2 for q in deployment_pages)
    assert all(q["labelSelector"] == "app.kubernetes.io/managed-by=specserve" for q in deployment_pages)


def test_fill_reads_services_as_metadata_only():
    service = {"metadata": {"name": "llama", "namespace": "team", "labels": {"specserve.dev/serving": "llama"}, "ownerReferences": [{"uid": "u-1"}]}}
    client = PagingKube({"services": [service]})
    cache = indexes.Cache()
    asyncio.run(cache.fill(client, [], chunk=500))
    accepts = {path.rsplit("/", 1)[1]: q["accept"] for path, q in client.requests}
    assert accepts["services"] == kube.METADATA_ONLY and accepts["deployments"] == "application/json"
    assert [o["kind"] for o in cache.owned("team", "llama", "u-1")] == ["Service"]


def test_fill_lists_across_namespaces_when_cluster_wide():
    client = PagingKube({})
    asyncio.run(indexes.Cache().fill(client, [], chunk=500))
    assert {path for path, _ in client.requests} == {"/apis/specserve.dev/v1alpha1/speculativeservings", "/apis/apps/v1/deployments", "/api/v1/services"}


def test_namespace_patterns_are_matched_as_kopf_matches_them():
    client = PagingKube({}, namespaces=["team-a", "team-b", "team-test", "other"])
    assert asyncio.run(indexes.watched_namespaces(client, ["team-*,!team-test", "exact"])) == ["exact", "team-a", "team-b"]
    assert asyncio.run(indexes.watched_namespaces(client, ["exact"])) == ["exact"]


def test_a_serving_is_handed_out_as_a_fresh_copy():
    cache = indexes.Cache()
    cache.observe("ADDED", serving_body("llama"))
    first = cache.serving("team", "llama")
    first["status"]["phase"] = "Degraded"
    assert cache.serving("team", "llama")["status"] == {"phase": "Ready"}


def test_a_deployment_condition_is_kept_without_its_timestamps():
    body = deployment("llama", "llama")
    body["status"]["conditions"] = [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok",
                                     "lastUpdateTime": "2026-12-02T10:00:00Z", "lastTransitionTime": "2026-12-02T10:00:00Z"}]
    cache = indexes.Cache()
    cache.observe("MODIFIED", body)
    (kept,) = cache.deployments_of("team", "llama")
    assert kept["status"]["conditions"] == [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"}]
