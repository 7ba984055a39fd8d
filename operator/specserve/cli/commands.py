"""The `specserve` command: run the operator, print the CRD, render, plan, export or replay a SpeculativeServing, simulate vLLM.

Thin wrappers over crd.py, manifests.py, planner.py, export.py, replay.py, the simulator and cluster/lifecycle.py; bad input is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pydantic
import yaml

import specserve
from specserve import api
from specserve.api import crd
from specserve.cli import inputs
from specserve.cluster import kube
from specserve.rendering import manifests, planner
from specserve.settings import OperatorSettings

if TYPE_CHECKING:
    from specserve.observation import export, metrics

REFUSED = 1  # exit code of `plan` and `render` when the operator would refuse a serving (its MemoryBudget verdict blocks)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["simulate"]:  # everything after it is a `vllm serve` command line, not ours to parse
        return _simulate(arguments[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except inputs.InputError as error:
        print(f"specserve {arguments[0]}: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specserve", description="Kubernetes operator for vLLM with speculative decoding.")
    parser.add_argument("--version", action="version", version=f"specserve {specserve.__version__}")
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
    run.add_argument(
        "--allowed-image-prefix", action="append", dest="allowed_image_prefixes", metavar="PREFIX",
        help="image policy: refuse servings whose spec.engine.image starts with none of these (repeatable; SPECSERVE_ALLOWED_IMAGE_PREFIXES; default: every image)",
    )
    run.set_defaults(func=_run)

    crd_cmd = sub.add_parser("crd", help="print the SpeculativeServing CRD")
    crd_cmd.set_defaults(func=_crd)

    files_help = "YAML files with one or more SpeculativeServing documents each ('-' for stdin)"
    rend = sub.add_parser("render", help="print every object the operator would apply; exit 1 when it would refuse a serving (memory budget)")
    rend.add_argument("files", nargs="+", type=Path, metavar="FILE", help=files_help)
    rend.add_argument("--pod-monitor-api", action="store_true", help="render as for a cluster that serves monitoring.coreos.com/v1")
    rend.set_defaults(func=_render)

    rep = sub.add_parser("replay", help="replay exported observations through a SpeculativeServing's health policy")
    rep.add_argument("file", type=Path, help="YAML file with one SpeculativeServing")
    rep.add_argument("--observations", type=Path, required=True, help="JSON Lines, one observation per policy interval ('-' for stdin)")
    rep.set_defaults(func=_replay)

    exp = sub.add_parser("export", help="write a serving's history from Prometheus as the JSON Lines replay reads (on stdout)")
    exp.add_argument("file", type=Path, help="YAML file with one SpeculativeServing: its namespace, name and healthPolicy window are queried")
    exp.add_argument("--prometheus-url", required=True, help="Prometheus that scrapes the serving's pods (labels as SPECSERVE_*_LABEL say)")
    exp.add_argument("--start", required=True, help="first evaluation time: Unix seconds, RFC 3339, now or now-DURATION (now-6h)")
    exp.add_argument("--end", required=True, help="last evaluation time, in the same forms")
    exp.add_argument("--step", help="seconds between lines (30, 30s, 1m); default: the serving's healthPolicy.intervalSeconds")
    exp.set_defaults(func=_export)

    plan_cmd = sub.add_parser("plan", help="print the GPU memory budget per target variant with its verdict; exit 1 when the operator would refuse a serving")
    plan_cmd.add_argument("files", nargs="+", type=Path, metavar="FILE", help=files_help)
    plan_cmd.add_argument("-o", "--output", choices=["table", "json"], default="table", help="table (default) or json: one JSON object per document, one per line")
    plan_cmd.set_defaults(func=_plan)

    sub.add_parser("simulate", add_help=False, help="run the vLLM simulator: specserve simulate MODEL [vllm serve args] [--sim-* options]")
    return parser


def _run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k in OperatorSettings.model_fields and v is not None}
    if args.all_namespaces:
        overrides["namespaces"] = []
    settings = OperatorSettings(**overrides)
    problem = kube.login_problem()
    if problem:  # Kopf would log a traceback and retry the login forever
        raise inputs.InputError(problem)
    from specserve.cluster import lifecycle

    try:
        lifecycle.run(settings)
    except lifecycle.StartupError as error:
        raise inputs.InputError(str(error)) from None
    return 0


def _replay(args: argparse.Namespace) -> int:
    from specserve.observation import replay

    serving = _one_serving(args.file, "replay")
    fitting = frozenset(planner.fitting_variants(serving.spec)) if serving.spec.target.variants else None  # as health_loop.act_on_health
    try:
        with contextlib.nullcontext(sys.stdin) if str(args.observations) == "-" else args.observations.open() as lines:
            for decision in replay.replay(serving.spec, lines, fitting):
                print(json.dumps(decision), flush=True)
    except replay.ReplayError as error:
        raise inputs.InputError(f"{inputs.where(args.observations)}: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise inputs.InputError(f"{inputs.where(args.observations)}: {inputs.unreadable(error)}") from None
    return 0


def _one_serving(path: Path, command: str) -> api.SpeculativeServing:
    documents = inputs.load_documents(path)
    if len(documents) > 1:
        raise inputs.InputError(f"{inputs.where(path)}: holds {len(documents)} documents; {command} takes one SpeculativeServing")
    try:
        return inputs.load_serving(documents[0])
    except inputs.INVALID as error:
        raise inputs.InputError(f"{inputs.where(path)}: {api.describe_error(error)}") from None


def _plan(args: argparse.Namespace) -> int:
    from specserve.cli import plan_table

    documents = inputs.load_servings(args.files, _render_options())
    refused = False
    for number, document in enumerate(documents):
        budget = operator_plan(document.serving)
        verdict = planner.verdict(budget)
        if args.output == "json":
            print(json.dumps(plan_json(document, budget, verdict)))
        else:
            sys.stdout.write(("\n" if number else "") + plan_table.report(document.key, budget))
        refused = _refuse_if_blocking("plan", document, verdict, "") or refused
    return REFUSED if refused else 0


def plan_json(document: inputs.Document, budget: planner.Plan, verdict: planner.Verdict) -> dict[str, Any]:
    """One document's line of `plan -o json`: the serving it is about, the MemoryBudget condition, then the active variant's budget."""
    memory = {"status": verdict.status, "reason": verdict.reason, "message": verdict.message, "blocking": verdict.blocking}
    return {"serving": document.key, "source": document.where, "memoryBudget": memory, **budget.to_json()}


def operator_plan(serving: api.SpeculativeServing) -> planner.Plan:
    """The plan reconcile.reconcile judges a new serving by (planner.verdict of it): speculation as a fresh status starts, the spec's variant."""
    return planner.plan(serving.spec, speculation=manifests.DecisionState().speculation)


def _refuse_if_blocking(command: str, document: inputs.Document, verdict: planner.Verdict, consequence: str) -> bool:
    """One stderr line for a serving the operator would refuse (Accepted=False, MemoryBudgetExceeded); True when it did."""
    if verdict.blocking:
        print(f"specserve {command}: {document.where} ({document.key}): the operator refuses it ({planner.REFUSED_REASON}, MemoryBudget {verdict.reason}): {verdict.message}{consequence}", file=sys.stderr)
    return verdict.blocking


def _export(args: argparse.Namespace) -> int:
    from specserve.observation import export, metrics

    serving = _one_serving(args.file, "export")
    span = _time_range(args, serving.spec.health_policy.interval_seconds)
    meta = serving.metadata
    target = export.Serving(meta.get("namespace", "default"), meta["name"], serving.spec.health_policy.window_seconds)
    try:
        lines = export.export(metrics.prometheus_query_range(args.prometheus_url), target, span, _metric_labels())
    except metrics.MetricsError as error:
        raise inputs.InputError(f"{args.prometheus_url}: Prometheus did not answer: {error}") from None
    if not export.has_data(lines):
        print(f"specserve export: note: {args.prometheus_url} has no samples for {target.namespace}/{target.name} in the range: check the time range and the metric labels (SPECSERVE_*_LABEL)", file=sys.stderr)
    for line in lines:
        print(json.dumps(line))
    return 0


def _time_range(args: argparse.Namespace, interval_seconds: int) -> export.TimeRange:
    from specserve.observation import export

    now = time.time()
    try:
        step = _flag("--step", export.parse_duration, args.step) if args.step is not None else float(interval_seconds)
        if step != int(step):
            raise ValueError(f"--step {args.step}: give whole seconds")
        return export.TimeRange(_flag("--start", export.parse_time, args.start, now), _flag("--end", export.parse_time, args.end, now), int(step))
    except ValueError as error:
        raise inputs.InputError(str(error)) from None


def _flag(flag: str, parse: Callable[..., Any], *values: Any) -> Any:
    """parse(*values), its ValueError naming the flag."""
    try:
        return parse(*values)
    except ValueError as error:
        raise ValueError(f"{flag} {error}") from None


def _render_options(pod_monitor_api: bool = False) -> manifests.RenderOptions:
    """Render as the operator would: with its image policy, read from SPECSERVE_ALLOWED_IMAGE_PREFIXES as `specserve run` reads it."""
    try:
        prefixes = tuple(OperatorSettings().allowed_image_prefixes)
    except (pydantic.ValidationError, ValueError) as error:
        raise inputs.InputError(f"image policy from SPECSERVE_ALLOWED_IMAGE_PREFIXES: {' '.join(str(error).split())}") from None
    return manifests.RenderOptions(pod_monitor_api=pod_monitor_api, allowed_image_prefixes=prefixes)


def _metric_labels() -> metrics.Labels:
    from specserve.observation import metrics

    try:
        settings = OperatorSettings()
        return metrics.Labels(settings.namespace_label, settings.serving_label, settings.role_label)
    except (pydantic.ValidationError, ValueError) as error:
        raise inputs.InputError(f"metric labels from SPECSERVE_*_LABEL: {' '.join(str(error).split())}") from None


def _crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crd.crd_yaml())
    return 0


def _render(args: argparse.Namespace) -> int:
    options = _render_options(pod_monitor_api=args.pod_monitor_api)
    documents = inputs.load_servings(args.files, options)
    rendered: list[list[dict[str, Any]]] = []
    for document in documents:
        try:
            rendered.append(render_serving(document.serving, options))
        except inputs.INVALID as error:
            raise inputs.InputError(f"{document.where}: {api.describe_error(error)}") from None
    objects: list[dict[str, Any]] = []
    refused = False
    for document, its_objects in zip(documents, rendered):
        if _refuse_if_blocking("render", document, planner.verdict(operator_plan(document.serving)), "; no objects rendered for it"):
            refused = True
        else:
            objects += its_objects
    if objects:
        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False, width=200))
    return REFUSED if refused else 0


def render_document(document: Any, options: manifests.RenderOptions) -> list[dict[str, Any]]:
    return render_serving(inputs.load_serving(document), options)


def render_serving(serving: api.SpeculativeServing, options: manifests.RenderOptions) -> list[dict[str, Any]]:
    """Every object the operator applies for a new serving (fresh decision state)."""
    meta = serving.metadata
    owner = manifests.Owner(name=meta["name"], namespace=meta.get("namespace", "default"), uid=meta.get("uid", ""))
    return manifests.render(owner, serving.spec, manifests.DecisionState(), options)


def _simulate(arguments: list[str]) -> int:
    import specserve_simulator as simulator  # imported here so other commands need no aiohttp

    return simulator.main(arguments, prog="specserve simulate")


if __name__ == "__main__":
    sys.exit(main())
