"""The `specserve` command: run the operator, print the CRD, render, plan or replay a SpeculativeServing file, simulate vLLM.

Each sub-command is a thin wrapper over crd.py, render.py, planner.py, replay.py, simulator/ and controller.py; bad input is one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pydantic
import yaml

from specserve import api, crd, render
from specserve.settings import OperatorSettings

NO_CLUSTER = "no cluster configured: set KUBECONFIG or run in a pod"


class InputError(Exception):
    """A file the command cannot use; the message names the file (and document) and says why. Exit code 2."""


class InvalidServing(ValueError):
    """A YAML document that is not a SpeculativeServing the API server would admit (not a mapping, no usable name)."""


INVALID = (pydantic.ValidationError, render.RenderError, InvalidServing)  # what one document can be refused for


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["simulate"]:  # everything after it is a `vllm serve` command line, not ours to parse
        return _simulate(arguments[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as error:
        print(f"specserve {arguments[0]}: {error}", file=sys.stderr)
        return 2


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
    problem = cluster_problem()
    if problem:  # Kopf would log a traceback and retry the login forever
        raise InputError(problem)
    from specserve import controller  # imported here so `crd` and `render` need no Kopf start-up

    controller.run(settings)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from specserve import replay

    documents = load_documents(args.file)
    if len(documents) > 1:
        raise InputError(f"{_where(args.file)}: holds {len(documents)} documents; replay takes one SpeculativeServing")
    try:
        serving = load_serving(documents[0])
    except INVALID as error:
        raise InputError(f"{_where(args.file)}: {api.describe_error(error)}") from None
    try:
        with contextlib.nullcontext(sys.stdin) if str(args.observations) == "-" else args.observations.open() as lines:
            for decision in replay.replay(serving.spec, lines):
                print(json.dumps(decision), flush=True)
    except replay.ReplayError as error:
        raise InputError(f"{_where(args.observations)}: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{_where(args.observations)}: {_unreadable(error)}") from None
    return 0


def _plan(args: argparse.Namespace) -> int:
    from specserve import plan_report, planner

    all_fit = True
    for number, document in enumerate(load_documents(args.file)):
        try:
            serving = load_serving(document)
        except INVALID as error:
            raise InputError(f"{_where(args.file)}: document {number + 1}: {api.describe_error(error)}") from None
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
    rendered: list[dict[str, Any]] = []
    for number, document in enumerate(load_documents(args.file)):
        try:
            rendered += render_document(document, render.RenderOptions(pod_monitor_api=args.pod_monitor_api))
        except INVALID as error:
            raise InputError(f"{_where(args.file)}: document {number + 1}: {api.describe_error(error)}") from None
    sys.stdout.write(yaml.safe_dump_all(rendered, sort_keys=False, width=200))
    return 0


def render_document(document: Any, options: render.RenderOptions) -> list[dict[str, Any]]:
    serving = load_serving(document)
    meta = serving.metadata
    owner = render.Owner(name=meta["name"], namespace=meta.get("namespace", "default"), uid=meta.get("uid", ""))
    return render.render(owner, serving.spec, render.DecisionState(), options)


def load_serving(document: Any) -> api.SpeculativeServing:
    """One YAML document as a SpeculativeServing the API server would admit; raises one of INVALID naming the field."""
    if not isinstance(document, dict):
        raise InvalidServing(f"a SpeculativeServing is a YAML mapping (apiVersion, kind, metadata, spec), not a {type(document).__name__}")
    serving = api.SpeculativeServing.model_validate(document)
    name = serving.metadata.get("name")
    problem = api.name_problem("" if name is None else str(name))
    if problem:
        raise InvalidServing(problem)
    return serving


def load_documents(path: Path) -> list[Any]:
    """The YAML documents of a file ('-' for stdin), empty ones dropped; InputError when there are none or it cannot be read."""
    where = _where(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{where}: {_unreadable(error)}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise InputError(f"{where}: not valid YAML: {_yaml_problem(error)}") from None
    if not documents:
        raise InputError(f"{where}: holds no SpeculativeServing (it has no YAML document)")
    return documents


def _where(path: Path) -> str:
    return "stdin" if str(path) == "-" else str(path)


def _unreadable(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "not a text file (it is not UTF-8)"
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "is a directory; give a file"
    return f"cannot read it: {error.strerror or error}"


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        context = f" ({error.context})" if error.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}{context}"
    return str(error)


def cluster_problem() -> str | None:
    """Why the operator could not log in the way Kopf does (in-cluster service account, else kubeconfig), or None."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
        return None
    except kubernetes.config.ConfigException:
        pass
    kubeconfig = os.environ.get("KUBECONFIG", "")
    paths = [Path(p).expanduser() for p in kubeconfig.split(os.pathsep) if p] or [Path("~/.kube/config").expanduser()]
    if not any(p.is_file() for p in paths):
        return NO_CLUSTER + (f" (KUBECONFIG={kubeconfig} names no file)" if kubeconfig else "")
    try:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError, yaml.YAMLError, ValueError, TypeError) as error:
        where = f"KUBECONFIG={kubeconfig}" if kubeconfig else str(paths[0])
        return f"{where}: unusable kubeconfig: {' '.join(str(error).split())}"
    return None


def _simulate(arguments: list[str]) -> int:
    from specserve import simulator  # imported here so other commands need no aiohttp

    return simulator.main(arguments, prog="specserve simulate")


if __name__ == "__main__":
    sys.exit(main())
