"""The operator's start-up read on a real API server: every managed object found, Services read as metadata only.

Runs against the cluster in KUBECONFIG with the operator as a real process (conftest); nothing is mocked.
"""

from __future__ import annotations

import asyncio

from specserve.cluster import indexes
from specserve.cluster import kube as k
from specserve.rendering import manifests
from tests.e2e.cluster import create, eventually, get
from tests.helpers import serving


def test_fill_holds_each_services_rendered_hash_under_its_serving(kube, namespace, operator):
    create(kube, namespace, serving("fill-read", namespace, gpu={"count": 1, "product": "L40S"}))
    live = eventually(lambda: get(kube, k.SERVICES, namespace, "fill-read"), timeout=90)
    cache = indexes.Cache()
    found = asyncio.run(cache.fill(kube, [namespace], chunk=1))  # a page per object: the continue tokens are followed
    (service,) = [o for o in cache.owned(namespace, "fill-read") if o["kind"] == "Service"]
    assert found["services"] >= 1
    assert service["metadata"]["annotations"][manifests.RENDERED_HASH_ANNOTATION] == live["metadata"]["annotations"][manifests.RENDERED_HASH_ANNOTATION]
    assert service["metadata"]["ownerReferences"] == [{"uid": ref["uid"]} for ref in live["metadata"]["ownerReferences"]]


def test_a_metadata_only_page_carries_no_spec(kube, namespace, operator):
    create(kube, namespace, serving("fill-meta", namespace, gpu={"count": 1, "product": "L40S"}))
    eventually(lambda: get(kube, k.SERVICES, namespace, "fill-meta"), timeout=90)

    async def first_page() -> list[dict]:
        async for page in kube.pages(k.SERVICES, namespace, indexes.MANAGED, 500, metadata_only=True):
            return page
        return []

    page = asyncio.run(first_page())
    assert page and all(set(item) <= {"kind", "apiVersion", "metadata"} for item in page)
