"""The serving queue: servings waiting for their turn, taken by a fixed number of workers.

A serving's watch event marks it to be reconciled when its generation is one not marked before, and a Deployment
event marks one whose availability to follow; a worker then reads the newest copy the watch holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence

import kopf

from specserve.cluster.indexes import ServingKey

LOG = logging.getLogger("specserve.reconciling")

Work = Callable[[ServingKey, int], Awaitable[None]]  # (serving, attempts that failed before this one)


class ServingQueue:
    """Marked servings, worked on by `workers` tasks, one serving by one worker at a time; `name` says what the work
    is in task names and log lines ("reconcile").

    A Kopf handler that waits for the API server keeps its event, its body and Kopf's state for it alive: during a
    create of 5,000 servings that was some 4,700 waiting Kopf workers and asyncio tasks (bench/README.md, round 5). Here a
    waiting serving is one key. A serving marked again before its turn is worked on once, from the newest copy;
    one marked while it is being worked on is taken again after. Work that raises kopf.TemporaryError
    is tried again after the error's delay, anything else after the next of `error_delays`; the number of failed
    attempts is passed to the next one and forgotten at the first success. A new mark does not wait for a
    pending retry: it is a change (a new spec, a restart), which may be what the failure needed."""

    def __init__(self, work: Work, workers: int, error_delays: Sequence[float], name: str = "work") -> None:
        self.work, self.workers, self.error_delays, self.name = work, workers, list(error_delays), name
        self.marked: dict[ServingKey, None] = {}  # in order of marking
        self.running: set[ServingKey] = set()
        self.again: set[ServingKey] = set()  # marked while running
        self.failures: dict[ServingKey, int] = {}
        self.retries: dict[ServingKey, asyncio.TimerHandle] = {}
        self.versions: dict[ServingKey, Hashable] = {}  # the version each serving was last marked for
        self.ready = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def mark(self, key: ServingKey) -> None:
        """Work on `key` at its turn. Call it from a Kopf handler the first time: the workers then inherit the
        handler's context, which kopf.event() needs."""
        pending = self.retries.pop(key, None)
        if pending is not None:
            pending.cancel()
        if key in self.running:
            self.again.add(key)
            return
        self.marked[key] = None
        self.ready.set()
        if not self.tasks:
            self.tasks = [asyncio.create_task(self._worker(), name=f"specserve-{self.name}-{i}") for i in range(self.workers)]

    def mark_changed(self, key: ServingKey, version: Hashable) -> bool:
        """Mark `key` unless it was last marked for this same `version` (say its uid and generation): a watch
        event that changed nothing the work reads (a status write, a re-listing) costs no turn."""
        if key in self.versions and self.versions[key] == version:
            return False
        self.versions[key] = version
        self.mark(key)
        return True

    def forget(self, key: ServingKey) -> None:
        """The serving is gone: drop its turn, its retry, its failure count and the version it was marked for."""
        self.versions.pop(key, None)
        self.marked.pop(key, None)
        self.again.discard(key)
        self.failures.pop(key, None)
        pending = self.retries.pop(key, None)
        if pending is not None:
            pending.cancel()

    def waiting(self) -> int:
        return len(self.marked) + len(self.retries)

    async def stop(self) -> None:
        for handle in self.retries.values():
            handle.cancel()
        self.retries.clear()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def _worker(self) -> None:
        while True:
            if not self.marked:
                self.ready.clear()
                await self.ready.wait()
                continue
            key = next(iter(self.marked))
            del self.marked[key]
            self.running.add(key)
            try:
                await self._attempt(key)
            finally:
                self.running.discard(key)
                if key in self.again:
                    self.again.discard(key)
                    self.mark(key)

    async def _attempt(self, key: ServingKey) -> None:
        failures = self.failures.get(key, 0)
        try:
            await self.work(key, failures)
        except kopf.TemporaryError as error:
            LOG.warning("%s/%s: %s failed for now: %s", *key, self.name, error)
            self._retry(key, failures, float(error.delay or self._error_delay(failures)))
        except Exception:  # noqa: BLE001 - one serving's surprise must not stop the others
            delay = self._error_delay(failures)
            LOG.exception("%s/%s: %s failed; trying again in %.0f s", *key, self.name, delay)
            self._retry(key, failures, delay)
        else:
            self.failures.pop(key, None)

    def _retry(self, key: ServingKey, failures: int, delay: float) -> None:
        self.failures[key] = failures + 1
        self.retries[key] = asyncio.get_running_loop().call_later(delay, self._retry_due, key)

    def _retry_due(self, key: ServingKey) -> None:
        if self.retries.pop(key, None) is not None:
            self.mark(key)

    def _error_delay(self, failures: int) -> float:
        return self.error_delays[min(failures, len(self.error_delays) - 1)] if self.error_delays else 60.0
