"""Who the health loop judges (every serving in the cache, none while peering pauses the replica, none before it
serves), and when availability is followed into status."""

from __future__ import annotations

import asyncio

import kopf
from kopf._cogs.aiokits import aiotoggles

from specserve.cluster import availability, health_loop, indexes
from specserve.observation import metrics
from specserve.observation.poller import Poller
from tests.helpers import serving


def snapshot(name: str, namespace: str = "team") -> dict:
    body = serving(name=name, gpu={"count": 1, "product": "L40S"})
    body["metadata"].update(namespace=namespace, generation=1, uid=f"uid-{name}")
    body["status"] = {"observedGeneration": 1, "conditions": [{"type": "Accepted", "status": "True", "reason": "Applied", "message": "", "observedGeneration": 1}]}
    return indexes.serving_snapshot(body)


def loop_over(*names: str) -> health_loop.HealthLoop:
    poller = Poller(lambda *_: {}, metrics.Labels("namespace", "serving", "role"), 15)
    loop = health_loop.HealthLoop(poller, kopf.Memo())
    loop.cache = indexes.Cache({("team", n): [indexes.compact(snapshot(n))] for n in names}, {}, {})
    return loop


def test_every_watched_serving_is_a_member():
    assert loop_over("b", "a").members() == [("team", "a"), ("team", "b")]


def test_members_are_subscribed_at_their_window_and_a_serving_gone_from_the_index_is_forgotten():
    loop = loop_over("a", "b")
    loop.evaluated[("team", "b")] = 1.0
    loop.subscribe_members()
    assert set(loop.poller.subscribers) == {("team", "a"), ("team", "b")}
    loop.cache = indexes.Cache({("team", "a"): [indexes.compact(snapshot("a"))]}, {}, {})
    loop.subscribe_members()
    assert set(loop.poller.subscribers) == {("team", "a")} and loop.evaluated == {}


def test_a_paused_replica_judges_nothing_and_stops_polling_until_resumed():
    async def main() -> None:
        pause = aiotoggles.ToggleSet(any)  # as Kopf's running.spawn_tasks makes it, through the counted class
        peer_is_senior = await pause.make_toggle(False, name="peering")
        loop = loop_over("a")
        loop.subscribe_members()
        assert not indexes.operator_paused() and loop.members() == [("team", "a")]
        await peer_is_senior.turn_to(True)
        loop.subscribe_members()
        assert indexes.operator_paused() and loop.members() == [] and loop.poller.subscribers == {}
        await peer_is_senior.turn_to(False)
        assert loop.members() == [("team", "a")]

    asyncio.run(main())


class RecordingKube:
    """Stands in for kube.Kube where only the status writes matter."""

    def __init__(self) -> None:
        self.written: list[tuple[str, str]] = []
        self.last: dict | None = None  # what build() gave at the last write: None when it found nothing to write

    async def update_serving_status(self, namespace: str, name: str, build, known=None, **_) -> dict | None:
        self.written.append((namespace, name))
        self.last = build((known or {}).get("status") or {})
        return self.last


def available_deployment(name: str) -> dict:
    return indexes.summary({
        "kind": "Deployment", "metadata": {"name": name, "namespace": "team", "generation": 1, "ownerReferences": [{"uid": f"uid-{name}"}]},
        "spec": {"replicas": 1}, "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
    })


def judged_writes(deployments: dict) -> list:
    loop = loop_over("a")
    loop.cache = indexes.Cache({("team", "a"): [indexes.compact(snapshot("a"))]}, deployments, {})
    loop.memo["kube"] = RecordingKube()
    asyncio.run(loop.judge(("team", "a"), metrics.MetricsError("ConnectionError: refused")))
    return loop.memo["kube"].written


def test_a_new_serving_whose_pods_are_starting_is_not_judged():
    assert judged_writes({}) == []


def test_a_new_serving_is_judged_once_its_deployment_is_available():
    assert judged_writes({("team", "a"): [available_deployment("a")]}) == [("team", "a")]


def test_availability_is_not_written_before_reconcile_recorded_the_serving():
    from specserve import api
    from specserve.rendering import manifests

    body = snapshot("a")
    body["status"] = {}  # created, not reconciled yet: its first status is reconcile's
    kube = RecordingKube()
    cache = indexes.Cache({("team", "a"): [indexes.compact(body)]}, {("team", "a"): [available_deployment("a")]}, {})
    spec = api.SpeculativeServingSpec.model_validate(body["spec"])
    asyncio.run(availability.refresh_availability(kube, body, spec, manifests.DecisionState(), cache))
    assert kube.written == [("team", "a")] and kube.last is None


def test_availability_is_written_once_reconcile_recorded_the_serving():
    from specserve import api
    from specserve.rendering import manifests

    body = snapshot("a")
    kube = RecordingKube()
    cache = indexes.Cache({("team", "a"): [indexes.compact(body)]}, {("team", "a"): [available_deployment("a")]}, {})
    spec = api.SpeculativeServingSpec.model_validate(body["spec"])
    asyncio.run(availability.refresh_availability(kube, body, spec, manifests.DecisionState(), cache))
    assert kube.last["phase"] == "Ready"


class GoneKube(RecordingKube):
    async def update_serving_status(self, namespace: str, name: str, build, known=None, **_) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        raise ApiException(status=404, reason="Not Found")


def test_a_serving_the_api_server_no_longer_has_is_forgotten():
    loop = loop_over("a")
    loop.cache = indexes.Cache(None, None, None)
    loop.cache.observe("ADDED", snapshot("a"))
    loop.cache.deployments.put(("team", "a"), "a", available_deployment("a"))
    loop.memo["kube"] = GoneKube()
    asyncio.run(loop.judge(("team", "a"), metrics.MetricsError("ConnectionError: refused")))
    assert loop.members() == []
