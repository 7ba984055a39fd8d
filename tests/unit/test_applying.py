"""The apply path: objects applied in order, unchanged ones not written again, failures naming the object."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specserve.cluster import applying


def obj(kind: str, name: str, serving: str = "llama", **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": "team", "name": name, "labels": {"specserve.dev/serving": serving}}, **extra}


def api_error(status: int, message: str) -> ApiException:
    error = ApiException(status=status, reason="Forbidden" if status == 403 else "Error")
    error.body = json.dumps({"kind": "Status", "message": message})
    return error


class Server:
    """Records applies; refuses the objects named in `failing` with the given error."""

    def __init__(self, failing: dict[str, ApiException] | None = None) -> None:
        self.failing = failing or {}
        self.applied: list[str] = []

    async def apply(self, o: dict[str, Any]) -> dict[str, Any]:
        name = applying.describe(o)
        if name in self.failing:
            raise self.failing[name]
        self.applied.append(name)
        return o


DEPLOYMENT, SERVICE = obj("Deployment", "llama"), obj("Service", "llama")
QUOTA = 'services "llama" is forbidden: exceeded quota: no-services, requested: services=1, used: services=0, limited: services=0'


async def test_objects_are_applied_in_the_order_rendered() -> None:
    server = Server()
    done = await applying.apply_all(server, [DEPLOYMENT, SERVICE], applying.Ledger())
    assert server.applied == ["Deployment/llama", "Service/llama"]
    assert done.written == ["Deployment/llama", "Service/llama"] and done.unchanged == []


async def test_an_object_applied_unchanged_before_is_not_applied_again() -> None:
    server, ledger = Server(), applying.Ledger()
    await applying.apply_all(server, [DEPLOYMENT, SERVICE], ledger)
    done = await applying.apply_all(server, [DEPLOYMENT, SERVICE], ledger)
    assert server.applied == ["Deployment/llama", "Service/llama"]
    assert done.written == [] and done.unchanged == ["Deployment/llama", "Service/llama"]


async def test_a_changed_object_is_applied_again() -> None:
    server, ledger = Server(), applying.Ledger()
    await applying.apply_all(server, [DEPLOYMENT], ledger)
    await applying.apply_all(server, [obj("Deployment", "llama", spec={"replicas": 2})], ledger)
    assert server.applied == ["Deployment/llama", "Deployment/llama"]


async def test_a_forgotten_object_is_applied_again() -> None:
    server, ledger = Server(), applying.Ledger()
    await applying.apply_all(server, [DEPLOYMENT], ledger)
    ledger.forget(DEPLOYMENT)
    await applying.apply_all(server, [DEPLOYMENT], ledger)
    assert server.applied == ["Deployment/llama", "Deployment/llama"]


async def test_forgetting_a_serving_forgets_only_its_objects() -> None:
    server, ledger = Server(), applying.Ledger()
    other = obj("Deployment", "chat", serving="chat")
    await applying.apply_all(server, [DEPLOYMENT, other], ledger)
    ledger.forget_serving("team", "llama")
    assert not ledger.holds(DEPLOYMENT) and ledger.holds(other)


async def test_a_failed_apply_names_the_object_the_api_message_and_what_went_in_before_it() -> None:
    server = Server({"Service/llama": api_error(403, QUOTA)})
    with pytest.raises(applying.ApplyFailed) as failed:
        await applying.apply_all(server, [DEPLOYMENT, SERVICE], applying.Ledger())
    assert failed.value.cause == f"the API server did not take Service/llama (403): {QUOTA}"
    assert failed.value.progress() == "applied before it: Deployment/llama"
    assert not failed.value.refused


async def test_a_retry_after_a_failure_writes_only_what_did_not_go_in() -> None:
    server, ledger = Server({"Service/llama": api_error(500, "etcdserver: request timed out")}), applying.Ledger()
    with pytest.raises(applying.ApplyFailed):
        await applying.apply_all(server, [DEPLOYMENT, SERVICE], ledger)
    with pytest.raises(applying.ApplyFailed) as again:
        await applying.apply_all(server, [DEPLOYMENT, SERVICE], ledger)
    assert server.applied == ["Deployment/llama"]
    assert again.value.progress() == "already current: Deployment/llama"


async def test_a_failed_object_is_not_remembered_as_applied() -> None:
    server, ledger = Server(), applying.Ledger()
    await applying.apply_all(server, [SERVICE], ledger)
    server.failing = {"Service/llama": api_error(500, "boom")}
    changed = obj("Service", "llama", spec={"ports": []})
    with pytest.raises(applying.ApplyFailed):
        await applying.apply_all(server, [changed], ledger)
    assert not ledger.holds(SERVICE) and not ledger.holds(changed)


@pytest.mark.parametrize("status", [400, 422])
def test_an_invalid_object_is_refused_for_good(status: int) -> None:
    failure = applying.ApplyFailed(SERVICE, api_error(status, "spec.ports: Required value"), [], [])
    assert failure.refused
    assert failure.cause.startswith("the API server rejected Service/llama")


@pytest.mark.parametrize("status", [403, 409, 429, 500, 503])
def test_quota_conflicts_and_server_errors_are_retried(status: int) -> None:
    assert not applying.ApplyFailed(SERVICE, api_error(status, "try later"), [], []).refused


def test_the_cause_does_not_depend_on_the_attempt() -> None:
    first = applying.ApplyFailed(SERVICE, api_error(403, QUOTA), ["Deployment/llama"], [])
    later = applying.ApplyFailed(SERVICE, api_error(403, QUOTA), [], ["Deployment/llama"])
    assert first.cause == later.cause


def test_a_message_that_is_not_a_status_falls_back_to_the_http_reason() -> None:
    error = ApiException(status=502, reason="Bad Gateway")
    error.body = "<html>proxy error</html>"
    assert applying.api_message(error) == "Bad Gateway"


def test_retry_delays_double_from_the_first_up_to_the_longest() -> None:
    delays = [applying.retry_delay(attempt, first=10, longest=600, jitter=0) for attempt in range(9)]
    assert delays == [10, 20, 40, 80, 160, 320, 600, 600, 600]


def test_retry_delays_are_spread_by_the_jitter() -> None:
    delays = {applying.retry_delay(3, first=10, longest=600, jitter=0.1) for _ in range(50)}
    assert all(72 <= d <= 88 for d in delays) and len(delays) > 1


async def test_a_watched_copy_with_the_same_hash_is_not_applied_after_a_start() -> None:
    server = Server()
    done = await applying.apply_all(server, [DEPLOYMENT], applying.Ledger(), live=lambda o: True)
    assert server.applied == [] and done.unchanged == ["Deployment/llama"]


async def test_a_watched_copy_is_not_trusted_once_another_version_was_applied() -> None:
    server, ledger = Server(), applying.Ledger()
    changed = obj("Deployment", "llama", spec={"replicas": 2})
    await applying.apply_all(server, [changed], ledger)
    await applying.apply_all(server, [DEPLOYMENT], ledger, live=lambda o: True)  # the watch still shows the first version
    assert server.applied == ["Deployment/llama", "Deployment/llama"]
