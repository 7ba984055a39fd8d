"""The `specserve` command: run the operator, print the CRD, render a SpeculativeServing file offline.

Each sub-command is a thin wrapper; the work happens in crd.py, render.py and controller.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pydantic
import yaml

from specserve import api, crd, render
from specserve.settings import OperatorSettings


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["simulate"]:  # everything after it is a `vllm serve` command line, not ours to parse
        return _simulate(arguments[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specserve", description="Kubernetes operator for vLLM with speculative decoding.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("-n", "--namespace", action="append", dest="namespaces", help="watch this namespace (repeatable); default: SPECSERVE_NAMESPACES or all")
    run.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--prometheus-url", help="default Prometheus URL (SPECSERVE_PROMETHEUS_URL)")
    run.add_argument("--log-format", choices=["plain", "json"], help="log format (SPECSERVE_LOG_FORMAT)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (SPECSERVE_LOG_LEVEL)")
    run.add_argument("--liveness", dest="liveness_endpoint", help="liveness endpoint URL (SPECSERVE_LIVENESS_ENDPOINT)")
    run.add_argument("--metrics-port", dest="metrics_port", type=int, help="port of the operator's own /metrics, 0 for none (SPECSERVE_METRICS_PORT)")
    run.add_argument("--poll-interval", dest="poll_interval_seconds", type=float, help="seconds between Prometheus polls (SPECSERVE_POLL_INTERVAL_SECONDS)")
    run.add_argument("--peering", help="Kopf peering name for several operator replicas (SPECSERVE_PEERING)")
    run.set_defaults(func=_run)

    crd_cmd = sub.add_parser("crd", help="print the SpeculativeServing CRD")
    crd_cmd.set_defaults(func=_crd)

    rend = sub.add_parser("render", help="print every object the operator would apply for a SpeculativeServing file")
    rend.add_argument("file", type=Path, help="YAML file with one or more SpeculativeServing documents ('-' for stdin)")
    rend.add_argument("--pod-monitor-api", action="store_true", help="render as for a cluster that serves monitoring.coreos.com/v1")
    rend.set_defaults(func=_render)

    rep = sub.add_parser("replay", help="replay exported observations through a SpeculativeServing's health policy")
    rep.add_argument("file", type=Path, help="YAML file with one SpeculativeServing")
    rep.add_argument("--observations", type=Path, required=True, help="JSON Lines, one observation per policy interval ('-' for stdin)")
    rep.set_defaults(func=_replay)

    plan_cmd = sub.add_parser("plan", help="print the GPU memory budget of a SpeculativeServing file, per target variant; exit 1 when the active variant does not fit")
    plan_cmd.add_argument("file", type=Path, help="YAML file with one or more SpeculativeServing documents ('-' for stdin)")
    plan_cmd.add_argument("-o", "--output", choices=["table", "json"], default="table", help="table (default) or json: one JSON object per document, one per line")
    plan_cmd.set_defaults(func=_plan)

    sub.add_parser("simulate", add_help=False, help="run the vLLM simulator: specserve simulate MODEL [vllm serve args] [--sim-* options]")
    return parser


def _run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k in OperatorSettings.model_fields and v is not None}
    if args.all_namespaces:
        overrides["namespaces"] = []
    settings = OperatorSettings(**overrides)
    from specserve import controller  # imported here so `crd` and `render` need no Kopf start-up

    controller.run(settings)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from specserve import replay

    try:
        serving = api.SpeculativeServing.model_validate(yaml.safe_load(args.file.read_text()))
    except pydantic.ValidationError as error:
        print(f"{args.file}: {api.describe_error(error)}", file=sys.stderr)
        return 2
    lines = sys.stdin if str(args.observations) == "-" else args.observations.open()
    try:
        for decision in replay.replay(serving.spec, lines):
            print(json.dumps(decision), flush=True)
    except replay.ReplayError as error:
        print(f"{args.observations}: {error}", file=sys.stderr)
        return 2
    return 0


def _plan(args: argparse.Namespace) -> int:
    from specserve import plan_report, planner

    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    all_fit = True
    for number, document in enumerate(d for d in yaml.safe_load_all(text) if d):
        try:
            serving = api.SpeculativeServing.model_validate(document)
        except pydantic.ValidationError as error:
            print(f"{args.file}: document {number + 1}: {api.describe_error(error)}", file=sys.stderr)
            return 2
        budget = planner.plan(serving.spec)
        all_fit = all_fit and budget.active.fits
        if args.output == "json":
            print(json.dumps(budget.to_json()))
        else:
            sys.stdout.write(plan_report.report(serving.metadata.get("name", f"document {number + 1}"), budget))
    return 0 if all_fit else 1


def _crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crd.crd_yaml())
    return 0


def _render(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    rendered: list[dict[str, Any]] = []
    for number, document in enumerate(d for d in yaml.safe_load_all(text) if d):
        try:
            rendered += render_document(document, render.RenderOptions(pod_monitor_api=args.pod_monitor_api))
        except (pydantic.ValidationError, render.RenderError) as error:
            print(f"{args.file}: document {number + 1}: {api.describe_error(error)}", file=sys.stderr)
            return 2
    sys.stdout.write(yaml.safe_dump_all(rendered, sort_keys=False, width=200))
    return 0


def render_document(document: dict[str, Any], options: render.RenderOptions) -> list[dict[str, Any]]:
    serving = api.SpeculativeServing.model_validate(document)
    meta = serving.metadata
    problem = api.name_problem(str(meta.get("name", "")))
    if problem:
        raise render.RenderError("InvalidName", problem)
    owner = render.Owner(name=meta["name"], namespace=meta.get("namespace", "default"), uid=meta.get("uid", ""))
    return render.render(owner, serving.spec, render.DecisionState(), options)


def _simulate(arguments: list[str]) -> int:
    from specserve import simulator  # imported here so other commands need no aiohttp

    return simulator.main(arguments, prog="specserve simulate")


if __name__ == "__main__":
    sys.exit(main())
