"""Kopf's liveness endpoint with a readiness endpoint beside it: /readyz on the same port answers 503 while the CRD is missing.

Liveness stays Kopf's (probe handlers, 200 while the operator runs); readiness reads memo["installation"].
"""

from __future__ import annotations

import asyncio
import datetime
import urllib.parse
from typing import Any

import aiohttp.web
from kopf._core.actions import lifecycles
from kopf._core.engines import activities, probing
from kopf._core.intents import causes

READINESS_PATH = "/readyz"
PROBE_RESULTS_MAX_AGE = datetime.timedelta(seconds=10)  # as Kopf's own liveness endpoint


def readiness_url(liveness_endpoint: str) -> str:
    """Where readiness is served: the liveness endpoint's scheme, host and port, path /readyz."""
    parts = urllib.parse.urlsplit(liveness_endpoint)
    return urllib.parse.urlunsplit([parts.scheme, parts.netloc, READINESS_PATH, "", ""])


async def health_reporter(endpoint: str, *, memo: Any, indices: Any, registry: Any, settings: Any, ready_flag: asyncio.Event | None = None) -> None:
    """Kopf's probing.health_reporter (same liveness answer: the results of the probe handlers, cached 10 s) plus
    GET /readyz: 200 "ok" once the operator serves its CRD, else 503 with the line that says what is missing."""
    results: dict[Any, Any] = {}
    taken: datetime.datetime | None = None
    lock = asyncio.Lock()

    async def liveness(_: aiohttp.web.Request) -> aiohttp.web.Response:
        nonlocal taken
        async with lock:
            now = datetime.datetime.now(datetime.UTC)
            if taken is None or now - taken >= PROBE_RESULTS_MAX_AGE:
                found = await activities.run_activity(
                    lifecycle=lifecycles.all_at_once, registry=registry, settings=settings, activity=causes.Activity.PROBE, indices=indices, memo=memo
                )
                results.clear()
                results.update(found)
                taken = datetime.datetime.now(datetime.UTC)
        return aiohttp.web.json_response(results)

    async def readiness(_: aiohttp.web.Request) -> aiohttp.web.Response:
        installation = memo.get("installation")
        ready, message = installation.readiness() if installation is not None else (False, "starting")
        return aiohttp.web.Response(status=200 if ready else 503, text=message + "\n")

    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http":
        raise ValueError(f"unsupported scheme of the liveness endpoint: {endpoint}")
    app = aiohttp.web.Application()
    routes = [aiohttp.web.get(parts.path or "/", liveness)]
    if parts.path != READINESS_PATH:
        routes.append(aiohttp.web.get(READINESS_PATH, readiness))
    app.add_routes(routes)
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)  # a line per kubelet probe says nothing
    await runner.setup()
    await aiohttp.web.TCPSite(runner, parts.hostname or probing.LOCALHOST, parts.port or probing.HTTP_PORT).start()
    if ready_flag is not None:
        ready_flag.set()
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(runner.cleanup())


probing.health_reporter = health_reporter  # type: ignore[assignment]  # running.spawn_tasks looks it up when it starts
