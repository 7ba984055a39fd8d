"""Whether the SpeculativeServing CRD is installed: one line when it is missing or deleted, and what readiness says.

A missing CRD is a state the operator waits out, never a crash: Kopf's watches wait for the resource instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kopf._cogs.clients import errors
from kopf._core.reactor import observation, queueing
from kubernetes.client.exceptions import ApiException

from specserve import api
from specserve.cluster import kube

CRD_NAME = f"{api.PLURAL}.{api.GROUP}"
INSTALL_COMMAND = "kubectl apply --server-side -f crds/"
CHECK_SECONDS_MISSING = 2.0  # how soon readiness sees a CRD that appears
CHECK_SECONDS_INSTALLED = 5.0  # how soon readiness sees a CRD deleted under a running operator
NOT_FOUND_RETRY_SECONDS = 1.0
LOG = logging.getLogger("specserve.installation")


def missing_message(deleted: bool) -> str:
    """The one line that says the CRD is not there and how to install it."""
    what = "was deleted" if deleted else "is not installed"
    return (
        f"the SpeculativeServing CRD {CRD_NAME} {what}: nothing is served until it is installed; "
        f"install it with `{INSTALL_COMMAND}` (or `specserve crd | kubectl apply --server-side -f -`)"
    )


class Installation:
    """What this operator knows of its CRD, from discovery: said once per change, and read by the readiness probe."""

    def __init__(self) -> None:
        self.installed: bool | None = None  # None: not checked yet

    def observe(self, installed: bool) -> bool:
        """Take a finding; logs a line and returns True when it changes what was known."""
        if installed == self.installed:
            return False
        if not installed:
            LOG.warning(missing_message(deleted=self.installed is True))
        elif self.installed is False:
            LOG.info("the SpeculativeServing CRD %s is installed: serving", CRD_NAME)
        self.installed = installed
        return True

    async def check(self, client: kube.Kube) -> bool:
        """Ask discovery whether the API server serves SpeculativeServings now."""
        installed = await client.serves(api.GROUP, api.VERSION, api.PLURAL)
        self.observe(installed)
        return installed

    async def follow(self, client: kube.Kube, gone: Callable[[], Any]) -> None:
        """Check again and again (often while missing); `gone()` when the CRD disappears. An API server that does
        not answer changes nothing: the last finding stands."""
        while True:
            await asyncio.sleep(CHECK_SECONDS_INSTALLED if self.installed else CHECK_SECONDS_MISSING)
            before = self.installed
            try:
                installed = await self.check(client)
            except (ApiException, OSError) as error:
                LOG.debug("could not ask whether %s is installed: %s", CRD_NAME, error)
                continue
            if installed != before or kopf_watches() not in (None, installed):
                await rescan()  # Kopf's CRD watch may have looked before discovery served the change
            if before and not installed:
                gone()

    def readiness(self) -> tuple[bool, str]:
        """Whether the operator can serve, and the line that says why not."""
        if self.installed is None:
            return False, "starting: the CRD has not been looked for yet"
        if not self.installed:
            return False, missing_message(deleted=False)
        return True, "ok"


# ---------------------------------------------------------------- Kopf's watches wait for a resource that went away


async def _waiting_watcher(*, resource: Any, **kwargs: Any) -> None:
    """Kopf's watcher, but a 404 (the CRD deleted before Kopf's own CRD watch stopped this watcher) waits and tries
    again instead of failing: a failed watcher ends Kopf's orchestrator, and with it the whole operator (exit 1).
    Kopf cancels this watcher once it sees the resource gone; if the resource returns first, watching resumes."""
    said = False
    while True:
        try:
            return await _kopf_watcher(resource=resource, **kwargs)
        except errors.APINotFoundError:
            if not said:
                LOG.debug("the API server does not serve %s now; waiting for it to return or for Kopf to stop watching it", resource)
                said = True
            await asyncio.sleep(NOT_FOUND_RETRY_SECONDS)


_observer: dict[str, Any] = {}  # what Kopf's resource observer of the running operator works with


async def _observing_resources(*, settings: Any, registry: Any, insights: Any) -> None:
    """Kopf's resource observer, remembered so that rescan() can do what Kopf does when a CRD changes."""
    _observer.update(settings=settings, registry=registry, insights=insights)
    await _kopf_resource_observer(settings=settings, registry=registry, insights=insights)


def kopf_watches() -> bool | None:
    """Whether Kopf watches SpeculativeServings now (None: no operator runs in this process). A CRD deleted and created
    again between two checks changes nothing discovery says, yet Kopf may have stopped watching for good."""
    insights = _observer.get("insights")
    if insights is None:
        return None
    return any(r.group == api.GROUP and r.plural == api.PLURAL for r in insights.watched_resources)


async def rescan() -> None:
    """Make Kopf read discovery for this operator's API group again, as it does at each event of a CRD of the group.
    Kopf reads it at the CRD's events only, and the API server's discovery serves a new CRD a moment after the CRD's
    last change (Established): a Kopf that read too early served nothing until the next change of some CRD of the
    group (seen: 30 s and more). Installation.follow calls this when discovery's answer changes."""
    if not _observer:
        return
    event = {"type": "MODIFIED", "object": {"spec": {"group": api.GROUP}}}
    await observation.process_discovered_resource_event(raw_event=event, **_observer)  # type: ignore[arg-type]


class _QuietUnresolved(logging.Filter):
    """Drops Kopf's "Unresolved resources cannot be served" warning about this operator's CRD: missing_message says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("Unresolved resources cannot be served") and api.GROUP in message)


_kopf_watcher = queueing.watcher
queueing.watcher = _waiting_watcher  # type: ignore[assignment]
_kopf_resource_observer = observation.resource_observer
observation.resource_observer = _observing_resources  # type: ignore[assignment]  # running.spawn_tasks looks it up at start
logging.getLogger("kopf._core.reactor.observation").addFilter(_QuietUnresolved())
