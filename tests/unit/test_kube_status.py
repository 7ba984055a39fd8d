"""Kube.update_serving_status: writers of one serving take turns and start from the newest copy this process knows."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes.client.exceptions import ApiException

from specserve.cluster import kube


class FakeServer:
    """A serving's status behind a resourceVersion guard, as the API server keeps it."""

    def __init__(self, rv: int = 10) -> None:
        self.rv, self.status = rv, {}
        self.calls: list[tuple[str, Any]] = []

    def body(self) -> dict[str, Any]:
        return {"metadata": {"name": "s", "namespace": "ns", "resourceVersion": str(self.rv)}, "status": dict(self.status)}

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        await asyncio.sleep(0)  # let other writers run in between, as a real call would
        self.calls.append((method, (kwargs.get("body") or {}).get("metadata", {}).get("resourceVersion")))
        if method == "GET":
            return self.body()
        sent = kwargs["body"]
        if sent["metadata"]["resourceVersion"] != str(self.rv):
            raise ApiException(status=409, reason="Conflict")
        self.status.update(sent["status"])
        self.rv += 1
        return self.body()


def client(server: FakeServer) -> kube.Kube:
    c = kube.Kube(client=None, threads=1)  # type: ignore[arg-type]
    c.call = server.call  # type: ignore[method-assign]
    return c


def set_phase(phase: str):
    def build(latest: dict[str, Any]) -> dict[str, Any] | None:
        return None if latest.get("phase") == phase else {"phase": phase}

    return build


def test_a_second_writer_with_a_stale_watched_copy_starts_from_this_process_s_own_write():
    server = FakeServer()
    c = client(server)
    stale = server.body()
    assert asyncio.run(c.update_serving_status("ns", "s", set_phase("Progressing"), known=stale)) == {"phase": "Progressing"}
    # The watch has not delivered the write yet: the next writer still holds rv 10, but writes on rv 11.
    assert asyncio.run(c.update_serving_status("ns", "s", set_phase("Ready"), known=stale)) == {"phase": "Ready"}
    assert [m for m, _ in server.calls] == ["PATCH", "PATCH"]  # no conflict, no GET
    assert server.status["phase"] == "Ready"


def test_a_change_already_written_by_another_writer_is_not_written_again():
    server = FakeServer()
    c = client(server)
    stale = server.body()

    async def burst() -> list[Any]:
        return await asyncio.gather(*(c.update_serving_status("ns", "s", set_phase("Ready"), known=stale) for _ in range(5)))

    results = asyncio.run(burst())
    assert results.count({"phase": "Ready"}) == 1 and results.count(None) == 4
    assert [m for m, _ in server.calls] == ["PATCH"]
    assert c._turns == {}  # the per-serving turn is dropped once nobody waits


def test_a_newer_watched_copy_wins_and_a_conflict_reads_again():
    server = FakeServer()
    c = client(server)
    asyncio.run(c.update_serving_status("ns", "s", set_phase("Progressing"), known=server.body()))
    server.rv += 5  # another writer (Kopf's annotations, another replica) moved the serving on
    server.status["phase"] = "Degraded"
    # The watch delivered it: its copy is newer than this process's own write and is used as is.
    assert asyncio.run(c.update_serving_status("ns", "s", set_phase("Ready"), known=server.body())) == {"phase": "Ready"}
    assert c._written[("ns", "s")]["metadata"]["resourceVersion"] == str(server.rv)
    server.rv += 1  # moved on again, not yet watched: the first attempt conflicts, the second reads
    server.calls.clear()
    assert asyncio.run(c.update_serving_status("ns", "s", set_phase("Progressing"), known={"metadata": {"resourceVersion": "1"}, "status": {}})) == {"phase": "Progressing"}
    assert [m for m, _ in server.calls] == ["PATCH", "GET", "PATCH"]


def test_a_serving_gone_returns_none_and_forgets_it():
    server = FakeServer()
    c = client(server)
    asyncio.run(c.update_serving_status("ns", "s", set_phase("Progressing"), known=server.body()))

    async def gone(kind: Any, namespace: str, name: str) -> None:
        return None

    c.get = gone  # type: ignore[method-assign]
    assert asyncio.run(c.update_serving_status("ns", "s", set_phase("Ready"))) is None
    assert ("ns", "s") not in c._written


def test_the_own_copy_is_dropped_once_the_watch_delivers_that_version():
    server = FakeServer()
    c = client(server)
    asyncio.run(c.update_serving_status("ns", "s", set_phase("Progressing"), known=server.body()))
    c.watched("ns", "s", {"metadata": {"resourceVersion": "10"}})  # older than the write: still needed
    assert ("ns", "s") in c._written
    c.watched("ns", "s", server.body())
    assert ("ns", "s") not in c._written


def test_the_own_copy_of_a_deleted_serving_is_dropped():
    server = FakeServer()
    c = client(server)
    asyncio.run(c.update_serving_status("ns", "s", set_phase("Progressing"), known=server.body()))
    c.watched("ns", "s", None)
    assert ("ns", "s") not in c._written


class VanishingServer(FakeServer):
    """The serving conflicts once, then reads as not found: what a CRD created again answers for a moment."""

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if method == "GET":
            self.calls.append((method, None))
            raise ApiException(status=404, reason="Not Found")
        self.calls.append((method, kwargs["body"]["metadata"]["resourceVersion"]))
        raise ApiException(status=409, reason="Conflict")


def test_a_serving_the_watch_still_has_is_not_taken_for_gone_when_a_read_finds_none():
    server = VanishingServer()
    c = client(server)
    assert asyncio.run(c.update_serving_status("ns", "s", set_phase("Progressing"), known=server.body())) is None  # by default: gone
    try:
        asyncio.run(c.update_serving_status("ns", "s", set_phase("Progressing"), known=server.body(), required=True))
    except ApiException as error:
        assert error.status == 404 and "though the watch still has it" in str(error.reason)
    else:
        raise AssertionError("a required status write gave up silently")
