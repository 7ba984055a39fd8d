"""A stand-in for the vLLM OpenAI server: same `vllm serve` arguments, endpoints and /metrics, simulated engine.

Behaviour model and control API: README.md beside this file. Run `specserve simulate ...` or `python -m specserve_simulator ...`.
"""

from __future__ import annotations

import sys

from specserve_simulator import args


def main(argv: list[str] | None = None, prog: str = "vllm serve") -> int:
    """Parse `vllm serve` arguments (a leading `serve` is allowed) and serve until stopped."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["serve"]:  # invoked as `vllm serve ...` through a shim in the container image
        arguments = arguments[1:]
    config = args.parse(arguments, prog)
    from specserve_simulator import server  # aiohttp loads only once the arguments are known to be good

    try:
        server.serve(config)
    except server.ListenError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    return 0
