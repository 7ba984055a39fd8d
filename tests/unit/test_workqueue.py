"""workqueue.ServingQueue: servings marked by Kopf's handlers, reconciled in turn by a fixed set of workers."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from specserve.cluster import workqueue

A, B = ("team", "a"), ("team", "b")


class Recorder:
    """A reconcile that records its calls; `gate` holds each call until it is set, `fail` says what to raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, str], int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.running = 0
        self.most_at_once = 0
        self.fail: dict[tuple[str, str], list[Exception]] = {}

    async def __call__(self, key: tuple[str, str], failures: int) -> None:
        self.calls.append((key, failures))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.gate.wait()
            errors = self.fail.get(key)
            if errors:
                raise errors.pop(0)
        finally:
            self.running -= 1


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def until(condition, timeout: float = 5.0) -> None:
    """Wait for what must happen; a loaded machine may take longer than the delays say, never shorter."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def recorder():
    return Recorder()


@pytest.fixture
async def queue(recorder):
    made = workqueue.ServingQueue(recorder, workers=4, error_delays=[0.05, 0.1])
    yield made
    await made.stop()


async def test_a_serving_marked_again_before_its_turn_is_reconciled_once(queue, recorder):
    for _ in range(5):
        queue.mark(A)
    await settle()
    assert recorder.calls == [(A, 0)]


async def test_a_serving_marked_while_it_is_reconciled_is_reconciled_again_after_never_beside(queue, recorder):
    recorder.gate.clear()
    queue.mark(A)
    await settle()
    queue.mark(A)
    queue.mark(A)
    await settle()
    assert recorder.calls == [(A, 0)] and recorder.running == 1
    recorder.gate.set()
    await settle()
    assert recorder.calls == [(A, 0), (A, 0)] and recorder.most_at_once == 1


async def test_no_more_reconciles_run_at_once_than_there_are_workers(queue, recorder):
    recorder.gate.clear()
    for i in range(10):
        queue.mark(("team", f"s{i}"))
    await settle()
    assert recorder.running == 4 and queue.waiting() == 6
    recorder.gate.set()
    await settle()
    assert len(recorder.calls) == 10 and queue.waiting() == 0


async def test_a_temporary_error_is_tried_again_after_its_delay_with_the_failures_counted(queue, recorder):
    recorder.fail[A] = [kopf.TemporaryError("quota", delay=0.5), kopf.TemporaryError("quota", delay=0.01)]
    queue.mark(A)
    await settle(0.1)
    assert recorder.calls == [(A, 0)] and queue.waiting() == 1  # its retry, not before the delay
    await until(lambda: len(recorder.calls) == 3)
    assert recorder.calls == [(A, 0), (A, 1), (A, 2)]
    await until(lambda: queue.waiting() == 0)


async def test_the_failure_count_is_forgotten_at_the_first_success(queue, recorder):
    recorder.fail[A] = [kopf.TemporaryError("quota", delay=0.01)]
    queue.mark(A)
    await until(lambda: len(recorder.calls) == 2 and recorder.running == 0)
    queue.mark(A)
    await until(lambda: len(recorder.calls) == 3)
    assert recorder.calls == [(A, 0), (A, 1), (A, 0)]


async def test_an_unexpected_error_is_tried_again_after_the_error_delays_and_the_others_go_on(queue, recorder):
    recorder.fail[A] = [RuntimeError("surprise"), RuntimeError("surprise again"), RuntimeError("and again")]
    queue.mark(A)
    queue.mark(B)
    await settle(0.02)
    assert sorted(recorder.calls) == [(A, 0), (B, 0)]
    await until(lambda: len(recorder.calls) == 5)  # after 0.05 s, then the longest delay (0.1 s) for each later failure
    assert recorder.calls[2:] == [(A, 1), (A, 2), (A, 3)]
    await until(lambda: queue.waiting() == 0)


async def test_a_new_mark_does_not_wait_for_a_pending_retry(queue, recorder):
    recorder.fail[A] = [kopf.TemporaryError("quota", delay=60)]
    queue.mark(A)
    await settle()
    queue.mark(A)  # a new spec, say
    await settle()
    assert recorder.calls == [(A, 0), (A, 1)] and queue.waiting() == 0


async def test_a_deleted_serving_loses_its_turn(queue, recorder):
    recorder.gate.clear()
    for i in range(4):
        queue.mark(("team", f"s{i}"))  # every worker busy
    queue.mark(A)
    queue.forget(A)
    recorder.gate.set()
    await settle()
    assert len(recorder.calls) == 4 and all(key != A for key, _ in recorder.calls)


async def test_a_deleted_serving_loses_its_retry(queue, recorder):
    recorder.fail[A] = [kopf.TemporaryError("quota", delay=0.2)]
    queue.mark(A)
    await until(lambda: queue.retries)
    queue.forget(A)
    await settle(0.4)
    assert recorder.calls == [(A, 0)] and queue.waiting() == 0


async def test_a_version_already_marked_costs_no_turn(queue, recorder):
    assert queue.mark_changed(A, ("uid-a", 1))
    await settle()
    assert not queue.mark_changed(A, ("uid-a", 1))  # a status write, a re-listing: the same generation
    await settle()
    assert recorder.calls == [(A, 0)]


async def test_a_new_version_is_marked(queue, recorder):
    queue.mark_changed(A, ("uid-a", 1))
    await settle()
    assert queue.mark_changed(A, ("uid-a", 2))  # a spec change
    assert queue.mark_changed(A, ("uid-a2", 1))  # deleted and created again under the same name
    await settle()
    assert recorder.calls == [(A, 0), (A, 0)]  # the two marks came before the second turn: one reconcile


async def test_a_forgotten_serving_is_marked_again_at_any_version(queue, recorder):
    queue.mark_changed(A, ("uid-a", 1))
    await settle()
    queue.forget(A)
    assert queue.mark_changed(A, ("uid-a", 1))
    await settle()
    assert recorder.calls == [(A, 0), (A, 0)]
