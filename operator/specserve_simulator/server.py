"""The simulator's HTTP server (aiohttp): vLLM's OpenAI endpoints, /health, /metrics and the /sim control API.

Routes only; the engine runs in runtime.py and request shapes live in completions.py.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from specserve_simulator import completions
from specserve_simulator.args import ServeConfig
from specserve_simulator.engine import Engine
from specserve_simulator.metrics import EngineMetrics
from specserve_simulator.runtime import Runtime

CONFIG = web.AppKey("config", ServeConfig)
RUNTIME = web.AppKey("runtime", Runtime)


def build_app(config: ServeConfig) -> web.Application:
    engine = Engine(config)
    app = web.Application()
    app[CONFIG] = config
    app[RUNTIME] = Runtime(engine, EngineMetrics(config, engine.kv_capacity), config.sim.time_scale)
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/v1/models", list_models),
            web.post("/v1/chat/completions", chat_completions),
            web.post("/v1/completions", text_completions),
            web.get("/metrics", metrics),
            web.get("/sim/traffic", get_traffic),
            web.put("/sim/traffic", put_traffic),
            web.get("/sim/stats", get_stats),
        ]
    )
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


class ListenError(Exception):
    """The server could not open its listening socket (port in use, address not local, no permission)."""


def serve(config: ServeConfig) -> None:
    """Serve until stopped; raises ListenError when the address cannot be bound, before anything was served."""
    spec = config.speculation
    speculation = f"{spec.method}, k={spec.num_speculative_tokens}" if spec else "off"
    banner = (
        f"specserve simulator: serving {config.model} as {config.model_name!r} on http://{config.host}:{config.port} "
        f"(speculation: {speculation}; time scale {config.sim.time_scale}; synthetic qps {config.sim.qps})"
    )
    listening = False

    def announce(_: str) -> None:  # aiohttp calls this once the socket listens
        nonlocal listening
        listening = True
        print(banner, file=sys.stderr, flush=True)

    try:
        web.run_app(build_app(config), host=config.host, port=config.port, print=announce, access_log=None)
    except OSError as error:
        if listening:
            raise
        reason = os.strerror(error.errno) if error.errno else str(error)
        hint = " (another server holds the port; choose one with --port)" if error.errno == errno.EADDRINUSE else ""
        raise ListenError(f"cannot listen on {config.host}:{config.port}: {reason}{hint}") from None


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def list_models(request: web.Request) -> web.Response:
    return web.json_response(completions.models(request.app[CONFIG]))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, chat=True)


async def text_completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, chat=False)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_traffic(request: web.Request) -> web.Response:
    return web.json_response(_workload_json(request.app[RUNTIME]))


async def put_traffic(request: web.Request) -> web.Response:
    """Change synthetic traffic and content at runtime: any of qps, temperature, acceptance, echo, prompt_tokens, max_tokens."""
    runtime = request.app[RUNTIME]
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object")
        runtime.update_workload(changes)
    except (ValueError, json.JSONDecodeError) as error:
        return web.json_response({"error": {"message": str(error), "type": "BadRequestError", "code": 400}}, status=400)
    return web.json_response(_workload_json(runtime))


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME].stats())


async def _complete(request: web.Request, chat: bool) -> web.StreamResponse:
    config = request.app[CONFIG]
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return _error(completions.RequestError(400, "request body is not valid JSON"))
    try:
        completion = completions.parse(body, config, chat)
    except completions.RequestError as error:
        return _error(error)
    finished = await request.app[RUNTIME].generate(completion.spec)
    if not completion.stream:
        return web.json_response(completions.response(completion, finished, config, config.sim.seed))
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await stream.prepare(request)
    for chunk in completions.stream_chunks(completion, finished, config, config.sim.seed):
        await stream.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await stream.write(b"data: [DONE]\n\n")
    await stream.write_eof()
    return stream


def _error(error: completions.RequestError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


def _workload_json(runtime: Runtime) -> dict[str, Any]:
    workload = runtime.engine.workload
    return {name: getattr(workload, name) for name in workload.__dataclass_fields__}


async def _start(app: web.Application) -> None:
    app[RUNTIME].start()


async def _stop(app: web.Application) -> None:
    await app[RUNTIME].stop()
