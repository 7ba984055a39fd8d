"""The operator's life: Kopf's settings, start-up (clients, cache, poller, queues) and clean-up, and `specserve run`.

Importing this module registers every handler of the operator in Kopf's default registry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import urllib.parse
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from specserve.cluster import applying, health_loop, indexes, installation, intents, kube, probes, workqueue  # noqa: F401  (probes: /readyz)
from specserve.cluster.availability import AvailabilityFollower, refresh_availability
from specserve.cluster.drift import owned_object_changed  # noqa: F401  (registers the handler)
from specserve.cluster.reconcile import forget_every_serving, reconcile_marked, track_serving  # noqa: F401  (registers the handler)
from specserve.cluster.servings import decision_state
from specserve.observation import metrics
from specserve.observation.poller import Poller
from specserve.rendering import manifests
from specserve.settings import OperatorSettings
from specserve.telemetry import TELEMETRY

MANAGED = indexes.MANAGED


WORKER_IDLE_SECONDS = 0.5  # how long a Kopf worker waits for its object's next event before it exits



RECONCILES_AT_ONCE = 64  # reconcile workers: twice the API pool, so it stays busy



@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    operator_settings: OperatorSettings = memo.get("settings") or OperatorSettings()
    memo["settings"] = operator_settings
    configure_kopf(settings, operator_settings)
    if "kube" not in memo:
        memo["kube"] = kube.Kube(kube.new_api_client())
    memo["pod_monitor_api"] = await _pod_monitor_api(memo["kube"], operator_settings)
    logger.info("PodMonitor API %s", "available" if memo["pod_monitor_api"] else "not available")
    if "poller" not in memo:
        labels = metrics.Labels(operator_settings.namespace_label, operator_settings.serving_label, operator_settings.role_label)
        query = metrics.prometheus_query(operator_settings.prometheus_url, operator_settings.prometheus_timeout_seconds)
        memo["poller"] = Poller(query, labels, operator_settings.poll_interval_seconds, operator_settings.prometheus_url)
    memo["poller_task"] = asyncio.create_task(memo["poller"].run(), name="specserve-poller")
    if "health_loop" not in memo:
        memo["health_loop"] = health_loop.HealthLoop(memo["poller"], memo)
    memo["cache"] = indexes.Cache()
    # Made here, not on first use: each object's memo is a shallow copy of this one, made later.
    memo["renderings"] = intents.Renderings()
    memo.setdefault("ledger", applying.Ledger())
    memo["reconciler"] = workqueue.ServingQueue(
        lambda key, failures: reconcile_marked(key, failures, memo, settings), RECONCILES_AT_ONCE, settings.queueing.error_delays, name="reconcile"
    )
    started = time.monotonic()
    # A missing CRD is said once (installation.missing_message) and waited out: Kopf starts watching it when it appears.
    memo["installation"] = installation.Installation()
    installed = await memo["installation"].check(memo["kube"])
    found = await memo["cache"].fill(memo["kube"], operator_settings.namespaces, operator_settings.list_chunk_size, servings=installed)
    logger.info("read %s in %.1f s", ", ".join(f"{n} {plural}" for plural, n in found.items()), time.monotonic() - started)
    memo["installation_task"] = asyncio.create_task(memo["installation"].follow(memo["kube"], lambda: forget_every_serving(memo)), name="specserve-installation")
    memo["health_loop"].cache = memo["cache"]
    if "availability" not in memo:
        memo["availability"] = AvailabilityFollower(memo["kube"], memo["cache"])
    memo["availability"].cache = memo["cache"]
    memo["follow_availability"] = lambda serving, spec: refresh_availability(
        memo["kube"], serving, spec, decision_state(spec, serving.get("status") or {}), memo["cache"]
    )
    if operator_settings.metrics_port and "metrics_server" not in memo:
        memo["metrics_server"], _ = TELEMETRY.serve(operator_settings.metrics_port)



def configure_kopf(settings: kopf.OperatorSettings, operator_settings: OperatorSettings) -> None:
    """Kopf's own settings for this operator: its queueing, posting, peering, networking and watches. No storage:
    with watch handlers only, Kopf writes nothing to the objects it watches."""
    # An idle Kopf worker keeps the last body it handled until it exits: at Kopf's 5 s, a start listing thousands
    # of objects held every body of the last 5 s (tens of MB at 2,000 servings) after it was handled.
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    quiet_watch_handlers()
    settings.posting.reporting_component = manifests.MANAGER
    # Only warnings of Kopf's object loggers become Events; the Events that explain (Applied, DriftReverted,
    # ScheduleChanged, ...) are posted on purpose. Kopf's per-handler "succeeded" lines cost an Event each.
    settings.posting.level = logging.WARNING
    settings.peering.lifetime = operator_settings.peering_lifetime_seconds
    settings.queueing.error_delays = [10, 20, 30, 60, 120, 300]
    settings.networking.error_backoffs = kube.EndlessBackoffs()
    settings.networking.enforce_retry_after = True  # a starting API server says when to come back (429, 1 s)
    # The listing at start-up comes in pages: 5,000 Deployments in one answer are some 75 MB of JSON, parsed at once.
    settings.watching.chunk_size = operator_settings.list_chunk_size or None
    managed = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    for resource in (("apps", "deployments"), ("", "services")):
        settings.watching.label_selectors[resource] = managed  # watch only what specserve manages, server-side



@kopf.on.cleanup()
async def stop_background(memo: kopf.Memo, **_: Any) -> None:
    for name in ("poller_task", "installation_task"):
        task = memo.get(name)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if memo.get("health_loop") is not None:
        await memo["health_loop"].stop()
    if memo.get("availability") is not None:
        await memo["availability"].stop()
    if memo.get("reconciler") is not None:
        await memo["reconciler"].stop()
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()



class _QuietWatchHandlers(logging.Filter):
    """Drops Kopf's INFO line for each successful run of the watch handlers, which run on every event of every
    serving and managed object (tens of thousands of lines at a start with thousands of servings)."""

    LINES = frozenset({"Handler 'track_serving' succeeded.", "Handler 'owned_object_changed' succeeded."})

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in self.LINES)



def quiet_watch_handlers() -> None:
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietWatchHandlers) for f in objects.filters):
        objects.addFilter(_QuietWatchHandlers())



async def _pod_monitor_api(client: kube.Kube, settings: OperatorSettings) -> bool:
    if settings.pod_monitor_api != "auto":
        return settings.pod_monitor_api == "true"
    try:
        return await client.serves(kube.POD_MONITORS.group, kube.POD_MONITORS.version, kube.POD_MONITORS.plural)
    except ApiException:
        return False



class StartupError(Exception):
    """A start-up step that cannot succeed by retrying (a busy port): said once, before Kopf starts."""



def seniority_priority(started: float, tiebreak: int) -> int:
    """A Kopf peering priority that falls with the start time: the longest-running replica acts, and one that
    joins later stands by instead of pausing it (equal priorities would pause them all)."""
    return -(int(started * 1000) * 1000 + tiebreak % 1000)



PLAIN_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"  # Kopf prefixes a serving's lines with [namespace/name]


def configure_logging(settings: OperatorSettings) -> None:
    """Kopf's log handler: JSON as Kopf writes it (its `object` key names the serving), or plain lines with the time,
    the level and, for a serving's lines, [namespace/name]."""
    verbose = settings.log_level == "DEBUG"
    if settings.log_format == "json":
        kopf.configure(log_format=kopf.LogFormat.JSON, verbose=verbose)
    else:
        kopf.configure(log_format=PLAIN_LOG_FORMAT, log_prefix=True, verbose=verbose)  # type: ignore[arg-type]  # Kopf takes a format string too
    logging.getLogger().setLevel(settings.log_level)


def _check_liveness_port(endpoint: str) -> None:
    """StartupError when the liveness endpoint's port is taken: Kopf would fail with a traceback once started."""
    parts = urllib.parse.urlsplit(endpoint)
    try:
        socket.create_server((parts.hostname or "localhost", parts.port or 80)).close()
    except OSError as error:
        raise StartupError(
            f"cannot serve the liveness endpoint {endpoint}: {os.strerror(error.errno) if error.errno else error} "
            "(another process holds the port; choose one with --liveness http://HOST:PORT/healthz)"
        ) from None


def run(settings: OperatorSettings) -> None:
    """Run the operator until it is stopped (`specserve run`); raises StartupError before anything starts."""
    memo = kopf.Memo(settings=settings)
    if settings.metrics_port:
        try:
            memo["metrics_server"], _ = TELEMETRY.serve(settings.metrics_port)
        except OSError as error:
            raise StartupError(
                f"cannot serve the operator's metrics on port {settings.metrics_port}: {error.strerror or error} "
                "(another process holds it; choose a port with --metrics-port, or 0 for none)"
            ) from None
    if settings.liveness_endpoint:
        _check_liveness_port(settings.liveness_endpoint)
    configure_logging(settings)
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        priority=seniority_priority(time.time(), random.randrange(1000)),
        memo=memo,
    )
