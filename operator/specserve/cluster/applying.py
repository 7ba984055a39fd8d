"""Apply rendered objects in order, remember what each apply wrote, and name the object the API server refused.

One path for reconcile, the health loop and drift repair: what was applied unchanged is not written again.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import urllib3
from kubernetes.client.exceptions import ApiException

from specserve.rendering.manifests import SERVING_LABEL

# The object itself is wrong (schema, admission): retrying the same object cannot help, a spec change may.
REFUSING_STATUSES = frozenset({400, 404, 405, 413, 415, 422})
API_UNREACHABLE = (ApiException, urllib3.exceptions.HTTPError, OSError)  # what a call may raise in an outage
FIRST_RETRY_SECONDS = 10.0
LONGEST_RETRY_SECONDS = 600.0


class Applier(Protocol):
    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...


def describe(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def fingerprint(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def api_message(error: ApiException) -> str:
    """The API server's own one-line message (its Status.message), else the HTTP reason."""
    try:
        return str(json.loads(error.body).get("message", error.reason))
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


def short_error(error: BaseException) -> str:
    """An API error in one line: the status and the API server's message, or the connection error."""
    if isinstance(error, ApiException):
        return f"{error.status} {api_message(error)}"
    return f"{type(error).__name__}: {error}"[:300]


def ledger_of(memo: MutableMapping[str, Any]) -> "Ledger":
    """The operator's one ledger, kept in Kopf's memo."""
    ledger: Ledger = memo.setdefault("ledger", Ledger())
    return ledger


@dataclass
class Ledger:
    """What this process last applied successfully, per serving and object: an identical object is not applied
    again. Entries are forgotten when the live object is seen to differ (drift), was deleted, or an apply of it
    failed; a restarted operator starts empty and applies once."""

    applied: dict[tuple[str, str], dict[tuple[str, str], str]] = field(default_factory=dict)

    @staticmethod
    def _keys(obj: dict[str, Any]) -> tuple[tuple[str, str], tuple[str, str]]:
        meta = obj["metadata"]
        return (meta["namespace"], (meta.get("labels") or {}).get(SERVING_LABEL, "")), (obj["kind"], meta["name"])

    def holds(self, obj: dict[str, Any]) -> bool:
        serving, name = self._keys(obj)
        return self.applied.get(serving, {}).get(name) == fingerprint(obj)

    def knows(self, obj: dict[str, Any]) -> bool:
        """Whether this process applied some version of the object (not necessarily this one)."""
        serving, name = self._keys(obj)
        return name in self.applied.get(serving, {})

    def record(self, obj: dict[str, Any]) -> None:
        serving, name = self._keys(obj)
        self.applied.setdefault(serving, {})[name] = fingerprint(obj)

    def forget(self, obj: dict[str, Any]) -> None:
        serving, name = self._keys(obj)
        self.applied.get(serving, {}).pop(name, None)

    def forget_serving(self, namespace: str, serving: str) -> None:
        self.applied.pop((namespace, serving), None)


class ApplyFailed(Exception):
    """The API server did not take one of the rendered objects; says which, why, and what went in before it."""

    def __init__(self, obj: dict[str, Any], error: ApiException, written: list[str], unchanged: list[str]) -> None:
        self.object = describe(obj)
        self.status = error.status
        self.api_message = api_message(error)
        self.written = written
        self.unchanged = unchanged
        super().__init__(self.cause)

    @property
    def refused(self) -> bool:
        """The object itself was refused: the same object will be refused again."""
        return self.status in REFUSING_STATUSES

    @property
    def cause(self) -> str:
        """What failed, in the API server's words: the same cause gives the same text, whatever the attempt."""
        return f"the API server {'rejected' if self.refused else 'did not take'} {self.object} ({self.status}): {self.api_message}"

    def progress(self) -> str:
        """What is in place despite the failure."""
        parts = []
        if self.written:
            parts.append(f"applied before it: {', '.join(self.written)}")
        if self.unchanged:
            parts.append(f"already current: {', '.join(self.unchanged)}")
        return "; ".join(parts) or "nothing applied"


@dataclass(frozen=True)
class Applied:
    """One pass over the rendered objects: what was written and what was already as rendered."""

    written: list[str]
    unchanged: list[str]
    responses: list[dict[str, Any]] = field(default_factory=list)  # the API server's copies of what was written


async def apply_all(client: Applier, objects: list[dict[str, Any]], ledger: Ledger, live: Callable[[dict[str, Any]], bool] = lambda _: False) -> Applied:
    """Server-side apply each object not already as rendered, in order; stops at the first failure with
    ApplyFailed. An object is as rendered when this process applied it unchanged (the ledger) or, for an object
    this process has not applied yet (after a start), when the watched live copy carries the same rendered hash
    (`live`). Once this process has applied another version, the watch may still show an older copy, so only
    the ledger is trusted."""
    done = Applied([], [])
    for obj in objects:
        if ledger.holds(obj) or (not ledger.knows(obj) and live(obj)):
            done.unchanged.append(describe(obj))
            continue
        try:
            done.responses.append(await client.apply(obj))
        except ApiException as error:
            ledger.forget(obj)
            raise ApplyFailed(obj, error, done.written, done.unchanged) from error
        ledger.record(obj)
        done.written.append(describe(obj))
    return done


def retry_delay(attempt: int, first: float = FIRST_RETRY_SECONDS, longest: float = LONGEST_RETRY_SECONDS, jitter: float = 0.1) -> float:
    """Exponential backoff: first, 2x first, 4x first ... up to longest, spread by +-jitter so that many
    servings failing together do not retry together."""
    base = min(longest, first * 2 ** max(0, attempt))
    return round(base * random.uniform(1 - jitter, 1 + jitter), 1)
